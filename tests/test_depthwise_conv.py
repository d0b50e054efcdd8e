"""Tests of the depthwise convolution with the fast kernel gradient."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from unas_keras.layers.depthwise_conv import DepthwiseConv2D


def _rand(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def _value_and_gradients(layer, x, cotangent):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(y * cotangent)
    dx, dk = tape.gradient(loss, [x, layer.kernel])
    return y.numpy(), dx.numpy(), dk.numpy()


@pytest.mark.parametrize(
    "side,kernel,stride,padding",
    [(9, 5, 1, "same"), (8, 7, 1, "same"), (9, 7, 2, "same"), (8, 5, 2, "same"), (11, 5, 2, "valid"),
     (9, 7, 1, "valid"), (8, 3, 2, "same")],
)
def test_value_and_gradients_equal_keras(side, kernel, stride, padding):
    ours = DepthwiseConv2D(kernel, strides=stride, padding=padding, use_bias=False)
    reference = keras.layers.DepthwiseConv2D(kernel, strides=stride, padding=padding, use_bias=False)
    x = _rand((3, side, side, 6))
    ours.build(x.shape)
    assert ours._can_use_fast_gradient(x) == (kernel >= 5)
    reference.build(x.shape)
    reference.kernel.assign(ours.kernel)
    cotangent = _rand(tuple(reference.compute_output_shape(x.shape)), seed=1)
    got = _value_and_gradients(ours, x, cotangent)
    want = _value_and_gradients(reference, x, cotangent)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


def test_unknown_spatial_size_falls_back_to_keras():
    layer = DepthwiseConv2D(5, padding="same", use_bias=False)
    layer.build((None, None, None, 4))
    assert not layer._can_use_fast_gradient(keras.KerasTensor((2, None, None, 4)))
    assert layer._can_use_fast_gradient(keras.KerasTensor((2, 8, 8, 4)))
    x = _rand((2, 7, 7, 4))
    np.testing.assert_allclose(layer(x).numpy(), keras.ops.depthwise_conv(x, layer.kernel, 1, "same").numpy(),
                               rtol=1e-6, atol=1e-6)


def test_config_round_trip():
    layer = DepthwiseConv2D(7, strides=2, padding="valid", use_bias=False, name="dw")
    clone = DepthwiseConv2D.from_config(layer.get_config())
    assert clone.kernel_size == (7, 7) and clone.strides == (2, 2) and clone.name == "dw"
