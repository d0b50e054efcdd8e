"""Tests of unas_keras.search.runner (search()), its configuration and checkpoints."""

import json
import os

import numpy as np
import pytest

from unas_keras.search import checkpoint as checkpoint_lib
from unas_keras.config import SearchConfig, classify, config_differences
from unas_keras.search.runner import SearchResult
from unas_keras.search.runner import search
from unas_keras.space import Architecture

# The smallest search there is: NB201 space, 8x8 digits, 4 channels, one cell per stage.
TINY = dict(space="nb201", dataset="digits", epochs=2, warmup_epochs=1, batch_size=8, steps_per_epoch=3,
            resolution=8, channels=4, cells_per_stage=1, seed=0, verbose=0)


# ----------------------------------------------------------------------------- configuration
def test_canonical_proxyless_imagenet_resolves_to_paper_settings():
    cfg = SearchConfig.resolve(space="proxyless", dataset="imagenet")
    assert cfg.dataset == "imagenet2012" and cfg.profile == "imagenet"
    assert (cfg.batch_size, cfg.epochs, cfg.warmup_epochs) == (192, 35, 20)
    assert cfg.resolution == 224 and cfg.soften_eps == 0.08 and cfg.sampling == "per_minibatch"
    assert cfg.temperature == 0.4 and cfg.estimator == "rebar" and cfg.objective == "gen_gap"
    assert cfg.space_options == {"width_multiplier": 1.0}
    weight_lr, weight_min, arch_lr, arch_min = cfg.scaled_learning_rates()
    assert weight_lr == pytest.approx(3e-4 * 3) and weight_min == pytest.approx(1e-4 * 3)
    assert arch_lr == pytest.approx(1e-3 * 3) and arch_min == pytest.approx(3e-4 * 3)


def test_cifar_and_digits_defaults():
    cifar = SearchConfig.resolve(space="darts", dataset="cifar10")
    assert (cifar.batch_size, cifar.epochs, cifar.warmup_epochs) == (128, 100, 15)
    assert cifar.space_options == {"ops": "unas", "init_channels": 16, "num_cells": 8, "edge_grouping": "by_source"}
    assert cifar.sampling == "per_example" and cifar.soften_eps == 0.0
    digits = SearchConfig.resolve(space="darts", dataset="digits")
    assert digits.profile == "demo" and digits.resolution == 16 and digits.image_channels == 1
    assert digits.space_options["init_channels"] == 8 and digits.space_options["num_cells"] == 3
    assert digits.weight_lr > cifar.weight_lr, "short runs use larger learning rates"
    assert (cifar.weight_lr, cifar.weight_lr_min, cifar.arch_lr, cifar.arch_lr_min) == (
        3e-4, 1e-4, 1e-3, 3e-4)
    assert SearchConfig.resolve(space="proxyless", dataset="digits").sampling == "per_minibatch"


def test_explicit_values_override_defaults():
    cfg = SearchConfig.resolve(space="darts", dataset="digits", epochs=3, warmup_epochs=0, batch_size=4,
                                    init_channels=6, ops=["skip_connect", "sep_conv_3x3"], temperature=1.0)
    assert (cfg.epochs, cfg.warmup_epochs, cfg.batch_size, cfg.temperature) == (3, 0, 4, 1.0)
    assert cfg.space_options["init_channels"] == 6
    assert cfg.space_options["ops"] == ["skip_connect", "sep_conv_3x3"]


@pytest.mark.parametrize("kwargs, match", [
    (dict(space="nasnet"), "Unknown search space"),
    (dict(objective="accuracy"), "Unknown objective"),
    (dict(estimator="magic"), "Unknown estimator"),
    (dict(epochs=2, warmup_epochs=2), "warmup_epochs"),
    (dict(epochs=0), "epochs must be an integer"),
    (dict(batch_size=2.5), "batch_size"),
    (dict(seed=-1), "seed"),
    (dict(init_chanels=8), "Unknown option"),
    (dict(ops="nope"), "op set"),
    (dict(target_latency_ms=10.0), "needs measured latencies"),
    (dict(dataset=3.5), "dataset must be"),
    (dict(dataset="./no/such/folder"), "does not exist"),
    (dict(dataset=(np.zeros((4, 8, 8)), np.zeros(5))), "labels"),
    (dict(sampling="sometimes"), "Unknown sampling"),
])
def test_bad_arguments_raise_value_error(kwargs, match, tmp_path):
    args = dict(TINY, output_dir=str(tmp_path / "out"))
    if "space" in kwargs or "ops" in kwargs or "target_latency_ms" in kwargs:
        args = dict(space="darts", dataset="digits", verbose=0, output_dir=str(tmp_path / "out"))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        search(**args)
    assert not os.path.exists(tmp_path / "out"), "a refused call must not create the output folder"


