"""Tests for `unas_keras.scoring` (train briefly, evaluate with Keras, profile) on a tiny NAS-Bench-201 net."""

import numpy as np
import pytest

from unas_keras import data
from unas_keras import scoring
from unas_keras import training
from unas_keras.space import presets

ARCH = presets.get("nb201_resnet")
OPTIONS = dict(channels=4, cells_per_stage=1)


@pytest.fixture(scope="module")
def digits():
    train_ds, val_ds, info = data.eval_data("digits", image_size=16, batch_size=32, channels=1, start_epoch=0)
    return train_ds, val_ds, info


def _score(digits, **kwargs):
    train_ds, val_ds, info = digits
    args = dict(num_classes=info.num_classes, input_shape=info.input_shape, steps_per_epoch=3,
                recipe=training.Recipe(epochs=2), network_options=OPTIONS, seed=1)
    args.update(kwargs)
    return scoring.score_architecture(ARCH, args.pop("train_batches", train_ds), val_ds, **args)


@pytest.fixture(scope="module")
def scored(digits):
    return _score(digits)


def test_score_trains_evaluates_with_keras_and_profiles(digits, scored):
    _, val_ds, info = digits
    score = scored
    metrics = score.metrics
    assert set(metrics) == {"val_accuracy", "val_loss", "params", "macs"}
    assert 0.0 <= metrics["val_accuracy"] <= 1.0 and metrics["val_loss"] > 0
    trainable = sum(int(np.prod(w.shape)) for w in score.model.trainable_weights)
    assert metrics["params"] == trainable and metrics["macs"] > metrics["params"]
    assert len(score.history["loss"]) == 2 and score.errors == {} and score.initial_epoch == 0
    # The reported figures are Keras' own evaluation of the returned model, and reproducible from weights.
    again = scoring.evaluate(score.model, val_ds, info.num_classes)
    assert again["val_accuracy"] == pytest.approx(metrics["val_accuracy"], abs=1e-6)
    from unas_keras.networks import build_model

    fresh = build_model(ARCH, info.num_classes, info.input_shape, **OPTIONS)
    fresh.set_weights(score.model.get_weights())
    assert not fresh.compiled
    reloaded = scoring.evaluate(fresh, val_ds, info.num_classes)
    assert reloaded["val_accuracy"] == pytest.approx(metrics["val_accuracy"], abs=1e-6)
    assert reloaded["val_loss"] == pytest.approx(metrics["val_loss"], rel=1e-5)


def test_same_seed_same_score_and_seed_matters(digits, scored):
    first, second, other = scored, _score(digits), _score(digits, seed=2)
    np.testing.assert_allclose(first.model.get_weights()[0], second.model.get_weights()[0], rtol=1e-5, atol=1e-6)
    assert second.metrics == pytest.approx(first.metrics, rel=1e-5)
    assert not np.array_equal(first.model.get_weights()[0], other.model.get_weights()[0])


def test_graph_optimization_does_not_change_the_score(digits, scored):
    full = _score(digits, graph_optimization="full")  # `scored` ran with "auto": "lean" on a CPU
    np.testing.assert_allclose(full.model.get_weights()[0], scored.model.get_weights()[0], rtol=1e-5, atol=1e-6)
    assert full.metrics == pytest.approx(scored.metrics, rel=1e-5)
    with pytest.raises(ValueError, match="graph_optimization"):
        _score(digits, graph_optimization="fast")


def test_resume_from_backup_positions_the_data_stream(tmp_path, digits):
    train_ds, _, _ = digits
    starts = []

    def batches(start_epoch):
        starts.append(start_epoch)
        return train_ds

    backup = training.TrainingBackup(tmp_path / "backup", steps_per_epoch=3)
    announced = []
    first = _score(digits, train_batches=batches, backup=backup,
                   on_start=lambda model, epoch: announced.append(epoch))
    assert (tmp_path / "backup" / "latest.weights.h5").exists() and first.initial_epoch == 0
    # A longer recipe restarts from the end of the backed-up epoch 2.
    resumed = _score(digits, train_batches=batches, backup=backup, recipe=training.Recipe(epochs=3),
                     on_start=lambda model, epoch: announced.append(epoch))
    assert starts == [0, 2] and announced == [0, 2] and resumed.initial_epoch == 2
    assert len(resumed.history["loss"]) == 1
    with pytest.raises(ValueError, match="function of the start epoch"):
        _score(digits, backup=backup, recipe=training.Recipe(epochs=3))


def test_profile_records_why_a_metric_is_missing(monkeypatch, digits):
    from unas_keras import latency

    def broken(*args, **kwargs):
        raise RuntimeError("no converter here")

    monkeypatch.setattr(latency, "measure_tflite", broken)
    score = _score(digits, recipe=training.Recipe(epochs=1), count_macs=False,
                   latency=scoring.LatencySettings(threads=1, runs=2))
    assert "latency_ms" not in score.metrics and "macs" not in score.metrics
    assert score.errors == {"latency_ms": "RuntimeError: no converter here"}


def test_recipe_from_options_and_compile():
    recipe = training.Recipe.from_options({"epochs": 4, "learning_rate": 0.1, "cutout": 16, "seed": 3})
    assert recipe == training.Recipe(epochs=4, learning_rate=0.1)
    from unas_keras.networks import build_model

    model = recipe.compile(build_model(ARCH, 10, (16, 16, 1), **OPTIONS), steps_per_epoch=5)
    assert model.compiled and model.optimizer.coupled_weight_decay == pytest.approx(3e-4)
    with pytest.raises(ValueError, match="epochs"):
        training.Recipe(epochs=0).compile(model, steps_per_epoch=5)
