"""DARTS-space cells: the derived cell and the factorized-selector search cell.

Both take the outputs of the two previous cells `[s0, s1]`, preprocess them to
`channels` (FactorizedReduce for `s0` when the previous cell reduced, else
ReLU-1x1 conv-BN), compute 4 intermediate nodes and return their
concatenation (`4 * channels` channels). In a reduction cell the edges from
the two cell inputs have stride 2.

* `DartsCell` (derived network): each node keeps two `(op, input)` pairs, one
  op instance each, summed; in training, drop-path on every non-identity op.
* `DartsSearchCell` (supernet): one set of op weights per (node, input, op)
  edge, shared by the node's two selector pairs; the node is
  `sum_j sum_k w[:, e(n, j), k] * op_k(h_j)` with per-example (or, N = 1,
  per-minibatch) edge weights `w` of shape `[N, 14, K]`, computed with few,
  large kernels over stacked edges.
"""

import keras
import numpy as np
from keras import ops

from unas_keras.layers.darts_ops import FactorizedReduce, Pool3x3, ReLUConvBN, is_identity, make_op
from unas_keras.layers.darts_stacked_ops import StackedEdgeOps, is_stacked_op
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


class _EdgeGroup:
    """Edges of the search cell computed together: every `input` of every `node`, at one stride.

    Edge `e` of the group is `(nodes[e // len(inputs)], inputs[e % len(inputs)])`.
    """

    def __init__(self, nodes, inputs, stride):
        self.nodes = tuple(nodes)
        self.inputs = tuple(inputs)
        self.stride = stride
        self.rows = tuple(edge_index(n, j) for n in self.nodes for j in self.inputs)

    @property
    def num_edges(self):
        return len(self.rows)

    def local_edge(self, node, input_index):
        """Index of edge (`node`, `input_index`) in this group, or None."""
        if node not in self.nodes or input_index not in self.inputs:
            return None
        return self.nodes.index(node) * len(self.inputs) + self.inputs.index(input_index)


def _edge_groups(reduction):
    """The cell's edges in four groups: the two cell inputs for all nodes, then each node's later inputs.

    The cell inputs feed every node, so their 8 edges (stride 2 in a
    reduction cell) run as one group; the intermediate states become
    available one node at a time.
    """
    groups = [_EdgeGroup(range(NUM_NODES), (0, 1), 2 if reduction else 1)]
    groups += [_EdgeGroup((n,), range(2, n + 2), 1) for n in range(1, NUM_NODES)]
    return groups


def _selection(group, op_indices, num_ops):
    """Constant `[14 * K, len(op_indices) * E]`: flattened cell weights -> the group's, op-major, edge-minor."""
    matrix = np.zeros((num_edges(NUM_NODES) * num_ops, len(op_indices) * group.num_edges), "float32")
    for position, k in enumerate(op_indices):
        for e, row in enumerate(group.rows):
            matrix[row * num_ops + k, position * group.num_edges + e] = 1.0
    return matrix


def _concatenate(tensors):
    return tensors[0] if len(tensors) == 1 else ops.concatenate(tensors, axis=-1)


def _parameter_free(op_name, stride, name):
    if op_name in ("max_pool_3x3", "avg_pool_3x3"):
        return Pool3x3(op_name[:3], stride, name=name)
    if op_name == "skip_connect" and stride == 1:
        return keras.layers.Identity(name=name)
    raise ValueError(f"{op_name!r} at stride {stride} has parameters.")


