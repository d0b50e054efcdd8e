"""Tests of `SearchModel`: one UNAS iteration, warm-up, estimators, objectives, distribution."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from unas_keras.networks.supernet import Supernet
from unas_keras.search import SearchModel
from unas_keras.search import objectives as objectives_lib
from unas_keras.search.distributed import mirrored_strategy

ALL_METRICS = {"loss", "train_loss", "val_loss", "accuracy", "val_accuracy", "gen_gap", "entropy",
               "arch_loss", "weight_loss"}


# ---------------------------------------------------------------- a tiny fake supernet
class _FakeSpace:
    """Two decisions: "first" (2 rows x 3 choices) and "second" (1 row x 2 choices)."""

    name = "fake"

    def decisions(self):
        return {"first": (2, 3), "second": (1, 2)}

    def to_architecture(self, choices, name=None):
        return {key: [int(c) for c in value] for key, value in choices.items()}


class FakeSupernet(Supernet):
    """Three mixed layers (one per decision row) with non-affine BN, like a supernet."""

    def __init__(self, num_classes=3, channels=4, image_shape=(8, 8, 3), **kwargs):
        super().__init__(_FakeSpace(), num_classes, image_shape, name="fake_supernet", **kwargs)
        self.stem = keras.layers.Conv2D(channels, 3, padding="same", use_bias=False, name="stem")
        self.candidates = []
        self.norms = []
        for row, num in enumerate((3, 3, 2)):
            cands, norms = [], []
            for k in range(num):
                size = 1 + 2 * (k % 2)
                cands.append(keras.layers.Conv2D(channels, size, padding="same", use_bias=False,
                                                 name=f"row{row}_op{k}"))
                norms.append(keras.layers.BatchNormalization(center=False, scale=False,
                                                             name=f"row{row}_bn{k}"))
            self.candidates.append(cands)
            self.norms.append(norms)
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.head = keras.layers.Dense(num_classes, name="head")
        weights = self.mix_weights({"first": np.ones((1, 2, 3), "float32"),
                                    "second": np.ones((1, 1, 2), "float32")})
        self((np.zeros((2,) + tuple(image_shape), "float32"), weights))

    def mix_weights(self, samples):
        first, second = samples["first"], samples["second"]
        return [first[:, 0], first[:, 1], second[:, 0]]

    def call(self, inputs, training=None, one_hot=False):
        images, weights = inputs
        x = self.stem(images)
        for cands, norms, w in zip(self.candidates, self.norms, weights):
            total = None
            for k, (layer, norm) in enumerate(zip(cands, norms)):
                term = ops.reshape(w[:, k], (-1, 1, 1, 1)) * norm(ops.relu(layer(x)), training=training)
                total = term if total is None else total + term
            x = x + total
        return self.head(self.pool(x))


def _batches(batch=4, shape=(8, 8, 3), classes=3, seed=0):
    rng = np.random.default_rng(seed)

    def pair():
        return (rng.normal(size=(batch,) + shape).astype("float32"),
                rng.integers(0, classes, batch).astype("int32"))

    return pair(), pair()


def _dataset(batch=4, shape=(8, 8, 3), classes=3):
    (xt, yt), (xv, yv) = _batches(batch, shape, classes)
    return tf.data.Dataset.from_tensors(((xt, yt), (xv, yv))).repeat()


def _model(supernet=None, **kwargs):
    keras.utils.set_random_seed(1)
    model = SearchModel(supernet or FakeSupernet(), **kwargs)
    model.compile(weight_optimizer=keras.optimizers.Adam(1e-2),
                  arch_optimizer=keras.optimizers.Adam(5e-2))
    return model


def _logits(model):
    return {k: np.array(v) for k, v in
            zip(model.distribution.decision_names, model.distribution.trainable_variables)}


def _allclose_list(a, b, **kw):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        if x is None or y is None:
            assert x is None and y is None
        else:
            np.testing.assert_allclose(np.array(x), np.array(y), **kw)


# ---------------------------------------------------------------- fit, metrics, warm-up
def test_fit_logs_every_metric_and_freezes_logits_during_warmup():
    model = _model(warmup_steps=2)
    snapshots = []
    record = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: snapshots.append(_logits(model)))
    history = model.fit(_dataset(), epochs=2, steps_per_epoch=2, verbose=0, callbacks=[record])
    assert set(history.history) == ALL_METRICS
    for name, values in history.history.items():
        assert all(math.isfinite(v) for v in values), name
    # Epoch 1 is warm-up: no architecture step, so no architecture metrics.
    assert history.history["arch_loss"][0] == 0.0
    assert history.history["val_loss"][1] > 0.0
    assert int(model.search_step.numpy()) == 4
    zeros = {k: np.zeros_like(v) for k, v in snapshots[0].items()}
    for snap in snapshots[:2]:
        for k in zeros:
            np.testing.assert_array_equal(snap[k], zeros[k])
    assert any(not np.allclose(snapshots[2][k], 0.0) for k in zeros)
    assert any(not np.allclose(snapshots[3][k], snapshots[2][k]) for k in zeros)
    # Uniform distribution entropy during warm-up: 2 log 3 + log 2.
    assert history.history["entropy"][0] == pytest.approx(2 * math.log(3) + math.log(2), rel=1e-5)


def test_weights_train_during_warmup():
    model = _model(warmup_steps=5)
    before = [np.array(v) for v in model.supernet.trainable_variables]
    model.fit(_dataset(), epochs=1, steps_per_epoch=2, verbose=0)
    after = [np.array(v) for v in model.supernet.trainable_variables]
    assert any(not np.allclose(a, b) for a, b in zip(before, after))


# ---------------------------------------------------------------- the shared forward is exact
def _naive_gradients(model, data, step):
    """The two-forward reference: arch step, then a fresh weight forward with stop_grad(zeta)."""
    (xt, yt), (xv, yv) = tf.nest.map_structure(tf.convert_to_tensor, data)
    est = model.estimator
    arch_vars = model.distribution.trainable_variables
    weight_vars = model.supernet.trainable_variables
    net = model.supernet
    with tf.GradientTape() as tape:
        sample = model.sample_architectures(xt.shape[0], step=step)
        hard_w = net.mix_weights(sample.hard)
        hard_t = objectives_lib.cross_entropy(yt, net((xt, hard_w), training=True))
        hard_v = objectives_lib.cross_entropy(yv, net((xv, hard_w), training=True))
        rel_w = net.mix_weights(sample.relaxed)
        rel_t = objectives_lib.cross_entropy(yt, net((xt, rel_w), training=True))
        rel_v = objectives_lib.cross_entropy(yv, net((xv, rel_w), training=True))
        hard = tf.stop_gradient(objectives_lib.generalization_gap(hard_t, hard_v, 0.5)
                                + model.pair_penalty * model.distribution.pair_overlap(sample.hard))
        relaxed = (objectives_lib.generalization_gap(rel_t, rel_v, 0.5)
                   + model.pair_penalty * model.distribution.pair_overlap(sample.relaxed))
        surrogate = est.surrogate_from_losses(sample.log_prob, hard, relaxed)
    arch_grads = tape.gradient(surrogate, arch_vars)
    detached = {k: tf.stop_gradient(v) for k, v in sample.relaxed.items()}
    with tf.GradientTape() as tape:
        weight_loss = ops.mean(objectives_lib.cross_entropy(yt, net((xt, net.mix_weights(detached)),
                                                                    training=True)))
    weight_grads = tape.gradient(weight_loss, weight_vars)
    return arch_grads, weight_grads, surrogate, weight_loss


@pytest.mark.parametrize("recompute_val_pass", [False, True])
def test_shared_forward_gives_the_naive_gradients(recompute_val_pass):
    model = _model(recompute_val_pass=recompute_val_pass)
    data = _batches()
    step = tf.constant(3, tf.int64)
    arch, weights, info = model.search_gradients(data, step=step)
    ref_arch, ref_weights, ref_surrogate, ref_weight_loss = _naive_gradients(model, data, step)
    assert set(info["passes"]) == {"hard_val", "hard_train", "relaxed_train", "relaxed_val"}
    assert info["weight_key"] == "relaxed_train"
    np.testing.assert_allclose(float(info["arch_loss"]), float(ref_surrogate), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(info["weight_loss"]), float(ref_weight_loss), rtol=1e-5)
    _allclose_list(arch, ref_arch, rtol=1e-4, atol=1e-6)
    _allclose_list(weights, ref_weights, rtol=1e-4, atol=1e-6)
    assert all(g is not None for g in weights)
    assert any(float(np.abs(g).sum()) > 0 for g in arch)


# ---------------------------------------------------------------- estimators and objectives
def test_passes_without_gradient_share_one_loop_with_the_same_results():
    model = _model()
    (x_train, _), (x_val, _) = _batches()
    sample = model.sample_architectures(4, step=0)
    hard, relaxed = model.supernet.mix_weights(sample.hard), model.supernet.mix_weights(sample.relaxed)
    passes = [("hard_val", x_val, hard, True), ("hard_train", x_train, hard, True),
              ("relaxed_val", x_val, relaxed, False)]
    looped = tf.function(lambda: model._forward_without_gradient(passes))
    ops_in_graph = {op.type for op in looped.get_concrete_function().graph.get_operations()}
    assert "While" in ops_in_graph or "StatelessWhile" in ops_in_graph  # one loop, not three copies
    out = looped()
    assert list(out) == ["hard_val", "hard_train", "relaxed_val"]
    for name, images, weights, _ in passes:
        np.testing.assert_allclose(out[name], model._forward(images, weights), atol=1e-5)


@pytest.mark.parametrize(
    "estimator, objective, passes",
    [
        ("rebar", "gen_gap", {"hard_train", "hard_val", "relaxed_train", "relaxed_val"}),
        ("gumbel_softmax", "gen_gap", {"relaxed_train", "relaxed_val"}),
        ("reinforce", "gen_gap", {"hard_train", "hard_val"}),
        ("rebar", "train", {"hard_train", "relaxed_train"}),
        ("rebar", "val", {"hard_val", "relaxed_val", "weight_train"}),
        ("reinforce", "val", {"hard_val", "weight_train"}),
    ],
)
def test_only_the_needed_passes_run(estimator, objective, passes):
    model = _model(estimator=estimator, objective=objective)
    arch, weights, info = model.search_gradients(_batches())
    assert set(info["passes"]) == passes
    assert all(np.all(np.isfinite(np.array(g))) for g in arch + weights)
    assert any(float(np.abs(np.array(g)).sum()) > 0 for g in arch)


@pytest.mark.parametrize("objective", ["gen_gap", "train", "val"])
@pytest.mark.parametrize("estimator", ["reinforce", "gumbel_softmax", "rebar", "relax"])
def test_the_model_runs_its_pass_plan(estimator, objective):
    model = _model(estimator=estimator, objective=objective, recompute_val_pass=True)
    plan = model.pass_plan
    assert (plan.hard_loss, plan.relaxed_loss) == (model.estimator.needs_hard_loss,
                                                   model.estimator.needs_relaxed_loss)
    train_ce, val_ce = (plan.objective_passes("hard") if plan.hard_loss else plan.objective_passes("relaxed"))
    assert (train_ce is not None, val_ce is not None) == (objectives_lib.uses_train_batch(objective),
                                                          objectives_lib.uses_val_batch(objective))
    _, _, info = model.search_gradients(_batches())
    assert info["passes"] == tuple(p.name for p in plan.passes)
    assert info["weight_key"] == plan.weight_pass.name
    assert (info["hard_objective"] is not None, info["relaxed_objective"] is not None) == (
        plan.hard_loss, plan.relaxed_loss)


def test_reinforce_baseline_is_the_estimators_checkpointed_state():
    model = _model(estimator="reinforce", baseline_decay=0.5)
    assert model.estimator.baseline_decay == 0.5
    (baseline,) = model.estimator.variables
    paths = [v.path for v in model.variables]
    # Where the model's own weight was before: right after search_step, under the model's name.
    assert paths.index(baseline.path) == paths.index(model.search_step.path) + 1
    assert baseline.path == "search_model/reinforce_baseline" and baseline.aggregation == "mean"
    assert "reinforce_baseline" not in " ".join(v.path for v in _model(estimator="rebar").variables)
    data = _batches()
    _, _, first = model.search_gradients(data)
    model.replica_step(data, warmup=False)
    # The first step used the batch mean and leaves it as the average.
    np.testing.assert_allclose(float(first["baseline"]), np.mean(first["hard_objective"]), rtol=1e-6)
    np.testing.assert_allclose(baseline.numpy(), np.mean(first["hard_objective"]), rtol=1e-5)
    _, _, second = model.search_gradients(data)
    np.testing.assert_allclose(float(second["baseline"]), baseline.numpy(), rtol=1e-6)
    model.replica_step(data, warmup=False)
    np.testing.assert_allclose(baseline.numpy(), 0.5 * float(second["baseline"])
                               + 0.5 * np.mean(second["hard_objective"]), rtol=1e-5)


def test_estimator_choice_switches_the_gradient():
    data = _batches()
    step = tf.constant(0, tf.int64)
    results = {}
    for name in ("rebar", "gumbel_softmax", "reinforce"):
        model = _model(estimator=name)
        results[name] = model.search_gradients(data, step=step)
    # rebar and gumbel_softmax share the relaxed sample (same noise): same weight gradient ...
    _allclose_list(results["rebar"][1], results["gumbel_softmax"][1], rtol=1e-5, atol=1e-7)
    # ... but not the same architecture gradient.
    diff = sum(float(np.abs(np.array(a) - np.array(b)).sum())
               for a, b in zip(results["rebar"][0], results["gumbel_softmax"][0]))
    assert diff > 1e-4
    # reinforce trains the weights at the hard sample.
    diff = sum(float(np.abs(np.array(a) - np.array(b)).sum())
               for a, b in zip(results["rebar"][1], results["reinforce"][1]))
    assert diff > 1e-6
    # reinforce surrogate at the first architecture step: baseline = batch mean.
    info = results["reinforce"][2]
    hard = np.array(info["hard_objective"])
    log_prob = np.array(info["sample"].log_prob)
    expected = np.mean((hard - hard.mean()) * log_prob) + hard.mean()
    assert float(info["arch_loss"]) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("objective", ["gen_gap", "train", "val"])
def test_objective_choice(objective):
    model = _model(objective=objective, gen_gap_lambda=0.5)
    _, _, info = model.search_gradients(_batches())
    ce = {k: np.array(v) for k, v in info["ce"].items()}
    if objective == "gen_gap":
        expected = ce["hard_train"] + 0.5 * np.abs(ce["hard_val"] - ce["hard_train"])
    elif objective == "train":
        expected = ce["hard_train"]
    else:
        expected = ce["hard_val"]
    np.testing.assert_allclose(np.array(info["hard_objective"]), expected, rtol=1e-6)


def test_per_minibatch_sampling_draws_one_architecture():
    model = _model(sampling="per_minibatch")
    _, _, info = model.search_gradients(_batches())
    assert tuple(info["sample"].hard["first"].shape) == (1, 2, 3)
    ce = {k: np.array(v) for k, v in info["ce"].items()}
    gap = ce["hard_train"] + 0.5 * np.abs(ce["hard_val"] - ce["hard_train"])
    np.testing.assert_allclose(np.array(info["hard_objective"]), [gap.mean()], rtol=1e-6)


def test_same_seed_and_step_draw_the_same_architectures():
    a, b = _model(seed=3), _model(seed=3)
    other = _model(seed=4)
    step = tf.constant(7, tf.int64)
    sa = a.sample_architectures(16, step=step).hard["first"]
    np.testing.assert_array_equal(sa, b.sample_architectures(16, step=step).hard["first"])
    assert not np.array_equal(sa, other.sample_architectures(16, step=step).hard["first"])
    assert not np.array_equal(sa, a.sample_architectures(16, step=step, replica_id=1).hard["first"])
    assert not np.array_equal(sa, a.sample_architectures(16, step=step + 1).hard["first"])


# ---------------------------------------------------------------- latency term
class _FakeLatency:
    """Linear latency: 1 ms per index of every chosen option, plus 2 ms."""

    def surrogate_weights(self, search_space):
        return 2.0, {name: np.tile(np.arange(k, dtype="float32"), (rows, 1))
                     for name, (rows, k) in search_space.decisions().items()}

    def predict_ms(self, architecture):
        return 2.0 + float(sum(sum(v) for v in architecture.values()))


def test_latency_hinge_ramps_and_is_logged():
    model = _model(latency=_FakeLatency(), target_latency_ms=0.0, latency_lambda=1.0,
                   latency_ramp_steps=10, warmup_steps=2)
    data = _batches()
    _, _, first = model.search_gradients(data, step=tf.constant(2, tf.int64))
    _, _, later = model.search_gradients(data, step=tf.constant(7, tf.int64))
    # At the first architecture step lambda_lat is 0: the objective is the network's alone.
    ce = {k: np.array(v) for k, v in first["ce"].items()}
    gap = ce["hard_train"] + 0.5 * np.abs(ce["hard_val"] - ce["hard_train"])
    np.testing.assert_allclose(np.array(first["hard_objective"]), gap, rtol=1e-6)
    # Five architecture steps later lambda = 0.5: + 0.5 * latency of each hard sample.
    ce = {k: np.array(v) for k, v in later["ce"].items()}
    gap = ce["hard_train"] + 0.5 * np.abs(ce["hard_val"] - ce["hard_train"])
    hard = {k: np.array(v) for k, v in later["sample"].hard.items()}
    latency = 2.0 + sum(np.argmax(v, -1).sum(-1) for v in hard.values())
    np.testing.assert_allclose(np.array(later["hard_objective"]), gap + 0.5 * latency, rtol=1e-5)
    history = model.fit(_dataset(), epochs=1, steps_per_epoch=3, verbose=0)
    assert {"latency_ms", "sampled_latency_ms"} <= set(history.history)
    # Uniform expectation: 2 + 2 rows * mean(0, 1, 2) + mean(0, 1) = 4.5 (logits barely moved).
    assert history.history["latency_ms"][0] == pytest.approx(4.5, abs=0.2)
    assert 2.0 <= history.history["sampled_latency_ms"][0] <= 7.0


# ---------------------------------------------------------------- tf.distribute
def test_mirrored_strategy_two_replicas():
    if len(tf.config.list_logical_devices("CPU")) < 2:
        pytest.skip("needs 2 logical CPU devices (tests/conftest.py)")
    strategy = mirrored_strategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = _model(warmup_steps=1)
    history = model.fit(_dataset(batch=4), epochs=1, steps_per_epoch=3, verbose=0)
    assert set(history.history) == ALL_METRICS
    assert all(math.isfinite(v[0]) for v in history.history.values())
    assert int(model.search_step.numpy()) == 3
    for var in model.distribution.trainable_variables + model.supernet.trainable_variables[:3]:
        local = [np.array(v) for v in strategy.experimental_local_results(var.value)]
        np.testing.assert_array_equal(local[0], local[1])
    assert any(not np.allclose(np.array(v), 0.0) for v in model.distribution.trainable_variables)

    # One more iteration, run eagerly (no second trace), returning each replica's samples.
    dataset = strategy.experimental_distribute_dataset(_dataset(batch=4))
    samples = strategy.run(lambda d: model.replica_step(d, warmup=False, return_samples=True)[1],
                           args=(next(iter(dataset)),))
    first = [np.array(v) for v in strategy.experimental_local_results(samples["first"])]
    assert first[0].shape == (2, 2, 3)
    assert not np.array_equal(first[0], first[1])
    for var in model.distribution.trainable_variables:
        local = [np.array(v) for v in strategy.experimental_local_results(var.value)]
        np.testing.assert_array_equal(local[0], local[1])
    assert int(model.search_step.numpy()) == 4
    with pytest.raises(ValueError, match="several replicas"):
        strategy.run(model.replica_step, args=(next(iter(dataset)),))


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"estimator": "nope"}, "Unknown estimator"),
        ({"objective": "loss"}, "Unknown objective"),
        ({"sampling": "per_batch"}, "Unknown sampling"),
        ({"target_latency_ms": 5.0}, "needs a `latency` model"),
        ({"warmup_steps": -1}, "warmup_steps"),
        ({"gen_gap_lambda": "0.5"}, "gen_gap_lambda"),
        ({"latency": object()}, "predict_ms"),
        ({"recompute_val_pass": "yes"}, "recompute_val_pass"),
    ],
)
def test_bad_arguments_raise_value_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SearchModel(FakeSupernet(), **kwargs)


def test_bad_supernet_and_compile():
    with pytest.raises(ValueError, match="supernet"):
        SearchModel(keras.Sequential([keras.layers.Dense(2)]))
    model = SearchModel(FakeSupernet())
    with pytest.raises(ValueError, match="compile"):
        model.replica_step(_batches())
    opt = keras.optimizers.Adam()
    with pytest.raises(ValueError, match="two optimizer"):
        model.compile(weight_optimizer=opt, arch_optimizer=opt)
    with pytest.raises(ValueError, match="weight_optimizer"):
        model.compile(optimizer="adam")


# ---------------------------------------------------------------- the real DARTS supernet
@pytest.mark.slow
def test_darts_supernet_end_to_end():
    from unas_keras.networks import build_supernet
    from unas_keras.space import Architecture

    supernet = build_supernet("darts", 3, (16, 16, 3), init_channels=4, num_cells=5)
    model = SearchModel(supernet, warmup_steps=1)
    assert model.pair_penalty == pytest.approx(0.2)
    model.compile(weight_optimizer=keras.optimizers.Adam(1e-3), arch_optimizer=keras.optimizers.Adam(1e-2),
                  run_eagerly=True)
    data = _batches(batch=4, shape=(16, 16, 3))
    step = tf.constant(1, tf.int64)
    arch, weights, info = model.search_gradients(data, step=step)
    ref_arch, ref_weights, _, _ = _naive_gradients(model, data, step)
    _allclose_list(arch, ref_arch, rtol=1e-3, atol=1e-5)
    _allclose_list(weights, ref_weights, rtol=1e-3, atol=1e-5)
    dataset = tf.data.Dataset.from_tensors(data).repeat()
    history = model.fit(dataset, epochs=1, steps_per_epoch=2, verbose=0)
    assert set(history.history) == ALL_METRICS
    assert all(math.isfinite(v[0]) for v in history.history.values())
    architecture = model.derive_architecture()
    assert isinstance(architecture, Architecture) and architecture.space == "darts"
    probabilities = model.arch_probabilities()
    assert set(probabilities) == set(supernet.search_space.decisions())
    assert np.allclose(np.sum(probabilities["normal_node0_ops"], axis=-1), 1.0)
