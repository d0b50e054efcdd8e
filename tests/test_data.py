"""Tests for unas_keras.data: pairs, determinism/resume, held-out disjointness, sources, errors."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from unas_keras import data


def _take(dataset, count):
    return [tf.nest.map_structure(lambda t: t.numpy(), element) for element in dataset.take(count)]


def _id_arrays(num, size=4, num_classes=4):
    """uint8 images whose every pixel equals the example id; labels id % num_classes."""
    ids = np.arange(num)
    x = np.broadcast_to(ids[:, None, None, None], (num, size, size, 3)).astype(np.uint8)
    return x, (ids % num_classes).astype(np.int64)


def _decode_ids(x, mean, std):
    """Recovers example ids from normalised id-images built by _id_arrays."""
    pixels = x * np.asarray(std) + np.asarray(mean)
    values = np.round(pixels * 255.0).astype(np.int64)
    assert np.all(values == values[:, :1, :1, :1]), "id images must stay constant"
    return values[:, 0, 0, 0]


# ------------------------------------------------------------------------------------------ digits


def test_digits_info_and_pair_structure():
    info = data.dataset_info("digits")
    assert info == data.DatasetInfo("digits", 10, 1797, (8, 8, 1))
    sd = data.search_data("digits", image_size=16, batch_size=8)
    # 0.5 held out by default: 1797 -> 898 search-train + 899 held-out.
    assert (sd.num_train, sd.num_val) == (898, 899)
    assert sd.steps_per_epoch == 898 // 8
    assert sd.num_classes == 10 and sd.input_shape == (16, 16, 3) and sd.augment == "none"
    (xt, yt), (xv, yv) = _take(sd.dataset, 1)[0]
    for x, y in ((xt, yt), (xv, yv)):
        assert x.shape == (8, 16, 16, 3) and x.dtype == np.float32
        assert y.shape == (8,) and y.dtype == np.int32
        assert np.all((y >= 0) & (y < 10))
        assert np.all(np.isfinite(x))
        # grey replicated to RGB
        np.testing.assert_array_equal(x[..., 0], x[..., 1])
        # normalised from [0, 1]: the range maps to [-mean/std, (1-mean)/std]
        lo = (0.0 - sd.mean[0]) / sd.std[0]
        hi = (1.0 - sd.mean[0]) / sd.std[0]
        assert x.min() >= lo - 1e-5 and x.max() <= hi + 1e-5
    # normalisation roughly centres the data
    batch = np.concatenate([p[0][0] for p in _take(sd.dataset, 20)])
    assert abs(batch.mean()) < 0.3 and 0.6 < batch.std() < 1.4


def test_digits_one_channel():
    sd = data.search_data("digits", image_size=8, batch_size=4, channels=1)
    (xt, _), _ = _take(sd.dataset, 1)[0]
    assert xt.shape == (4, 8, 8, 1) and sd.input_shape == (8, 8, 1)


def test_determinism_and_resume_property():
    kwargs = dict(image_size=12, batch_size=16, seed=3, augment=True)
    sd0 = data.search_data("digits", **kwargs)
    steps = sd0.steps_per_epoch
    assert sd0.augment == "crop_flip"
    run = _take(sd0.dataset, 2 * steps)
    again = _take(data.search_data("digits", **kwargs).dataset, 3)
    for a, b in zip(run[:3], again):
        tf.nest.map_structure(np.testing.assert_array_equal, a, b)
    resumed = _take(data.search_data("digits", start_epoch=1, **kwargs).dataset, steps)
    assert len(resumed) == steps
    for a, b in zip(run[steps:], resumed):
        tf.nest.map_structure(np.testing.assert_array_equal, a, b)
    # epoch 1 is not a replay of epoch 0, and another seed gives another stream
    assert not np.array_equal(run[0][0][1], run[steps][0][1])
    other = _take(data.search_data("digits", **dict(kwargs, seed=4)).dataset, 1)[0]
    assert not np.array_equal(other[0][0], run[0][0][0])


# ------------------------------------------------------------------------------------------ arrays


def test_held_out_part_is_disjoint_and_covered():
    x, y = _id_arrays(64)
    sd = data.search_data((x, y), image_size=4, batch_size=4, val_fraction=0.25, seed=1)
    assert (sd.num_train, sd.num_val, sd.steps_per_epoch) == (48, 16, 12)
    train_ids, val_ids, val_epoch0 = [], [], []
    for epoch in range(2):
        pairs = _take(sd.dataset.skip(epoch * sd.steps_per_epoch), sd.steps_per_epoch)
        ids_t = np.concatenate([_decode_ids(p[0][0], sd.mean, sd.std) for p in pairs])
        ids_v = np.concatenate([_decode_ids(p[1][0], sd.mean, sd.std) for p in pairs])
        labels_t = np.concatenate([p[0][1] for p in pairs])
        np.testing.assert_array_equal(labels_t, ids_t % 4)  # labels travel with their images
        # every search-train example exactly once per epoch
        assert sorted(ids_t) == sorted(set(ids_t)) and len(ids_t) == 48
        # val stream: the 16 held-out examples repeated 3 times, reshuffled per pass
        assert len(ids_v) == 48 and len(set(ids_v)) == 16
        assert all(np.sum(ids_v == i) == 3 for i in set(ids_v))
        train_ids.append(set(ids_t))
        val_ids.append(set(ids_v))
        if epoch == 0:
            val_epoch0 = ids_v
        else:
            assert not np.array_equal(val_epoch0, ids_v)
    assert train_ids[0] == train_ids[1] and val_ids[0] == val_ids[1]
    assert not train_ids[0] & val_ids[0]
    assert train_ids[0] | val_ids[0] == set(range(64))
    # class-stratified held-out part: 4 of each of the 4 classes
    assert sorted(np.bincount(np.array(sorted(val_ids[0])) % 4)) == [4, 4, 4, 4]


def test_arrays_grey_float_and_num_classes():
    rng = np.random.default_rng(0)
    x = rng.random((40, 6, 6)).astype(np.float32)  # NHW grey floats
    y = rng.integers(0, 3, 40)
    info = data.dataset_info((x, y, 5))
    assert info == data.DatasetInfo("arrays", 5, 40, (6, 6, 1))
    sd = data.search_data((x, y, 5), image_size=8, batch_size=4)
    assert sd.num_classes == 5 and (sd.num_train, sd.num_val) == (20, 20)
    (xt, yt), (xv, _) = _take(sd.dataset, 1)[0]
    assert xt.shape == (4, 8, 8, 3) and xv.shape == (4, 8, 8, 3)
    assert set(yt) <= set(range(3))
    # statistics estimated from the data: roughly standardised output
    batch = np.concatenate([p[0][0] for p in _take(sd.dataset, 5)])
    assert abs(batch.mean()) < 0.5 and 0.5 < batch.std() < 1.5
    # float labels with integral values are accepted
    assert data.dataset_info((x, y.astype(np.float64))).num_classes == int(y.max()) + 1


def test_augment_on_off():
    x, y = _id_arrays(32)
    x = x.copy()
    x[:, :, :2] = 0  # left/right asymmetric so a flip is visible
    off = data.search_data((x, y), image_size=4, batch_size=16, augment=False)
    on = data.search_data((x, y), image_size=4, batch_size=16, augment=True)
    assert (off.augment, on.augment) == ("none", "crop_flip")
    a, b = _take(off.dataset, 1)[0], _take(on.dataset, 1)[0]
    np.testing.assert_array_equal(a[0][1], b[0][1])  # same order: augmentation only changes pixels
    assert not np.array_equal(a[0][0], b[0][0])
    # without augmentation every image keeps its left columns dark
    assert np.all(a[0][0][:, :, :2] == a[0][0][:, :1, :1])
    with pytest.raises(ValueError, match="augment must be"):
        data.search_data((x, y), augment="sometimes")


# ------------------------------------------------------------------------------------------ folders


def _write_folder(root):
    colours = {"cat": (255, 0, 0), "dog": (0, 255, 0), "emu": (0, 0, 255)}
    for label, (name, colour) in enumerate(sorted(colours.items())):
        (root / name).mkdir()
        for i in range(4):
            size = (10 + 3 * i, 8 + i)
            image = Image.new("RGB", size, colour)
            if i == 3:
                image = image.convert("L")  # a grey file among RGB ones
            image.save(root / name / ("%d.png" % i))
    (root / "dog" / "notes.txt").write_text("not an image")
    return colours


def test_folder_source(tmp_path):
    _write_folder(tmp_path)
    info = data.dataset_info(str(tmp_path))
    assert info.num_classes == 3 and info.num_train_examples == 12
    sd = data.search_data(tmp_path, image_size=8, batch_size=2)
    assert (sd.num_train, sd.num_val) == (6, 6)
    (xt, yt), (xv, yv) = _take(sd.dataset, 1)[0]
    assert xt.shape == (2, 8, 8, 3) and xt.dtype == np.float32 and yt.dtype == np.int32
    assert set(yt) | set(yv) <= {0, 1, 2}
    x, y = data.representative_arrays(str(tmp_path), 8, num=12, seed=0)
    assert x.shape == (12, 8, 8, 3) and sorted(y) == [0] * 4 + [1] * 4 + [2] * 4
    # labels follow sorted sub-folder names: cat (red) 0, dog (green) 1, emu (blue) 2
    raw = x * np.asarray(sd.std) + np.asarray(sd.mean)
    for image, label in zip(raw, y):
        colour = image.mean(axis=(0, 1))
        if colour.std() > 0.1:  # the grey files have equal channels
            assert int(np.argmax(colour)) == label
    train_ds, val_ds, einfo = data.eval_data(str(tmp_path), 8, 2)
    assert einfo.validation_split == 0.2 and einfo.num_train + einfo.num_val == 12
    assert sum(int(b[1].shape[0]) for b in val_ds) == einfo.num_val


# ------------------------------------------------------------------------------------------ tfds


def test_tfds_mock_cifar10_and_imagenet():
    with tfds.testing.mock_data(num_examples=40):
        info = data.dataset_info("cifar10")
        assert info.num_classes == 10 and info.image_shape == (32, 32, 3) and info.num_train_examples == 40
        sd = data.search_data("cifar10", image_size=32, batch_size=4, seed=2)
        assert (sd.num_train, sd.num_val) == (36, 4)  # 10% held out
        assert sd.augment == "crop_flip" and sd.mean == (0.4914, 0.4822, 0.4465)
        steps = sd.steps_per_epoch
        run = _take(sd.dataset, steps + 2)
        resumed = _take(data.search_data("cifar10", image_size=32, batch_size=4, seed=2,
                                         start_epoch=1).dataset, 2)
        for a, b in zip(run[steps:], resumed):
            tf.nest.map_structure(np.testing.assert_array_equal, a, b)
        (xt, yt), (xv, yv) = run[0]
        assert xt.shape == (4, 32, 32, 3) and xv.shape == (4, 32, 32, 3) and yt.dtype == np.int32
        plain = _take(data.search_data("cifar10", batch_size=4, seed=2, augment=False).dataset, 1)[0]
        np.testing.assert_array_equal(plain[0][1], yt)
        assert not np.array_equal(plain[0][0], xt)
        # tfds streams are shuffled statelessly: TensorFlow's global seed does not change them
        try:
            tf.random.set_seed(123)
            other_global = _take(data.search_data("cifar10", batch_size=4, seed=2).dataset, 1)[0]
        finally:
            tf.random.set_seed(None)
        tf.nest.map_structure(np.testing.assert_array_equal, other_global, run[0])
        _, _, einfo = data.eval_data("cifar10", 32, 8, cutout=16)
        assert einfo.validation_split == "test" and einfo.augment == "crop_flip"

        sd = data.search_data("imagenet", image_size=16, batch_size=2)
        assert sd.name == "imagenet2012" and sd.num_classes == 1000 and sd.augment == "none"
        (xt, yt), _ = _take(sd.dataset, 1)[0]
        assert xt.shape == (2, 16, 16, 3) and np.all((yt >= 0) & (yt < 1000))
        train_ds, val_ds, einfo = data.eval_data("imagenet2012", 16, 4)
        assert einfo.validation_split == "validation" and einfo.augment == "resized_crop_flip"
        xb, yb = next(iter(train_ds))
        assert xb.shape == (4, 16, 16, 3)


def test_bare_names_are_tfds_names_and_paths_are_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cifar10").mkdir()
    with tfds.testing.mock_data(num_examples=8):
        assert data.dataset_info("cifar10").image_shape == (32, 32, 3)
    with pytest.raises(ValueError, match="no class sub-folders"):
        data.dataset_info("./cifar10")
    (tmp_path / "mine" / "a").mkdir(parents=True)
    Image.new("RGB", (5, 5)).save(tmp_path / "mine" / "a" / "x.png")
    assert data.dataset_info("mine").num_classes == 1


class UnasTestTinyImages(tfds.core.GeneratorBasedBuilder):
    """A tiny prepared tfds dataset whose pixels encode the example id (exercises split slicing)."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(4, 4, 3)),
                "label": tfds.features.ClassLabel(num_classes=4)}),
            supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(0, 40), "test": self._generate_examples(100, 12)}

    def _generate_examples(self, start, count):
        for i in range(start, start + count):
            yield i, {"image": np.full((4, 4, 3), i, np.uint8), "label": i % 4}


