"""The operations of the DARTS cell space as Keras layers (channels_last).

Each layer matches the corresponding module of the DARTS evaluation network
(Liu et al., "DARTS: Differentiable Architecture Search", ICLR 2019): same
structure, no convolution biases, the same parameter count, and PyTorch's
symmetric `k // 2` padding (strided layers pad explicitly, because Keras
`"same"` padding with stride 2 pads only the bottom/right side). Batch
normalization uses PyTorch's defaults (epsilon 1e-5, momentum 0.1, i.e. Keras
momentum 0.9); `affine=False` drops its scale and offset, as in the search
network.

Use `make_op(name, channels, stride, affine)` to build an operation by name.

The layers with parameters also compute several edges at once (`groups=g`, used by the search cell):
the g edges' inputs are stacked along channels (`[B, H, W, g * C]`) and so are their outputs. Depthwise
convolutions and batch normalizations are per channel, so on stacked channels they are the edges' own;
pointwise convolutions become grouped ones (`GroupedPointwise`). Edge `s` owns channel block `s` of each variable
(`edge_weights` slices it out), and the maths per edge is that of the one-edge layer.
The layers are registered for saving as `unas_keras>Darts<ClassName>` (the
NAS-Bench-201 ops reuse some class names).
"""

import functools

import keras
import tensorflow as tf
from keras import ops

from unas_keras.layers.fused_batch_norm import FusedBatchNormalization
from unas_keras.space.darts import ALL_OPS

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def batch_norm(affine, name):
    """A BatchNormalization layer with the DARTS (PyTorch default) settings (fused in training)."""
    return FusedBatchNormalization(
        momentum=BN_MOMENTUM, epsilon=BN_EPSILON, center=affine, scale=affine, name=name
    )


def _check_stride(stride):
    if stride not in (1, 2):
        raise ValueError(f"DARTS operations support stride 1 or 2, got {stride!r}.")
    return stride


def _even_odd_pixels(x):
    """`(x[:, ::2, ::2, :], x[:, 1::2, 1::2, :])` of an NHWC tensor with even static sides.

    Computed as a space-to-depth and a split: the same values, but their gradient is a
    depth-to-space and a concatenation. The stride-2 slices and their gradients
    (`StridedSliceGrad`, ~30 ms a call on CPU) took 9% of a DARTS search step's CPU time.
    """
    blocks = tf.split(tf.nn.space_to_depth(x, 2), 4, axis=-1)  # pixel (row % 2, col % 2) = block 2r + c
    return blocks[0], blocks[3]


def _has_even_sides(x):
    """Whether `x` (NHWC) has static, even height and width (`_even_odd_pixels` applies)."""
    height, width = x.shape[1], x.shape[2]
    return height is not None and width is not None and height % 2 == 0 and width % 2 == 0


def _strided_size(size, stride):
    """Output side of a DARTS strided layer (ceil(size / stride)); None stays None."""
    return None if size is None else -(-size // stride)


def _reduced_shape(input_shape, stride, channels=None):
    batch, height, width, in_channels = input_shape
    return (
        batch,
        _strided_size(height, stride),
        _strided_size(width, stride),
        in_channels if channels is None else channels,
    )


def _build_chain(layers, input_shape):
    """Builds `layers` in order, feeding each the output shape of the previous one."""
    shape = input_shape
    for layer in layers:
        layer.build(shape)
        shape = layer.compute_output_shape(shape)
    return shape


def _check_groups(groups, *channel_counts):
    if not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}.")
    for count in channel_counts:
        if count is not None and count % groups:
            raise ValueError(f"{count} channels do not split into {groups} groups.")
    return groups


def edge_weights(layer, slot, like):
    """The weights of edge `slot` of a grouped op layer, in the layout of the one-edge layer `like`.

    Args:
        layer: a built op layer made with `groups=g` (`make_op(..., groups=g)`).
        slot: the edge's position in the group, `0 <= slot < g`.
        like: a built layer of the same class and settings with `groups=1` (e.g. a derived cell's op).

    Returns:
        A list of arrays for `like.set_weights`: each variable's block `slot` along the one axis on which
        the grouped and the one-edge shapes differ.

    Raises:
        ValueError: if the layers do not match.
    """
    sources, targets = layer.get_weights(), like.get_weights()
    if type(layer) is not type(like) or len(sources) != len(targets):
        raise ValueError(f"{layer.name!r} and {like.name!r} are not the same operation.")
    out = []
    for source, target in zip(sources, targets):
        axes = [a for a, (m, n) in enumerate(zip(source.shape, target.shape)) if m != n]
        if source.ndim != target.ndim or len(axes) > 1:
            raise ValueError(f"Weights of shapes {source.shape} and {target.shape} do not match.")
        if axes:
            size = target.shape[axes[0]]
            source = source.take(range(slot * size, (slot + 1) * size), axis=axes[0])
        if source.shape != target.shape:
            raise ValueError(f"Weights of shapes {source.shape} and {target.shape} do not match.")
        out.append(source)
    return out


