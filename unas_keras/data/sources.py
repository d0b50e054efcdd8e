"""Dataset sources: turn the user's `dataset` argument into validated, splittable example streams.

A source is one of

* an in-memory array source (the embedded ``"digits"`` set and user ``(x, y)`` arrays),
* an image folder (one sub-folder per class, files decoded lazily from their paths),
* a tensorflow-datasets builder (streamed with tf.data; ImageNet never has to fit in memory).

Every source exposes *parts* (the whole training split, a train / held-out partition of it, the test
split).  A part yields ``(image, label)`` examples with the requested channel count, either in a fixed
source order or in an order that depends only on an explicit stateless key.  Nothing here downloads.
"""

import dataclasses
import math
import os
from typing import Optional, Tuple

import numpy as np
import tensorflow as tf

from unas_keras.config import datasets
from unas_keras.data import constants
from unas_keras.data import preprocessing

_AUTOTUNE = tf.data.AUTOTUNE


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What is known about a dataset without reading its images.

    Attributes:
        name: canonical name ("digits", the tfds name, "arrays", or the folder path).
        num_classes: number of classes.
        num_train_examples: size of the whole training split (before any held-out part is taken), or
            None when it is not known without reading the data (an unprepared tfds dataset).
        image_shape: (height, width, channels) of the source images; None for sizes that vary.
    """

    name: str
    num_classes: int
    num_train_examples: Optional[int]
    image_shape: Tuple[Optional[int], Optional[int], Optional[int]]


# --------------------------------------------------------------------------------------------- parts


class IndexPart:
    """Examples addressed by integer ids; shuffles are stateless permutations of the ids."""

    def __init__(self, ids, fetch):
        """Args: ids: int64 numpy array of example ids; fetch: fn(id tensor) -> (image, label)."""
        self.ids = np.asarray(ids, dtype=np.int64)
        self._fetch = fetch

    @property
    def size(self):
        return int(self.ids.shape[0])

    def ordered(self, key=None):
        """A finite dataset of (image, label) in id order (key None) or permuted by the int64 [2] key."""
        ids = tf.constant(self.ids)
        if key is not None:
            ids = tf.random.experimental.stateless_shuffle(ids, seed=key)
        return tf.data.Dataset.from_tensor_slices(ids).map(
            self._fetch, num_parallel_calls=_AUTOTUNE, deterministic=True)


class StreamPart:
    """Examples read from a tf.data stream in a fixed order; keyed shuffles are stateless block shuffles.

    A keyed order cuts the stream into blocks of `shuffle_buffer` consecutive (still encoded) examples
    and permutes each block with `stateless_shuffle` under fold_in(key, block index).  Unlike
    `Dataset.shuffle`, the result depends on the key alone (not on TensorFlow's global seed or on when
    the pipeline was built).  A block as large as the part (CIFAR) gives a uniform shuffle; ImageNet's
    tfds records are already shuffled when tfds writes them, so block-local mixing suffices there.
    """

    def __init__(self, dataset, size, decode, shuffle_buffer):
        """Args: dataset: finite tf.data.Dataset of raw (encoded image, label) pairs in a fixed order;
        size: its length; decode: fn(encoded, label) -> (image, label); shuffle_buffer: block size."""
        self._dataset = dataset
        self._size = int(size)
        self._decode = decode
        self._block = int(max(1, min(shuffle_buffer, size)))

    @property
    def size(self):
        return self._size

    def ordered(self, key=None):
        """A finite dataset of (image, label) in stream order (key None) or block-shuffled by the key."""
        dataset = self._dataset
        if key is not None:
            def shuffle_block(index, block):
                order = tf.random.experimental.stateless_shuffle(
                    tf.range(tf.shape(block[1])[0]),
                    seed=tf.random.experimental.stateless_fold_in(key, index))
                return tf.data.Dataset.from_tensor_slices(tf.nest.map_structure(
                    lambda values: tf.gather(values, order), block))

            dataset = dataset.batch(self._block).enumerate().flat_map(shuffle_block)
        return dataset.map(self._decode, num_parallel_calls=_AUTOTUNE, deterministic=True)


# ------------------------------------------------------------------------------------------ helpers


def held_out_count(total, fraction):
    """Number of examples a held-out `fraction` of `total` examples holds (rounded half up)."""
    return int(math.floor(total * fraction + 0.5))


def check_fraction(value, what):
    """Raises ValueError unless 0 < value < 1."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError("%s must be a number in (0, 1); got %r" % (what, value))
    if not 0.0 < float(value) < 1.0:
        raise ValueError("%s must be in the open interval (0, 1); got %r" % (what, value))
    return float(value)