def test_tfds_prepared_split_slicing(tmp_path):
    builder = UnasTestTinyImages(data_dir=str(tmp_path))
    builder.download_and_prepare()
    info = data.dataset_info("unas_test_tiny_images", data_dir=str(tmp_path))
    assert info == data.DatasetInfo("unas_test_tiny_images", 4, 40, (4, 4, 3))
    sd = data.search_data("unas_test_tiny_images", image_size=4, batch_size=4, val_fraction=0.25,
                          data_dir=str(tmp_path))
    assert (sd.num_train, sd.num_val) == (30, 10)
    pairs = _take(sd.dataset, sd.steps_per_epoch)
    ids_t = np.concatenate([_decode_ids(p[0][0], sd.mean, sd.std) for p in pairs])
    ids_v = np.concatenate([_decode_ids(p[1][0], sd.mean, sd.std) for p in pairs])
    assert len(set(ids_t)) == len(ids_t) == 28
    assert not set(ids_t) & set(ids_v)
    # held-out part = one tfds slice of 'train', all 10 seen (28 val draws = 2 passes + 8)
    assert len(set(ids_v)) == 10 and set(ids_t) | set(ids_v) <= set(range(40))
    train_ds, val_ds, einfo = data.eval_data("unas_test_tiny_images", 4, 5, data_dir=str(tmp_path))
    assert (einfo.num_train, einfo.num_val, einfo.validation_split) == (40, 12, "test")
    val_ids = np.concatenate([_decode_ids(x.numpy(), einfo.mean, einfo.std) for x, _ in val_ds])
    assert sorted(val_ids) == list(range(100, 112))


