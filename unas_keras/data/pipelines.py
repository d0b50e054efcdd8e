"""The public data pipelines: search pairs, derived-network training data, calibration samples.

Determinism: every random choice (epoch order, augmentation, the repeats of the held-out stream) is
drawn with stateless ops from keys derived from (seed, purpose, epoch, position), so epoch e of a search
stream depends only on (seed, e) and a search resumed at ``start_epoch`` sees exactly the batches an
uninterrupted run would have seen from that epoch on.  (tensorflow-datasets streams are shuffled with a
seeded shuffle buffer; its op seed is derived the same way, and TensorFlow combines it with the global
seed when one is set, so set the same global seed, or none, in the resumed run.)
"""

import dataclasses
import math
from typing import Tuple

import numpy as np
import tensorflow as tf

from unas_keras._validate import check_int
from unas_keras.data import constants
from unas_keras.data import preprocessing
from unas_keras.data import sources

_AUTOTUNE = tf.data.AUTOTUNE
# Stream tags folded into the root key, one per independent random purpose.
_TAG_TRAIN_ORDER, _TAG_TRAIN_AUG, _TAG_VAL_ORDER, _TAG_VAL_AUG = 1, 2, 3, 4
_TAG_EVAL_ORDER, _TAG_EVAL_AUG, _TAG_REPRESENTATIVE = 5, 6, 7
_MAX_EPOCHS = 2 ** 62
# Side of the images used to estimate normalisation statistics (independent of image_size, so the
# search, the derived-network training and the calibration data all share one normalisation).
_STATS_IMAGE_SIZE = 32
_GREY_WEIGHTS = (0.299, 0.587, 0.114)


@dataclasses.dataclass(frozen=True)
class SearchData:
    """Paired train/val batches for a UNAS search (see `search_data`).

    Attributes:
        dataset: infinite tf.data.Dataset of ((x_train, y_train), (x_val, y_val)); x float32
            [batch_size, image_size, image_size, channels] normalised, y int32 [batch_size].
        steps_per_epoch: pairs per epoch (num_train // batch_size).
        num_classes: number of classes.
        input_shape: (image_size, image_size, channels).
        num_train: examples in the search-train part.
        num_val: examples in the held-out part that feeds the val batches.
        name: canonical dataset name.
        batch_size: examples per batch (global batch size).
        val_fraction: held-out fraction of the training split that was used.
        augment: augmentation policy applied to both streams ("none", "crop_flip", ...).
        seed: the seed the stream was built with.
        start_epoch: the first epoch the stream yields.
        mean: per-channel normalisation mean (images in [0, 1] units).
        std: per-channel normalisation standard deviation.
    """

    dataset: tf.data.Dataset
    steps_per_epoch: int
    num_classes: int
    input_shape: Tuple[int, int, int]
    num_train: int
    num_val: int
    name: str
    batch_size: int
    val_fraction: float
    augment: str
    seed: int
    start_epoch: int
    mean: Tuple[float, ...]
    std: Tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class EvalInfo:
    """Description of the `eval_data` pipelines.

    Attributes:
        name: canonical dataset name.
        num_classes: number of classes.
        input_shape: (image_size, image_size, channels).
        num_train: training examples.
        num_val: evaluation examples (test split or held-out fraction).
        steps_per_epoch: training batches per epoch (the last partial batch is dropped).
        validation_steps: evaluation batches (the last one may be partial).
        batch_size: examples per batch.
        validation_split: "test", "validation" (the tfds split used) or the held-out fraction.
        augment: training augmentation policy.
        cutout: cutout side (0: off).
        mean: per-channel normalisation mean.
        std: per-channel normalisation standard deviation.
    """

    name: str
    num_classes: int
    input_shape: Tuple[int, int, int]
    num_train: int
    num_val: int
    steps_per_epoch: int
    validation_steps: int
    batch_size: int
    validation_split: object
    augment: str
    cutout: int
    mean: Tuple[float, ...]
    std: Tuple[float, ...]


# ------------------------------------------------------------------------------------------ checks


def _check_channels(channels):
    if isinstance(channels, bool) or channels not in (1, 3):
        raise ValueError("channels must be 1 (grey) or 3 (RGB); got %r" % (channels,))
    return int(channels)


