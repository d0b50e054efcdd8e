"""Tests of the gradient estimators against exact gradients of small categorical problems."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from unas_keras import estimators

G, K = 2, 3
LOGITS = np.array([[0.3, -0.2, 0.5], [1.0, 0.0, -1.0]], dtype="float32")
C = np.array([[1.0, -2.0, 0.5], [0.3, 2.0, -1.0]], dtype="float32")
W = np.array([[1.0, 2.0, -1.0], [0.5, -1.5, 1.0]], dtype="float32")
TABLE = np.array([[3.0, -1.0, 0.5], [0.0, 2.0, -2.0], [1.5, 4.0, -0.5]], dtype="float32")
NUM_PER_SAMPLE = 20000


def smooth_loss(z):
    """Differentiable, nonlinear in z: sum(c z) + (sum(w z))^2."""
    return ops.sum(z * C, axis=(1, 2)) + ops.sum(z * W, axis=(1, 2)) ** 2


def table_loss(z):
    """Non-differentiable: a lookup of (argmax z_0, argmax z_1) in a fixed table."""
    a = ops.argmax(z[:, 0], axis=-1)
    b = ops.argmax(z[:, 1], axis=-1)
    return ops.take(ops.reshape(ops.convert_to_tensor(TABLE), (-1,)), a * K + b)


def bad_control_variate(z):
    """Differentiable and unrelated to table_loss (deliberately poor)."""
    return -3.0 * ops.sum(z * C, axis=(1, 2)) + 2.0 * ops.sum(z * W, axis=(1, 2)) ** 2


def good_control_variate(z):
    """Multilinear extension of table_loss: equals it at every one-hot outcome."""
    return ops.einsum("na,ab,nb->n", z[:, 0], ops.convert_to_tensor(TABLE), z[:, 1])


def per_sample_gradients(est, loss_fn, num, seed, control_variate=None, baseline=None, logits=LOGITS):
    """[num, G, K] gradients of each sample's surrogate (via per-sample logits copies)."""
    logits = tf.constant(logits)
    copies = tf.broadcast_to(logits[None], (num,) + tuple(logits.shape))
    with tf.GradientTape() as tape:
        tape.watch(copies)
        sample = est.sample(copies, seed)
        log_prob = ops.sum(sample.log_prob, axis=-1)
        hard = ops.stop_gradient(loss_fn(sample.hard)) if est.needs_hard_loss else None
        relaxed = None
        if est.needs_relaxed_loss:
            relaxed = (control_variate or loss_fn)(sample.relaxed)
        surrogate = est.surrogate_from_losses(log_prob, hard, relaxed, baseline=baseline)
    return tape.gradient(surrogate, copies).numpy() * num


def mean_and_se(grads):
    return grads.mean(axis=0), grads.std(axis=0, ddof=1) / np.sqrt(grads.shape[0])


def exact(loss_fn):
    return estimators.exact_gradient(tf.constant(LOGITS), loss_fn).numpy()


def test_exact_gradient_matches_autodiff_of_enumeration():
    logits = tf.constant(LOGITS)
    with tf.GradientTape() as tape:
        tape.watch(logits)
        value = estimators.analysis.exact_expectation(logits, smooth_loss)
    np.testing.assert_allclose(
        tape.gradient(value, logits).numpy(), exact(smooth_loss), rtol=1e-4, atol=1e-6
    )
    assert estimators.enumerate_outcomes(G, K).shape == (K**G, G, K)


def test_names_get_and_alias():
    assert set(estimators.names()) >= {"reinforce", "gumbel_softmax", "rebar", "unas", "relax"}
    assert isinstance(estimators.get("unas"), estimators.Rebar)
    assert isinstance(estimators.get("REBAR"), estimators.Rebar)
    assert estimators.get("gumbel_softmax", temperature=0.7).temperature == 0.7
    assert estimators.get("reinforce", baseline_decay=0.5).baseline_decay == 0.5
    est = estimators.get("rebar")
    assert estimators.get(est) is est
    with pytest.raises(ValueError, match="reinforce, gumbel_softmax, rebar"):
        estimators.get("dnas")
    with pytest.raises(ValueError, match="does not take baseline_decay"):
        estimators.get("rebar", baseline_decay=0.5)