def test_missing_tfds_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="(?i)download|not found|not available|prepared|data_dir"):
        search(space="proxyless", dataset="imagenet", output_dir=str(tmp_path / "inet"), verbose=0)
    assert not os.path.exists(tmp_path / "inet" / "run.json")


def test_configs_are_valid_and_hold_the_paper_settings():
    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
    # Search configurations (configs/train_*.json are apps/train.py recipes).
    names = sorted(f for f in os.listdir(root) if f.endswith(".json") and not f.startswith("train_"))
    assert {"darts_cifar10.json", "darts_cifar100.json", "darts_imagenet.json",
            "proxyless_imagenet_latency.json", "digits_demo.json"} <= set(names)
    for name in names:
        with open(os.path.join(root, name)) as f:
            settings = {k: v for k, v in json.load(f).items() if k != "description"}
        cfg = SearchConfig.resolve(**settings)  # raises on any bad key or value
        assert cfg.space == settings["space"]
    with open(os.path.join(root, "proxyless_imagenet_latency.json")) as f:
        lat = json.load(f)
    assert lat["target_latency_ms"] == 10.0 and "TFLite" in lat["description"]
    with open(os.path.join(root, "darts_cifar10.json")) as f:
        c10 = json.load(f)
    assert (c10["batch_size"], c10["epochs"], c10["warmup_epochs"]) == (128, 100, 15)


# ----------------------------------------------------------------------------- checkpoints
def _variables(values):
    import keras

    return [keras.Variable(np.asarray(v, dtype="float32"), name=f"v{i}") for i, v in enumerate(values)]


def test_checkpointer_round_trip_and_retention(tmp_path):
    variables = _variables([np.arange(6).reshape(2, 3), [1.5]])
    ckpt = checkpoint_lib.Checkpointer(tmp_path / "ck", variables, keep=2)
    assert ckpt.latest() is None and ckpt.restore() is None
    for step in (1, 2, 3):
        variables[1].assign([float(step)])
        ckpt.save(step, {"epoch": step})
    names = sorted(os.listdir(tmp_path / "ck"))
    assert not any(n.startswith("ckpt-1.") for n in names), "older checkpoints beyond keep are deleted"
    assert any(n.startswith("ckpt-2.") for n in names) and any(n.startswith("ckpt-3.") for n in names)
    assert not any(n.startswith(".tmp") for n in names)
    variables[0].assign(np.zeros((2, 3)))
    variables[1].assign([-1.0])
    state = ckpt.restore()
    assert state == {"epoch": 3}
    np.testing.assert_array_equal(variables[0].numpy(), np.arange(6).reshape(2, 3))
    np.testing.assert_array_equal(variables[1].numpy(), [3.0])


def test_interrupted_save_leaves_previous_checkpoint_usable(tmp_path):
    variables = _variables([[1.0, 2.0]])
    ckpt = checkpoint_lib.Checkpointer(tmp_path / "ck", variables)
    ckpt.save(5, {"epoch": 1})
    # A kill in the middle of the next save: its data files exist, the pointer was not moved.
    with open(tmp_path / "ck" / "ckpt-9.index", "wb") as f:
        f.write(b"partial")
    with open(tmp_path / "ck" / "ckpt-9.data-00000-of-00001", "wb") as f:
        f.write(b"\x00" * 3)
    variables[0].assign([0.0, 0.0])
    assert ckpt.restore() == {"epoch": 1}
    np.testing.assert_array_equal(variables[0].numpy(), [1.0, 2.0])
    ckpt.save(9, {"epoch": 2})  # overwrites the leftovers
    assert checkpoint_lib.Checkpointer(tmp_path / "ck", variables).restore() == {"epoch": 2}


def test_checkpoint_of_a_different_model_is_refused(tmp_path):
    checkpoint_lib.Checkpointer(tmp_path / "ck", _variables([[1.0, 2.0]])).save(1, {})
    with pytest.raises(ValueError, match="do not match"):
        checkpoint_lib.Checkpointer(tmp_path / "ck", _variables([[1.0, 2.0, 3.0]])).restore()


def test_write_json_atomic_replaces_whole_file(tmp_path):
    path = tmp_path / "a.json"
    checkpoint_lib.write_json_atomic(path, {"x": 1})
    checkpoint_lib.write_json_atomic(path, {"x": [1, 2]})
    assert checkpoint_lib.read_json(path) == {"x": [1, 2]}
    assert os.listdir(tmp_path) == ["a.json"]
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        checkpoint_lib.read_json(tmp_path / "bad.json")