def test_tfds_not_prepared_and_unregistered(tmp_path):
    with pytest.raises(ValueError, match="not prepared.*tfds build cifar10"):
        data.search_data("cifar10", data_dir=str(tmp_path))
    # metadata needs no files
    assert data.dataset_info("cifar10", data_dir=str(tmp_path)).num_classes == 10
    with pytest.raises(ValueError, match="unknown dataset 'no_such_dataset_xyz'.*'digits'.*tensorflow-datasets"):
        data.dataset_info("no_such_dataset_xyz")


# ------------------------------------------------------------------------------------------ eval


def test_eval_data_digits():
    train_ds, val_ds, info = data.eval_data("digits", 8, 32, seed=1, cutout=4)
    assert info.validation_split == 0.2 and (info.num_train, info.num_val) == (1438, 359)
    assert info.steps_per_epoch == 1438 // 32 and info.validation_steps == 12
    first = [y.numpy() for _, y in train_ds]
    second = [y.numpy() for _, y in train_ds]
    assert len(first) == info.steps_per_epoch
    # Known lengths: Keras fit / evaluate need them to not warn "ran out of data" after the first epoch.
    assert int(train_ds.cardinality()) == info.steps_per_epoch
    assert int(val_ds.cardinality()) == info.validation_steps
    assert not np.array_equal(np.concatenate(first), np.concatenate(second))  # reshuffled per iteration
    dropped = info.num_train - 32 * info.steps_per_epoch  # the partial last batch
    counts = [np.bincount(np.concatenate(run), minlength=10) for run in (first, second)]
    assert np.abs(counts[0] - counts[1]).sum() <= 2 * dropped
    # fixed evaluation order, no augmentation
    v1 = np.concatenate([x.numpy() for x, _ in val_ds])
    v2 = np.concatenate([x.numpy() for x, _ in val_ds])
    assert v1.shape == (359, 8, 8, 3)
    np.testing.assert_array_equal(v1, v2)
    # cutout zeroes at least a clipped 4x4 square (>= 2x2 at a corner) in every training image
    x, _ = next(iter(train_ds))
    zeros = np.sum(np.all(x.numpy() == 0.0, axis=-1), axis=(1, 2))
    assert np.all(zeros >= 4)
    # a resumable infinite form: epoch e depends only on (seed, e)
    a, _, _ = data.eval_data("digits", 8, 32, seed=1, start_epoch=0)
    b, _, _ = data.eval_data("digits", 8, 32, seed=1, start_epoch=1)
    ya = [y for _, y in _take(a, info.steps_per_epoch + 2)]
    yb = [y for _, y in _take(b, 2)]
    np.testing.assert_array_equal(ya[info.steps_per_epoch:], yb)
    with pytest.raises(ValueError, match="no test split"):
        data.eval_data("digits", 8, 32, validation_split="test")


