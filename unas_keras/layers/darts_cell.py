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
  per-minibatch) edge weights `w` of shape `[N, 14, K]`. The edges' ops run in
  groups of edges that read the same states (`edge_grouping`), each op once per
  group on the stacked inputs, with the edges' parameters stacked.
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from unas_keras.layers.darts_ops import (FactorizedReduce, ReLUConvBN, edge_weights, has_parameters,
                                         is_identity, make_op)
from unas_keras.layers.drop_path import DropPath
from unas_keras.space.darts import EDGE_GROUPINGS, NUM_NODES, edge_index, num_edges, resolve_ops


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


@dataclasses.dataclass(frozen=True)
class _EdgeGroup:
    """Edges of a search cell computed together: every target node reads every source state.

    Attributes:
        name: prefix of the group's op layers ("inputs", "node0", ...).
        sources: indices of the states read (0 = s0, 1 = s1, m >= 2 = node m - 2).
        targets: the nodes written.
        stride: the edges' stride.
    """

    name: str
    sources: tuple
    targets: tuple
    stride: int

    @property
    def edges(self):
        """`(node, input)` of each edge, target-major: edge `slot` reads channel block `slot`."""
        return tuple((n, j) for n in self.targets for j in self.sources)


def _edge_groups(reduction, grouping="by_source"):
    """The cell's edges in the groups its op layers run on, ordered so that sources are ready.

    `"by_source"`: both cell inputs into every node (8 edges), then each node into the later ones
    (3, 2, 1 edges): four groups whose edges read the same states, so each op runs four times per
    cell instead of fourteen. `"per_edge"`: one group per edge, in cell edge order (the layers, their
    names and their order are those of the cell before grouping, so its checkpoints restore).
    """
    if grouping not in EDGE_GROUPINGS:
        raise ValueError(f"edge_grouping must be one of {list(EDGE_GROUPINGS)}, got {grouping!r}.")
    if grouping == "per_edge":
        return tuple(_EdgeGroup(f"node{n}_in{j}", (j,), (n,), _edge_stride(reduction, j))
                     for n in range(NUM_NODES) for j in range(n + 2))
    groups = [_EdgeGroup("inputs", (0, 1), tuple(range(NUM_NODES)), _edge_stride(reduction, 0))]
    for m in range(NUM_NODES - 1):
        groups.append(_EdgeGroup(f"node{m}", (m + 2,), tuple(range(m + 1, NUM_NODES)), 1))
    return tuple(groups)


