"""Tests of the search objectives and learning-rate schedules."""

import keras
import numpy as np
import pytest

from unas_keras import optimizers
from unas_keras.search import objectives, schedules


def test_generalization_gap_is_per_pair_not_mean_minus_mean():
    train = np.array([1.0, 3.0], "float32")
    val = np.array([3.0, 1.0], "float32")
    per_pair = np.array(objectives.objective_per_example("gen_gap", train, val, gen_gap_lambda=0.5))
    np.testing.assert_allclose(per_pair, [2.0, 4.0])
    # |mean - mean| would be 0 here: the per-pair gap is not.
    assert per_pair.mean() == pytest.approx(3.0)
    assert per_pair.mean() != pytest.approx(train.mean() + 0.5 * abs(val.mean() - train.mean()))


def test_train_and_val_objectives():
    train = np.array([1.0, 2.0], "float32")
    val = np.array([5.0, 7.0], "float32")
    np.testing.assert_allclose(objectives.objective_per_example("train", train, None), train)
    np.testing.assert_allclose(objectives.objective_per_example("val", None, val), val)
    assert objectives.uses_train_batch("train") and not objectives.uses_val_batch("train")
    assert objectives.uses_val_batch("val") and not objectives.uses_train_batch("val")
    assert objectives.uses_train_batch("gen_gap") and objectives.uses_val_batch("gen_gap")


def test_bad_objective_and_missing_losses():
    with pytest.raises(ValueError, match="Unknown objective"):
        objectives.check_objective("accuracy")
    with pytest.raises(ValueError, match="val losses"):
        objectives.objective_per_example("gen_gap", np.ones(2, "float32"), None)


def test_cross_entropy_and_correct():
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 3.0]], "float32")
    labels = np.array([0, 1])
    ce = np.array(objectives.cross_entropy(labels, logits))
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    np.testing.assert_allclose(ce, [-log_softmax[0, 0], -log_softmax[1, 1]], rtol=1e-6)
    np.testing.assert_array_equal(np.array(objectives.correct(labels, logits)), [1.0, 0.0])


def test_per_sample_means_within_samples():
    values = np.arange(6, dtype="float32")
    np.testing.assert_allclose(objectives.per_sample(values, 6), values)
    np.testing.assert_allclose(objectives.per_sample(values, 1), [2.5])
    np.testing.assert_allclose(objectives.per_sample(values, 2), [1.0, 4.0])


def test_pair_penalty_scales_overlap():
    np.testing.assert_allclose(np.array(objectives.pair_penalty(np.array([0.0, 2.0]), 0.2)), [0.0, 0.4])


def test_latency_lambda_ramps_linearly_after_warmup():
    lam = lambda step: float(objectives.latency_lambda(step, warmup_steps=10, final_lambda=0.1,  # noqa: E731
                                                       ramp_steps=100))
    assert lam(0) == 0.0 and lam(10) == 0.0
    assert lam(60) == pytest.approx(0.05)
    assert lam(110) == pytest.approx(0.1) and lam(10_000) == pytest.approx(0.1)
    assert float(objectives.latency_lambda(0, 0, 0.3, ramp_steps=0)) == pytest.approx(0.3)


def test_latency_hinge():
    out = np.array(objectives.latency_hinge(np.array([8.0, 10.0, 13.0], "float32"), 10.0, 0.5))
    np.testing.assert_allclose(out, [0.0, 0.0, 1.5])


def test_linear_latency_on_one_hot_and_relaxed_samples():
    weights = {"a": np.array([[1.0, 2.0, 3.0]], "float32"), "b": np.array([[0.0, 10.0]], "float32")}
    one_hot = {"a": np.array([[[0, 0, 1]], [[1, 0, 0]]], "float32"),
               "b": np.array([[[0, 1]], [[1, 0]]], "float32")}
    np.testing.assert_allclose(np.array(objectives.linear_latency(5.0, weights, one_hot)), [18.0, 6.0])
    relaxed = {"a": np.array([[[0.5, 0.5, 0.0]]], "float32"), "b": np.array([[[0.5, 0.5]]], "float32")}
    np.testing.assert_allclose(np.array(objectives.linear_latency(0.0, weights, relaxed)), [6.5])
    with pytest.raises(ValueError, match="lack the decision"):
        objectives.linear_latency(0.0, weights, {"a": one_hot["a"]})


# ---------------------------------------------------------------- schedules
def test_search_optimizer_schedules_go_from_initial_to_final():
    from unas_keras.config import SearchConfig

    # cifar10: the paper's rates; batch 128 scales them by 2. 4 epochs of 25 steps, 2 of them warm-up.
    cfg = SearchConfig.resolve(space="nb201", dataset="cifar10", epochs=4, warmup_epochs=2)
    weight_opt, arch_opt = schedules.search_optimizers(cfg, steps_per_epoch=25)
    weight, arch = weight_opt._learning_rate, arch_opt._learning_rate  # the schedules
    assert float(weight(0)) == pytest.approx(6e-4)
    assert float(weight(100)) == pytest.approx(2e-4)
    assert float(weight(50)) == pytest.approx(4e-4, rel=1e-3)
    assert float(arch(0)) == pytest.approx(2e-3)
    assert float(arch(50)) == pytest.approx(6e-4), "the logits' schedule spans the architecture steps"
    # Serialisable like any Keras schedule.
    config = keras.optimizers.schedules.serialize(weight)
    again = keras.optimizers.schedules.deserialize(config)
    assert float(again(100)) == pytest.approx(2e-4)


def test_cosine_schedule_rejects_bad_values():
    with pytest.raises(ValueError, match="decay_steps"):
        schedules.cosine_schedule(1e-3, 1e-4, 0)
    with pytest.raises(ValueError, match="must not exceed"):
        schedules.cosine_schedule(1e-4, 1e-3, 10)
    with pytest.raises(ValueError, match="initial_learning_rate"):
        schedules.cosine_schedule(-1.0, 0.0, 10)


def test_search_optimizers():
    from unas_keras.config import SearchConfig

    cfg = SearchConfig.resolve(space="nb201", dataset="cifar10", epochs=5, warmup_epochs=1, batch_size=64)
    weight_opt, arch_opt = schedules.search_optimizers(cfg, steps_per_epoch=20)
    assert isinstance(weight_opt, optimizers.Adam) and isinstance(arch_opt, optimizers.Adam)
    assert weight_opt.coupled_weight_decay == pytest.approx(3e-4)  # coupled L2, as the release's Adam
    assert weight_opt.weight_decay is None  # Keras' decoupled decay stays off
    assert float(arch_opt.learning_rate) == pytest.approx(1e-3)
    assert arch_opt.learning_rate is not weight_opt.learning_rate
    assert float(weight_opt._learning_rate(100)) == pytest.approx(1e-4)
    assert float(arch_opt._learning_rate(80)) == pytest.approx(3e-4)