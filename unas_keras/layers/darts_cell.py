"""DARTS-space cells: the derived cell and the factorized-selector search cell.

Both take the outputs of the two previous cells `[s0, s1]`, preprocess them to
`channels` (FactorizedReduce for `s0` when the previous cell reduced, else
ReLU-1x1 conv-BN), compute 4 intermediate nodes and return their
concatenation (`4 * channels` channels). In a reduction cell the edges from
the two cell inputs have stride 2.

* `DartsCell` (derived network): each node keeps two `(op, input)` pairs, one
  op instance each, summed; in training, drop-path on every non-identity op.
* `DartsSearchCell` (supernet): one op instance per (node, input, op) edge,
  shared by the node's two selector pairs; the node is
  `sum_j sum_k w[:, e(n, j), k] * op_k(h_j)` with per-example (or, N = 1,
  per-minibatch) edge weights `w` of shape `[N, 14, K]`.
"""

import keras
import tensorflow as tf
from keras import ops

from unas_keras.layers.darts_ops import FactorizedReduce, ReLUConvBN, is_identity, make_op
from unas_keras.layers.drop_path import DropPath
from unas_keras.space.darts import NUM_NODES, edge_index, num_edges, resolve_ops


def _make_preprocessing(channels, reduction_prev, affine):
    if reduction_prev:
        pre0 = FactorizedReduce(channels, affine=affine, name="preprocess0")
    else:
        pre0 = ReLUConvBN(channels, 1, 1, affine=affine, name="preprocess0")
    return pre0, ReLUConvBN(channels, 1, 1, affine=affine, name="preprocess1")


def _edge_stride(reduction, input_index):
    return 2 if reduction and input_index < 2 else 1


