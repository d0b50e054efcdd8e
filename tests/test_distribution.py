"""Tests of the architecture distribution layer."""

import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from unas_keras import estimators
from unas_keras.search.distributed import mirrored_strategy
from unas_keras.search.distribution import ArchitectureDistribution

# tests/conftest.py splits the CPU into 2 logical devices before TensorFlow
# initialises; if that did not happen, the MirroredStrategy test skips.

DARTS_LIKE = {
    "normal_node0_inputs": (2, 2),
    "normal_node0_ops": (2, 3),
    "normal_node1_inputs": (2, 3),
    "normal_node1_ops": (2, 3),
    "reduce_node0_inputs": (2, 2),
    "reduce_node0_ops": (2, 3),
}
PROXYLESS_LIKE = {"first": (6, 6), "optional": (15, 7)}


def test_weights_shapes_names_and_zero_init():
    dist = ArchitectureDistribution(DARTS_LIKE)
    variables = dist.logit_variables
    assert list(variables) == list(DARTS_LIKE)
    assert len(dist.trainable_weights) == len(DARTS_LIKE)
    for name, (rows, choices) in DARTS_LIKE.items():
        assert tuple(variables[name].shape) == (rows, choices)
        assert variables[name].path == f"architecture_distribution/{name}"
        np.testing.assert_array_equal(ops.convert_to_numpy(variables[name]), 0.0)


@pytest.mark.parametrize("name", ["reinforce", "gumbel_softmax", "rebar"])
@pytest.mark.parametrize("num_samples", [1, 5])
def test_sample_shapes_and_total_log_prob(name, num_samples):
    dist = ArchitectureDistribution(PROXYLESS_LIKE)
    rng = np.random.default_rng(0)
    for var in dist.logit_variables.values():
        var.assign(rng.normal(size=var.shape).astype("float32"))
    arch = dist.sample(estimators.get(name), num_samples, seed=3)
    expected = np.zeros(num_samples)
    for decision, (rows, choices) in PROXYLESS_LIKE.items():
        sample = arch.samples[decision]
        assert tuple(sample.hard.shape) == (num_samples, rows, choices)
        assert tuple(sample.relaxed.shape) == (num_samples, rows, choices)
        assert tuple(sample.log_prob.shape) == (num_samples, rows)
        hard = sample.hard.numpy()
        np.testing.assert_array_equal(hard.sum(-1), 1.0)
        log_softmax = ops.log_softmax(dist.logit_variables[decision], axis=-1).numpy()
        picked = np.take_along_axis(
            np.broadcast_to(log_softmax, hard.shape), hard.argmax(-1)[..., None], -1
        )[..., 0]
        expected += picked.sum(-1)
    assert tuple(arch.log_prob.shape) == (num_samples,)
    np.testing.assert_allclose(arch.log_prob.numpy(), expected, rtol=1e-5)
    assert set(arch.hard) == set(PROXYLESS_LIKE) and set(arch.relaxed) == set(PROXYLESS_LIKE)


def test_decisions_draw_independent_noise():
    # Two decisions of identical shape must not receive identical samples.
    dist = ArchitectureDistribution({"a": (8, 5), "b": (8, 5)})
    arch = dist.sample("gumbel_softmax", 16, seed=0)
    assert not np.array_equal(arch.hard["a"].numpy(), arch.hard["b"].numpy())


def test_sampling_is_seeded():
    dist = ArchitectureDistribution(DARTS_LIKE)
    first = dist.sample("rebar", 8, seed=tf.constant([4, 1])).hard
    again = dist.sample("rebar", 8, seed=tf.constant([4, 1])).hard
    other = dist.sample("rebar", 8, seed=tf.constant([4, 2])).hard
    for name in DARTS_LIKE:
        np.testing.assert_array_equal(first[name].numpy(), again[name].numpy())
    assert any(not np.array_equal(first[n].numpy(), other[n].numpy()) for n in DARTS_LIKE)


def test_sampling_inside_tf_function_with_dynamic_num_samples():
    dist = ArchitectureDistribution(DARTS_LIKE)
    est = estimators.get("rebar")

    @tf.function(input_signature=[tf.TensorSpec([None, 4]), tf.TensorSpec([2], tf.int32)])
    def step(batch, seed):
        arch = dist.sample(est, tf.shape(batch)[0], seed)
        return arch.log_prob, dist.pair_overlap(arch.relaxed), arch.hard["normal_node1_inputs"]

    log_prob, overlap, hard = step(tf.zeros((3, 4)), tf.constant([1, 2]))
    assert log_prob.shape == (3,) and overlap.shape == (3,) and hard.shape == (3, 2, 3)
    expected = -sum(rows * np.log(choices) for rows, choices in DARTS_LIKE.values())
    np.testing.assert_allclose(log_prob.numpy(), expected, rtol=1e-5)