def _resolve_augment(augment, source, table):
    """Maps augment=None/True/False/"policy" to a policy name."""
    default = table.get(source.default_key, constants.DEFAULT_AUGMENT)
    if augment is None:
        return default
    if augment is True:
        if default != "none":
            return default
        return (constants.FORCED_AUGMENT_VARIABLE_SIZE if source.variable_size
                else constants.FORCED_AUGMENT_FIXED_SIZE)
    if augment is False:
        return "none"
    if isinstance(augment, str) and augment in constants.AUGMENT_POLICIES:
        return augment
    raise ValueError("augment must be None (the dataset default), True, False or one of %s; got %r"
                     % (constants.AUGMENT_POLICIES, augment))


def _too_small_message(name, total, fraction, batch_size):
    needed = 2 * batch_size
    while (sources.held_out_count(needed, fraction) < batch_size
           or needed - sources.held_out_count(needed, fraction) < batch_size):
        needed += 1
    return ("dataset %r is too small for a search with batch_size=%d and val_fraction=%g: it has %d training "
            "examples, split into %d search-train and %d held-out, but one train batch and one val batch "
            "need %d examples each; use at least %d examples or a smaller batch_size"
            % (name, batch_size, fraction, total, total - sources.held_out_count(total, fraction),
               sources.held_out_count(total, fraction), batch_size, needed))


# ---------------------------------------------------------------------------------- normalisation


def _adapt_stats(values, channels, kind):
    values = tuple(float(v) for v in values)
    if len(values) == channels:
        return values
    if len(values) == 1:
        return values * channels
    if kind == "mean":
        return (float(np.dot(_GREY_WEIGHTS, values)),)
    return (float(math.sqrt(np.dot(_GREY_WEIGHTS, np.square(values)))),)


def _normalization(source, channels):
    """(mean, std) per output channel: the dataset constants, or estimated from a fixed sample."""
    if source.normalization is not None:
        mean, std = source.normalization
        return _adapt_stats(mean, channels, "mean"), _adapt_stats(std, channels, "std")
    part = source.sample_part(constants.NORMALIZATION_SAMPLE_SIZE, channels)
    identity = preprocessing.make_preprocess_fn(
        _STATS_IMAGE_SIZE, source.variable_size, "none", (0.0,) * channels, (1.0,) * channels)
    seed = tf.zeros([2], tf.int64)
    dataset = part.ordered(None).map(lambda image, label: identity(image, label, seed)[0]).batch(64)
    total = np.zeros(channels, np.float64)
    total_sq = np.zeros(channels, np.float64)
    count = 0
    for batch in dataset.as_numpy_iterator():
        total += batch.sum(axis=(0, 1, 2))
        total_sq += np.square(batch.astype(np.float64)).sum(axis=(0, 1, 2))
        count += batch.shape[0] * batch.shape[1] * batch.shape[2]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - np.square(mean), 0.0))
    std = np.where(std < 1e-6, 1.0, std)  # constant images: do not divide by zero
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


# ------------------------------------------------------------------------------------ keys & maps


def _root_key(seed):
    return tf.constant([int(seed) % (2 ** 63), 0], tf.int64)


def _fold(key, *values):
    for value in values:
        key = tf.random.experimental.stateless_fold_in(key, tf.cast(value, tf.int64))
    return key


def _preprocessed(dataset, key, preprocess):
    """Applies `preprocess` with per-position stateless seeds fold_in(key, position)."""
    return dataset.enumerate().map(
        lambda position, example: preprocess(example[0], example[1], _fold(key, position)),
        num_parallel_calls=_AUTOTUNE, deterministic=True)