def _stratified_order(labels):
    """A fixed order of all example indices whose every prefix/suffix has balanced class proportions.

    Examples are shuffled with constants.SPLIT_SEED, then sorted by their relative rank inside their
    class; taking the last k examples of this order gives a class-stratified held-out set.
    """
    rng = np.random.default_rng(constants.SPLIT_SEED)
    perm = rng.permutation(labels.shape[0])
    perm_labels = labels[perm]
    rank = np.empty(perm.shape[0], dtype=np.float64)
    for c in np.unique(perm_labels):
        where = np.nonzero(perm_labels == c)[0]
        rank[where] = (np.arange(where.shape[0]) + 0.5) / where.shape[0]
    return perm[np.argsort(rank, kind="stable")]


# ------------------------------------------------------------------------------------------ sources


class _IndexSource:
    """Common code of the in-memory and folder sources (examples addressable by index)."""

    has_test_split = False

    def __init__(self, info, labels, variable_size, normalization):
        self.info = info
        self.labels = labels
        self.variable_size = variable_size
        self.normalization = normalization
        self.default_key = info.name

    def _fetch_fn(self, channels):
        raise NotImplementedError

    def train_part(self, channels):
        return IndexPart(np.arange(self.labels.shape[0]), self._fetch_fn(channels))

    def split(self, fraction, channels):
        """(train part, held-out part): a fixed class-stratified partition of the training split."""
        total = self.labels.shape[0]
        n_held = held_out_count(total, fraction)
        order = _stratified_order(self.labels)
        fetch = self._fetch_fn(channels)
        return (IndexPart(np.sort(order[:total - n_held]), fetch),
                IndexPart(np.sort(order[total - n_held:]), fetch))

    def test_split_name(self):
        return None

    def test_part(self, channels):
        return None

    def sample_part(self, count, channels):
        """Up to `count` evenly spaced training examples (for normalisation statistics)."""
        total = self.labels.shape[0]
        ids = np.unique(np.linspace(0, total - 1, min(count, total)).round().astype(np.int64))
        return IndexPart(ids, self._fetch_fn(channels))


class ArraySource(_IndexSource):
    """In-memory images (uint8, or float already scaled as wanted) with integer labels."""

    def __init__(self, name, images, labels, num_classes, normalization=None):
        info = DatasetInfo(name=name, num_classes=int(num_classes), num_train_examples=int(images.shape[0]),
                           image_shape=tuple(int(d) for d in images.shape[1:]))
        super().__init__(info, labels.astype(np.int32), variable_size=False, normalization=normalization)
        self.images = images
        self._tensor_cache = None

    def _tensors(self):
        """The arrays as tensors, converted once per source (train and held-out parts share them)."""
        if self._tensor_cache is None:
            self._tensor_cache = (tf.convert_to_tensor(self.images), tf.convert_to_tensor(self.labels))
        return self._tensor_cache

    def _fetch_fn(self, channels):
        images, labels = self._tensors()

        def fetch(i):
            return preprocessing.convert_channels(tf.gather(images, i), channels), tf.gather(labels, i)

        return fetch


class FolderSource(_IndexSource):
    """A folder with one sub-folder of images per class (labels follow sorted sub-folder names)."""

    def __init__(self, path, paths, labels, class_names):
        info = DatasetInfo(name=path, num_classes=len(class_names), num_train_examples=len(paths),
                           image_shape=(None, None, None))
        super().__init__(info, labels, variable_size=True, normalization=None)
        self.paths = paths
        self.class_names = tuple(class_names)

    def _fetch_fn(self, channels):
        paths = tf.constant(self.paths)
        labels = tf.constant(self.labels)

        def fetch(i):
            data = tf.io.read_file(tf.gather(paths, i))
            image = tf.io.decode_image(data, channels=channels, expand_animations=False, dtype=tf.uint8)
            image = tf.ensure_shape(image, [None, None, channels])
            return image, tf.gather(labels, i)

        return fetch