def test_logit_gradient_through_sample():
    dist = ArchitectureDistribution(DARTS_LIKE)
    est = estimators.get("rebar")
    with tf.GradientTape() as tape:
        arch = dist.sample(est, 4, seed=1)
        relaxed_loss = ops.sum(arch.relaxed["normal_node0_ops"][:, :, 0], axis=-1)
        hard_loss = ops.sum(arch.hard["normal_node0_ops"][:, :, 0], axis=-1)
        loss = est.surrogate_from_losses(arch.log_prob, hard_loss, relaxed_loss)
    grads = tape.gradient(loss, dist.trainable_weights)
    by_name = dict(zip(dist.logit_variables, grads))
    assert np.abs(by_name["normal_node0_ops"].numpy()).sum() > 0


def test_entropy_probabilities_and_json():
    dist = ArchitectureDistribution(DARTS_LIKE)
    expected = sum(rows * np.log(choices) for rows, choices in DARTS_LIKE.values())
    np.testing.assert_allclose(float(dist.entropy()), expected, rtol=1e-6)
    probs = dist.probabilities()
    np.testing.assert_allclose(probs["normal_node0_ops"].numpy(), np.full((2, 3), 1 / 3), rtol=1e-6)
    dist.logit_variables["normal_node0_ops"].assign([[20.0, 0.0, 0.0], [0.0, 0.0, 20.0]])
    assert float(dist.entropy()) < expected - 2 * np.log(3) + 1e-3
    payload = json.loads(json.dumps(dist.as_json_dict()))
    assert list(payload) == list(DARTS_LIKE)
    assert np.array(payload["normal_node0_ops"]).shape == (2, 3)
    assert payload["normal_node0_ops"][0][0] > 0.99


def test_softening():
    eps = 0.08
    dist = ArchitectureDistribution({"optional": (2, 4)}, soften_eps=eps)
    phi = np.array([[30.0, 0.0, 0.0, 0.0], [1.0, 2.0, 3.0, 4.0]], dtype="float32")
    dist.logit_variables["optional"].assign(phi)
    p = np.exp(phi - phi.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    np.testing.assert_allclose(dist.logits()["optional"].numpy(), np.log(p + eps), rtol=1e-5)
    softened = (p + eps) / (1 + 4 * eps)
    np.testing.assert_allclose(dist.probabilities()["optional"].numpy(), softened, rtol=1e-5)
    # Every choice keeps at least eps / (1 + K eps) probability.
    assert dist.probabilities()["optional"].numpy().min() >= eps / (1 + 4 * eps) - 1e-6
    assert dist.argmax() == {"optional": [0, 3]}


def test_argmax():
    dist = ArchitectureDistribution(DARTS_LIKE)
    dist.logit_variables["normal_node1_inputs"].assign([[0.0, 0.0, 1.0], [0.5, 0.0, 0.0]])
    chosen = dist.argmax()
    assert chosen["normal_node1_inputs"] == [2, 0]
    assert chosen["normal_node0_ops"] == [0, 0]
    assert all(isinstance(i, int) for row in chosen.values() for i in row)


def test_pair_overlap_on_hand_made_sample():
    dist = ArchitectureDistribution(DARTS_LIKE)
    eye2, eye3 = np.eye(2, dtype="float32"), np.eye(3, dtype="float32")
    # Two samples. Sample 0: normal node0 duplicates (input 1, op 2) -> 1;
    # normal node1 same input but different ops -> 0; reduce node0 duplicates -> 1.
    # Sample 1: no duplicates anywhere.
    samples = {
        "normal_node0_inputs": np.stack([[eye2[1], eye2[1]], [eye2[0], eye2[1]]]),
        "normal_node0_ops": np.stack([[eye3[2], eye3[2]], [eye3[2], eye3[2]]]),
        "normal_node1_inputs": np.stack([[eye3[0], eye3[0]], [eye3[0], eye3[2]]]),
        "normal_node1_ops": np.stack([[eye3[0], eye3[1]], [eye3[1], eye3[1]]]),
        "reduce_node0_inputs": np.stack([[eye2[0], eye2[0]], [eye2[0], eye2[1]]]),
        "reduce_node0_ops": np.stack([[eye3[1], eye3[1]], [eye3[0], eye3[1]]]),
    }
    overlap = dist.pair_overlap({k: tf.constant(v) for k, v in samples.items()})
    np.testing.assert_allclose(overlap.numpy(), [2.0, 0.0])
    # Relaxed samples: the product of dot products.
    relaxed = dict(samples)
    relaxed["normal_node0_inputs"] = np.array(
        [[[0.5, 0.5], [0.2, 0.8]], [[1.0, 0.0], [0.0, 1.0]]], dtype="float32"
    )
    overlap = dist.pair_overlap({k: tf.constant(v) for k, v in relaxed.items()})
    np.testing.assert_allclose(overlap.numpy(), [0.5 + 1.0, 0.0], rtol=1e-6)


def test_pair_overlap_without_pairs_is_zero():
    dist = ArchitectureDistribution(PROXYLESS_LIKE)
    arch = dist.sample("rebar", 3, seed=0)
    np.testing.assert_array_equal(dist.pair_overlap(arch.hard).numpy(), np.zeros(3))
    with pytest.raises(ValueError, match="pass tensors"):
        dist.pair_overlap(arch.samples)


def test_get_config_round_trip():
    dist = ArchitectureDistribution(DARTS_LIKE, soften_eps=0.05, name="arch")
    config = json.loads(json.dumps(dist.get_config()))
    clone = ArchitectureDistribution.from_config(config)
    assert clone.name == "arch" and clone.soften_eps == 0.05
    assert {k: tuple(v) for k, v in clone.decisions.items()} == DARTS_LIKE
    assert list(clone.logit_variables) == list(DARTS_LIKE)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(dist))
    assert isinstance(restored, ArchitectureDistribution)


