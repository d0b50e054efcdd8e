"""The NAS-Bench-201 cell: a derived (fixed) cell and the search (mixed) cell.

A cell has 4 nodes. Node 0 is the cell input; node `j` (1..3) is the sum over
`i < j` of `op_ij(node_i)`; the output is node 3. The 6 edges are ordered as
`unas_keras.space.nb201.EDGES` (the order of the benchmark string).

* `NB201Cell(channels, edge_ops)`: one fixed operation per edge (a derived
  network). `none` edges are left out of the sum; a node with no incoming
  operation is all zeros.
* `NB201SearchCell(channels)`: every edge is an `NB201MixedOp`, called as
  `cell([x, weights])` with weights `[N, 6, 5]` (N = batch size for one
  architecture per example, or 1 for one architecture for the whole batch):
  `op_e(x) = sum_k weights[:, e, k] * op_k(x)`.

With a one-hot weight, the search cell computes exactly what the derived cell
of that architecture computes with the same weights.
"""

import keras
from keras import ops

from unas_keras.layers import nb201_ops
from unas_keras.space import nb201 as nb201_space


def _check_channels(channels):
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ValueError(f"`channels` must be a positive int. Received: {channels!r}")
    return channels


def _check_cell_input(shape, channels, name):
    if len(shape) != 4:
        raise ValueError(f"{name}: expected a [batch, height, width, channels] input, got shape {tuple(shape)}.")
    if shape[-1] is not None and shape[-1] != channels:
        raise ValueError(f"{name}: expected {channels} input channels, got shape {tuple(shape)}.")


def _edge_name(edge_index, op_name=None):
    to_node, from_node = nb201_space.EDGES[edge_index]
    base = f"edge_{from_node}_{to_node}"
    return base if op_name is None else f"{base}_{op_name}"


@keras.saving.register_keras_serializable(package="unas_keras")
class NB201Cell(keras.layers.Layer):
    """A derived NAS-Bench-201 cell (one fixed operation per edge).

    Args:
        channels: width of the cell (input and output).
        edge_ops: 6 operation names from `unas_keras.space.nb201.OPS`, in
            `EDGES` order (e.g. `NB201Genotype.edges`).
        affine: whether the convolutions' BN layers have a learned scale and
            offset (True in a derived network).

    Attributes:
        edge_layers: list of 6 entries, the layer of each edge (None for a
            `none` edge).
    """

    def __init__(self, channels, edge_ops, affine=True, **kwargs):
        super().__init__(**kwargs)
        self.channels = _check_channels(channels)
        edge_ops = tuple(edge_ops)
        if len(edge_ops) != len(nb201_space.EDGES):
            raise ValueError(
                f"`edge_ops` must name {len(nb201_space.EDGES)} operations (one per edge). Received: {edge_ops!r}"
            )
        for op in edge_ops:
            if op not in nb201_space.OPS:
                raise ValueError(f"Unknown NAS-Bench-201 operation {op!r}; allowed: {list(nb201_space.OPS)}.")
        self.edge_ops = edge_ops
        self.affine = bool(affine)
        self.edge_layers = [
            None if op == "none" else nb201_ops.make_op(op, self.channels, self.affine, name=_edge_name(k, op))
            for k, op in enumerate(self.edge_ops)
        ]

    def build(self, input_shape):
        _check_cell_input(input_shape, self.channels, self.name)
        for layer in self.edge_layers:
            if layer is not None:
                layer.build(input_shape)

    def call(self, inputs, training=None):
        nodes = [inputs]
        for to_node in range(1, nb201_space.NUM_NODES):
            terms = []
            for k, (j, i) in enumerate(nb201_space.EDGES):
                if j == to_node and self.edge_layers[k] is not None:
                    terms.append(self._apply(self.edge_layers[k], nodes[i], training))
            nodes.append(_sum(terms, inputs))
        return nodes[-1]

    @staticmethod
    def _apply(layer, x, training):
        if isinstance(layer, nb201_ops.ReLUConvBN):
            return layer(x, training=training)
        return layer(x)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"channels": self.channels, "edge_ops": list(self.edge_ops), "affine": self.affine})
        return config