@pytest.mark.parametrize(
    "name,flags",
    [
        ("reinforce", (True, False)),
        ("gumbel_softmax", (False, True)),
        ("rebar", (True, True)),
        ("relax", (True, True)),
    ],
)
def test_needs_flags(name, flags):
    est = estimators.get(name)
    assert (est.needs_hard_loss, est.needs_relaxed_loss) == flags


@pytest.mark.parametrize("name", ["reinforce", "gumbel_softmax", "rebar", "relax"])
def test_hard_samples_are_exact_one_hot_and_log_prob(name):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(64, 5, 7)).astype("float32") * 3.0
    logits[0, 0] = [50.0, -50.0, 0.0, 0.0, 0.0, 0.0, -80.0]  # extreme logits stay finite
    sample = estimators.get(name).sample(tf.constant(logits), seed=3)
    hard = sample.hard.numpy()
    assert hard.shape == logits.shape and sample.log_prob.shape == (64, 5)
    assert set(np.unique(hard)) <= {0.0, 1.0}
    np.testing.assert_array_equal(hard.sum(-1), np.ones((64, 5)))
    log_softmax = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True))
    log_softmax -= logits.max(-1, keepdims=True)
    expected = np.take_along_axis(log_softmax, hard.argmax(-1)[..., None], -1)[..., 0]
    np.testing.assert_allclose(sample.log_prob.numpy(), expected, rtol=1e-5, atol=1e-5)
    relaxed = sample.relaxed.numpy()
    assert np.all(np.isfinite(relaxed))
    np.testing.assert_allclose(relaxed.sum(-1), 1.0, atol=1e-5)
    if name == "reinforce":
        np.testing.assert_array_equal(relaxed, hard)


def test_rebar_relaxed_value_is_the_gumbel_softmax_sample():
    logits = tf.constant(np.random.default_rng(1).normal(size=(32, 4, 6)).astype("float32"))
    rebar = estimators.get("rebar", temperature=0.5).sample(logits, seed=11)
    gumbel = estimators.get("gumbel_softmax", temperature=0.5).sample(logits, seed=11)
    np.testing.assert_array_equal(rebar.hard.numpy(), gumbel.hard.numpy())
    np.testing.assert_allclose(rebar.relaxed.numpy(), gumbel.relaxed.numpy(), atol=1e-5)
    # The relaxed sample's argmax is the hard sample.
    np.testing.assert_array_equal(rebar.relaxed.numpy().argmax(-1), rebar.hard.numpy().argmax(-1))


def test_rebar_gradient_finite_for_extreme_logits():
    logits = tf.constant([[60.0, -60.0, 0.0], [-90.0, 20.0, 19.0]])
    for name in ("rebar", "gumbel_softmax", "reinforce"):
        with tf.GradientTape() as tape:
            tape.watch(logits)
            loss = estimators.get(name).surrogate_loss(logits, smooth_loss, num_samples=256, seed=0)
        grad = tape.gradient(loss, logits).numpy()
        assert np.all(np.isfinite(grad)), (name, grad)


@pytest.mark.parametrize(
    "name,loss_fn,control_variate,baseline",
    [
        ("reinforce", smooth_loss, None, 0.0),
        ("reinforce", table_loss, None, 1.0),
        ("rebar", smooth_loss, None, None),
        ("relax", table_loss, bad_control_variate, None),
        ("relax", table_loss, good_control_variate, None),
    ],
)
def test_unbiased_estimators_match_exact_gradient(name, loss_fn, control_variate, baseline):
    grads = per_sample_gradients(
        estimators.get(name), loss_fn, NUM_PER_SAMPLE, seed=5,
        control_variate=control_variate, baseline=baseline,
    )
    mean, se = mean_and_se(grads)
    target = exact(loss_fn)
    assert np.all(np.abs(mean - target) <= 4.0 * se + 1e-5), (mean, target, se)
    # The check is informative: the standard error is small next to the gradient.
    assert se.max() < 0.2 * np.abs(target).max()


def test_gumbel_softmax_is_biased():
    grads = per_sample_gradients(estimators.get("gumbel_softmax"), smooth_loss, NUM_PER_SAMPLE, seed=5)
    mean, se = mean_and_se(grads)
    z_scores = np.abs(mean - exact(smooth_loss)) / se
    assert z_scores.max() > 10.0, z_scores