def test_representative_arrays():
    x, y = data.representative_arrays("digits", 16, num=10, seed=0)
    assert x.shape == (10, 16, 16, 3) and x.dtype == np.float32 and y.dtype == np.int32
    x2, y2 = data.representative_arrays("digits", 16, num=10, seed=0)
    np.testing.assert_array_equal(x, x2)
    x3, _ = data.representative_arrays("digits", 16, num=10, seed=1)
    assert not np.array_equal(x, x3)
    xs, _ = data.representative_arrays(_id_arrays(6), 4, num=100)
    assert xs.shape[0] == 6  # fewer when the dataset is smaller


# ------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize("dataset, message", [
    ("mnistt_typo", "unknown dataset 'mnistt_typo'"),
    ((np.zeros((4, 8, 8, 3), np.uint8), np.zeros(5, np.int64)), "same length; got 4 images and 5 labels"),
    ((np.zeros((4, 8), np.uint8), np.zeros(4, np.int64)), "rank-4 NHWC.*got rank 2"),
    ((np.zeros((4, 8, 8, 2), np.uint8), np.zeros(4, np.int64)), "1, 3 or 4 channels"),
    ((np.zeros((4, 8, 8), np.uint8), np.array([0, 1, -1, 0])), "negative label -1"),
    ((np.zeros((4, 8, 8), np.uint8), np.array([0, 1, 2, 3]), 3), r"\[0, num_classes=3\); got label 3"),
    ((np.zeros((4, 8, 8), np.uint8), np.array([0, 0.5, 1, 0])), "non-integer"),
    ((np.zeros((4, 8, 8), np.uint8), np.array(["a", "b", "c", "d"])), "integer class ids"),
    ((np.zeros((0, 8, 8), np.uint8), np.zeros(0, np.int64)), "empty"),
    ((np.full((4, 8, 8), np.nan, np.float32), np.zeros(4, np.int64)), "NaN"),
    (("x",), r"\(x, y\) or \(x, y, num_classes\)"),
    ("/no/such/folder/anywhere", "does not exist"),
    (3.5, "dataset must be a name"),
])
def test_bad_datasets(dataset, message):
    with pytest.raises(ValueError, match=message):
        data.search_data(dataset, batch_size=1)