def _sum(terms, like):
    if not terms:
        return ops.zeros_like(like)
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


@keras.saving.register_keras_serializable(package="unas_keras")
class NB201MixedOp(keras.layers.Layer):
    """Weighted sum of the 5 NAS-Bench-201 operations on one edge.

    Called as `op([x, weights])` with `x` `[B, H, W, channels]` and weights
    `[N, 5]` (N = B, or 1 to share one weight vector across the batch), in
    `OPS` order. The `none` term is identically zero and is not computed.

    Args:
        channels: width of the edge (input and output).
        affine: whether the convolutions' BN layers have a learned scale and
            offset (False in the search supernet, as in the benchmark's and
            UNAS's search networks).

    Attributes:
        candidates: dict op name -> layer, for every operation but `none`.
    """

    def __init__(self, channels, affine=False, **kwargs):
        super().__init__(**kwargs)
        self.channels = _check_channels(channels)
        self.affine = bool(affine)
        self.candidates = {
            op: nb201_ops.make_op(op, self.channels, self.affine, name=op)
            for op in nb201_space.OPS if op != "none"
        }

    def build(self, input_shape):
        x_shape, w_shape = input_shape
        _check_cell_input(x_shape, self.channels, self.name)
        if len(w_shape) != 2 or (w_shape[-1] is not None and w_shape[-1] != len(nb201_space.OPS)):
            raise ValueError(
                f"{self.name}: edge weights must have shape [N, {len(nb201_space.OPS)}], got {tuple(w_shape)}."
            )
        for layer in self.candidates.values():
            layer.build(x_shape)

    def call(self, inputs, training=None):
        x, weights = inputs
        weights = ops.cast(weights, x.dtype)
        total = None
        for op_name, layer in self.candidates.items():
            k = nb201_space.OPS.index(op_name)
            out = layer(x, training=training) if isinstance(layer, nb201_ops.ReLUConvBN) else layer(x)
            term = ops.reshape(weights[:, k], (-1, 1, 1, 1)) * out
            total = term if total is None else total + term
        return total

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        config = super().get_config()
        config.update({"channels": self.channels, "affine": self.affine})
        return config


@keras.saving.register_keras_serializable(package="unas_keras")
class NB201SearchCell(keras.layers.Layer):
    """The search cell: an `NB201MixedOp` on each of the 6 edges.

    Called as `cell([x, weights])` with `x` `[B, H, W, channels]` and weights
    `[N, 6, 5]` (N = B or 1).

    Args:
        channels: width of the cell (input and output).
        affine: whether the convolutions' BN layers have a learned scale and
            offset (False by default, as in search).

    Attributes:
        edge_layers: list of the 6 `NB201MixedOp`s, in `EDGES` order.
    """

    def __init__(self, channels, affine=False, **kwargs):
        super().__init__(**kwargs)
        self.channels = _check_channels(channels)
        self.affine = bool(affine)
        self.edge_layers = [
            NB201MixedOp(self.channels, self.affine, name=_edge_name(k)) for k in range(len(nb201_space.EDGES))
        ]

    def build(self, input_shape):
        x_shape, w_shape = input_shape
        _check_cell_input(x_shape, self.channels, self.name)
        expected = (len(nb201_space.EDGES), len(nb201_space.OPS))
        if len(w_shape) != 3 or tuple(w_shape[1:]) != expected:
            raise ValueError(f"{self.name}: weights must have shape [N, 6, 5], got {tuple(w_shape)}.")
        for layer in self.edge_layers:
            layer.build((x_shape, (w_shape[0], expected[1])))

    def call(self, inputs, training=None):
        x, weights = inputs
        nodes = [x]
        for to_node in range(1, nb201_space.NUM_NODES):
            terms = [
                self.edge_layers[k]([nodes[i], weights[:, k, :]], training=training)
                for k, (j, i) in enumerate(nb201_space.EDGES) if j == to_node
            ]
            nodes.append(_sum(terms, x))
        return nodes[-1]

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        config = super().get_config()
        config.update({"channels": self.channels, "affine": self.affine})
        return config