def test_rebar_variance_lower_than_reinforce():
    """NAS-like: many decisions (G = 8). Reinforce gets a converged baseline."""
    rng = np.random.default_rng(0)
    logits = (rng.normal(size=(8, 3)) * 0.5).astype("float32")
    c = tf.constant(rng.normal(size=(8, 3)).astype("float32"))
    w = tf.constant((rng.normal(size=(8, 3)) / np.sqrt(8.0)).astype("float32"))

    def loss_fn(z):
        return ops.sum(z * c, axis=(1, 2)) + ops.sum(z * w, axis=(1, 2)) ** 2

    warmup = estimators.get("reinforce").sample(tf.broadcast_to(logits[None], (4000, 8, 3)), seed=1)
    baseline = float(ops.mean(loss_fn(warmup.hard)))
    reinforce = per_sample_gradients(
        estimators.get("reinforce"), loss_fn, NUM_PER_SAMPLE, seed=9, baseline=baseline, logits=logits
    )
    rebar = per_sample_gradients(estimators.get("rebar"), loss_fn, NUM_PER_SAMPLE, seed=9, logits=logits)
    var_reinforce = reinforce.var(axis=0).sum()
    var_rebar = rebar.var(axis=0).sum()
    assert var_rebar < 0.6 * var_reinforce, (var_rebar, var_reinforce)


def test_relax_good_control_variate_lowers_variance():
    bad = per_sample_gradients(
        estimators.get("relax"), table_loss, 5000, seed=2, control_variate=bad_control_variate
    )
    good = per_sample_gradients(
        estimators.get("relax"), table_loss, 5000, seed=2, control_variate=good_control_variate
    )
    assert good.var(axis=0).sum() < bad.var(axis=0).sum()


@pytest.mark.parametrize("name", ["reinforce", "rebar", "relax"])
def test_surrogate_loss_mean_gradient_is_unbiased(name):
    """The one-call public API, averaged over calls with fresh noise."""
    loss_fn = table_loss if name in ("reinforce", "relax") else smooth_loss
    est = estimators.get(name, control_variate=bad_control_variate) if name == "relax" else estimators.get(name)
    logits = tf.constant(LOGITS)
    generator = keras.random.SeedGenerator(17)
    grads = []
    for _ in range(40):
        with tf.GradientTape() as tape:
            tape.watch(logits)
            loss = est.surrogate_loss(logits, loss_fn, num_samples=500, seed=generator)
        assert loss.shape == ()
        grads.append(tape.gradient(loss, logits).numpy())
    mean, se = mean_and_se(np.stack(grads))
    target = exact(loss_fn)
    assert np.all(np.abs(mean - target) <= 4.0 * se + 1e-5), (mean, target, se)
    assert se.max() < 0.2 * np.abs(target).max()


def test_surrogate_loss_matches_low_level_pieces():
    est = estimators.get("rebar")
    logits = tf.constant(LOGITS)
    with tf.GradientTape() as tape:
        tape.watch(logits)
        loss = est.surrogate_loss(logits, smooth_loss, num_samples=64, seed=4)
    grad = tape.gradient(loss, logits)
    with tf.GradientTape() as tape:
        tape.watch(logits)
        sample = est.sample(tf.broadcast_to(logits[None], (64, G, K)), seed=4)
        manual = est.surrogate_from_losses(
            ops.sum(sample.log_prob, -1), smooth_loss(sample.hard), smooth_loss(sample.relaxed)
        )
    np.testing.assert_allclose(loss.numpy(), manual.numpy(), rtol=1e-5)
    np.testing.assert_allclose(grad.numpy(), tape.gradient(manual, logits).numpy(), rtol=1e-4, atol=1e-6)


def test_reinforce_accepts_non_differentiable_numpy_loss():
    calls = []

    def numpy_loss(z):
        z = np.asarray(z)
        calls.append(z)
        return TABLE[z[:, 0].argmax(-1), z[:, 1].argmax(-1)]

    logits = tf.constant(LOGITS)
    with tf.GradientTape() as tape:
        tape.watch(logits)
        loss = estimators.get("reinforce").surrogate_loss(logits, numpy_loss, num_samples=32, seed=1)
    grad = tape.gradient(loss, logits)
    assert grad is not None and np.all(np.isfinite(grad.numpy()))
    assert np.abs(grad.numpy()).sum() > 0
    assert len(calls) == 1 and calls[0].shape == (32, G, K)