def test_folder_errors(tmp_path):
    (tmp_path / "loose.png").write_bytes(b"")
    with pytest.raises(ValueError, match="no class sub-folders"):
        data.search_data(str(tmp_path))
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(ValueError, match="no images"):
        data.dataset_info(str(tmp_path))


def test_too_small_says_how_many_are_needed():
    x, y = _id_arrays(6)
    with pytest.raises(ValueError, match="3 search-train and 3 held-out.*need 4 examples each; use at least 8 "):
        data.search_data((x, y), batch_size=4)
    x, y = _id_arrays(10)
    # 10% held out: round(0.1 * N) >= 4 first holds at N = 35
    with pytest.raises(ValueError, match="use at least 35 examples"):
        data.search_data((x, y), batch_size=4, val_fraction=0.1)
    with pytest.raises(ValueError, match="fewer than one batch"):
        data.eval_data((x, y), 4, 16)


@pytest.mark.parametrize("kwargs, message", [
    (dict(val_fraction=0.0), r"val_fraction must be in the open interval \(0, 1\); got 0.0"),
    (dict(val_fraction=1.0), "open interval"),
    (dict(val_fraction=-0.2), "open interval"),
    (dict(val_fraction="half"), "must be a number"),
    (dict(batch_size=0), "batch_size must be an integer >= 1, got 0"),
    (dict(batch_size=2.5), "batch_size must be an integer"),
    (dict(image_size=0), "image_size must be an integer >= 1"),
    (dict(channels=2), "channels must be 1 .* or 3"),
    (dict(start_epoch=-1), "start_epoch must be an integer >= 0"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        data.search_data("digits", **kwargs)


def test_bad_eval_arguments():
    with pytest.raises(ValueError, match="validation_split must be 'test' or a fraction"):
        data.eval_data("digits", 8, 4, validation_split="train")
    with pytest.raises(ValueError, match="validation_split must be in the open interval"):
        data.eval_data("digits", 8, 4, validation_split=1.5)
    with pytest.raises(ValueError, match="cutout must be an integer >= 0"):
        data.eval_data("digits", 8, 4, cutout=-1)
