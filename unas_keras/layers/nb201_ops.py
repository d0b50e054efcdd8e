"""The operations of the NAS-Bench-201 (NATS-Bench topology) space.

Channels-last Keras layers written with `keras.ops`:

* `none` -> `Zero` (all zeros),
* `skip_connect` -> `Identity`,
* `nor_conv_1x1` / `nor_conv_3x3` -> `ReLUConvBN` (ReLU, convolution without
  bias, batch normalization, as in the benchmark),
* `avg_pool_3x3` -> `AvgPool3x3` (stride 1, padding excluded from the average,
  i.e. PyTorch's `count_include_pad=False`),

and `NB201ResidualBlock`, the benchmark's residual reduction block between
stages. Padding is explicit and symmetric (`kernel_size // 2` on each side),
as in the benchmark, so strided convolutions sample the same positions.

Batch normalization uses the benchmark's constants (epsilon 1e-5, PyTorch
momentum 0.1, i.e. Keras momentum 0.9).
"""

import keras
from keras import ops

from unas_keras._validate import check_int
from unas_keras.layers.fused_batch_norm import FusedBatchNormalization
from unas_keras.space import nb201 as nb201_space

BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9


def _check_strides(strides):
    if strides not in (1, 2) or isinstance(strides, bool):
        raise ValueError(f"`strides` must be 1 or 2. Received: {strides!r}")
    return strides


def batch_norm(affine, name):
    """A BatchNormalization layer with the benchmark's constants.

    Args:
        affine: whether it has the learned scale and offset (False in the
            search supernet's cells).
        name: layer name.
    """
    return FusedBatchNormalization(
        epsilon=BN_EPSILON, momentum=BN_MOMENTUM, center=affine, scale=affine, name=name
    )


def _pad(x, amount):
    if amount == 0:
        return x
    return ops.pad(x, [[0, 0], [amount, amount], [amount, amount], [0, 0]])


@keras.saving.register_keras_serializable(package="unas_keras")
class Zero(keras.layers.Layer):
    """The `none` operation: a tensor of zeros shaped like the input."""

    def call(self, inputs):
        return ops.zeros_like(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="unas_keras")
class Identity(keras.layers.Layer):
    """The `skip_connect` operation (stride 1, same width): the input itself."""

    def call(self, inputs):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="unas_keras")