def test_reinforce_baseline_initialised_then_updated_after_use():
    est = estimators.get("reinforce", baseline_decay=0.9)
    assert est.baseline is None
    seen = []

    def recording_loss(z):
        values = table_loss(z)
        seen.append(values.numpy())
        return values

    logits = tf.constant(LOGITS)
    est.surrogate_loss(logits, recording_loss, num_samples=16, seed=1)
    first = seen[0].mean()
    np.testing.assert_allclose(est.baseline.numpy(), first, rtol=1e-6)
    loss = est.surrogate_loss(logits, recording_loss, num_samples=16, seed=2)
    second = seen[1].mean()
    np.testing.assert_allclose(est.baseline.numpy(), 0.9 * first + 0.1 * second, rtol=1e-5)
    # The second call used the first baseline (before the update).
    sample = est.sample(tf.broadcast_to(logits[None], (16, G, K)), seed=2)
    log_prob = ops.sum(sample.log_prob, -1).numpy()
    expected = np.mean((seen[1] - first) * log_prob) + first
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-5)
    est.reset_baseline()
    est.surrogate_loss(logits, recording_loss, num_samples=16, seed=3)
    np.testing.assert_allclose(est.baseline.numpy(), seen[2].mean(), rtol=1e-6)


def test_estimators_own_their_state():
    hard_loss = tf.constant([1.0, 3.0])
    for name in ("gumbel_softmax", "rebar", "relax"):
        est = estimators.get(name)
        est.create_state()
        assert est.variables == []
        assert est.baseline_for_step(hard_loss, step=0) is None
        est.update_baseline(None, hard_loss)   # nothing to update
    est = estimators.get("reinforce", baseline_decay=0.75)
    assert est.variables == [] and est.baseline is None
    est.create_state()
    (baseline,) = est.variables
    assert not baseline.trainable and baseline.dtype == "float32" and baseline.aggregation == "mean"
    est.create_state()
    assert est.variables == [baseline]   # created once
    used = est.baseline_for_step(hard_loss, step=tf.constant(3), first_step=3)
    np.testing.assert_allclose(used.numpy(), 2.0)   # the first step uses the batch mean
    est.update_baseline(used, hard_loss)
    np.testing.assert_allclose(baseline.numpy(), 2.0)
    used = est.baseline_for_step(tf.constant([6.0, 6.0]), step=4, first_step=3)
    np.testing.assert_allclose(used.numpy(), 2.0)   # later steps use the average ...
    est.update_baseline(used, tf.constant([6.0, 6.0]))
    np.testing.assert_allclose(baseline.numpy(), 0.75 * 2.0 + 0.25 * 6.0)   # ... then move it


def test_accepted_options():
    assert estimators.accepted_options("reinforce", baseline_decay=0.5, other=1) == {"baseline_decay": 0.5}
    assert estimators.accepted_options("UNAS", baseline_decay=0.5) == {}
    assert estimators.accepted_options(estimators.get("reinforce"), baseline_decay=0.5) == {}
    assert estimators.accepted_options("nope", baseline_decay=0.5) == {}


def test_next_baseline_is_pure():
    np.testing.assert_allclose(estimators.next_baseline(2.0, 4.0, 0.75).numpy(), 2.5)
    np.testing.assert_allclose(
        estimators.next_baseline(2.0, 4.0, 0.75, initialized=tf.constant(False)).numpy(), 4.0
    )
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        estimators.next_baseline(2.0, 4.0, 1.0)


def test_int_seed_is_deterministic():
    est = estimators.get("rebar")
    logits = tf.constant(LOGITS)
    grads = []
    for _ in range(2):
        with tf.GradientTape() as tape:
            tape.watch(logits)
            loss = est.surrogate_loss(logits, smooth_loss, num_samples=32, seed=123)
        grads.append(tape.gradient(loss, logits).numpy())
    np.testing.assert_array_equal(grads[0], grads[1])
    other = est.sample(tf.zeros((256, 4, 5)), seed=124).hard.numpy()
    same = est.sample(tf.zeros((256, 4, 5)), seed=123).hard.numpy()
    assert not np.array_equal(other, same)