@functools.lru_cache(maxsize=None)
def grouped_conv_runs_on_cpu():
    """Whether TensorFlow's CPU kernel runs grouped convolutions (it does with oneDNN, the default on x86).

    Probed once per process on a tiny input, eagerly even when first asked while a graph is traced; the
    answer is a fact of the installed TensorFlow.
    """
    try:
        with tf.init_scope(), tf.device("/CPU:0"):
            tf.nn.conv2d(tf.ones((1, 1, 1, 2)), tf.ones((1, 1, 1, 2)), 1, "VALID")
    except (tf.errors.UnimplementedError, tf.errors.InvalidArgumentError):
        return False
    return True


@keras.saving.register_keras_serializable(package="unas_keras", name="DartsGroupedPointwise")
class GroupedPointwise(keras.layers.Layer):
    """A 1x1 convolution without bias in `groups` independent channel groups.

    The kernel has the layout of a grouped `keras.layers.Conv2D` (`[1, 1, in / groups, filters]`; output
    block `s` reads input block `s`). Keras runs grouped convolutions through XLA on CPU, which was 10x
    slower here; this layer calls TensorFlow's grouped convolution (one op; oneDNN on CPU), or, where
    the CPU kernel lacks grouped convolutions (`grouped_conv_runs_on_cpu`), a matmul batched over the
    groups (the same result, with a dozen more graph nodes per call).

    Args:
        filters: output channels of all groups together.
        groups: number of groups.
        **kwargs: base `Layer` arguments.
    """

    def __init__(self, filters, groups, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.groups = _check_groups(groups, filters)

    def build(self, input_shape):
        in_channels = input_shape[-1]
        _check_groups(self.groups, in_channels)
        self.kernel = self.add_weight(name="kernel", shape=(1, 1, in_channels // self.groups, self.filters),
                                      initializer="glorot_uniform")

    def call(self, inputs):
        kernel = ops.cast(self.kernel, inputs.dtype)
        if grouped_conv_runs_on_cpu():
            return tf.nn.conv2d(inputs, kernel, 1, "VALID")
        return self._batched_matmul(inputs, kernel)

    def _batched_matmul(self, inputs, kernel):
        side = tuple(inputs.shape[1:3])
        g, in_per_group = self.groups, inputs.shape[-1] // self.groups
        x = ops.transpose(ops.reshape(inputs, (-1, g, in_per_group)), (1, 0, 2))
        kernel = ops.transpose(ops.reshape(kernel, (in_per_group, g, self.filters // g)), (1, 0, 2))
        y = ops.transpose(ops.matmul(x, kernel), (1, 0, 2))
        return ops.reshape(y, (-1,) + side + (self.filters,))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "groups": self.groups}


def _pointwise(filters, groups, name):
    """A bias-free 1x1 convolution (grouped when `groups > 1`)."""
    if groups == 1:
        return keras.layers.Conv2D(filters, 1, use_bias=False, name=name)
    return GroupedPointwise(filters, groups, name=name)


def _pad(x, amount, value=0.0):
    """Symmetric spatial padding of an NHWC tensor."""
    return ops.pad(x, [[0, 0], [amount, amount], [amount, amount], [0, 0]], constant_values=value)


@keras.saving.register_keras_serializable(package="unas_keras", name="DartsZero")
class Zero(keras.layers.Layer):
    """The `none` operation: zeros, spatially strided like the other operations.

    Args:
        stride: 1 or 2.
        **kwargs: base `Layer` arguments (`name`, ...).
    """

    def __init__(self, stride=1, **kwargs):
        super().__init__(**kwargs)
        self.stride = _check_stride(stride)

    def call(self, inputs):
        return ops.zeros_like(inputs[:, :: self.stride, :: self.stride, :])

    def compute_output_shape(self, input_shape):
        return _reduced_shape(input_shape, self.stride)

    def get_config(self):
        return {**super().get_config(), "stride": self.stride}


@keras.saving.register_keras_serializable(package="unas_keras", name="DartsPool3x3")
class Pool3x3(keras.layers.Layer):
    """3x3 max or average pooling with padding 1 (DARTS `max_pool_3x3` / `avg_pool_3x3`).

    The average excludes the padded positions (PyTorch `count_include_pad=False`);
    the maximum ignores them.

    Args:
        pool_type: `"max"` or `"avg"`.
        stride: 1 or 2.
        **kwargs: base `Layer` arguments.
    """

    def __init__(self, pool_type="max", stride=1, **kwargs):
        super().__init__(**kwargs)
        if pool_type not in ("max", "avg"):
            raise ValueError(f"pool_type must be 'max' or 'avg', got {pool_type!r}.")
        self.pool_type = pool_type
        self.stride = _check_stride(stride)

    def call(self, inputs):
        if self.stride == 1:
            # Keras "same" at stride 1 pads 1 on each side, ignores the padding
            # in the max and excludes it from the average's count.
            pool = ops.max_pool if self.pool_type == "max" else ops.average_pool
            return pool(inputs, 3, 1, padding="same")
        if self.pool_type == "max":
            # Edge-mirrored padding: each padded value repeats a neighbour inside the same window, so the
            # maximum is PyTorch's (padding ignored), and unlike -inf padding it quantizes to int8 (LiteRT
            # aborts on an int8 tensor whose range contains -inf).
            padded = ops.pad(inputs, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="symmetric")
            return ops.max_pool(padded, 3, 2, padding="valid")
        total = ops.average_pool(_pad(inputs, 1), 3, 2, padding="valid")
        ones = ops.ones_like(inputs[:1, :, :, :1])
        fraction = ops.average_pool(_pad(ones, 1), 3, 2, padding="valid")
        return total / fraction

    def compute_output_shape(self, input_shape):
        return _reduced_shape(input_shape, self.stride)

    def get_config(self):
        return {**super().get_config(), "pool_type": self.pool_type, "stride": self.stride}


@keras.saving.register_keras_serializable(package="unas_keras", name="DartsReLUConvBN")
class ReLUConvBN(keras.layers.Layer):
    """ReLU -> k x k convolution (no bias, padding k // 2) -> BN (cell preprocessing).

    Args:
        filters: output channels.
        kernel_size: odd kernel side (DARTS preprocessing uses 1).
        stride: 1 or 2.
        affine: whether the BN has scale and offset parameters.
        **kwargs: base `Layer` arguments.
    """

    def __init__(self, filters, kernel_size=1, stride=1, affine=True, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.stride = _check_stride(stride)
        self.affine = affine
        self._padding = kernel_size // 2
        self.conv = keras.layers.Conv2D(
            filters, kernel_size, strides=stride, padding="valid", use_bias=False, name="conv"
        )
        self.bn = batch_norm(affine, "bn")

    def build(self, input_shape):
        _, height, width, channels = input_shape
        p2 = 2 * self._padding
        padded = (input_shape[0], None if height is None else height + p2,
                  None if width is None else width + p2, channels)
        _build_chain([self.conv, self.bn], padded)

    def call(self, inputs, training=None):
        x = ops.relu(inputs)
        if self._padding:
            x = _pad(x, self._padding)
        return self.bn(self.conv(x), training=training)

    def compute_output_shape(self, input_shape):
        return _reduced_shape(input_shape, self.stride, self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "affine": self.affine,
        }


@keras.saving.register_keras_serializable(package="unas_keras", name="DartsFactorizedReduce")
class FactorizedReduce(keras.layers.Layer):
    """ReLU, two 1x1 stride-2 convolutions (the second shifted by one pixel), concatenated, BN.

    Halves the spatial size; `skip_connect` at stride 2 and the preprocessing
    after a reduction cell. Odd sides are supported (the shifted branch is
    padded at the end; even sides, the DARTS case, are unaffected).

    Args:
        filters: output channels (of all groups together), even per group.
        affine: whether the BN has scale and offset parameters.
        groups: edges stacked along channels (see the module docstring).
        **kwargs: base `Layer` arguments.
    """

    def __init__(self, filters, affine=True, groups=1, **kwargs):
        super().__init__(**kwargs)
        self.groups = _check_groups(groups, filters)
        if (filters // groups) % 2:
            raise ValueError(f"FactorizedReduce needs an even number of filters per group, got {filters}.")
        self.filters = filters
        self.affine = affine
        # 1x1 convolutions at stride 2 are computed as subsampling + stride 1: the same
        # result, and it avoids a oneDNN crash (double free) in TensorFlow 2.21's
        # Conv2DBackpropFilter for strided 1x1 convolutions at some shapes.
        self.conv_1 = _pointwise(filters // 2, groups, "conv_1")
        self.conv_2 = _pointwise(filters // 2, groups, "conv_2")
        self.bn = batch_norm(affine, "bn")

    def build(self, input_shape):
        reduced = _reduced_shape(input_shape, 2)
        self.conv_1.build(reduced)
        self.conv_2.build(reduced)
        self.bn.build(self.compute_output_shape(input_shape))

    def call(self, inputs, training=None):
        x = ops.relu(inputs)
        if _has_even_sides(x):
            even, odd = _even_odd_pixels(x)
        else:  # the shifted branch's last row and column are padding
            even = x[:, ::2, ::2, :]
            odd = ops.pad(x[:, 1:, 1:, :], [[0, 0], [0, 1], [0, 1], [0, 0]])[:, ::2, ::2, :]
        halves = [self.conv_1(even), self.conv_2(odd)]
        if self.groups > 1:  # each edge's two halves side by side: [..., g, filters / g]
            side = tuple(halves[0].shape[1:3])
            grouped = [ops.reshape(h, (-1,) + side + (self.groups, self.filters // self.groups // 2))
                       for h in halves]
            y = ops.reshape(ops.concatenate(grouped, axis=-1), (-1,) + side + (self.filters,))
        else:
            y = ops.concatenate(halves, axis=-1)
        return self.bn(y, training=training)

    def compute_output_shape(self, input_shape):
        return _reduced_shape(input_shape, 2, self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "affine": self.affine, "groups": self.groups}


@keras.saving.register_keras_serializable(package="unas_keras", name="DartsSepConv")
class SepConv(keras.layers.Layer):
    """DARTS separable convolution: (ReLU, depthwise k x k, pointwise, BN) twice.

    Only the first depthwise convolution is strided.

    Args:
        filters: output channels (the intermediate width is the input width).
        kernel_size: 3, 5 or 7 in DARTS (any odd size works).
        stride: 1 or 2.
        affine: whether the BNs have scale and offset parameters.
        groups: edges stacked along channels (see the module docstring).
        **kwargs: base `Layer` arguments.
    """

    def __init__(self, filters, kernel_size=3, stride=1, affine=True, groups=1, **kwargs):
        super().__init__(**kwargs)
        self.groups = _check_groups(groups, filters)
        self.filters = filters
        self.kernel_size = kernel_size
        self.stride = _check_stride(stride)
        self.affine = affine
        self._padding = kernel_size // 2
        first_padding = "same" if stride == 1 else "valid"
        self.dw_1 = keras.layers.DepthwiseConv2D(
            kernel_size, strides=stride, padding=first_padding, use_bias=False, name="dw_1"
        )
        self.bn_1 = batch_norm(affine, "bn_1")
        self.dw_2 = keras.layers.DepthwiseConv2D(kernel_size, padding="same", use_bias=False, name="dw_2")
        self.pw_2 = _pointwise(filters, groups, "pw_2")
        self.bn_2 = batch_norm(affine, "bn_2")

    def build(self, input_shape):
        # The intermediate width is the input width, known only here.
        _check_groups(self.groups, input_shape[-1])
        self.pw_1 = _pointwise(input_shape[-1], self.groups, "pw_1")
        shape = input_shape
        if self.stride > 1:
            p2 = 2 * self._padding
            shape = (shape[0], None if shape[1] is None else shape[1] + p2,
                     None if shape[2] is None else shape[2] + p2, shape[3])
        _build_chain([self.dw_1, self.pw_1, self.bn_1, self.dw_2, self.pw_2, self.bn_2], shape)

    def call(self, inputs, training=None):
        x = ops.relu(inputs)
        if self.stride > 1:
            x = _pad(x, self._padding)
        x = self.bn_1(self.pw_1(self.dw_1(x)), training=training)
        x = ops.relu(x)
        return self.bn_2(self.pw_2(self.dw_2(x)), training=training)

    def compute_output_shape(self, input_shape):
        return _reduced_shape(input_shape, self.stride, self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "affine": self.affine,
            "groups": self.groups,
        }


@keras.saving.register_keras_serializable(package="unas_keras", name="DartsDilConv")
class DilConv(keras.layers.Layer):
    """DARTS dilated separable convolution: ReLU, depthwise k x k with dilation 2, pointwise, BN.

    Padding is `2 * (k // 2)` as in DARTS. At stride 2 the layer subsamples
    first and then applies the undilated kernel: a stride-2, dilation-2
    convolution with that padding only ever reads even input positions, so the
    result is identical and a quarter of the work.

    Args:
        filters: output channels.
        kernel_size: 3 or 5 in DARTS (any odd size works).
        stride: 1 or 2.
        affine: whether the BN has scale and offset parameters.
        groups: edges stacked along channels (see the module docstring).
        **kwargs: base `Layer` arguments.
    """

    dilation_rate = 2

    def __init__(self, filters, kernel_size=3, stride=1, affine=True, groups=1, **kwargs):
        super().__init__(**kwargs)
        self.groups = _check_groups(groups, filters)
        self.filters = filters
        self.kernel_size = kernel_size
        self.stride = _check_stride(stride)
        self.affine = affine
        self.dw = keras.layers.DepthwiseConv2D(
            kernel_size,
            padding="same",
            dilation_rate=self.dilation_rate if stride == 1 else 1,
            use_bias=False,
            name="dw",
        )
        self.pw = _pointwise(filters, groups, "pw")
        self.bn = batch_norm(affine, "bn")

    def build(self, input_shape):
        _build_chain([self.dw, self.pw, self.bn], _reduced_shape(input_shape, self.stride))

    def call(self, inputs, training=None):
        x = ops.relu(inputs)
        if self.stride > 1:
            x = _even_odd_pixels(x)[0] if _has_even_sides(x) else x[:, :: self.stride, :: self.stride, :]
        return self.bn(self.pw(self.dw(x)), training=training)

    def compute_output_shape(self, input_shape):
        return _reduced_shape(input_shape, self.stride, self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "affine": self.affine,
            "groups": self.groups,
        }


def is_identity(op_name, stride):
    """Whether `op_name` at `stride` is the identity (no drop-path in DARTS)."""
    return op_name == "skip_connect" and stride == 1


def has_parameters(op_name, stride):
    """Whether `make_op(op_name, ..., stride)` has parameters (one set per edge when grouped)."""
    return op_name not in ("none", "max_pool_3x3", "avg_pool_3x3") and not is_identity(op_name, stride)


def make_op(op_name, channels, stride=1, affine=True, name=None, groups=1):
    """Builds the DARTS operation `op_name` as a Keras layer.

    Args:
        op_name: one of `unas_keras.space.darts.ALL_OPS`.
        channels: input and output channels.
        stride: 1, or 2 for the edges from the cell inputs of a reduction cell.
        affine: whether batch normalizations have scale and offset parameters
            (True in derived networks, False in the search supernet).
        name: layer name.
        groups: edges computed at once, stacked along channels (`channels` is per edge); the
            parameter-free operations are per channel and ignore it.

    Returns:
        A Keras layer mapping `[B, H, W, groups * channels]` to
        `[B, ceil(H / stride), ceil(W / stride), groups * channels]`.

    Raises:
        ValueError: for an unknown operation or a stride other than 1 or 2.
    """
    _check_stride(stride)
    if op_name == "none":
        return Zero(stride, name=name)
    if op_name in ("max_pool_3x3", "avg_pool_3x3"):
        return Pool3x3(op_name[:3], stride, name=name)
    if op_name == "skip_connect":
        if stride == 1:
            return keras.layers.Identity(name=name)
        return FactorizedReduce(groups * channels, affine=affine, groups=groups, name=name)
    if op_name in ("sep_conv_3x3", "sep_conv_5x5", "sep_conv_7x7"):
        return SepConv(groups * channels, int(op_name[-1]), stride, affine=affine, groups=groups, name=name)
    if op_name in ("dil_conv_3x3", "dil_conv_5x5"):
        return DilConv(groups * channels, int(op_name[-1]), stride, affine=affine, groups=groups, name=name)
    raise ValueError(f"Unknown DARTS operation {op_name!r}; allowed: {list(ALL_OPS)}.")