class AvgPool3x3(keras.layers.Layer):
    """The `avg_pool_3x3` operation: 3x3 average, stride 1, padding not counted."""

    def call(self, inputs):
        # With "same" padding, keras.ops.average_pool divides by the number of
        # valid (unpadded) elements, i.e. count_include_pad=False.
        return ops.average_pool(inputs, pool_size=3, strides=1, padding="same")

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="unas_keras")
class ReLUConvBN(keras.layers.Layer):
    """ReLU -> k x k convolution (no bias, symmetric padding k // 2) -> BN.

    Args:
        filters: output channels.
        kernel_size: 1 or 3 (any positive odd int works).
        strides: 1 or 2.
        affine: whether the BN has a learned scale and offset.
    """

    def __init__(self, filters, kernel_size, strides=1, affine=True, **kwargs):
        super().__init__(**kwargs)
        self.filters = check_int(filters, "filters", 1)
        self.kernel_size = check_int(kernel_size, "kernel_size", 1)
        if self.kernel_size % 2 != 1:
            raise ValueError(f"`kernel_size` must be odd. Received: {kernel_size}")
        self.strides = _check_strides(strides)
        self.affine = bool(affine)
        self.conv = keras.layers.Conv2D(
            self.filters, self.kernel_size, strides=self.strides, padding="valid",
            use_bias=False, name="conv",
        )
        self.bn = batch_norm(self.affine, name="bn")

    def build(self, input_shape):
        pad = self.kernel_size // 2
        padded = list(input_shape)
        for axis in (1, 2):
            if padded[axis] is not None:
                padded[axis] += 2 * pad
        self.conv.build(tuple(padded))
        self.bn.build(self.conv.compute_output_shape(tuple(padded)))

    def call(self, inputs, training=None):
        x = _pad(ops.relu(inputs), self.kernel_size // 2)
        return self.bn(self.conv(x), training=training)

    def compute_output_shape(self, input_shape):
        pad = self.kernel_size // 2
        padded = list(input_shape)
        for axis in (1, 2):
            if padded[axis] is not None:
                padded[axis] += 2 * pad
        return self.conv.compute_output_shape(tuple(padded))

    def get_config(self):
        config = super().get_config()
        config.update({
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "affine": self.affine,
        })
        return config


@keras.saving.register_keras_serializable(package="unas_keras")
class NB201ResidualBlock(keras.layers.Layer):
    """The benchmark's residual block (`ResNetBasicblock`) joining two stages.

    Main path: ReLU-conv3x3(stride)-BN, ReLU-conv3x3-BN. Shortcut: for stride
    2, a 2x2 average pool (stride 2) and a 1x1 convolution without bias; for
    stride 1, ReLU-conv1x1-BN when the width changes and the identity
    otherwise. The output is the sum of the two (no activation after it).

    Args:
        filters: output channels.
        strides: 1 or 2. With 2 the input height and width must be even.
    """

    def __init__(self, filters, strides=2, **kwargs):
        super().__init__(**kwargs)
        self.filters = check_int(filters, "filters", 1)
        self.strides = _check_strides(strides)
        self.conv_a = ReLUConvBN(self.filters, 3, strides=self.strides, name="conv_a")
        self.conv_b = ReLUConvBN(self.filters, 3, strides=1, name="conv_b")
        self.shortcut_conv = None
        self.shortcut_relu_conv_bn = None

    def build(self, input_shape):
        in_channels = input_shape[-1]
        if self.strides == 2:
            for axis in (1, 2):
                if input_shape[axis] is not None and input_shape[axis] % 2:
                    raise ValueError(
                        f"{self.name}: a stride-2 residual block needs an even height and width; "
                        f"got input shape {tuple(input_shape)}."
                    )
            self.shortcut_conv = keras.layers.Conv2D(
                self.filters, 1, padding="valid", use_bias=False, name="shortcut_conv"
            )
            pooled = (input_shape[0],
                      None if input_shape[1] is None else input_shape[1] // 2,
                      None if input_shape[2] is None else input_shape[2] // 2,
                      in_channels)
            self.shortcut_conv.build(pooled)
        elif in_channels != self.filters:
            self.shortcut_relu_conv_bn = ReLUConvBN(self.filters, 1, name="shortcut")
            self.shortcut_relu_conv_bn.build(input_shape)
        self.conv_a.build(input_shape)
        self.conv_b.build(self.conv_a.compute_output_shape(input_shape))

    def call(self, inputs, training=None):
        residual = self.conv_b(self.conv_a(inputs, training=training), training=training)
        if self.shortcut_conv is not None:
            shortcut = self.shortcut_conv(
                ops.average_pool(inputs, pool_size=2, strides=2, padding="valid")
            )
        elif self.shortcut_relu_conv_bn is not None:
            shortcut = self.shortcut_relu_conv_bn(inputs, training=training)
        else:
            shortcut = inputs
        return shortcut + residual

    def compute_output_shape(self, input_shape):
        return self.conv_a.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"filters": self.filters, "strides": self.strides})
        return config


def make_op(op_name, channels, affine=True, name=None):
    """Builds the layer of one NAS-Bench-201 operation (stride 1, same width).

    Args:
        op_name: one of `unas_keras.space.nb201.OPS`.
        channels: width of the cell (input and output).
        affine: whether convolution BNs have a learned scale and offset.
        name: layer name.

    Returns:
        A Keras layer mapping `[B, H, W, channels]` to the same shape.

    Raises:
        ValueError: on an unknown operation name.
    """
    if op_name == "none":
        return Zero(name=name)
    if op_name == "skip_connect":
        return Identity(name=name)
    if op_name == "nor_conv_1x1":
        return ReLUConvBN(channels, 1, affine=affine, name=name)
    if op_name == "nor_conv_3x3":
        return ReLUConvBN(channels, 3, affine=affine, name=name)
    if op_name == "avg_pool_3x3":
        return AvgPool3x3(name=name)
    raise ValueError(f"Unknown NAS-Bench-201 operation {op_name!r}; allowed: {list(nb201_space.OPS)}.")