@pytest.mark.parametrize(
    "decisions,soften_eps,match",
    [
        ({}, 0.0, "non-empty"),
        ({"bad name": (2, 3)}, 0.0, "valid variable name"),
        ({"ok": (0, 3)}, 0.0, "rows"),
        ({"ok": (2, 2.5)}, 0.0, "choices"),
        ({"ok": 3}, 0.0, r"\(rows, choices\)"),
        ({"ok": (2, 3)}, -0.1, "soften_eps"),
    ],
)
def test_bad_arguments(decisions, soften_eps, match):
    with pytest.raises(ValueError, match=match):
        ArchitectureDistribution(decisions, soften_eps=soften_eps)


def test_bad_sample_arguments():
    dist = ArchitectureDistribution(DARTS_LIKE)
    with pytest.raises(ValueError, match="num_samples"):
        dist.sample("rebar", 0)
    with pytest.raises(ValueError, match="Unknown estimator"):
        dist.sample("nope", 2)


def test_mirrored_strategy_replicas_draw_different_architectures():
    if len(tf.config.list_logical_devices("CPU")) < 2:
        pytest.skip("needs 2 logical CPU devices (configured by tests/conftest.py)")
    devices = [d.name for d in tf.config.list_logical_devices("CPU")[:2]]
    strategy = mirrored_strategy(devices)
    with strategy.scope():
        dist = ArchitectureDistribution(DARTS_LIKE)
    est = estimators.get("rebar")

    @tf.function
    def step(base_seed):
        def replica_fn():
            replica_id = tf.distribute.get_replica_context().replica_id_in_sync_group
            seed = tf.stack([base_seed, tf.cast(replica_id, tf.int32)])
            arch = dist.sample(est, 16, seed)
            return tf.concat(
                [tf.reshape(arch.hard[name], (16, -1)) for name in DARTS_LIKE], axis=1
            ), arch.log_prob

        return strategy.run(replica_fn)

    hard, log_prob = step(tf.constant(3))
    per_replica = [t.numpy() for t in strategy.experimental_local_results(hard)]
    assert len(per_replica) == 2
    assert per_replica[0].shape == (16, sum(r * c for r, c in DARTS_LIKE.values()))
    assert not np.array_equal(per_replica[0], per_replica[1])
    for lp in strategy.experimental_local_results(log_prob):
        expected = -sum(rows * np.log(choices) for rows, choices in DARTS_LIKE.values())
        np.testing.assert_allclose(lp.numpy(), expected, rtol=1e-5)


_TWO_STRATEGIES = """
import os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from unas_keras.search.distributed import mirrored_strategy
for n in (3, 5):
    strategy = mirrored_strategy(["/cpu:0", "/cpu:1"])

    @tf.function
    def step():
        return strategy.run(lambda: tf.distribute.get_replica_context().all_reduce("sum", tf.ones([n])))

    print(n, strategy.experimental_local_results(step())[0].numpy().tolist())
"""


def test_successive_mirrored_strategies_in_one_process():
    """A second strategy's all-reduce of another shape runs (plain MirroredStrategy aborts: keys reused)."""
    root = pathlib.Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root))
    done = subprocess.run([sys.executable, "-c", _TWO_STRATEGIES], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[:2] == ["3 [2.0, 2.0, 2.0]", "5 [2.0, 2.0, 2.0, 2.0, 2.0]"]