class TfdsSource:
    """A tensorflow-datasets image-classification dataset, streamed with tf.data."""

    def __init__(self, name, builder, image_key, label_key, data_dir):
        self._builder = builder
        self._image_key = image_key
        self._label_key = label_key
        self._data_dir = data_dir
        features = builder.info.features
        shape = tuple(features[image_key].shape)
        self.variable_size = shape[0] is None or shape[1] is None
        self.normalization = constants.NORMALIZATION.get(name)
        self.default_key = name
        splits = builder.info.splits
        self._known_splits = dict((k, splits[k].num_examples) for k in splits.keys())
        self.info = DatasetInfo(name=name, num_classes=int(features[label_key].num_classes),
                                num_train_examples=self._known_splits.get("train"), image_shape=shape)
        small = (not self.variable_size) and max(shape[0], shape[1]) <= constants.SMALL_IMAGE_MAX_SIDE
        self._shuffle_buffer = (constants.SMALL_IMAGE_SHUFFLE_BUFFER if small
                                else constants.LARGE_IMAGE_SHUFFLE_BUFFER)
        if self._known_splits and "train" not in self._known_splits:
            raise ValueError("tensorflow-datasets dataset %r has no 'train' split (it has %s); unas_keras "
                             "needs one" % (name, sorted(self._known_splits)))

    @property
    def has_test_split(self):
        return self.test_split_name() is not None

    def test_split_name(self):
        """The tfds split used for evaluation ("test", else "validation"), or None."""
        if self._known_splits:
            for split in ("test", "validation"):
                if split in self._known_splits:
                    return split
            return None
        # Split metadata unknown (tfds mocking): ImageNet's labelled evaluation split is "validation".
        return "validation" if self.info.name == "imagenet2012" else "test"

    def _load(self, split):
        import tensorflow_datasets as tfds

        try:
            dataset = self._builder.as_dataset(
                split=split, shuffle_files=False, decoders={self._image_key: tfds.decode.SkipDecoding()})
        except (AssertionError, FileNotFoundError, tf.errors.NotFoundError) as error:
            raise ValueError(not_prepared_message(self.info.name, self._data_dir, error)) from None
        image_key, label_key = self._image_key, self._label_key
        return dataset.map(lambda ex: (ex[image_key], ex[label_key]))

    def _decode_fn(self, channels):
        def decode(data, label):
            image = tf.io.decode_image(data, channels=channels, expand_animations=False, dtype=tf.uint8)
            return tf.ensure_shape(image, [None, None, channels]), label

        return decode

    def _count(self, split):
        return int(self._load(split).reduce(np.int64(0), lambda count, _: count + 1))

    def _part(self, dataset, size, channels):
        return StreamPart(dataset, size, self._decode_fn(channels), self._shuffle_buffer)

    def train_size(self):
        if "train" in self._known_splits:
            return self._known_splits["train"]
        return self._count("train")

    def train_part(self, channels):
        return self._part(self._load("train"), self.train_size(), channels)

    def split(self, fraction, channels):
        """(train part, held-out part): the first and the last examples of the 'train' split."""
        total = self.train_size()
        n_train = total - held_out_count(total, fraction)
        if "train" in self._known_splits:
            return (self._part(self._load("train[:%d]" % n_train), n_train, channels),
                    self._part(self._load("train[%d:]" % n_train), total - n_train, channels))
        full = self._load("train")  # split metadata unknown (mocked data): slice the stream itself
        return (self._part(full.take(n_train), n_train, channels),
                self._part(full.skip(n_train), total - n_train, channels))

    def test_part(self, channels):
        split = self.test_split_name()
        if split is None:
            return None
        size = self._known_splits.get(split)
        if size is None:
            size = self._count(split)
        return self._part(self._load(split), size, channels)

    def sample_part(self, count, channels):
        """The first `count` training examples (tfds shuffles examples when it writes a dataset)."""
        size = min(count, self.train_size())
        return self._part(self._load("train").take(size), size, channels)


def not_prepared_message(name, data_dir, error=None):
    """The error text for a tfds dataset whose files are not on disk."""
    where = data_dir if data_dir else "the default data_dir (~/tensorflow_datasets or $TFDS_DATA_DIR)"
    message = ("tensorflow-datasets dataset %r is not prepared in %s, and unas_keras never downloads data. "
               "Prepare it first, e.g. `tfds build %s --data_dir=DIR` (ImageNet: put the official archives "
               "in DIR/downloads/manual first, see the tfds catalog), then pass data_dir=DIR "
               "(--data_dir on the command line)." % (name, where, name))
    if error is not None:
        message += " (tfds said: %s)" % (str(error).splitlines()[0] if str(error) else type(error).__name__)
    return message


# ------------------------------------------------------------------------------------- resolution


