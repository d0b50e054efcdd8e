"""DARTS operations applied to many edges at once: the kernels of the search cell.

A supernet cell evaluates every candidate operation on every (node, input)
edge. Written one layer per (edge, op), a search step becomes a graph of
hundreds of thousands of small kernels that takes minutes to trace and
optimise. The layers here compute one operation type on `E` edges in one
chain of kernels: the edges' inputs are stacked along the channel axis
(`[B, H, W, E * C]`, edge-major), the depthwise convolutions and batch
normalisations are per channel anyway, and the pointwise convolutions become
one grouped convolution with `E` groups. Each edge keeps its own weights (a
channel block of the stacked kernels), so the maths and the parameter count
are those of `E` separate `darts_ops` layers; `edge_weights(e)` returns edge
`e`'s weights by sub-layer name, in the form the derived op's sub-layer of
the same name takes (`darts_ops.SepConv.dw_1`, ...).

The layers take already-rectified input (every parametric DARTS op starts
with a ReLU; the cell applies it once per input state and shares it).
"""

import keras
from keras import ops

from unas_keras.layers.darts_ops import batch_norm

# Which axis of each sub-layer weight holds the per-edge channel blocks.
_DEPTHWISE_KERNEL_AXIS = 2
_CONV_KERNEL_AXIS = 3
_BN_AXIS = 0


def _check_stride(stride):
    if stride not in (1, 2):
        raise ValueError(f"DARTS operations support stride 1 or 2, got {stride!r}.")
    return stride


def _pad(x, amount):
    return ops.pad(x, [[0, 0], [amount, amount], [amount, amount], [0, 0]])