def _repeated(part, key, count):
    """`count` examples of `part`: independent keyed shuffles of it, concatenated."""
    passes = max(1, -(-count // part.size))
    return tf.data.Dataset.range(passes).flat_map(lambda k: part.ordered(_fold(key, k))).take(count)


def _with_options(dataset):
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


# ------------------------------------------------------------------------------------------ public


def dataset_info(dataset, data_dir=None):
    """Describes a dataset without building a pipeline.

    Args:
        dataset: "digits", a tensorflow-datasets name, a folder of class sub-folders, or (x, y) arrays
            (see `search_data`).
        data_dir: tensorflow-datasets data directory (None: the tfds default).

    Returns:
        DatasetInfo(name, num_classes, num_train_examples, image_shape).  num_train_examples is None for a
        tfds dataset whose split sizes are unknown (not prepared and not mocked).

    Raises:
        ValueError: the dataset argument is not usable (the message lists what is allowed).
    """
    source = sources.resolve(dataset, data_dir)
    info = source.info
    if info.num_train_examples is None and isinstance(source, sources.TfdsSource):
        try:
            info = dataclasses.replace(info, num_train_examples=source.train_size())
        except ValueError:  # not prepared: the metadata is all there is
            pass
    return info


def search_data(dataset, image_size=32, batch_size=32, val_fraction=None, seed=0, augment=None,
                start_epoch=0, channels=3, data_dir=None):
    """Paired (search-train, held-out) batches for the UNAS search, infinite and deterministic.

    The training split is divided into a search-train part and a held-out part that feeds the val
    batches.  Default held-out fraction (val_fraction=None): 0.1 for CIFAR-10/100 (45k/5k) and ImageNet
    (90/10), 0.5 for everything else (digits, arrays, folders, other tfds names).  For tfds datasets the
    held-out part is the last examples of the 'train' split; for digits, arrays and folders it is a fixed
    class-stratified subset (independent of `seed`).

    Each epoch visits the search-train part once in an order drawn from (seed, epoch) and yields
    num_train // batch_size pairs; example i of a train batch and example i of the val batch form a pair.
    The val stream repeats the held-out part with independent shuffles (also drawn from (seed, epoch))
    to match the train stream's length.  Augmentation (same policy for both streams, drawn per example
    from (seed, epoch, position)): augment=None picks the dataset default (CIFAR: crop + flip; ImageNet,
    digits, arrays, folders, other: none); True forces it on ("crop_flip" for fixed-size images,
    "resized_crop_flip" for variable-size ones), False off, or name a policy from
    constants.AUGMENT_POLICIES.

    Images: converted to `channels` (grey replicated to RGB, RGB to grey), resized bilinearly to
    image_size x image_size (variable-size images: central 87.5% square first), scaled to [0, 1] (uint8
    / 255; digits / 16; float arrays are taken as they are), then normalised per channel with the dataset
    constants (constants.NORMALIZATION) or statistics estimated from a fixed sample of the training split.

    Args:
        dataset: "digits" (embedded), a tensorflow-datasets name ("cifar10", "cifar100", "imagenet2012"
            alias "imagenet", ...), a folder with one sub-folder of images per class, or (x, y) /
            (x, y, num_classes) arrays (x uint8 or float, NHWC or NHW; y integers in [0, num_classes)).
        image_size: output side.
        batch_size: examples per batch (of each of the two streams); the global batch size.
        val_fraction: held-out fraction in (0, 1), or None for the dataset default.
        seed: the seed of every random choice.
        augment: None, True, False or a policy name (see above).
        start_epoch: the first epoch to yield (resuming a search).
        channels: 1 or 3.
        data_dir: tensorflow-datasets data directory.

    Returns:
        SearchData.

    Raises:
        ValueError: bad argument, unusable dataset, or data too small for one train and one val batch.
    """
    image_size = check_int(image_size, "image_size", 1)
    batch_size = check_int(batch_size, "batch_size", 1)
    start_epoch = check_int(start_epoch, "start_epoch", 0)
    seed = check_int(seed, "seed", 0)
    channels = _check_channels(channels)
    source = sources.resolve(dataset, data_dir)
    if val_fraction is None:
        val_fraction = constants.SEARCH_VAL_FRACTION.get(source.default_key,
                                                         constants.DEFAULT_SEARCH_VAL_FRACTION)
    val_fraction = sources.check_fraction(val_fraction, "val_fraction")
    policy = _resolve_augment(augment, source, constants.SEARCH_AUGMENT)
    train_part, val_part = source.split(val_fraction, channels)
    if train_part.size < batch_size or val_part.size < batch_size:
        raise ValueError(_too_small_message(source.info.name, train_part.size + val_part.size, val_fraction,
                                            batch_size))
    mean, std = _normalization(source, channels)
    preprocess = preprocessing.make_preprocess_fn(image_size, source.variable_size, policy, mean, std)
    steps = train_part.size // batch_size
    per_epoch = steps * batch_size
    root = _root_key(seed)

    def epoch(e):
        train = train_part.ordered(_fold(root, _TAG_TRAIN_ORDER, e)).take(per_epoch)
        train = _preprocessed(train, _fold(root, _TAG_TRAIN_AUG, e), preprocess)
        val = _repeated(val_part, _fold(root, _TAG_VAL_ORDER, e), per_epoch)
        val = _preprocessed(val, _fold(root, _TAG_VAL_AUG, e), preprocess)
        return tf.data.Dataset.zip((train.batch(batch_size, drop_remainder=True),
                                    val.batch(batch_size, drop_remainder=True)))

    stream = tf.data.Dataset.range(start_epoch, _MAX_EPOCHS).flat_map(epoch).prefetch(_AUTOTUNE)
    return SearchData(dataset=_with_options(stream), steps_per_epoch=steps, num_classes=source.info.num_classes,
                      input_shape=(image_size, image_size, channels), num_train=train_part.size,
                      num_val=val_part.size, name=source.info.name, batch_size=batch_size,
                      val_fraction=val_fraction, augment=policy, seed=seed, start_epoch=start_epoch,
                      mean=mean, std=std)


def _eval_parts(source, validation_split, channels):
    """(train part, val part, description of the split) for eval_data."""
    if validation_split is None:
        validation_split = "test" if source.has_test_split else constants.DEFAULT_EVAL_HELDOUT_FRACTION
    if isinstance(validation_split, str):
        if validation_split not in ("test", "validation"):
            raise ValueError("validation_split must be 'test' or a fraction in (0, 1); got %r"
                             % (validation_split,))
        if not source.has_test_split:
            raise ValueError("dataset %r has no test split; pass validation_split=<fraction in (0, 1)> to hold "
                             "out part of the training data (default %g)"
                             % (source.info.name, constants.DEFAULT_EVAL_HELDOUT_FRACTION))
        return source.train_part(channels), source.test_part(channels), source.test_split_name()
    fraction = sources.check_fraction(validation_split, "validation_split")
    train_part, val_part = source.split(fraction, channels)
    return train_part, val_part, fraction


def eval_data(dataset, image_size, batch_size, seed=0, cutout=0, augment=None, validation_split=None,
              channels=3, start_epoch=None, data_dir=None):
    """Training and evaluation pipelines for a derived network (model.fit / model.evaluate).

    Training: the whole training split (or what a held-out fraction leaves), shuffled per epoch,
    augmented with the dataset default (CIFAR: pad-4 crop + flip; ImageNet: random resized crop + flip;
    others: none; `augment` as in `search_data`), optional cutout, batches of `batch_size` with the last
    partial batch dropped.  Evaluation: the test split ("test", or "validation" for ImageNet), or for
    datasets without one (digits, arrays, folders) a held-out fraction (default 0.2), in a fixed order,
    without augmentation, the last batch possibly partial.  Label smoothing and the like belong to the
    trainer.

    Args:
        dataset: as in `search_data`.
        image_size: output side.
        batch_size: examples per batch.
        seed: seed of the shuffles and augmentation.
        cutout: side of the cutout square (16 for CIFAR in the paper; 0 disables it).
        augment: None (dataset default), True, False or a policy name.
        validation_split: None (test split if there is one, else 0.2), "test", or a fraction in (0, 1).
        channels: 1 or 3.
        start_epoch: None: train_ds is one epoch long and reshuffles on every iteration (deterministic
            given `seed` and the global seed); an int e: train_ds is infinite, epoch e first, each epoch
            drawn from (seed, epoch) only (use model.fit(steps_per_epoch=info.steps_per_epoch)).
        data_dir: tensorflow-datasets data directory.

    Returns:
        (train_ds, val_ds, EvalInfo); both datasets yield (x float32 NHWC, y int32).

    Raises:
        ValueError: bad argument or unusable dataset.
    """
    image_size = check_int(image_size, "image_size", 1)
    batch_size = check_int(batch_size, "batch_size", 1)
    seed = check_int(seed, "seed", 0)
    cutout = check_int(cutout, "cutout", 0)
    channels = _check_channels(channels)
    if start_epoch is not None:
        start_epoch = check_int(start_epoch, "start_epoch", 0)
    source = sources.resolve(dataset, data_dir)
    train_part, val_part, split = _eval_parts(source, validation_split, channels)
    if train_part.size < batch_size:
        raise ValueError("dataset %r has %d training examples, fewer than one batch (batch_size=%d); use a "
                         "smaller batch_size or more data" % (source.info.name, train_part.size, batch_size))
    if val_part.size < 1:
        raise ValueError("the evaluation part of dataset %r is empty; use a larger validation_split"
                         % source.info.name)
    policy = _resolve_augment(augment, source, constants.EVAL_AUGMENT)
    mean, std = _normalization(source, channels)
    train_fn = preprocessing.make_preprocess_fn(image_size, source.variable_size, policy, mean, std, cutout)
    eval_fn = preprocessing.make_preprocess_fn(image_size, source.variable_size, "none", mean, std)
    steps = train_part.size // batch_size
    root = _root_key(seed)

    def epoch(key):
        train = train_part.ordered(_fold(key, _TAG_EVAL_ORDER))
        train = _preprocessed(train, _fold(key, _TAG_EVAL_AUG), train_fn)
        return train.batch(batch_size, drop_remainder=True)

    if start_epoch is None:
        draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
        train_ds = draws.flat_map(lambda r: epoch(_fold(root, r)))
        # flat_map hides the length; Keras warns "ran out of data" after an epoch of unknown length.
        train_ds = train_ds.apply(tf.data.experimental.assert_cardinality(steps))
    else:
        train_ds = tf.data.Dataset.range(start_epoch, _MAX_EPOCHS).flat_map(
            lambda e: epoch(_fold(root, _MAX_EPOCHS, e)))
    val_ds = _evaluation_batches(val_part, eval_fn, batch_size)
    info = EvalInfo(name=source.info.name, num_classes=source.info.num_classes,
                    input_shape=(image_size, image_size, channels), num_train=train_part.size,
                    num_val=val_part.size, steps_per_epoch=steps,
                    validation_steps=-(-val_part.size // batch_size), batch_size=batch_size,
                    validation_split=split, augment=policy, cutout=cutout, mean=mean, std=std)
    return (_with_options(train_ds.prefetch(_AUTOTUNE)), _with_options(val_ds.prefetch(_AUTOTUNE)), info)


def _evaluation_batches(part, preprocess, batch_size):
    """`part` in a fixed order, preprocessed without augmentation, batched (the last batch may be partial)."""
    zero = tf.zeros([2], tf.int64)
    batches = part.ordered(None).map(lambda image, label: preprocess(image, label, zero),
                                     num_parallel_calls=_AUTOTUNE, deterministic=True).batch(batch_size)
    return batches.apply(tf.data.experimental.assert_cardinality(-(-part.size // batch_size)))


def eval_batches(dataset, image_size, batch_size, mean, std, channels=3, data_dir=None):
    """Every training example of `dataset`, in a fixed order, preprocessed for evaluation with given statistics.

    For evaluating on other data than a training set's own evaluation part, normalised like that training
    set: pass its `EvalInfo.mean` and `EvalInfo.std` (see `eval_data`).

    Args:
        dataset: as in `search_data` (its training split is used whole).
        image_size: output side.
        batch_size: examples per batch.
        mean: per-channel normalisation mean (`channels` values).
        std: per-channel normalisation standard deviation.
        channels: 1 or 3.
        data_dir: tensorflow-datasets data directory.

    Returns:
        (batches, number of examples); the batches yield (x float32 NHWC, y int32), the last one possibly
        partial.

    Raises:
        ValueError: bad argument or unusable dataset.
    """
    image_size = check_int(image_size, "image_size", 1)
    batch_size = check_int(batch_size, "batch_size", 1)
    channels = _check_channels(channels)
    source = sources.resolve(dataset, data_dir)
    part = source.train_part(channels)
    if part.size < 1:
        raise ValueError("dataset %r is empty" % source.info.name)
    preprocess = preprocessing.make_preprocess_fn(image_size, source.variable_size, "none", tuple(mean), tuple(std))
    return _with_options(_evaluation_batches(part, preprocess, batch_size).prefetch(_AUTOTUNE)), part.size


def representative_arrays(dataset, image_size, num=100, seed=0, channels=3, data_dir=None):
    """A small deterministic sample of preprocessed training images (no augmentation).

    Normalised exactly like `eval_data`'s evaluation pipeline, for int8 TFLite calibration and latency
    tests.

    Args:
        dataset: as in `search_data`.
        image_size: output side.
        num: number of examples (fewer if the training split is smaller).
        seed: selects which examples.
        channels: 1 or 3.
        data_dir: tensorflow-datasets data directory.

    Returns:
        (x float32 [n, image_size, image_size, channels], y int32 [n]) numpy arrays.
    """
    image_size = check_int(image_size, "image_size", 1)
    num = check_int(num, "num", 1)
    seed = check_int(seed, "seed", 0)
    channels = _check_channels(channels)
    source = sources.resolve(dataset, data_dir)
    mean, std = _normalization(source, channels)
    preprocess = preprocessing.make_preprocess_fn(image_size, source.variable_size, "none", mean, std)
    part = source.train_part(channels)
    zero = tf.zeros([2], tf.int64)
    sample = part.ordered(_fold(_root_key(seed), _TAG_REPRESENTATIVE)).take(num)
    sample = sample.map(lambda image, label: preprocess(image, label, zero)).batch(num)
    x, y = next(iter(sample.as_numpy_iterator()))
    return x.astype(np.float32), y.astype(np.int32)
