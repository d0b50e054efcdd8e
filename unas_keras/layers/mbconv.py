"""The MBConv (inverted residual) block of MobileNetV2 and ProxylessNAS."""

import keras

from unas_keras.layers.depthwise_conv import DepthwiseConv2D
from unas_keras.layers.fused_batch_norm import FusedBatchNormalization

_CHANNEL_AXIS = -1  # channels_last only


def correct_pad(spatial_shape, kernel_size):
    """Zero padding that makes a stride-2 "valid" convolution match MobileNetV2.

    The same rule as `keras.applications.imagenet_utils.correct_pad`: pad
    `k // 2` after and `k // 2 - 1` before an even (or unknown) side, `k // 2`
    on both sides of an odd one.

    Args:
        spatial_shape: `(height, width)`; entries may be `None` (unknown).
        kernel_size: odd int, the square kernel side.

    Returns:
        `((top, bottom), (left, right))`.
    """
    half = kernel_size // 2
    pads = []
    for side in spatial_shape:
        adjust = 1 if side is None else 1 - side % 2
        pads.append((half - adjust, half))
    return tuple(pads)


def conv_output_side(side, stride):
    """Output side of a "same" (or MobileNetV2-padded) convolution, `None` if unknown."""
    if side is None:
        return None
    return -(-side // stride)


@keras.saving.register_keras_serializable(package="unas_keras")
class MBConv(keras.layers.Layer):
    """Inverted residual block: 1x1 expand, k x k depthwise, 1x1 linear project.

    1x1 expand to `expansion * in_channels` (BN, ReLU6; omitted when
    `expansion == 1`) -> depthwise `kernel_size` x `kernel_size` with `stride`
    (BN, ReLU6) -> 1x1 project to `out_channels` (BN, no activation). A
    residual connection is added when stride is 1 and the input width equals
    `out_channels`. Convolutions have no biases. A stride-2 depthwise
    convolution is preceded by the explicit zero padding of
    `keras.applications.MobileNetV2` and uses "valid" padding; stride 1 uses
    "same" (as does stride 2 when the input side is unknown at build time,
    which gives the same `ceil(side / 2)` output on every size). Channels
    last.

    Args:
        out_channels: output width.
        kernel_size: odd side of the depthwise kernel.
        expansion: width multiplier of the hidden (depthwise) layer.
        stride: 1 or 2, the depthwise stride.
        bn_epsilon: BatchNormalization epsilon.
        bn_momentum: BatchNormalization momentum of the moving statistics
            (Keras convention; MobileNetV2 uses 0.999).
        name: layer name.
        bn_affine: whether BatchNormalization has learned scale and offset
            (search supernets use `False`).
        **kwargs: other `keras.layers.Layer` arguments (e.g. `dtype`).
    """

    def __init__(
        self,
        out_channels,
        kernel_size,
        expansion,
        stride=1,
        bn_epsilon=1e-3,
        bn_momentum=0.99,
        name=None,
        bn_affine=True,
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        for arg, value in (("out_channels", out_channels), ("kernel_size", kernel_size),
                           ("expansion", expansion)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"MBConv {arg} must be a positive int, got {value!r}.")
        if kernel_size % 2 != 1:
            raise ValueError(f"MBConv kernel_size must be odd, got {kernel_size}.")
        if stride not in (1, 2):
            raise ValueError(f"MBConv stride must be 1 or 2, got {stride!r}.")
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.expansion = expansion
        self.stride = stride
        self.bn_epsilon = bn_epsilon
        self.bn_momentum = bn_momentum
        self.bn_affine = bn_affine
        self.use_residual = None  # known once the input width is known (build)

    def _bn(self, name):
        return FusedBatchNormalization(
            axis=_CHANNEL_AXIS,
            epsilon=self.bn_epsilon,
            momentum=self.bn_momentum,
            center=self.bn_affine,
            scale=self.bn_affine,
            name=name,
            dtype=self.dtype_policy,
        )

    def build(self, input_shape):
        if self.built:
            return
        input_shape = tuple(input_shape)
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(
                f"MBConv {self.name!r} expects a channels-last 4D input with a known width, "
                f"got shape {input_shape}."
            )
        in_channels = int(input_shape[-1])
        hidden = in_channels * self.expansion
        self.use_residual = self.stride == 1 and in_channels == self.out_channels
        policy = self.dtype_policy
        shape = input_shape
        self.expand = self.expand_bn = self.expand_relu = None
        if self.expansion != 1:
            self.expand = keras.layers.Conv2D(
                hidden, 1, padding="same", use_bias=False, name="expand", dtype=policy)
            self.expand_bn = self._bn("expand_bn")
            self.expand_relu = keras.layers.ReLU(6.0, name="expand_relu", dtype=policy)
            self.expand.build(shape)
            shape = self.expand.compute_output_shape(shape)
            self.expand_bn.build(shape)
        self.pad = None
        if self.stride == 2 and None not in shape[1:3]:
            self.pad = keras.layers.ZeroPadding2D(
                correct_pad(shape[1:3], self.kernel_size), name="pad", dtype=policy)
            shape = self.pad.compute_output_shape(shape)
        self.depthwise = DepthwiseConv2D(
            self.kernel_size,
            strides=self.stride,
            padding="valid" if self.pad is not None else "same",
            use_bias=False,
            name="depthwise",
            dtype=policy,
        )
        self.depthwise_bn = self._bn("depthwise_bn")
        self.depthwise_relu = keras.layers.ReLU(6.0, name="depthwise_relu", dtype=policy)
        self.depthwise.build(shape)
        shape = self.depthwise.compute_output_shape(shape)
        self.depthwise_bn.build(shape)
        self.project = keras.layers.Conv2D(
            self.out_channels, 1, padding="same", use_bias=False, name="project", dtype=policy)
        self.project_bn = self._bn("project_bn")
        self.project.build(shape)
        self.project_bn.build(self.project.compute_output_shape(shape))
        self.built = True

    def call(self, inputs, training=None):
        x = inputs
        if self.expand is not None:
            x = self.expand(x)
            x = self.expand_bn(x, training=training)
            x = self.expand_relu(x)
        if self.pad is not None:
            x = self.pad(x)
        x = self.depthwise(x)
        x = self.depthwise_bn(x, training=training)
        x = self.depthwise_relu(x)
        x = self.project(x)
        x = self.project_bn(x, training=training)
        if self.use_residual:
            x = x + inputs
        return x

    def compute_output_shape(self, input_shape):
        batch, height, width = tuple(input_shape)[:3]
        return (batch, conv_output_side(height, self.stride), conv_output_side(width, self.stride),
                self.out_channels)

    def get_config(self):
        config = super().get_config()
        config.update(
            out_channels=self.out_channels,
            kernel_size=self.kernel_size,
            expansion=self.expansion,
            stride=self.stride,
            bn_epsilon=self.bn_epsilon,
            bn_momentum=self.bn_momentum,
            bn_affine=self.bn_affine,
        )
        return config