def _cell_output_shape(s1_shape, channels, reduction):
    batch, height, width, _ = s1_shape
    if reduction:
        height = None if height is None else -(-height // 2)
        width = None if width is None else -(-width // 2)
    return (batch, height, width, NUM_NODES * channels)


def _normalize_nodes(nodes):
    """Nodes as a tuple of ((op, input), (op, input)) tuples, validated."""
    try:
        parsed = tuple(tuple((str(op), int(inp)) for op, inp in node) for node in nodes)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"nodes must be {NUM_NODES} nodes of two (op_name, input) pairs, got {nodes!r}."
        ) from err
    if len(parsed) != NUM_NODES or any(len(node) != 2 for node in parsed):
        raise ValueError(f"nodes must be {NUM_NODES} nodes of two (op_name, input) pairs, got {nodes!r}.")
    for n, node in enumerate(parsed):
        for _, inp in node:
            if not 0 <= inp < n + 2:
                raise ValueError(f"node {n} may read inputs 0..{n + 1}, got input {inp}.")
    return parsed


@keras.saving.register_keras_serializable(package="unas_keras")
class DartsCell(keras.layers.Layer):
    """A derived DARTS cell (evaluation network).

    Call on `[s0, s1]`; returns the concatenation of the 4 nodes.

    Args:
        channels: channels per node (C of the cell).
        nodes: 4 nodes, each two `(op_name, input)` pairs (a genotype's
            `normal` or `reduce`); inputs 0 = s0, 1 = s1, m >= 2 = node m - 2.
        reduction: whether this is a reduction cell (stride 2 on the inputs).
        reduction_prev: whether the previous cell reduced (s0 is twice as large).
        affine: whether batch normalizations have scale and offset.
        drop_path_rate: initial drop-path rate on non-identity ops during
            training; 0 builds no drop-path layer.
        **kwargs: base `Layer` arguments.
    """

    def __init__(self, channels, nodes, reduction=False, reduction_prev=False, affine=True,
                 drop_path_rate=0.0, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.nodes = _normalize_nodes(nodes)
        self.reduction = bool(reduction)
        self.reduction_prev = bool(reduction_prev)
        self.affine = bool(affine)
        self.drop_path_rate = float(drop_path_rate)
        self.preprocess0, self.preprocess1 = _make_preprocessing(channels, reduction_prev, affine)
        self.node_ops = []
        for n, node in enumerate(self.nodes):
            for p, (op_name, inp) in enumerate(node):
                stride = _edge_stride(self.reduction, inp)
                self.node_ops.append(
                    make_op(op_name, channels, stride, affine, name=f"node{n}_{p}_{op_name}")
                )
        self.drop_path = DropPath(drop_path_rate, name="drop_path") if drop_path_rate > 0 else None

    def build(self, input_shape):
        s0_shape, s1_shape = input_shape[0], input_shape[1]
        self.preprocess0.build(s0_shape)
        self.preprocess1.build(s1_shape)
        state_shapes = [self.preprocess1.compute_output_shape(s1_shape)] * 2
        for n, node in enumerate(self.nodes):
            for p, (_, inp) in enumerate(node):
                self.node_ops[2 * n + p].build(state_shapes[inp])
            state_shapes.append(self.node_ops[2 * n].compute_output_shape(state_shapes[node[0][1]]))

    def call(self, inputs, training=None):
        s0, s1 = inputs[0], inputs[1]
        states = [self.preprocess0(s0, training=training), self.preprocess1(s1, training=training)]
        for n, node in enumerate(self.nodes):
            total = None
            for p, (op_name, inp) in enumerate(node):
                h = self.node_ops[2 * n + p](states[inp], training=training)
                stride = _edge_stride(self.reduction, inp)
                if self.drop_path is not None and not is_identity(op_name, stride):
                    h = self.drop_path(h, training=training)
                total = h if total is None else total + h
            states.append(total)
        return ops.concatenate(states[2:], axis=-1)

    def compute_output_shape(self, input_shape):
        return _cell_output_shape(input_shape[1], self.channels, self.reduction)

    def get_config(self):
        return {
            **super().get_config(),
            "channels": self.channels,
            "nodes": [[list(pair) for pair in node] for node in self.nodes],
            "reduction": self.reduction,
            "reduction_prev": self.reduction_prev,
            "affine": self.affine,
            "drop_path_rate": self.drop_path_rate,
        }


@keras.saving.register_keras_serializable(package="unas_keras")
class DartsSearchCell(keras.layers.Layer):
    """The factorized input/operation selector cell of the UNAS supernet.

    Call on `[s0, s1, w]` with `w` of shape `[N, 14, K]` (N = batch size for
    per-example architectures, or 1 for one architecture per minibatch); for
    node n the rows `edge_index(n, 0) .. edge_index(n, 0) + n + 1` hold
    `i (x) o + i' (x) o'`. `none` ops are never evaluated (they add zeros).

    Args:
        channels: channels per node.
        ops: op-set name (`"unas"`, `"unas_imagenet"`, `"darts"`) or list of op names.
        reduction: whether this is a reduction cell.
        reduction_prev: whether the previous cell reduced.
        skip_threshold: an op whose weight is below this for every example of
            the batch is not evaluated (and gets no gradient); 0 disables it.
        affine: whether batch normalizations have scale and offset (False in
            the UNAS search).
        **kwargs: base `Layer` arguments.
    """

    def __init__(self, channels, ops="unas", reduction=False, reduction_prev=False, skip_threshold=0.0,
                 affine=False, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.ops = ops if isinstance(ops, str) else list(ops)
        self.reduction = bool(reduction)
        self.reduction_prev = bool(reduction_prev)
        self.skip_threshold = float(skip_threshold)
        if self.skip_threshold < 0:
            raise ValueError(f"skip_threshold must be >= 0, got {skip_threshold!r}.")
        self.affine = bool(affine)
        self.op_names = resolve_ops(ops)
        self.preprocess0, self.preprocess1 = _make_preprocessing(channels, reduction_prev, affine)
        # Flat list in (edge, op) order; None for "none" (never evaluated).
        self.edge_ops = []
        for n in range(NUM_NODES):
            for j in range(n + 2):
                stride = _edge_stride(self.reduction, j)
                for op_name in self.op_names:
                    self.edge_ops.append(
                        None if op_name == "none"
                        else make_op(op_name, channels, stride, affine, name=f"node{n}_in{j}_{op_name}")
                    )

    def edge_op(self, node, input_index, op_name):
        """The op layer on edge (`node`, `input_index`) for `op_name` (None for "none")."""
        k = self.op_names.index(op_name)
        return self.edge_ops[edge_index(node, input_index) * len(self.op_names) + k]

    def build(self, input_shape):
        s0_shape, s1_shape, w_shape = input_shape
        expected = (num_edges(NUM_NODES), len(self.op_names))
        if len(w_shape) != 3 or tuple(w_shape[1:]) != expected:
            raise ValueError(
                f"Edge weights must have shape [N, {expected[0]}, {expected[1]}], got {tuple(w_shape)}."
            )
        self.preprocess0.build(s0_shape)
        self.preprocess1.build(s1_shape)
        state_shape = self.preprocess1.compute_output_shape(s1_shape)
        for layer in self.edge_ops:
            if layer is not None:
                layer.build(state_shape)

    def _weighted(self, layer, h, weight, stride, training):
        """`weight * layer(h)`; `weight` is `[N, 1, 1, 1]`."""
        def evaluate():
            return weight * layer(h, training=training)

        if self.skip_threshold <= 0:
            return evaluate()

        def skipped():
            return ops.zeros_like(h[:, ::stride, ::stride, :])

        return ops.cond(ops.max(weight) >= self.skip_threshold, evaluate, skipped)

    def call(self, inputs, training=None):
        s0, s1, w = inputs
        w = ops.cast(w, s1.dtype)
        num_ops = len(self.op_names)
        # One [N, 1, 1, 1] weight per (edge, op), in `edge_ops` order, from a
        # single unstack: slicing and reshaping per op would add four graph
        # nodes per op per pass.
        weights = ops.unstack(ops.reshape(ops.transpose(w, (1, 2, 0)), (w.shape[1] * w.shape[2], -1, 1, 1, 1)),
                              axis=0)
        states = [self.preprocess0(s0, training=training), self.preprocess1(s1, training=training)]
        for n in range(NUM_NODES):
            terms = []
            for j in range(n + 2):
                e = edge_index(n, j)
                stride = _edge_stride(self.reduction, j)
                for k in range(num_ops):
                    layer = self.edge_ops[e * num_ops + k]
                    if layer is None:
                        continue
                    terms.append(self._weighted(layer, states[j], weights[e * num_ops + k], stride, training))
            if terms:
                total = terms[0] if len(terms) == 1 else tf.add_n(terms)
            else:  # an op list of only "none"
                total = ops.zeros_like(states[1][:, :: 2 if self.reduction else 1,
                                                 :: 2 if self.reduction else 1, :])
            states.append(total)
        return ops.concatenate(states[2:], axis=-1)

    def compute_output_shape(self, input_shape):
        return _cell_output_shape(input_shape[1], self.channels, self.reduction)

    def get_config(self):
        return {
            **super().get_config(),
            "channels": self.channels,
            "ops": self.ops,
            "reduction": self.reduction,
            "reduction_prev": self.reduction_prev,
            "skip_threshold": self.skip_threshold,
            "affine": self.affine,
        }
