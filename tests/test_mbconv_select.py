"""Tests of the switch-free run of a layer's chosen MBConv block (`unas_keras.layers.mbconv_select`)."""

import numpy as np
import pytest
import tensorflow as tf

from unas_keras.layers import mbconv_select
from unas_keras.layers.mbconv_choice import MBConvChoice
from unas_keras.space.proxyless import BLOCK_CHOICES, OPTIONAL_CHOICES


def _rand(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def _twin_layers(in_channels, out_channels, stride, choices, side, bn_affine):
    """Two equal layers (weights, random moving statistics) and an input."""
    x = tf.constant(_rand((3, side, side, in_channels)))
    layers = [MBConvChoice(out_channels, stride, choices, zero_dropout=0.0, bn_affine=bn_affine)
              for _ in range(2)]
    weights = np.eye(len(choices), dtype="float32")[:1]
    for layer in layers:
        layer(x, weights)
    rng = np.random.default_rng(1)
    for variable in layers[0].weights:
        variable.assign(rng.uniform(0.5, 1.5, variable.shape).astype("float32"))
    layers[1].set_weights(layers[0].get_weights())
    return x, layers


def _op_types(function, *args):
    """The op types of a traced function, its nested functions' included."""
    graph_def = function.get_concrete_function(*args).graph.as_graph_def()
    return {node.op for node in graph_def.node} | {
        node.op for fdef in graph_def.library.function for node in fdef.node_def}


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("in_channels,out_channels,stride,choices,side,bn_affine", [
    (8, 8, 1, OPTIONAL_CHOICES, 8, False),   # with "zero" and the residual connection
    (8, 16, 2, BLOCK_CHOICES, 9, False),     # stride 2, odd side (MobileNetV2 padding)
    (8, 16, 2, BLOCK_CHOICES, 8, True),      # even side, batch norms with scale and offset
])
def test_one_hot_call_equals_the_chosen_blocks_own_call(compiled, in_channels, out_channels, stride,
                                                        choices, side, bn_affine):
    """Every choice: the layer's one-hot call (no switch) gives the chosen block's training output, and
    the chosen block's moving statistics move as in its own call; the other blocks' stay."""
    x, (layer, twin) = _twin_layers(in_channels, out_channels, stride, choices, side, bn_affine)
    assert mbconv_select.can_select(layer._blocks(), x, True)

    def call(inputs, weights):
        return layer(inputs, weights, training=True, one_hot=True)

    if compiled:
        call = tf.function(call)
        types = _op_types(call, x, tf.constant(np.eye(len(choices), dtype="float32")[:1]))
        assert "GatherV2" in types and not [t for t in types if "Case" in t]
    for k, choice in enumerate(choices):
        weights = tf.constant(np.eye(len(choices), dtype="float32")[k:k + 1])
        got = np.asarray(call(x, weights))
        expected = np.asarray(x if choice == "zero" else twin.candidate(choice)(x, training=True))
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
        for mine, theirs in zip(layer.weights, twin.weights):
            np.testing.assert_allclose(mine.numpy(), theirs.numpy(), rtol=1e-6, atol=1e-6,
                                       err_msg=f"{choice}: {mine.path}")


def _ancestors(op):
    seen, stack = set(), [op]
    while stack:
        current = stack.pop()
        for parent in [t.op for t in current.inputs] + list(current.control_inputs):
            if parent.name not in seen:
                seen.add(parent.name)
                stack.append(parent)
    return seen


def test_graph_orders_the_chosen_blocks_reads_and_writes_between_other_uses():
    """In a traced function, the reads and writes through gathered handles come after the earlier
    writes of those variables and before the later ones (TensorFlow cannot see the variable behind a
    gathered handle: the stacks of handles order them)."""
    x, (layer, _) = _twin_layers(8, 8, 1, OPTIONAL_CHOICES, 8, False)
    block = layer.candidate("k5e6")
    statistic, kernel = block.project_bn.moving_mean, block.expand.kernel
    weights = tf.constant(np.eye(len(OPTIONAL_CHOICES), dtype="float32")[4:5])  # k5e6

    @tf.function
    def step(inputs, weights):
        statistic.assign(statistic + 1.0)
        kernel.assign(kernel * 2.0)
        y = layer(inputs, weights, training=True, one_hot=True)
        statistic.assign(statistic + 1.0)
        kernel.assign(kernel * 2.0)
        return y

    graph = step.get_concrete_function(x, weights).graph
    writes = [op for op in graph.get_operations() if op.type == "AssignVariableOp"]
    gathered = [op for op in graph.get_operations()
                if op.type in ("ReadVariableOp", "AssignVariableOp") and op.inputs[0].op.type == "GatherV2"]
    direct = [op for op in writes if op.inputs[0].op.type != "GatherV2"]
    assert len(direct) == 4 and gathered
    first, last = direct[:2], direct[2:]
    checked = 0
    for op in gathered:
        stacked = {t.name for t in op.inputs[0].op.inputs[0].op.inputs}  # the handles gathered from
        before = _ancestors(op)
        for write in first:
            if write.inputs[0].name in stacked:
                assert write.name in before, (write.name, op.name)
                checked += 1
        for write in last:
            if write.inputs[0].name in stacked:
                assert op.name in _ancestors(write), (op.name, write.name)
                checked += 1
    # Reads of the statistic and the kernel, the statistic's write: each after and before a direct write.
    assert checked == 2 * 3
    # And the values: the first writes are seen by the block, the block's update by the last writes.
    start_statistic, start_kernel = statistic.numpy(), kernel.numpy()
    y = step(x, weights)
    twin_x, (_, twin) = _twin_layers(8, 8, 1, OPTIONAL_CHOICES, 8, False)
    twin_block = twin.candidate("k5e6")
    twin_block.project_bn.moving_mean.assign(start_statistic + 1.0)
    twin_block.expand.kernel.assign(start_kernel * 2.0)
    expected = twin_block(twin_x, training=True)
    np.testing.assert_allclose(np.asarray(y), np.asarray(expected), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(statistic.numpy(), twin_block.project_bn.moving_mean.numpy() + 1.0, rtol=1e-6)
    np.testing.assert_allclose(kernel.numpy(), start_kernel * 4.0)


def test_switch_under_xla_and_distribution_strategies():
    """XLA cannot gather variable handles and a distributed variable must be written through its own
    update: there the layer runs the switch, with the same result."""
    x, (layer, twin) = _twin_layers(8, 8, 1, OPTIONAL_CHOICES, 8, False)
    weights = tf.constant(np.eye(len(OPTIONAL_CHOICES), dtype="float32")[2:3])
    with tf.distribute.OneDeviceStrategy("/cpu:0").scope():
        assert not mbconv_select.can_select(layer._blocks(), x, True)
    seen = []

    @tf.function(jit_compile=True)
    def compiled(inputs, weights):
        seen.append(mbconv_select.can_select(layer._blocks(), inputs, True))
        return layer(inputs, weights, training=True, one_hot=True)

    got = np.asarray(compiled(x, weights))
    assert seen == [False]
    expected = np.asarray(twin(x, weights, training=True, one_hot=True))  # eager: no switch
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_can_select_refuses_what_it_cannot_run():
    x = tf.constant(_rand((2, 8, 8, 8)))
    layer = MBConvChoice(8, 1, OPTIONAL_CHOICES)
    layer(x, np.eye(len(OPTIONAL_CHOICES), dtype="float32")[:1])
    blocks = layer._blocks()
    assert mbconv_select.can_select(blocks, x, True)
    assert not mbconv_select.can_select(blocks, x, False)   # inference: the moving statistics
    assert not mbconv_select.can_select(blocks, x, None)
    assert not mbconv_select.can_select(blocks, tf.cast(x, "float16"), True)
    assert not mbconv_select.can_select([], x, True)
    with_identity = MBConvChoice(8, 1, ("k3e1", "k3e3"))  # expansion 1: no 1x1 expansion
    with_identity(x, np.eye(2, dtype="float32")[:1])
    assert not mbconv_select.can_select(with_identity._blocks(), x, True)
    blocks[0].depthwise_bn.trainable = False   # not through the fused op
    try:
        assert not mbconv_select.can_select(blocks, x, True)
    finally:
        blocks[0].depthwise_bn.trainable = True
