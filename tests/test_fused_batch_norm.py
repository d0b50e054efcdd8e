"""FusedBatchNormalization: Keras BatchNormalization's results through one fused op in training."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from unas_keras.layers.fused_batch_norm import FusedBatchNormalization


def _pair(affine):
    layers = []
    for cls in (keras.layers.BatchNormalization, FusedBatchNormalization):
        layer = cls(momentum=0.9, epsilon=1e-5, center=affine, scale=affine)
        layer.build((8, 5, 5, 4))
        if affine:
            layer.gamma.assign(np.linspace(0.5, 2.0, 4))
            layer.beta.assign(np.linspace(-1.0, 1.0, 4))
        layers.append(layer)
    return layers


@pytest.mark.parametrize("affine", [False, True])
def test_training_output_gradients_and_moving_statistics(affine):
    x = tf.constant(np.random.default_rng(0).normal(2.0, 3.0, (8, 5, 5, 4)).astype("float32"))
    reference, fused = _pair(affine)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y_ref, y_fused = reference(x, training=True), fused(x, training=True)
        loss_ref, loss_fused = (tf.reduce_sum(y * tf.sin(y)) for y in (y_ref, y_fused))
    np.testing.assert_allclose(y_fused, y_ref, atol=1e-5)
    np.testing.assert_allclose(tape.gradient(loss_fused, x), tape.gradient(loss_ref, x), atol=1e-4)
    if affine:
        for a, b in ((fused.gamma, reference.gamma), (fused.beta, reference.beta)):
            np.testing.assert_allclose(tape.gradient(loss_fused, a), tape.gradient(loss_ref, b), rtol=1e-4,
                                       atol=1e-3)
    np.testing.assert_allclose(fused.moving_mean, reference.moving_mean, atol=1e-6)
    # The moving variance takes the unbiased batch variance (n / (n - 1) of Keras's biased one).
    n = 8 * 5 * 5
    np.testing.assert_allclose((fused.moving_variance.numpy() - 0.9) / 0.1,
                               (reference.moving_variance.numpy() - 0.9) / 0.1 * n / (n - 1), rtol=1e-5)


def test_inference_uses_the_moving_statistics_and_saves_like_keras(tmp_path):
    x = np.random.default_rng(1).normal(size=(2, 6, 6, 3)).astype("float32")
    inputs = keras.Input((6, 6, 3))
    model = keras.Model(inputs, FusedBatchNormalization(name="bn")(inputs))
    layer = model.get_layer("bn")
    layer.moving_mean.assign([0.5, -0.5, 1.0])
    layer.moving_variance.assign([4.0, 1.0, 0.25])
    expected = (x - np.array([0.5, -0.5, 1.0])) / np.sqrt(np.array([4.0, 1.0, 0.25]) + layer.epsilon)
    np.testing.assert_allclose(model(x, training=False), expected, rtol=1e-5, atol=1e-5)
    path = str(tmp_path / "bn.keras")
    model.save(path)
    again = keras.models.load_model(path)
    assert isinstance(again.get_layer("bn"), FusedBatchNormalization)
    np.testing.assert_allclose(again(x, training=False), model(x, training=False), atol=1e-6)


def test_one_graph_node_for_the_normalisation():
    layer = FusedBatchNormalization(center=False, scale=False)
    layer.build((4, 3, 3, 2))
    graph = tf.function(lambda x: layer(x, training=True)).get_concrete_function(
        tf.TensorSpec((4, 3, 3, 2), tf.float32)).graph
    types = [op.type for op in graph.get_operations()]
    assert types.count("FusedBatchNorm") == 1
    assert "Mean" not in types and "SquaredDifference" not in types


def test_gradient_fills_no_zeros_for_the_unused_outputs():
    # A tape fills the unused output gradients of FusedBatchNormV3 with zeros (five nodes per layer and
    # pass); those of FusedBatchNorm it leaves out.
    layer = FusedBatchNormalization()
    layer.build((4, 3, 3, 2))

    def loss_gradient(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x, training=True))
        return tape.gradient(loss, [x] + layer.trainable_weights)

    graph = tf.function(loss_gradient).get_concrete_function(tf.TensorSpec((4, 3, 3, 2), tf.float32)).graph
    types = [op.type for op in graph.get_operations()]
    assert types.count("FusedBatchNormGrad") == 1
    assert "ZerosLike" not in types and "Fill" not in types


def test_half_precision_inputs_use_the_mixed_precision_op():
    x = np.random.default_rng(2).normal(1.0, 2.0, (4, 3, 3, 2)).astype("float32")
    reference = keras.layers.BatchNormalization(momentum=0.9)
    fused = FusedBatchNormalization(momentum=0.9, dtype="mixed_float16")
    graph = tf.function(lambda v: fused(v, training=True)).get_concrete_function(
        tf.TensorSpec((4, 3, 3, 2), tf.float16)).graph
    assert "FusedBatchNormV3" in [op.type for op in graph.get_operations()]
    y_fused = fused(tf.constant(x, tf.float16), training=True)
    assert y_fused.dtype == tf.float16
    np.testing.assert_allclose(np.asarray(y_fused, np.float32), reference(x, training=True), atol=1e-2)
