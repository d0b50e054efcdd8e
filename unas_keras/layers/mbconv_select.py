"""The chosen MBConv block of a layer, run without a `switch`: its weights are picked at run time.

A ProxylessNAS search step runs the supernet at the hard sample (one block per layer) without
gradient. A `switch` per layer runs only the chosen block, but TensorFlow traces every branch and gives
each branch placeholder inputs for the variables that the other branches capture. Here the block's ops
are traced once, with run-time shapes, and read the chosen block's variables: the candidates' variable
handles are stacked and one is gathered, so only the chosen block's variables are read (and its moving
statistics written), and the work is the chosen block's. A ProxylessNAS search step (96 px, batch 8,
2 CPU threads) reached its first step 4 s sooner (25.5-26.7 s against 29.4-31.1 s, alternated runs),
held 210 MB less and ran its steps as fast.

Ordering: TensorFlow orders the operations on one variable by the handles they take. A stack of handles
counts as a write of every variable in it, so the stack that the reads gather from comes after earlier
uses of those variables, and a second stack, made after the chosen block's reads and writes, keeps
later uses after them.
"""

import tensorflow as tf

from unas_keras import _compat
from unas_keras._variables import resource_handle


def can_select(blocks, inputs, training):
    """Whether `selected_block_call` computes these blocks' training forward.

    Needs: training mode through the fused batch normalisation (what the search's passes run),
    float32, a 1x1 expansion in every block, and blocks that agree on stride, residual connection and
    batch-normalisation settings (those of one `MBConvChoice` do). Not under a `tf.distribute`
    strategy (a write through a gathered handle would bypass the distributed variable) nor in a
    function XLA compiles (XLA cannot gather variable handles).

    Args:
        blocks: built `MBConv` layers taking `inputs`.
        inputs: `[N, H, W, C]` tensor.
        training: the Keras training flag of the call.

    Returns:
        bool.
    """
    if (training is not True or inputs.dtype != tf.float32 or len(inputs.shape) != 4 or not blocks
            or tf.distribute.has_strategy() or _compat.in_xla_compilation()):
        return False
    first = blocks[0]
    settings = _bn_settings(first.depthwise_bn)
    for block in blocks:
        if block.expand is None or (block.stride, block.use_residual, block.pad is None) != (
                first.stride, first.use_residual, first.pad is None):
            return False
        for bn in _batch_norms(block):
            if not bn.can_fuse(inputs, True) or _bn_settings(bn) != settings:
                return False
    return True


def selected_block_call(blocks, index, inputs, update=True):
    """The training-mode output of `blocks[index]`, `index` a scalar tensor.

    Args:
        blocks: `MBConv` layers for which `can_select` holds.
        index: int32 scalar tensor in `[0, len(blocks))`.
        inputs: `[N, H, W, C]` float32.
        update: bool scalar tensor (or Python bool): whether the chosen block's moving statistics
            are updated (False leaves every block's as they were).

    Returns:
        `[N, H', W', out_channels]`, the value of `blocks[index](inputs, training=True)`.
    """
    first = blocks[0]
    picked = _Picked(index)
    x = tf.nn.conv2d(inputs, picked.read([b.expand.kernel for b in blocks])[0], 1, "SAME")
    x = tf.nn.relu6(_batch_norm(x, [b.expand_bn for b in blocks], picked, update))
    depthwise, _ = picked.read([b.depthwise.kernel for b in blocks])
    padding = "SAME"
    if first.pad is not None:
        # MBConv's explicit padding (`correct_pad`) for the chosen kernel size.
        half = tf.shape(depthwise)[0] // 2
        rows, cols = ((half - 1 + side % 2, half) for side in x.shape[1:3])
        x = tf.pad(x, [[0, 0], [rows[0], rows[1]], [cols[0], cols[1]], [0, 0]])
        padding = "VALID"
    x = tf.nn.depthwise_conv2d(x, depthwise, (1, first.stride, first.stride, 1), padding)
    x = tf.nn.relu6(_batch_norm(x, [b.depthwise_bn for b in blocks], picked, update))
    x = tf.nn.conv2d(x, picked.read([b.project.kernel for b in blocks])[0], 1, "SAME")
    x = _batch_norm(x, [b.project_bn for b in blocks], picked, update)
    x.set_shape(first.compute_output_shape(inputs.shape))
    if first.use_residual:
        x = x + inputs
    picked.close()
    return x


class _Picked:
    """Reads (and writes) the variable at `index` of lists of same-role variables, then fences them."""

    def __init__(self, index):
        self.index = index
        self.used = []  # (stacked real handles, ops on the gathered handle)

    def read(self, variables):
        """The chosen variable's value, and a slot for `write`."""
        handles = [resource_handle(v) for v in variables]
        chosen = tf.gather(tf.stack(handles), self.index)
        value = tf.raw_ops.ReadVariableOp(resource=chosen, dtype=tf.float32)
        self.used.append((handles, [] if tf.executing_eagerly() else [value.op], chosen))
        return value, len(self.used) - 1

    def write(self, slot, value):
        """Assigns `value` to the chosen variable of `read`'s `slot`."""
        _, ops, chosen = self.used[slot]
        assign = tf.raw_ops.AssignVariableOp(resource=chosen, value=value)
        if not tf.executing_eagerly():
            ops.append(assign)

    def close(self):
        """Orders later uses of the variables after this block's (a graph's concern only)."""
        if tf.executing_eagerly():
            return
        for handles, ops, _ in self.used:
            with tf.control_dependencies(ops):
                tf.stack(handles)  # the fence: later uses of these variables come after `ops`


def _batch_norms(block):
    return block.expand_bn, block.depthwise_bn, block.project_bn


def _bn_settings(bn):
    return bn.epsilon, bn.momentum, bn.scale, bn.center


def _batch_norm(x, layers, picked, update):
    """Training-mode batch normalisation (the op `FusedBatchNormalization` runs) with the chosen
    layer's parameters and moving statistics; writes its updated statistics when `update`."""
    first = layers[0]
    channels = tf.shape(x)[-1:]
    scale = picked.read([bn.gamma for bn in layers])[0] if first.scale else tf.ones(channels)
    offset = picked.read([bn.beta for bn in layers])[0] if first.center else tf.zeros(channels)
    moving_mean, mean_slot = picked.read([bn.moving_mean for bn in layers])
    moving_variance, variance_slot = picked.read([bn.moving_variance for bn in layers])
    outputs, new_mean, new_variance, *_ = tf.raw_ops.FusedBatchNorm(
        x=x, scale=scale, offset=offset, mean=moving_mean, variance=moving_variance,
        epsilon=float(first.epsilon), exponential_avg_factor=1.0 - float(first.momentum), data_format="NHWC",
        is_training=True)
    picked.write(mean_slot, tf.where(update, new_mean, moving_mean))
    picked.write(variance_slot, tf.where(update, new_variance, moving_variance))
    return outputs