def test_seed_generator_advances():
    est = estimators.get("gumbel_softmax")
    generator = keras.random.SeedGenerator(3)
    first = est.sample(tf.zeros((256, 4, 5)), seed=generator).hard.numpy()
    second = est.sample(tf.zeros((256, 4, 5)), seed=generator).hard.numpy()
    assert not np.array_equal(first, second)


@pytest.mark.parametrize("name", ["reinforce", "gumbel_softmax", "rebar"])
def test_tensor_seeds_stateless_and_distinct(name):
    est = estimators.get(name)
    logits = tf.zeros((256, 4, 5))
    a = est.sample(logits, seed=tf.constant([7, 1])).relaxed.numpy()
    a_again = est.sample(logits, seed=tf.constant([7, 1], dtype="int64")).relaxed.numpy()
    b = est.sample(logits, seed=tf.constant([7, 2])).relaxed.numpy()
    np.testing.assert_array_equal(a, a_again)
    assert not np.array_equal(a, b)


def test_tensor_seed_inside_tf_function_with_dynamic_batch():
    est = estimators.get("rebar")

    @tf.function(
        input_signature=[tf.TensorSpec([None, 3, 4], tf.float32), tf.TensorSpec([2], tf.int32)]
    )
    def draw(logits, seed):
        sample = est.sample(logits, seed)
        return sample.hard, sample.relaxed, sample.log_prob

    logits = tf.random.stateless_normal((8, 3, 4), seed=[1, 2])
    hard, relaxed, log_prob = draw(logits, tf.constant([5, 6]))
    eager = est.sample(logits, tf.constant([5, 6]))
    assert hard.shape == (8, 3, 4) and log_prob.shape == (8, 3)
    np.testing.assert_array_equal(hard.numpy(), eager.hard.numpy())
    np.testing.assert_allclose(relaxed.numpy(), eager.relaxed.numpy(), atol=1e-6)
    other, _, _ = draw(logits, tf.constant([5, 7]))
    assert not np.array_equal(hard.numpy(), other.numpy())


def test_split_seed():
    first = [s.numpy() for s in estimators.split_seed(3, 4)]
    again = [s.numpy() for s in estimators.split_seed(3, 4)]
    assert len(first) == 4 and all(s.shape == (2,) for s in first)
    np.testing.assert_array_equal(np.stack(first), np.stack(again))
    assert len({tuple(s) for s in first}) == 4
    with pytest.raises(ValueError, match="positive int"):
        estimators.split_seed(3, 0)


@pytest.mark.parametrize(
    "seed,match",
    [
        (tf.constant([1, 2, 3]), "shape"),
        (tf.constant([1.0, 2.0]), "integer"),
        ("abc", "seed"),
        (True, "bool"),
    ],
)
def test_bad_seed(seed, match):
    with pytest.raises(ValueError, match=match):
        estimators.get("rebar").sample(tf.zeros((2, 3)), seed=seed)


def test_bad_logits_rank_and_dtype():
    est = estimators.get("rebar")
    with pytest.raises(ValueError, match="rank 2"):
        est.surrogate_loss(tf.zeros((3,)), smooth_loss)
    with pytest.raises(ValueError, match="rank 2"):
        est.surrogate_loss(tf.zeros((2, 2, 3)), smooth_loss)
    with pytest.raises(ValueError, match="floating point"):
        est.surrogate_loss(tf.zeros((2, 3), dtype=tf.int32), smooth_loss)
    with pytest.raises(ValueError, match="rank >= 1"):
        est.sample(tf.zeros(()))


@pytest.mark.parametrize("name", ["reinforce", "gumbel_softmax", "rebar"])
def test_loss_fn_wrong_shape(name):
    est = estimators.get(name)
    logits = tf.constant(LOGITS)
    with pytest.raises(ValueError, match=r"one loss per sample.*\[8\]"):
        est.surrogate_loss(logits, lambda z: ops.sum(z, axis=(1, 2))[:, None], num_samples=8)
    with pytest.raises(ValueError, match="one loss per sample"):
        est.surrogate_loss(logits, lambda z: ops.sum(z), num_samples=8)
    with pytest.raises(ValueError, match="one loss per sample"):
        est.surrogate_loss(logits, lambda z: ops.sum(z, axis=(1, 2))[:4], num_samples=8)