@keras.saving.register_keras_serializable(package="unas_keras")
class DartsSearchCell(keras.layers.Layer):
    """The factorized input/operation selector cell of the UNAS supernet.

    Call on `[s0, s1, w]` with `w` of shape `[N, 14, K]` (N = batch size for
    per-example architectures, or 1 for one architecture per minibatch); for
    node n the rows `edge_index(n, 0) .. edge_index(n, 0) + n + 1` hold
    `i (x) o + i' (x) o'`. Node n is `sum_j sum_k w[:, e(n, j), k] * op_k(h_j)`
    with one op instance per (node, input, op) edge, shared by the node's two
    selector pairs. `none` ops are never evaluated (they add zeros).

    The edges are computed in groups that read the same states (`_edge_groups`:
    both cell inputs into all four nodes, then each node into the later ones), so
    the graph holds each op four times per cell, not fourteen: an op layer of a
    group runs on its g edges' inputs stacked along channels, with the edges'
    parameters stacked likewise (see `darts_ops`); parameter-free ops run once per
    distinct state. Use `copy_edge_weights` to read one edge's parameters.

    Args:
        channels: channels per node.
        ops: op-set name (`"unas"`, `"unas_imagenet"`, `"darts"`) or list of op names.
        reduction: whether this is a reduction cell.
        reduction_prev: whether the previous cell reduced.
        skip_threshold: an op whose weight is below this for every example of
            the batch contributes nothing (and gets no gradient); the op of a
            group is not evaluated when that holds for all its edges. 0 disables it.
        affine: whether batch normalizations have scale and offset (False in
            the UNAS search).
        edge_grouping: `"by_source"` (the default: four op groups per cell, the smallest graph) or
            `"per_edge"` (one per edge: a step graph about 2.5x as large, but on CPU each op works on
            smaller tensors, and the step at CIFAR sizes was faster; see README "Benchmarks").
            The two store the parameters differently, so a checkpoint holds one of them.
        **kwargs: base `Layer` arguments.
    """

    def __init__(self, channels, ops="unas", reduction=False, reduction_prev=False, skip_threshold=0.0,
                 affine=False, edge_grouping="by_source", **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.ops = ops if isinstance(ops, str) else list(ops)
        self.edge_grouping = edge_grouping
        self.reduction = bool(reduction)
        self.reduction_prev = bool(reduction_prev)
        self.skip_threshold = float(skip_threshold)
        if self.skip_threshold < 0:
            raise ValueError(f"skip_threshold must be >= 0, got {skip_threshold!r}.")
        self.affine = bool(affine)
        self.op_names = resolve_ops(ops)
        self.preprocess0, self.preprocess1 = _make_preprocessing(channels, reduction_prev, affine)
        self.groups = _edge_groups(self.reduction, edge_grouping)
        # Per group, one layer per op: None for "none"; parameter-free ops are shared by the edges.
        self.group_ops = []
        for group in self.groups:
            layers = []
            for op_name in self.op_names:
                if op_name == "none":
                    layers.append(None)
                elif has_parameters(op_name, group.stride):
                    layers.append(make_op(op_name, channels, group.stride, affine, name=f"{group.name}_{op_name}",
                                          groups=len(group.edges)))
                else:
                    layers.append(make_op(op_name, channels, group.stride, affine,
                                          name=f"{group.name}_{op_name}"))
            self.group_ops.append(layers)

    def copy_edge_weights(self, node, input_index, op_name, target):
        """Copies the parameters of edge (`node`, `input_index`)'s `op_name` into a one-edge op layer.

        Args:
            node: the node, `0 <= node < 4`.
            input_index: the state it reads (0 = s0, 1 = s1, m >= 2 = node m - 2).
            op_name: one of this cell's op names.
            target: a built layer of that op for one edge (e.g. a derived `DartsCell`'s op).
        """
        k = self.op_names.index(op_name)
        for group, layers in zip(self.groups, self.group_ops):
            if (node, input_index) in group.edges:
                if layers[k] is not None and layers[k].weights:
                    target.set_weights(edge_weights(layers[k], group.edges.index((node, input_index)), target))
                return
        raise ValueError(f"The cell has no edge ({node}, {input_index}).")

    def build(self, input_shape):
        s0_shape, s1_shape, w_shape = input_shape
        expected = (num_edges(NUM_NODES), len(self.op_names))
        if len(w_shape) != 3 or tuple(w_shape[1:]) != expected:
            raise ValueError(
                f"Edge weights must have shape [N, {expected[0]}, {expected[1]}], got {tuple(w_shape)}."
            )
        self.preprocess0.build(s0_shape)
        self.preprocess1.build(s1_shape)
        state_shape = tuple(self.preprocess1.compute_output_shape(s1_shape))
        for group, layers in zip(self.groups, self.group_ops):
            for op_name, layer in zip(self.op_names, layers):
                if has_parameters(op_name, group.stride):
                    layer.build(state_shape[:3] + (len(group.edges) * self.channels,))
                elif layer is not None:
                    layer.build(state_shape[:3] + (len(group.sources) * self.channels,))

    def _group_weights(self, edge_rows, group):
        """Per op, the group's edge weights: `[N, 1, 1, g * C]` (each edge's repeated over its channels),
        or `[N, 1, 1, 1]` for a one-edge group; `edge_rows` holds each edge's weights as `[K, N]`."""
        per_op = ops.stack([edge_rows[edge_index(n, j)] for n, j in group.edges], axis=-1)  # [K, N, g]
        g = len(group.edges)
        if g > 1:
            ones = np.ones((g, self.channels), dtype=keras.backend.standardize_dtype(per_op.dtype))
            per_op = ops.reshape(per_op[..., None] * ones, (len(self.op_names), -1, g * self.channels))
        return ops.unstack(ops.expand_dims(per_op, (2, 3)), axis=0)

    def _group_output(self, group, layers, states, edge_rows, training):
        """The group's contributions to its target nodes, a list of `[B, H, W, C]` in target order."""
        num_targets, num_sources = len(group.targets), len(group.sources)
        sources = [states[j] for j in group.sources]
        distinct = sources[0] if num_sources == 1 else ops.concatenate(sources, axis=-1)
        # Every target reads every source: channel block `slot` of the stacked input is edge `slot`'s.
        stacked = distinct if num_targets == 1 else ops.tile(distinct, (1, 1, 1, num_targets))

        def zeros():
            return ops.zeros_like(stacked[:, ::group.stride, ::group.stride, :])

        terms = []
        for op_name, layer, weight in zip(self.op_names, layers, self._group_weights(edge_rows, group)):
            if layer is None:
                continue
            per_edge = has_parameters(op_name, group.stride)

            def weighted(weight, layer=layer, per_edge=per_edge):
                if per_edge:
                    return weight * layer(stacked, training=training)
                # A parameter-free op runs once per source; its result is shared by the targets.
                y = layer(distinct, training=training)
                return weight * (y if num_targets == 1 else ops.tile(y, (1, 1, 1, num_targets)))

            if self.skip_threshold <= 0:
                terms.append(weighted(weight))
            else:
                terms.append(self._unless_below_threshold(weighted, weight, zeros))
        total = zeros() if not terms else terms[0] if len(terms) == 1 else tf.add_n(terms)
        if num_sources > 1:  # a target's edges from the different sources add up
            side = tuple(total.shape[1:3])
            total = ops.sum(ops.reshape(total, (-1,) + side + (num_targets, num_sources, self.channels)), axis=4)
            return ops.unstack(total, axis=3)
        return ops.split(total, num_targets, axis=-1) if num_targets > 1 else [total]

    def _unless_below_threshold(self, weighted, weight, zeros):
        """`weighted(weight)` with the edges below `skip_threshold` for every example zeroed; `zeros()`
        without evaluating the op when that holds for all the group's edges."""
        kept = ops.max(weight, axis=0, keepdims=True) >= self.skip_threshold
        return ops.cond(ops.any(kept), lambda: weighted(ops.where(kept, weight, ops.zeros_like(weight))), zeros)

    def call(self, inputs, training=None):
        s0, s1, w = inputs
        # One unstack for the cell: gathering each group's rows from w would add a gather and its
        # (scatter) gradient per group and pass.
        edge_rows = ops.unstack(ops.transpose(ops.cast(w, s1.dtype), (1, 2, 0)), axis=0)  # 14 x [K, N]
        states = [self.preprocess0(s0, training=training), self.preprocess1(s1, training=training)]
        contributions = [[] for _ in range(NUM_NODES)]

        def complete_states(count):
            """Sums the nodes' contributions into states until there are `count` states."""
            while len(states) < count:
                parts = contributions[len(states) - 2]
                states.append(parts[0] if len(parts) == 1 else tf.add_n(parts))

        for group, layers in zip(self.groups, self.group_ops):
            # The groups are ordered so that every edge into a group's sources came earlier.
            complete_states(max(group.sources) + 1)
            for n, out in zip(group.targets, self._group_output(group, layers, states, edge_rows, training)):
                contributions[n].append(out)
        complete_states(NUM_NODES + 2)
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
            "edge_grouping": self.edge_grouping,
        }