# ----------------------------------------------------------------------------- search()
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("search") / "run"
    result = search(output_dir=str(out), **TINY)
    return result


def test_search_writes_every_output_file(tiny_run):
    out = tiny_run.output_dir
    assert isinstance(tiny_run, SearchResult)
    for name in ("architecture.json", "distribution.json", "history.json", "run.json"):
        assert os.path.isfile(os.path.join(out, name)), name
    arch = Architecture.load(os.path.join(out, "architecture.json"))
    assert arch == tiny_run.architecture and arch.space == "nb201"

    distribution = checkpoint_lib.read_json(os.path.join(out, "distribution.json"))
    assert distribution["space"] == "nb201"
    probabilities = distribution["probabilities"]
    assert set(probabilities) == set(tiny_run.model.distribution.decision_names)
    for rows in probabilities.values():
        np.testing.assert_allclose(np.sum(rows, axis=-1), 1.0, atol=1e-5)
    # The architecture is the argmax of the distribution it was saved with.
    argmax = {k: [int(np.argmax(r)) for r in v] for k, v in probabilities.items()}
    assert tiny_run.model.supernet.search_space.to_architecture(argmax) == arch

    run = checkpoint_lib.read_json(os.path.join(out, "run.json"))
    assert run["status"] == "finished" and run["num_replicas"] == 1
    assert run["config"]["seed"] == 0 and run["config"]["space_options"] == {"channels": 4, "cells_per_stage": 1}
    assert set(run["versions"]) == {"unas_keras", "tensorflow", "keras"}
    assert run["data"]["steps_per_epoch"] == 3 and run["data"]["num_classes"] == 10

    assert checkpoint_lib.read_json(os.path.join(out, "checkpoints", "latest.json"))["state"]["epoch"] == 2
    assert os.listdir(os.path.join(out, "logs"))


