"""The parametric DARTS operations of many edges at once: the kernels of the search cell.

A supernet cell evaluates every candidate operation on every (node, input)
edge. Written one layer per (edge, op), a search step becomes a graph of
hundreds of thousands of small kernels that takes minutes to trace and
optimise. `StackedEdgeOps` computes all parametric operations of `E` edges
in one short chain of kernels:

* the edges' inputs are stacked along the channel axis (`[B, H, W, E * C]`,
  edge-major); depthwise convolutions and batch normalisations are per
  channel anyway;
* the first stage of every separable and dilated convolution (depthwise,
  pointwise, BN) shares one grouped pointwise convolution and one BN over
  the concatenated depthwise outputs; the second stage of the separable
  convolutions likewise;
* `skip_connect` at stride 2 (FactorizedReduce) is two grouped 1x1
  convolutions and one BN.

Each edge keeps its own weights (channel blocks of the stacked kernels), so
the maths and the parameter count are those of separate `darts_ops` layers;
`edge_weights(op_name, e)` returns them by sub-layer name, in the form the
derived op's sub-layer of that name takes (`darts_ops.SepConv.dw_1`, ...).
The input must be rectified already (every parametric DARTS op starts with a
ReLU; the cell applies it once per input state).
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


def _depthwise(kernel_size, stride, dilation, name):
    padding = "same" if stride == 1 else "valid"
    return keras.layers.DepthwiseConv2D(kernel_size, strides=stride, padding=padding, dilation_rate=dilation,
                                        use_bias=False, name=name)


@keras.saving.register_keras_serializable(package="unas_keras")
class StackedEdgeOps(keras.layers.Layer):
    """The parametric DARTS ops `op_names` on `num_edges` stacked edges (input rectified).

    Call on `[B, H, W, num_edges * filters]`; returns
    `[B, H / stride, W / stride, len(output_ops) * num_edges * filters]`:
    op-major blocks in the order of `output_ops` (separable convolutions,
    then dilated ones, then `skip_connect`), each edge-major.

    Args:
        op_names: parametric op names: `sep_conv_*`, `dil_conv_*`, and
            `skip_connect` at stride 2.
        filters: channels per edge (input and output).
        num_edges: number of stacked edges.
        stride: 1 or 2.
        affine: whether the batch normalisations have scale and offset.
        **kwargs: base `Layer` arguments.
    """

    def __init__(self, op_names, filters, num_edges, stride=1, affine=False, **kwargs):
        super().__init__(**kwargs)
        self.op_names = list(op_names)
        self.filters = int(filters)
        self.num_edges = int(num_edges)
        self.stride = _check_stride(stride)
        self.affine = bool(affine)
        if self.num_edges < 1:
            raise ValueError(f"num_edges must be >= 1, got {num_edges!r}.")
        unknown = [op for op in self.op_names if not is_stacked_op(op, stride)]
        if unknown:
            raise ValueError(f"{unknown} are not parametric DARTS ops at stride {stride}.")
        self.sep_ops = [op for op in self.op_names if op.startswith("sep_conv")]
        self.dil_ops = [op for op in self.op_names if op.startswith("dil_conv")]
        self.reduce = "skip_connect" in self.op_names
        self.output_ops = self.sep_ops + self.dil_ops + (["skip_connect"] if self.reduce else [])
        first_stage = len(self.sep_ops) + len(self.dil_ops)
        # Stage 1: one depthwise convolution per op (its kernel size), then a shared pointwise + BN.
        self.dw_1 = [_depthwise(int(op[-1]), stride, 1, f"{op}_dw_1") for op in self.sep_ops]
        self.dw_1 += [_depthwise(int(op[-1]), 1, 1 if stride > 1 else 2, f"{op}_dw") for op in self.dil_ops]
        if first_stage:
            self.pw_1 = GroupedPointwiseConv(first_stage * self.stacked_channels, first_stage * self.num_edges,
                                             name="pw_1")
            self.bn_1 = batch_norm(affine, "bn_1")
        # Stage 2 (separable convolutions only).
        self.dw_2 = [_depthwise(int(op[-1]), 1, 1, f"{op}_dw_2") for op in self.sep_ops]
        if self.sep_ops:
            self.pw_2 = GroupedPointwiseConv(len(self.sep_ops) * self.stacked_channels,
                                             len(self.sep_ops) * self.num_edges, name="pw_2")
            self.bn_2 = batch_norm(affine, "bn_2")
        if self.reduce:
            if self.filters % 2:
                raise ValueError(f"FactorizedReduce needs an even number of filters, got {filters}.")
            self.reduce_conv_1 = GroupedPointwiseConv(self.stacked_channels // 2, self.num_edges,
                                                      name="reduce_conv_1")
            self.reduce_conv_2 = GroupedPointwiseConv(self.stacked_channels // 2, self.num_edges,
                                                      name="reduce_conv_2")
            self.reduce_bn = batch_norm(affine, "reduce_bn")

    @property
    def stacked_channels(self):
        return self.filters * self.num_edges

    def build(self, input_shape):
        if input_shape[-1] != self.stacked_channels:
            raise ValueError(
                f"StackedEdgeOps over {self.num_edges} edges of {self.filters} channels expects "
                f"{self.stacked_channels} input channels, got {input_shape[-1]}.")
        reduced = _strided_shape(input_shape, self.stride)
        for op, layer in zip(self.sep_ops, self.dw_1):
            layer.build(_padded_shape(input_shape, int(op[-1]) // 2) if self.stride > 1 else input_shape)
        for layer in self.dw_1[len(self.sep_ops):]:
            layer.build(reduced)
        first_stage = len(self.dw_1)
        if first_stage:
            stage_1 = reduced[:3] + (first_stage * self.stacked_channels,)
            self.pw_1.build(stage_1)
            self.bn_1.build(stage_1)
        for layer in self.dw_2:
            layer.build(reduced)
        if self.sep_ops:
            stage_2 = reduced[:3] + (len(self.sep_ops) * self.stacked_channels,)
            self.pw_2.build(stage_2)
            self.bn_2.build(stage_2)
        if self.reduce:
            self.reduce_conv_1.build(reduced)
            self.reduce_conv_2.build(reduced)
            self.reduce_bn.build(reduced)

    def _first_stage_input(self, inputs, op):
        if self.stride == 1:
            return inputs
        if op.startswith("sep_conv"):
            return _pad(inputs, int(op[-1]) // 2)
        return inputs[:, ::2, ::2, :]   # dilated at stride 2: subsample, undilated kernel (as DilConv)

    def call(self, inputs, training=None):
        outputs = []
        if self.dw_1:
            stage = [layer(self._first_stage_input(inputs, op))
                     for op, layer in zip(self.sep_ops + self.dil_ops, self.dw_1)]
            stage = self.bn_1(self.pw_1(_concat(stage)), training=training)
            if self.sep_ops and self.dil_ops:
                sep_channels = len(self.sep_ops) * self.stacked_channels
                sep_stage, dil_stage = ops.split(stage, [sep_channels], axis=-1)
            else:
                sep_stage, dil_stage = (stage, None) if self.sep_ops else (None, stage)
            if self.sep_ops:
                rectified = ops.relu(sep_stage)
                parts = ops.split(rectified, len(self.sep_ops), axis=-1) if len(self.sep_ops) > 1 else [rectified]
                second = [layer(part) for part, layer in zip(parts, self.dw_2)]
                outputs.append(self.bn_2(self.pw_2(_concat(second)), training=training))
            if self.dil_ops:
                outputs.append(dil_stage)
        if self.reduce:
            outputs.append(self._factorized_reduce(inputs, training))
        return _concat(outputs)

    def _factorized_reduce(self, inputs, training):
        shifted = ops.pad(inputs[:, 1:, 1:, :], [[0, 0], [0, 1], [0, 1], [0, 0]])
        y_1 = self.reduce_conv_1(inputs[:, ::2, ::2, :])
        y_2 = self.reduce_conv_2(shifted[:, ::2, ::2, :])
        # Each edge's output is [its conv_1 half, its conv_2 half].
        height, width = y_1.shape[1], y_1.shape[2]
        half = (-1, height, width, self.num_edges, self.filters // 2)
        y = ops.concatenate([ops.reshape(y_1, half), ops.reshape(y_2, half)], axis=-1)
        y = ops.reshape(y, (-1, height, width, self.stacked_channels))
        return self.reduce_bn(y, training=training)

    def edge_weights(self, op_name, edge):
        """Edge `edge`'s weights of `op_name`: dict derived sub-layer name -> list of numpy arrays.

        Each list is what `set_weights` of the sub-layer of that name of the
        derived op (`darts_ops.SepConv`, `DilConv`, `FactorizedReduce`) takes.
        """
        if not 0 <= edge < self.num_edges:
            raise ValueError(f"edge must be in [0, {self.num_edges}), got {edge!r}.")
        if op_name not in self.output_ops:
            raise ValueError(f"{op_name!r} is not one of this layer's ops {self.output_ops}.")
        c = self.filters
        if op_name == "skip_connect":
            return {"conv_1": _blocks(self.reduce_conv_1, _CONV_KERNEL_AXIS, edge, c // 2),
                    "conv_2": _blocks(self.reduce_conv_2, _CONV_KERNEL_AXIS, edge, c // 2),
                    "bn": _blocks(self.reduce_bn, _BN_AXIS, edge, c)}
        position = (self.sep_ops + self.dil_ops).index(op_name)
        stage_1 = position * self.num_edges + edge
        dw_1 = _blocks(self.dw_1[position], _DEPTHWISE_KERNEL_AXIS, edge, c)
        pw_1 = _blocks(self.pw_1, _CONV_KERNEL_AXIS, stage_1, c)
        bn_1 = _blocks(self.bn_1, _BN_AXIS, stage_1, c)
        if op_name.startswith("dil_conv"):
            return {"dw": dw_1, "pw": pw_1, "bn": bn_1}
        return {"dw_1": dw_1, "pw_1": pw_1, "bn_1": bn_1,
                "dw_2": _blocks(self.dw_2[position], _DEPTHWISE_KERNEL_AXIS, edge, c),
                "pw_2": _blocks(self.pw_2, _CONV_KERNEL_AXIS, stage_1, c),
                "bn_2": _blocks(self.bn_2, _BN_AXIS, stage_1, c)}

    def compute_output_shape(self, input_shape):
        reduced = _strided_shape(input_shape, self.stride)
        return reduced[:3] + (len(self.output_ops) * self.stacked_channels,)

    def get_config(self):
        return {**super().get_config(), "op_names": self.op_names, "filters": self.filters,
                "num_edges": self.num_edges, "stride": self.stride, "affine": self.affine}


def _concat(tensors):
    return tensors[0] if len(tensors) == 1 else ops.concatenate(tensors, axis=-1)


def _blocks(layer, axis, index, size):
    """Block `index` (of `size` channels along `axis`) of each of `layer`'s weights."""
    return [_block(array, axis, index, size) for array in layer.get_weights()]


def is_stacked_op(op_name, stride):
    """Whether `StackedEdgeOps` computes `op_name` at `stride` (the ops with weights)."""
    return (op_name.startswith("sep_conv") or op_name.startswith("dil_conv")
            or (op_name == "skip_connect" and stride == 2))