def _describe_allowed():
    return ("allowed: an embedded dataset (%s), a registered tensorflow-datasets image-classification "
            "name such as 'cifar10', 'cifar100', 'imagenet2012' (alias 'imagenet'), a folder with one "
            "sub-folder of images per class, or a tuple (x, y) / (x, y, num_classes) of numpy arrays"
            % ", ".join(repr(n) for n in constants.EMBEDDED_DATASETS))


def tf_data_arrays(dataset):
    """Reads a finite `tf.data.Dataset` of (image, label) pairs, batched or not, into (x, y) arrays.

    A search needs to split its data into a train part and a held-out part, reshuffle it every epoch
    and restart it at any step after an interruption; arrays give all three, with exactly the behaviour
    of (x, y) arrays passed directly. Data that does not fit in memory: use a tfds name or a folder.

    Raises:
        ValueError: the dataset is infinite, empty, or does not yield (image, label) pairs.
    """
    spec = dataset.element_spec
    if not (isinstance(spec, tuple) and len(spec) == 2 and all(isinstance(p, tf.TensorSpec) for p in spec)):
        raise ValueError("A tf.data.Dataset given as dataset must yield (image, label) pairs; it yields %s"
                         % (spec,))
    if dataset.cardinality() == tf.data.INFINITE_CARDINALITY:
        raise ValueError("The tf.data.Dataset given as dataset is infinite (repeat()); give one pass over it.")
    images, labels = spec
    batched = images.shape.rank == 4 or (images.shape.rank == 3 and labels.shape.rank == 1)
    xs, ys = [], []
    for x, y in dataset.as_numpy_iterator():
        xs.append(x if batched else x[None])
        ys.append(np.reshape(y, (-1,)))
    if not xs:
        raise ValueError("The tf.data.Dataset given as dataset is empty.")
    return np.concatenate(xs), np.concatenate(ys)


def _load_digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[..., None]
    mean, std = constants.NORMALIZATION[constants.DIGITS]
    return ArraySource(constants.DIGITS, images, digits.target.astype(np.int32), 10, (mean, std))


def _validate_labels(y, num_examples, num_classes=None):
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError("y must be a 1-D array of integer class ids (one per image); got shape %s"
                         % (y.shape,))
    if y.shape[0] != num_examples:
        raise ValueError("x and y must have the same length; got %d images and %d labels"
                         % (num_examples, y.shape[0]))
    if y.dtype == np.bool_ or not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise ValueError("y must hold integer class ids; got dtype %s" % y.dtype)
    if np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise ValueError("y must hold integer class ids; got non-integer values such as %r"
                             % (y[~(np.isfinite(y) & (y == np.round(y)))][0],))
    if np.any(y < 0):
        raise ValueError("labels must be in [0, num_classes); got a negative label %d" % int(y.min()))
    y = y.astype(np.int64)
    if num_classes is None:
        num_classes = int(y.max()) + 1
    elif int(y.max()) >= num_classes:
        raise ValueError("labels must be in [0, num_classes=%d); got label %d" % (num_classes, int(y.max())))
    return y.astype(np.int32), num_classes


def _array_source(dataset):
    if len(dataset) not in (2, 3):
        raise ValueError("array datasets are (x, y) or (x, y, num_classes); got a sequence of length %d"
                         % len(dataset))
    x = np.asarray(dataset[0])
    num_classes = None
    if len(dataset) == 3:
        num_classes = dataset[2]
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
            raise ValueError("num_classes must be a positive integer; got %r" % (num_classes,))
        num_classes = int(num_classes)
    if x.ndim not in (3, 4):
        raise ValueError("x must be a rank-4 NHWC array or a rank-3 NHW array of grey images; got rank %d "
                         "(shape %s)" % (x.ndim, x.shape))
    if x.shape[0] == 0:
        raise ValueError("x is empty (0 images); at least one training and one validation batch are needed")
    if x.ndim == 3:
        x = x[..., None]
    if x.shape[-1] not in (1, 3, 4):
        raise ValueError("x must have 1, 3 or 4 channels in its last axis (NHWC); got shape %s" % (x.shape,))
    if x.shape[1] < 1 or x.shape[2] < 1:
        raise ValueError("x images must be at least 1x1; got shape %s" % (x.shape,))
    if x.dtype == np.uint8:
        pass
    elif np.issubdtype(x.dtype, np.floating):
        if not np.all(np.isfinite(x)):
            raise ValueError("x contains NaN or infinite values")
        x = x.astype(np.float32)
    elif np.issubdtype(x.dtype, np.integer) and x.dtype != np.bool_:
        if x.min() < 0 or x.max() > 255:
            raise ValueError("integer x must hold pixel values in [0, 255]; got range [%d, %d]"
                             % (x.min(), x.max()))
        x = x.astype(np.uint8)
    else:
        raise ValueError("x must be uint8 (0-255) or float; got dtype %s" % x.dtype)
    y, num_classes = _validate_labels(dataset[1], x.shape[0], num_classes)
    return ArraySource("arrays", x, y, num_classes)


