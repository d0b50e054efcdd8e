"""Tests of the parameter and multiply-add counters."""

import keras
import numpy as np
import pytest

from unas_keras.layers.mbconv import MBConv
from unas_keras.profile import count_macs, count_params

# keras.applications.MobileNetV2 (width 1.0, 224x224, 1000 classes): ~300M multiply-adds in the
# MobileNetV2 paper; 300.8M is the figure commonly quoted for this network.
MOBILENET_V2_MACS = 300.8e6


def test_single_conv_exact():
    inputs = keras.Input((10, 12, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(5, 3, strides=2, padding="same")(inputs))
    # 5 x 6 output positions x 5 filters x (3 x 3 x 3) taps.
    assert count_macs(model) == 5 * 6 * 5 * 27
    assert count_params(model) == 27 * 5 + 5


def test_dense_depthwise_and_grouped_exact():
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.DepthwiseConv2D(3, padding="valid", depth_multiplier=2)(inputs)  # 6x6x8
    x = keras.layers.Conv2D(6, 1, groups=2, use_bias=False)(x)  # 6x6x6, 4 inputs per group
    x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(7)(x)
    model = keras.Model(inputs, out)
    expected = 6 * 6 * 8 * 9 + 6 * 6 * 6 * 4 + 216 * 7
    assert count_macs(model) == expected
    # Input shape override: the counter traces at the given resolution.
    assert count_macs(model, input_shape=(8, 8, 4)) == expected


def test_nested_layers_are_counted():
    """A custom layer with sub-layers (an MBConv) is seen through."""
    inputs = keras.Input((9, 9, 8))
    model = keras.Model(inputs, MBConv(16, 5, 3, stride=2)(inputs))
    # expand 9x9x24x8, depthwise 5x5x(5x5x24), project 5x5x16x24.
    assert count_macs(model) == 81 * 24 * 8 + 25 * 24 * 25 + 25 * 16 * 24


def test_count_params_excludes_auxiliary_layers():
    inputs = keras.Input((4,))
    main = keras.layers.Dense(3, name="main")(inputs)
    aux = keras.layers.Dense(2, name="auxiliary_head")(inputs)
    model = keras.Model(inputs, [main, aux])
    assert count_params(model) == 15 + 10
    assert count_params(model, exclude_auxiliary=True) == 15
    frozen = keras.layers.Dense(2, name="frozen", trainable=False)
    frozen.build((None, 4))
    assert count_params(frozen) == 0


def test_mobilenet_v2_macs():
    model = keras.applications.MobileNetV2(weights=None)
    macs = count_macs(model)
    assert abs(macs - MOBILENET_V2_MACS) / MOBILENET_V2_MACS < 0.02, macs


def test_proxylessnas_gpu_macs():
    """ProxylessNAS-GPU: 465M multiply-adds published (224x224, 1000 classes)."""
    from unas_keras.networks.proxyless import build_proxyless_model
    from unas_keras.space import presets

    model = build_proxyless_model(presets.get("proxylessnas_gpu").genotype, 1000, (224, 224, 3))
    assert abs(count_macs(model) - 465e6) / 465e6 < 0.02


def test_count_macs_needs_a_known_input_shape():
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 3)(inputs))
    with pytest.raises(ValueError, match="fully known"):
        count_macs(model)
    assert count_macs(model, input_shape=(5, 5, 3)) == 3 * 3 * 2 * 27


def test_conditional_counts_the_costlier_branch():
    class Either(keras.layers.Layer):
        def build(self, input_shape):
            self.big = keras.layers.Conv2D(4, 3, padding="same")
            self.small = keras.layers.Conv2D(4, 1)
            self.big.build(input_shape)
            self.small.build(input_shape)

        def call(self, x):
            return keras.ops.cond(keras.ops.sum(x) > 0, lambda: self.big(x), lambda: self.small(x))

    inputs = keras.Input((5, 5, 2))
    model = keras.Model(inputs, Either()(inputs))
    assert count_macs(model) == 25 * 4 * 9 * 2


def test_raw_keras_ops_convolutions_are_counted():
    """Convolutions written with keras.ops inside a custom layer count too."""

    class RawConv(keras.layers.Layer):
        def build(self, input_shape):
            self.kernel = self.add_weight(shape=(3, 3, input_shape[-1], 6), initializer="ones")

        def call(self, x):
            return keras.ops.conv(x, self.kernel, strides=1, padding="valid")

    inputs = keras.Input((7, 7, 2))
    model = keras.Model(inputs, RawConv()(inputs))
    assert count_macs(model) == 5 * 5 * 6 * 18