def test_other_bad_arguments():
    with pytest.raises(ValueError, match="temperature"):
        estimators.get("rebar", temperature=0.0)
    with pytest.raises(ValueError, match="num_samples"):
        estimators.get("rebar").surrogate_loss(tf.constant(LOGITS), smooth_loss, num_samples=0)
    with pytest.raises(ValueError, match="control variate"):
        estimators.get("relax").surrogate_loss(tf.constant(LOGITS), table_loss)
    with pytest.raises(ValueError, match="control_variate.*must return"):
        estimators.get("relax", control_variate=lambda z: ops.sum(z)).surrogate_loss(
            tf.constant(LOGITS), table_loss, num_samples=4
        )
    with pytest.raises(ValueError, match="hard_loss"):
        estimators.get("rebar").surrogate_from_losses(tf.zeros(4), None, tf.zeros(4))
    with pytest.raises(ValueError, match="rank-1"):
        estimators.get("rebar").surrogate_from_losses(tf.zeros((4, 2)), tf.zeros(4), tf.zeros(4))
    with pytest.raises(ValueError, match="baseline_decay|decay"):
        estimators.get("reinforce", baseline_decay=1.5)


def test_reinforce_stateful_baseline_inside_tf_function():
    est = estimators.get("reinforce", baseline_decay=0.5)
    logits = tf.Variable(tf.constant(LOGITS))

    @tf.function
    def step(seed):
        with tf.GradientTape() as tape:
            loss = est.surrogate_loss(logits, table_loss, num_samples=64, seed=seed)
        return tape.gradient(loss, logits), ops.mean(table_loss(est.sample(
            tf.broadcast_to(tf.convert_to_tensor(logits)[None], (64, G, K)), seed).hard))

    _, first_mean = step(tf.constant([1, 0]))
    np.testing.assert_allclose(est.baseline.numpy(), first_mean.numpy(), rtol=1e-6)
    grad, second_mean = step(tf.constant([2, 0]))
    np.testing.assert_allclose(
        est.baseline.numpy(), 0.5 * first_mean.numpy() + 0.5 * second_mean.numpy(), rtol=1e-5
    )
    assert np.all(np.isfinite(grad.numpy()))


@pytest.mark.parametrize("name", ["rebar", "gumbel_softmax", "relax"])
def test_temperature_variable_takes_a_new_value_without_tracing_and_as_if_built_with_it(name):
    seed = tf.constant([3, 4], tf.int32)
    variable = estimators.get(name, temperature=0.4)
    setting = variable.temperature_variable()
    assert setting is variable.temperature_variable() and float(setting.variable.numpy()) == pytest.approx(0.4)
    assert not {id(v) for v in variable.variables} & {id(setting.variable)}  # not checkpointed state
    traces = []

    @tf.function
    def relaxed(estimator):
        traces.append(1)
        return estimator.sample(tf.constant(LOGITS), seed).relaxed

    def built_with(temperature, as_variable):
        estimator = estimators.get(name, temperature=temperature)
        if as_variable:
            estimator.temperature_variable()
        return tf.function(lambda: estimator.sample(tf.constant(LOGITS), seed).relaxed)()

    at_04 = relaxed(variable)
    setting.assign(1.5)
    assert variable.temperature == 1.5 and variable.get_config()["temperature"] == 1.5
    at_15 = relaxed(variable)
    assert len(traces) == 1
    # Exactly the samples of an estimator built with the new temperature (a reused step = a new one) ...
    np.testing.assert_array_equal(at_15, built_with(1.5, as_variable=True))
    np.testing.assert_array_equal(at_04, built_with(0.4, as_variable=True))
    # ... and those of the constant temperature up to float32 rounding: the graph optimiser turns a
    # division by a constant into a multiplication by its reciprocal, not a division by a variable.
    np.testing.assert_allclose(at_15, built_with(1.5, as_variable=False), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(at_04, built_with(0.4, as_variable=False), rtol=1e-5, atol=1e-9)
    assert not np.allclose(at_04, at_15)