def _folder_source(path):
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    if not os.path.isdir(path):
        raise ValueError("image folder %r does not exist (or is not a directory); %s" % (path, _describe_allowed()))
    class_names = sorted(entry.name for entry in os.scandir(path)
                         if entry.is_dir() and not entry.name.startswith("."))
    if not class_names:
        raise ValueError("image folder %r has no class sub-folders; put the images of each class in its own "
                         "sub-folder (e.g. %s/cat/1.png, %s/dog/2.png)" % (path, path, path))
    paths, labels = [], []
    for label, class_name in enumerate(class_names):
        class_dir = os.path.join(path, class_name)
        for root, dirs, files in os.walk(class_dir):
            dirs.sort()
            for file_name in sorted(files):
                if file_name.lower().endswith(constants.IMAGE_EXTENSIONS) and not file_name.startswith("."):
                    paths.append(os.path.join(root, file_name))
                    labels.append(label)
    if not paths:
        raise ValueError("image folder %r has class sub-folders %s but no images in them (allowed "
                         "extensions: %s)" % (path, class_names, ", ".join(constants.IMAGE_EXTENSIONS)))
    return FolderSource(path, np.array(paths), np.array(labels, dtype=np.int32), class_names)


def _tfds_base_names():
    import tensorflow_datasets as tfds

    return set(tfds.list_builders(with_community_datasets=False))


def _tfds_source(name, data_dir):
    import tensorflow_datasets as tfds

    base = name.split(":")[0].split("/")[0]
    if base not in _tfds_base_names():
        raise ValueError("unknown dataset %r: not an embedded dataset, not an existing folder and not a "
                         "registered tensorflow-datasets name; %s" % (name, _describe_allowed()))
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as error:  # tfds raises several types for bad versions/configs
        raise ValueError("cannot open tensorflow-datasets dataset %r: %s" % (name, str(error).splitlines()[0]))
    features = builder.info.features
    image_key, label_key = None, None
    supervised = builder.info.supervised_keys
    if supervised and len(supervised) == 2 and all(isinstance(k, str) for k in supervised):
        image_key, label_key = supervised
    else:
        image_key, label_key = "image", "label"
    if (image_key not in features or label_key not in features
            or not isinstance(features[image_key], tfds.features.Image)
            or not isinstance(features[label_key], tfds.features.ClassLabel)):
        raise ValueError("tensorflow-datasets dataset %r is not an image-classification dataset (it needs an "
                         "Image feature and a ClassLabel label); %s" % (name, _describe_allowed()))
    if len(features[image_key].shape) != 3:
        raise ValueError("tensorflow-datasets dataset %r has images of shape %s; HWC images are needed"
                         % (name, features[image_key].shape))
    canonical = name if (":" in name or "/" in name) else base
    return TfdsSource(canonical, builder, image_key, label_key, data_dir)


def resolve(dataset, data_dir=None):
    """Turns the user's `dataset` argument into a source object (see the module docstring).

    Args:
        dataset: "digits", a tensorflow-datasets name ("cifar10", "imagenet" = "imagenet2012", ...), a
            folder path (str or os.PathLike), or a tuple (x, y) / (x, y, num_classes) of arrays.
        data_dir: tensorflow-datasets data directory (None: the tfds default).

    Raises:
        ValueError: for anything unusable, saying what was wrong and what is allowed.
    """
    if isinstance(dataset, (tuple, list)):
        return _array_source(dataset)  # checked here in detail (the classifier only names the kind)
    ref = datasets.classify(dataset, is_tfds_name=lambda name: name.split(":")[0].split("/")[0] in _tfds_base_names())
    if ref.kind == "embedded":
        return _load_digits()
    if ref.kind == "folder":
        return _folder_source(ref.name)
    return _tfds_source(ref.name, data_dir)  # raises "unknown dataset" for a name tfds does not know