@keras.saving.register_keras_serializable(package="unas_keras")
class DartsSearchCell(keras.layers.Layer):
    """The factorized input/operation selector cell of the UNAS supernet.

    Call on `[s0, s1, w]` with `w` of shape `[N, 14, K]` (N = batch size for
    per-example architectures, or 1 for one architecture per minibatch); for
    node n the rows `edge_index(n, 0) .. edge_index(n, 0) + n + 1` hold
    `i (x) o + i' (x) o'`, and node n is
    `sum_j sum_k w[:, edge_index(n, j), k] * op_k(h_j)`. `none` ops are never
    evaluated (they add zeros).

    Every (node, input, op) edge has its own weights, but the cell computes
    them in few, large kernels (see `darts_stacked_ops`): the edges from the
    two cell inputs to all four nodes form one group, the edges from the
    intermediate states of each node another; in a group the parametric ops
    run as one `StackedEdgeOps` over the stacked edges, each parameter-free op
    once over the stacked input states, and the node sums are one weighted
    reduction.

    Args:
        channels: channels per node.
        ops: op-set name (`"unas"`, `"unas_imagenet"`, `"darts"`) or list of op names.
        reduction: whether this is a reduction cell.
        reduction_prev: whether the previous cell reduced.
        skip_threshold: an op whose weight is below this for every example of
            the batch is not evaluated (and gets no gradient); 0 disables it.
            Edges below it weigh 0; a group's parametric ops are skipped
            when all of them are below it on all the group's edges.
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
        self._groups = _edge_groups(self.reduction)
        num_ops = len(self.op_names)
        # Per group: one layer computing its parametric ops on the stacked
        # edges (None if there are none), its parameter-free ops, and the
        # constant matrices that pick each op's weights out of the flattened
        # cell weights `[N, 14 * K]`, in the order of the outputs.
        self.stacked_ops, self.free_ops = [], []
        self._free_positions, self._selections = [], []
        for g, group in enumerate(self._groups):
            parametric = [op for op in self.op_names if is_stacked_op(op, group.stride)]
            layer = None
            if parametric:
                layer = StackedEdgeOps(parametric, channels, group.num_edges, group.stride, affine,
                                       name=f"group{g}_ops")
                parametric = layer.output_ops
            self.stacked_ops.append(layer)
            free = [op for op in self.op_names if op != "none" and not is_stacked_op(op, group.stride)]
            self._free_positions.append(tuple(range(len(self.free_ops), len(self.free_ops) + len(free))))
            self.free_ops.extend(_parameter_free(op, group.stride, name=f"group{g}_{op}") for op in free)
            self._selections.append((_selection(group, [self.op_names.index(op) for op in parametric], num_ops),
                                     _selection(group, [self.op_names.index(op) for op in free], num_ops)))

    def edge_weights(self, node, input_index, op_name):
        """The weights of `op_name` on edge (`node`, `input_index`), as the derived op takes them.

        Returns:
            dict sub-layer name -> list of numpy arrays (`set_weights` of the
            `darts_ops` layer's sub-layer of that name), or None for an op
            without weights (`none`, the pools, stride-1 `skip_connect`).
        """
        if op_name not in self.op_names:
            raise ValueError(f"Unknown op {op_name!r}; this cell has {self.op_names}.")
        for group, layer in zip(self._groups, self.stacked_ops):
            e = group.local_edge(node, input_index)
            if e is None:
                continue
            if layer is None or op_name not in layer.output_ops:
                return None
            return layer.edge_weights(op_name, e)
        raise ValueError(f"node {node} has no input {input_index}.")

    def build(self, input_shape):
        s0_shape, s1_shape, w_shape = input_shape
        expected = (num_edges(NUM_NODES), len(self.op_names))
        if len(w_shape) != 3 or tuple(w_shape[1:]) != expected:
            raise ValueError(
                f"Edge weights must have shape [N, {expected[0]}, {expected[1]}], got {tuple(w_shape)}."
            )
        self.preprocess0.build(s0_shape)
        self.preprocess1.build(s1_shape)
        batch, height, width, _ = self.preprocess1.compute_output_shape(s1_shape)
        for group, layer in zip(self._groups, self.stacked_ops):
            if layer is not None:
                layer.build((batch, height, width, group.num_edges * self.channels))

    def _mix(self, outputs, flat_weights, selection, group, shared_by_nodes):
        """Each node's weighted sum `sum_k sum_j w[:, (n, j), k] * outputs_k[..., j]`: a list of `[B, P, C]`.

        Args:
            outputs: `[B, H, W, K' * X * C]`, op-major, with X the group's
                edges, or (`shared_by_nodes`: parameter-free ops computed once
                per input state) the group's inputs.
            flat_weights: the cell weights `[N, 14 * K]`.
            selection: constant `[14 * K, K' * E]` picking the outputs' weights.
            group: the `_EdgeGroup`.
            shared_by_nodes: see `outputs`.
        """
        num_nodes, num_inputs = len(group.nodes), len(group.inputs)
        num_outputs = selection.shape[1] // group.num_edges
        pixels = outputs.shape[1] * outputs.shape[2]
        w = ops.reshape(ops.matmul(flat_weights, selection), (-1, 1, num_outputs, num_nodes, num_inputs, 1))
        if not shared_by_nodes:
            outputs = ops.reshape(outputs, (-1, pixels, num_outputs, num_nodes, num_inputs, self.channels))
            mixed = ops.sum(outputs * w, axis=(2, 4))                                 # [B, P, nodes, C]
            return [mixed[:, :, 0, :]] if num_nodes == 1 else ops.unstack(mixed, axis=2)
        # The nodes share the outputs: one reduction per node (TensorFlow does
        # not broadcast both operands of a product of this rank).
        outputs = ops.reshape(outputs, (-1, pixels, num_outputs, num_inputs, self.channels))
        per_node = [w[:, :, :, 0]] if num_nodes == 1 else ops.unstack(w, axis=3)
        return [ops.sum(outputs * w_node, axis=(2, 3)) for w_node in per_node]

    def _parametric_outputs(self, layer, inputs, flat_weights, selection, training):
        """`layer(inputs)`, or zeros when all its ops' weights are below `skip_threshold` (if set)."""
        if self.skip_threshold <= 0:
            return layer(inputs, training=training)
        zeros_shape = (-1,) + tuple(layer.compute_output_shape(inputs.shape)[1:])
        used = ops.max(ops.matmul(flat_weights, selection)) > 0.0   # below-threshold weights are zeroed
        return ops.cond(used, lambda: layer(inputs, training=training),
                        lambda: ops.zeros(ops.concatenate([ops.shape(inputs)[:1], zeros_shape[1:]], 0)))

    def _group_nodes(self, g, states, flat_weights, training):
        """The group's contribution to each of its nodes: a list of `[B, P, C]` (None: no ops)."""
        group, layer = self._groups[g], self.stacked_ops[g]
        parametric_selection, free_selection = (ops.convert_to_tensor(m, dtype=flat_weights.dtype)
                                                for m in self._selections[g])
        total = None
        if layer is not None:
            rectified = {j: ops.relu(states[j]) for j in group.inputs}
            stacked = _concatenate([rectified[j] for _ in group.nodes for j in group.inputs])
            outputs = self._parametric_outputs(layer, stacked, flat_weights, parametric_selection, training)
            total = self._mix(outputs, flat_weights, parametric_selection, group, shared_by_nodes=False)
        if self._free_positions[g]:
            stacked = _concatenate([states[j] for j in group.inputs])
            outputs = _concatenate([self.free_ops[i](stacked) for i in self._free_positions[g]])
            mixed = self._mix(outputs, flat_weights, free_selection, group, shared_by_nodes=True)
            total = mixed if total is None else [a + b for a, b in zip(total, mixed)]
        return total

    def call(self, inputs, training=None):
        s0, s1, w = inputs
        w = ops.cast(w, s1.dtype)
        if self.skip_threshold > 0:
            below_everywhere = ops.max(w, axis=0, keepdims=True) < self.skip_threshold
            w = ops.where(below_everywhere, ops.zeros_like(w), w)
        flat_weights = ops.reshape(w, (-1, w.shape[1] * w.shape[2]))
        states = [self.preprocess0(s0, training=training), self.preprocess1(s1, training=training)]
        height = -(-states[1].shape[1] // 2) if self.reduction else states[1].shape[1]
        width = -(-states[1].shape[2] // 2) if self.reduction else states[1].shape[2]
        node_shape = (-1, height, width, self.channels)
        from_cell_inputs = self._group_nodes(0, states, flat_weights, training)
        for n in range(NUM_NODES):
            terms = []
            if from_cell_inputs is not None:
                terms.append(from_cell_inputs[n])
            if n >= 1:
                later = self._group_nodes(n, states, flat_weights, training)
                if later is not None:
                    terms.append(later[0])
            if terms:
                node = terms[0] if len(terms) == 1 else terms[0] + terms[1]
                states.append(ops.reshape(node, node_shape))
            else:  # an op list of only "none"
                states.append(ops.zeros_like(states[1][:, :: 2 if self.reduction else 1,
                                                       :: 2 if self.reduction else 1, :]))
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