def _strided_shape(input_shape, stride):
    batch, height, width, channels = input_shape
    return (batch, None if height is None else -(-height // stride),
            None if width is None else -(-width // stride), channels)


def _padded_shape(input_shape, amount):
    batch, height, width, channels = input_shape
    return (batch, None if height is None else height + 2 * amount,
            None if width is None else width + 2 * amount, channels)


def _block(array, axis, index, size):
    """Channel block `index` (of `size` channels) of `array` along `axis`."""
    slices = [slice(None)] * array.ndim
    slices[axis] = slice(index * size, (index + 1) * size)
    return array[tuple(slices)]


@keras.saving.register_keras_serializable(package="unas_keras")
class GroupedPointwiseConv(keras.layers.Layer):
    """A 1x1 convolution without bias in `groups` independent channel groups.

    The weights are those of `keras.layers.Conv2D(filters, 1, groups=groups,
    use_bias=False)` (kernel `[1, 1, in_channels / groups, filters]`). On the
    TensorFlow backend the convolution is one native grouped `Conv2D` (Keras
    wraps grouped convolutions on the CPU in an XLA-compiled function, one
    more traced function per call and much slower on the CPU).

    Args:
        filters: output channels, a multiple of `groups`.
        groups: number of groups.
        **kwargs: base `Layer` arguments.
    """

    def __init__(self, filters, groups, **kwargs):
        super().__init__(**kwargs)
        if filters % groups:
            raise ValueError(f"filters ({filters}) must be a multiple of groups ({groups}).")
        self.filters = int(filters)
        self.groups = int(groups)

    def build(self, input_shape):
        if input_shape[-1] % self.groups:
            raise ValueError(f"input channels ({input_shape[-1]}) must be a multiple of groups ({self.groups}).")
        self.kernel = self.add_weight(
            name="kernel", shape=(1, 1, input_shape[-1] // self.groups, self.filters),
            initializer="glorot_uniform")

    def call(self, inputs):
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            return tf.nn.conv2d(inputs, tf.cast(self.kernel, inputs.dtype), strides=1, padding="VALID")
        return ops.conv(inputs, self.kernel, strides=1, padding="valid")

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "groups": self.groups}


class _StackedOp(keras.layers.Layer):
    """Shared parts: `E` edges of `filters` channels each, stacked edge-major."""

    def __init__(self, filters, num_edges, stride=1, affine=False, **kwargs):
        super().__init__(**kwargs)
        if num_edges < 1:
            raise ValueError(f"num_edges must be >= 1, got {num_edges!r}.")
        self.filters = int(filters)
        self.num_edges = int(num_edges)
        self.stride = _check_stride(stride)
        self.affine = bool(affine)

    @property
    def stacked_channels(self):
        return self.filters * self.num_edges

    def _check_channels(self, input_shape):
        if input_shape[-1] != self.stacked_channels:
            raise ValueError(
                f"{type(self).__name__} over {self.num_edges} edges of {self.filters} channels expects "
                f"{self.stacked_channels} input channels, got {input_shape[-1]}.")

    def _grouped_pointwise(self, name, filters_per_edge=None):
        per_edge = self.filters if filters_per_edge is None else filters_per_edge
        return GroupedPointwiseConv(per_edge * self.num_edges, self.num_edges, name=name)

    def _sublayer_axes(self):
        """dict sub-layer attribute -> axis of its weights that holds the edge blocks."""
        raise NotImplementedError

    def edge_weights(self, edge):
        """Edge `edge`'s weights: dict sub-layer name -> list of numpy arrays.

        Each list is what `set_weights` of the derived op's sub-layer of the
        same name takes.
        """
        if not 0 <= edge < self.num_edges:
            raise ValueError(f"edge must be in [0, {self.num_edges}), got {edge!r}.")
        out = {}
        for name, axis in self._sublayer_axes().items():
            layer = getattr(self, name)
            out[name] = [_block(array, axis, edge, array.shape[axis] // self.num_edges)
                         for array in layer.get_weights()]
        return out

    def compute_output_shape(self, input_shape):
        return _strided_shape(input_shape, self.stride)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "num_edges": self.num_edges,
                "stride": self.stride, "affine": self.affine}


@keras.saving.register_keras_serializable(package="unas_keras")
class StackedSepConv(_StackedOp):
    """`darts_ops.SepConv` on `num_edges` stacked edges (input already rectified).

    Args:
        filters: channels per edge (input and output).
        kernel_size: odd depthwise kernel side.
        num_edges: number of stacked edges `E`.
        stride: 1 or 2 (the first depthwise convolution only).
        affine: whether the batch normalisations have scale and offset.
        **kwargs: base `Layer` arguments.
    """

    def __init__(self, filters, kernel_size, num_edges, stride=1, affine=False, **kwargs):
        super().__init__(filters, num_edges, stride, affine, **kwargs)
        self.kernel_size = int(kernel_size)
        self._padding = self.kernel_size // 2
        self.dw_1 = keras.layers.DepthwiseConv2D(
            self.kernel_size, strides=stride, padding="same" if stride == 1 else "valid", use_bias=False,
            name="dw_1")
        self.pw_1 = self._grouped_pointwise("pw_1")
        self.bn_1 = batch_norm(affine, "bn_1")
        self.dw_2 = keras.layers.DepthwiseConv2D(self.kernel_size, padding="same", use_bias=False, name="dw_2")
        self.pw_2 = self._grouped_pointwise("pw_2")
        self.bn_2 = batch_norm(affine, "bn_2")

    def build(self, input_shape):
        self._check_channels(input_shape)
        shape = _padded_shape(input_shape, self._padding) if self.stride > 1 else input_shape
        for layer in (self.dw_1, self.pw_1, self.bn_1, self.dw_2, self.pw_2, self.bn_2):
            layer.build(shape)
            shape = layer.compute_output_shape(shape)

    def call(self, inputs, training=None):
        x = _pad(inputs, self._padding) if self.stride > 1 else inputs
        x = self.bn_1(self.pw_1(self.dw_1(x)), training=training)
        x = ops.relu(x)
        return self.bn_2(self.pw_2(self.dw_2(x)), training=training)

    def _sublayer_axes(self):
        return {"dw_1": _DEPTHWISE_KERNEL_AXIS, "pw_1": _CONV_KERNEL_AXIS, "bn_1": _BN_AXIS,
                "dw_2": _DEPTHWISE_KERNEL_AXIS, "pw_2": _CONV_KERNEL_AXIS, "bn_2": _BN_AXIS}

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size}


@keras.saving.register_keras_serializable(package="unas_keras")
class StackedDilConv(_StackedOp):
    """`darts_ops.DilConv` (dilation 2) on `num_edges` stacked edges (input already rectified).

    At stride 2 the input is subsampled and the kernel undilated, as in `DilConv`.

    Args:
        filters: channels per edge.
        kernel_size: odd depthwise kernel side.
        num_edges: number of stacked edges.
        stride: 1 or 2.
        affine: whether the batch normalisation has scale and offset.
        **kwargs: base `Layer` arguments.
    """

    dilation_rate = 2

    def __init__(self, filters, kernel_size, num_edges, stride=1, affine=False, **kwargs):
        super().__init__(filters, num_edges, stride, affine, **kwargs)
        self.kernel_size = int(kernel_size)
        self.dw = keras.layers.DepthwiseConv2D(
            self.kernel_size, padding="same", dilation_rate=self.dilation_rate if stride == 1 else 1,
            use_bias=False, name="dw")
        self.pw = self._grouped_pointwise("pw")
        self.bn = batch_norm(affine, "bn")

    def build(self, input_shape):
        self._check_channels(input_shape)
        shape = _strided_shape(input_shape, self.stride)
        for layer in (self.dw, self.pw, self.bn):
            layer.build(shape)
            shape = layer.compute_output_shape(shape)

    def call(self, inputs, training=None):
        x = inputs[:, :: self.stride, :: self.stride, :] if self.stride > 1 else inputs
        return self.bn(self.pw(self.dw(x)), training=training)

    def _sublayer_axes(self):
        return {"dw": _DEPTHWISE_KERNEL_AXIS, "pw": _CONV_KERNEL_AXIS, "bn": _BN_AXIS}

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size}


@keras.saving.register_keras_serializable(package="unas_keras")
class StackedFactorizedReduce(_StackedOp):
    """`darts_ops.FactorizedReduce` (stride-2 `skip_connect`) on stacked edges (input rectified).

    Args:
        filters: channels per edge, even.
        num_edges: number of stacked edges.
        affine: whether the batch normalisation has scale and offset.
        **kwargs: base `Layer` arguments.
    """

    def __init__(self, filters, num_edges, affine=False, **kwargs):
        kwargs.pop("stride", None)
        super().__init__(filters, num_edges, 2, affine, **kwargs)
        if self.filters % 2:
            raise ValueError(f"FactorizedReduce needs an even number of filters, got {filters}.")
        self.conv_1 = self._grouped_pointwise("conv_1", self.filters // 2)
        self.conv_2 = self._grouped_pointwise("conv_2", self.filters // 2)
        self.bn = batch_norm(affine, "bn")

    def build(self, input_shape):
        self._check_channels(input_shape)
        reduced = _strided_shape(input_shape, 2)
        self.conv_1.build(reduced)
        self.conv_2.build(reduced)
        self.bn.build(reduced)

    def call(self, inputs, training=None):
        shifted = ops.pad(inputs[:, 1:, 1:, :], [[0, 0], [0, 1], [0, 1], [0, 0]])
        y_1 = self.conv_1(inputs[:, ::2, ::2, :])
        y_2 = self.conv_2(shifted[:, ::2, ::2, :])
        # Each edge's output is [its conv_1 half, its conv_2 half].
        height, width = y_1.shape[1], y_1.shape[2]
        half = (-1, height, width, self.num_edges, self.filters // 2)
        y = ops.concatenate([ops.reshape(y_1, half), ops.reshape(y_2, half)], axis=-1)
        y = ops.reshape(y, (-1, height, width, self.stacked_channels))
        return self.bn(y, training=training)

    def _sublayer_axes(self):
        return {"conv_1": _CONV_KERNEL_AXIS, "conv_2": _CONV_KERNEL_AXIS, "bn": _BN_AXIS}

    def get_config(self):
        config = super().get_config()
        config.pop("stride")
        return config


def make_stacked_op(op_name, channels, num_edges, stride, affine, name=None):
    """The stacked layer of a parametric DARTS op, or None for a parameter-free one.

    Parameter-free ops (`skip_connect` at stride 1, the pools, `none`) are
    applied by the cell to the un-rectified, un-repeated input states.
    """
    if op_name in ("sep_conv_3x3", "sep_conv_5x5", "sep_conv_7x7"):
        return StackedSepConv(channels, int(op_name[-1]), num_edges, stride, affine, name=name)
    if op_name in ("dil_conv_3x3", "dil_conv_5x5"):
        return StackedDilConv(channels, int(op_name[-1]), num_edges, stride, affine, name=name)
    if op_name == "skip_connect" and stride == 2:
        return StackedFactorizedReduce(channels, num_edges, affine, name=name)
    return None