def test_search_draws_pictures_and_probability_history(tiny_run):
    out = tiny_run.output_dir
    for name in ("architecture.png", "probabilities.png"):
        with open(os.path.join(out, name), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", name
    snapshots = checkpoint_lib.read_json(os.path.join(out, "probabilities_history.json"))
    assert len(snapshots) == len(tiny_run.history["epoch"])
    np.testing.assert_allclose(snapshots[-1]["edges"], tiny_run.probabilities["edges"], atol=1e-6)
    assert os.listdir(os.path.join(out, "logs", "architecture"))  # TensorBoard probability images


def test_search_history_has_per_epoch_metrics(tiny_run):
    history = tiny_run.history
    for key in ("epoch", "loss", "train_loss", "val_loss", "accuracy", "val_accuracy", "gen_gap", "entropy",
                "arch_loss", "weight_loss", "epoch_time_s"):
        assert key in history, key
        assert len(history[key]) == 2, key
    assert history["epoch"] == [1, 2]
    assert history["val_loss"][1] > 0.0, "the search epoch evaluates the held-out batches"
    assert history == checkpoint_lib.read_json(os.path.join(tiny_run.output_dir, "history.json"))


def test_rerun_of_finished_run(tiny_run):
    again = search(output_dir=tiny_run.output_dir, **TINY)
    assert again.model is None, "a finished run is not searched again"
    assert again.architecture == tiny_run.architecture
    assert again.history == tiny_run.history
    with pytest.raises(ValueError, match="different configuration.*epochs"):
        search(output_dir=tiny_run.output_dir, **dict(TINY, epochs=3))


def test_foreign_output_dir_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        search(output_dir=str(tmp_path), **TINY)


def test_search_on_arrays(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(96, 8, 8, 1), dtype=np.uint8)
    y = np.arange(96) % 3
    # No warm-up and one epoch: one traced function, the cheapest possible search.
    result = search(dataset=(x, y), output_dir=str(tmp_path / "arrays"),
                    **dict({k: v for k, v in TINY.items() if k not in ("dataset", "resolution")},
                           epochs=1, warmup_epochs=0))
    run = checkpoint_lib.read_json(os.path.join(result.output_dir, "run.json"))
    assert run["config"]["dataset"]["arrays"]["x_shape"] == [96, 8, 8, 1]
    assert run["config"]["resolution"] == 8 and run["data"]["num_classes"] == 3
    assert result.architecture.space == "nb201"
    # The same call with other arrays is a different configuration.
    with pytest.raises(ValueError, match="different configuration"):
        search(dataset=(x[::-1].copy(), y), output_dir=str(tmp_path / "arrays"),
               **dict({k: v for k, v in TINY.items() if k not in ("dataset", "resolution")},
                      epochs=1, warmup_epochs=0))


def test_progress_lines_show_val_metrics_only_after_warmup():
    import io

    from unas_keras.search.callbacks import ProgressLogger

    stream = io.StringIO()
    logger = ProgressLogger(epochs=2, steps_per_epoch=3, warmup_epochs=1, stream=stream)
    logs = {"loss": 1.5, "train_loss": 1.5, "val_loss": 0.0, "val_accuracy": 0.0, "gen_gap": 0.0,
            "accuracy": 0.25, "entropy": 9.0}
    logger.on_train_begin()
    for epoch in range(2):
        logger.on_epoch_begin(epoch)
        logger.on_epoch_end(epoch, dict(logs, val_loss=2.0 * epoch))
    warmup, searched = [line for line in stream.getvalue().splitlines() if line.startswith("epoch")]
    assert "[warm-up]" in warmup and "train_loss 1.5000" in warmup and "accuracy 0.2500" in warmup
    assert "val_loss" not in warmup and "val_accuracy" not in warmup and "gen_gap" not in warmup
    assert "[search]" in searched and "val_loss 2.0000" in searched and "gen_gap 0.0000" in searched


def test_search_records_cpu_op_determinism(tiny_run):
    run = checkpoint_lib.read_json(os.path.join(tiny_run.output_dir, "run.json"))
    assert run["op_determinism"] is True, "a seeded CPU search runs with op determinism"
    assert tiny_run.latency is None and "latency" not in run, "no latency model, no latency report"


def test_latency_ramp_scales_with_the_run():
    cfg = SearchConfig.resolve(space="proxyless", dataset="digits", target_latency_ms=1.0)
    assert cfg.latency_ramp_steps is None
    # 6 epochs, 1 warm-up: a third of 5 x 28 architecture steps.
    assert cfg.latency_ramp(28) == 47
    assert cfg.latency_ramp(1) == 2
    paper = SearchConfig.resolve(space="proxyless", dataset="imagenet", target_latency_ms=10.0)
    # The release's ImageNet run (15 search epochs of ~6,000 steps) gets about the release's 30,000.
    assert 29000 <= paper.latency_ramp(6005) <= 31000
    explicit = SearchConfig.resolve(space="proxyless", dataset="digits", latency_ramp_steps=0)
    assert explicit.latency_ramp(28) == 0


def test_tf_data_dataset_is_read_as_arrays():
    import tensorflow as tf

    from unas_keras.search import runner

    rng = np.random.default_rng(1)
    x = rng.integers(0, 255, size=(10, 8, 8, 1), dtype=np.uint8)
    y = np.arange(10) % 3
    for dataset in (tf.data.Dataset.from_tensor_slices((x, y)), tf.data.Dataset.from_tensor_slices((x, y)).batch(4)):
        got_x, got_y = runner._dataset_arrays(dataset)
        np.testing.assert_array_equal(got_x, x)
        np.testing.assert_array_equal(got_y, y)
    assert classify(runner._dataset_arrays(tf.data.Dataset.from_tensor_slices((x, y)))) == classify((x, y))
    with pytest.raises(ValueError, match="infinite"):
        runner._dataset_arrays(tf.data.Dataset.from_tensor_slices((x, y)).repeat())
    with pytest.raises(ValueError, match=r"\(image, label\) pairs"):
        runner._dataset_arrays(tf.data.Dataset.from_tensor_slices(x))


class _Recorder:
    """Builds a Keras callback that records the calls a search makes."""

    @staticmethod
    def make():
        import keras

        class Recorder(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.epochs, self.logs, self.batches = [], [], 0

            def on_epoch_begin(self, epoch, logs=None):
                self.epochs.append(epoch)

            def on_train_batch_end(self, batch, logs=None):
                self.batches += 1

            def on_epoch_end(self, epoch, logs=None):
                self.logs.append(dict(logs))

        return Recorder()


def test_keras_conventions_dataset_callbacks_progress_bar_and_evaluate(tmp_path, monkeypatch, capsys):
    """A tf.data.Dataset in, a user callback, Keras' progress bar, evaluate(); on a (mocked) GPU machine."""
    import tensorflow as tf

    from unas_keras.data import eval_data

    # A GPU machine: the default run must not ask for op determinism (which would fail there for an op
    # without a deterministic kernel).
    real_list = tf.config.list_physical_devices

    def list_devices(device_type=None):
        if device_type == "GPU":
            return [tf.config.PhysicalDevice(name="/physical_device:GPU:0", device_type="GPU")]
        return real_list(device_type)

    def no_determinism():
        raise RuntimeError("op determinism requested on a GPU")

    monkeypatch.setattr(tf.config, "list_physical_devices", list_devices)
    monkeypatch.setattr(tf.config.experimental, "enable_op_determinism", no_determinism)

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(96, 8, 8, 1), dtype=np.uint8)
    y = np.arange(96) % 3
    recorder = _Recorder.make()
    args = dict({k: v for k, v in TINY.items() if k not in ("dataset", "resolution", "verbose")},
                epochs=2, warmup_epochs=0)
    result = search(dataset=tf.data.Dataset.from_tensor_slices((x, y)).batch(32),
                    output_dir=str(tmp_path / "run"), callbacks=[recorder], verbose=1, **args)
    out = capsys.readouterr().out

    run = checkpoint_lib.read_json(os.path.join(result.output_dir, "run.json"))
    assert run["op_determinism"] is False
    assert run["config"]["dataset"] == classify((x, y)).description, "the dataset is read as arrays"
    assert run["data"]["num_classes"] == 3
    # The user's callback saw every epoch and batch and the search's epoch logs.
    assert recorder.epochs == [0, 1] and recorder.batches == 2 * 3
    seen = [round(logs["val_loss"], 6) for logs in recorder.logs]
    assert seen == [round(v, 6) for v in result.history["val_loss"]]
    assert {"loss", "accuracy", "entropy", "gen_gap"} <= set(recorder.logs[-1])
    # Keras' progress bar: "3/3 ... loss: ..." once per epoch (ETA while it runs).
    assert "Epoch 1/2" in out and "Epoch 2/2" in out and "3/3" in out and "val_loss:" in out

    # evaluate(): the supernet at the argmax architecture on (images, labels) batches.
    _, val_ds, _ = eval_data((x, y), image_size=8, batch_size=16, channels=1)
    metrics = result.model.evaluate(val_ds, return_dict=True, verbose=0)
    assert set(metrics) == {"loss", "accuracy"}
    images = np.concatenate([b for b, _ in val_ds.as_numpy_iterator()])
    labels = np.concatenate([b for _, b in val_ds.as_numpy_iterator()])
    logits = np.asarray(result.model(images, training=False), dtype=np.float64)
    log_probs = logits - logits.max(1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(1, keepdims=True))
    assert metrics["loss"] == pytest.approx(-log_probs[np.arange(len(labels)), labels].mean(), rel=1e-4)
    assert metrics["accuracy"] == pytest.approx(float((logits.argmax(1) == labels).mean()), abs=1e-6)
    assert result.model.evaluate(images, labels, return_dict=True, verbose=0) == pytest.approx(metrics, rel=1e-5)
    # The search's own ((x_train, y_train), (x_val, y_val)) batches: their val half is evaluated.
    from unas_keras.data import search_data

    pairs = search_data((x, y), image_size=8, batch_size=8, channels=1).dataset.take(2)
    val_images = np.concatenate([v[0] for _, v in pairs.as_numpy_iterator()])
    val_labels = np.concatenate([v[1] for _, v in pairs.as_numpy_iterator()])
    assert result.model.evaluate(pairs, return_dict=True, verbose=0) == pytest.approx(
        result.model.evaluate(val_images, val_labels, batch_size=8, return_dict=True, verbose=0), rel=1e-5)
    # Evaluating leaves the search's own metrics alone.
    search_val_loss = float(result.model.get_metrics_result()["val_loss"])
    assert search_val_loss == pytest.approx(result.history["val_loss"][-1], rel=1e-5)
    with pytest.raises(ValueError, match="callbacks"):
        search(output_dir=str(tmp_path / "bad"), callbacks=["not a callback"], **TINY)


def test_gpu_strategies_are_recognised_by_their_devices():
    import types

    import tensorflow as tf

    from unas_keras.search import runner

    def strategy(*devices):
        return types.SimpleNamespace(extended=types.SimpleNamespace(worker_devices=devices))

    assert runner._uses_gpu(strategy("/job:localhost/replica:0/task:0/device:GPU:0",
                                     "/job:localhost/replica:0/task:0/device:GPU:1"))
    assert not runner._uses_gpu(strategy("/job:localhost/replica:0/task:0/device:CPU:0"))
    # The default strategy has no device list: the machine's GPUs decide (none on this machine).
    assert runner._uses_gpu(tf.distribute.get_strategy()) == bool(tf.config.list_physical_devices("GPU"))
