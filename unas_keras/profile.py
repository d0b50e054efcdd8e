"""Parameter and multiply-add counts of Keras models.

`count_params` walks the model's weights. `count_macs` traces one forward pass
at batch 1 into a TensorFlow graph and adds up the multiply-adds of every
convolution and matrix product in it, so it sees through nested layers,
custom cells and `keras.ops` calls alike (TensorFlow backend only).
"""

import numpy as np

from unas_keras import _compat

#: Graph ops whose multiply-adds are counted, by kind.
_CONV_OPS = ("Conv2D", "Conv3D", "DepthwiseConv2dNative")
_MATMUL_OPS = ("MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3")
_TRANSPOSED_CONV_OPS = ("Conv2DBackpropInput", "Conv3DBackpropInputV2")
_CALL_OPS = ("PartitionedCall", "StatefulPartitionedCall")


def count_params(model, exclude_auxiliary=False):
    """Number of trainable parameters of a Keras model (or layer).

    Args:
        model: a built `keras.Model` or `keras.layers.Layer`.
        exclude_auxiliary: leave out the weights of every (nested) layer
            whose name starts with `"auxiliary"` (e.g. the DARTS auxiliary
            head, which is not part of the published sizes).

    Returns:
        int.
    """
    excluded = set()
    if exclude_auxiliary:
        for layer in _compat.flatten_layers(model, include_self=False, recursive=True):
            if layer.name.startswith("auxiliary"):
                excluded.update(id(w) for w in layer.weights)
    seen = set()
    total = 0
    for w in model.trainable_weights:
        if id(w) in seen or id(w) in excluded:
            continue
        seen.add(id(w))
        total += int(np.prod(w.shape))
    return total


def _static_shape(tensor, op):
    shape = tensor.shape
    if shape.rank is None or any(d is None for d in shape.as_list()):
        raise ValueError(
            f"count_macs: op {op.name!r} ({op.type}) has a tensor of unknown shape {shape}; "
            "pass a fully known input_shape."
        )
    return shape.as_list()


def _op_macs(op):
    """Multiply-adds of one graph op (0 for ops that are not counted)."""
    if op.type in _CONV_OPS:
        # Output elements x (kernel window x input channels per group).
        # Conv2D filter: [kh, kw, in_per_group, out]; depthwise: [kh, kw, in, multiplier].
        out = _static_shape(op.outputs[0], op)
        kernel = _static_shape(op.inputs[1], op)
        window = int(np.prod(kernel[:-1]))
        if op.type == "DepthwiseConv2dNative":
            window = int(np.prod(kernel[:-2]))
        return int(np.prod(out)) * window
    if op.type in _TRANSPOSED_CONV_OPS:
        # Every input (out_backprop) element meets every kernel tap of every output channel.
        grad = _static_shape(op.inputs[2], op)
        kernel = _static_shape(op.inputs[1], op)
        return int(np.prod(grad)) * int(np.prod(kernel[:-1]))
    if op.type in _MATMUL_OPS:
        a = _static_shape(op.inputs[0], op)
        out = _static_shape(op.outputs[0], op)
        adjoint = False
        for attr in ("transpose_a", "adj_x"):
            try:
                adjoint = bool(op.get_attr(attr))
                break
            except ValueError:
                continue
        inner = a[-2] if adjoint else a[-1]
        return int(np.prod(out)) * inner
    return 0


def _graph_macs(graph, function_graphs):
    total = 0
    for op in graph.get_operations():
        total += _op_macs(op)
        if op.type in _CALL_OPS:
            total += _function_macs(op.get_attr("f").name, function_graphs, op)
        elif op.type in ("If", "StatelessIf"):
            total += max(_function_macs(op.get_attr(attr).name, function_graphs, op)
                         for attr in ("then_branch", "else_branch"))
        elif op.type in ("Case", "StatelessCase"):
            total += max(_function_macs(f.name, function_graphs, op) for f in op.get_attr("branches"))
        elif op.type in ("While", "StatelessWhile"):
            raise ValueError(
                f"count_macs: the forward pass has a loop ({op.type} {op.name!r}) whose trip "
                "count is unknown; MACs cannot be counted statically."
            )
    return total


def _function_macs(name, function_graphs, op):
    if name not in function_graphs:
        raise ValueError(f"count_macs: cannot see inside function {name!r} called by {op.name!r}.")
    return _graph_macs(function_graphs[name], function_graphs)


def count_macs(model, input_shape=None):
    """Multiply-adds of one inference forward pass at batch 1.

    Counts the multiply-accumulates of convolutions (dense, grouped,
    depthwise, transposed) and of matrix products (dense layers), the usual
    convention for published "MACs" / "multiply-adds" (BatchNorm,
    activations, pooling and additions are not counted). The model is traced
    with `training=False`, so drop-path and dropout cost nothing. Of a
    conditional (`keras.ops.cond`) the costlier branch is counted.

    Args:
        model: a `keras.Model` with one image input (e.g. a derived network).
        input_shape: `(height, width, channels)`; default: the model's input
            shape without the batch axis.

    Returns:
        int, multiply-adds per example.

    Raises:
        ValueError: if the input shape is unknown, or the graph has a loop
            or tensors of unknown shape.
    """
    import keras
    import tensorflow as tf

    if keras.backend.backend() != "tensorflow":
        raise ValueError(f"count_macs needs the TensorFlow backend, not {keras.backend.backend()!r}.")
    if input_shape is None:
        inputs = getattr(model, "inputs", None)
        if not inputs or len(inputs) != 1:
            raise ValueError("count_macs: pass input_shape; the model has no single known input.")
        input_shape = tuple(inputs[0].shape[1:])
        dtype = inputs[0].dtype
    else:
        dtype = "float32"
    input_shape = tuple(input_shape)
    if any(d is None for d in input_shape):
        raise ValueError(f"count_macs: input_shape must be fully known, got {input_shape}.")

    @tf.function(autograph=False)
    def forward(x):
        return model(x, training=False)

    concrete = forward.get_concrete_function(tf.TensorSpec((1,) + input_shape, dtype))
    graph = concrete.graph
    function_graphs = {}
    for name, fn in getattr(graph, "_functions", {}).items():
        fn_graph = getattr(fn, "graph", None)
        if fn_graph is not None:
            function_graphs[name if isinstance(name, str) else name.decode()] = fn_graph
    return _graph_macs(graph, function_graphs)
