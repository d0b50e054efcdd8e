"""DARTS-space networks: the derived (evaluation) network and the UNAS supernet.

One builder, `_darts_network`, lays out both: the stem, `num_cells` cells with
reductions at `num_cells // 3` and `2 * num_cells // 3`, global pooling and the
classifier (plus, for derived networks, the auxiliary head after cell
`2 * num_cells // 3`). The two forms differ only in the cell layer they place
(`DartsCell` or `DartsSearchCell`), so they cannot drift apart.

Inputs with a side >= 128 use the DARTS ImageNet stems (three stride-2 3x3
convolutions; the first cell then sees a reduced `s0`), smaller inputs the
CIFAR stem (one 3x3 convolution to `3 * C`).
"""

import keras
import numpy as np
from keras import ops

from unas_keras.layers.darts_cell import DartsCell, DartsSearchCell
from unas_keras.layers.darts_ops import batch_norm
from unas_keras.networks.supernet import LayerCache, Supernet, one_hot_samples
from unas_keras.space.architecture import Architecture
from unas_keras.space.darts import CELL_TYPES, NUM_NODES, DartsGenotype, DartsSearchSpace

IMAGENET_MIN_SIDE = 128
STEM_MULTIPLIER = 3


def is_imagenet_input(input_shape):
    """Whether `input_shape` (H, W, C) selects the ImageNet stems (side >= 128)."""
    return min(input_shape[0], input_shape[1]) >= IMAGENET_MIN_SIDE


def reduction_cells(num_cells):
    """Indices of the reduction cells: `num_cells // 3` and `2 * num_cells // 3`."""
    return sorted({num_cells // 3, 2 * num_cells // 3})


def _check_input_shape(input_shape):
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or any(not isinstance(d, int) or d < 1 for d in input_shape):
        raise ValueError(f"input_shape must be (height, width, channels) of positive ints, got {input_shape!r}.")
    return input_shape


def _check_positive(value, what):
    if not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}.")
    return int(value)


def _conv_bn(layer, x, filters, stride, name, relu_before=False):
    """(ReLU) -> 3x3 conv (no bias, PyTorch padding 1) -> BN, as in the DARTS stems."""
    if relu_before:
        x = layer(keras.layers.ReLU, name=f"{name}_relu")(x)
    if stride == 1:
        x = layer(keras.layers.Conv2D, filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    else:
        x = layer(keras.layers.ZeroPadding2D, 1, name=f"{name}_pad")(x)
        x = layer(keras.layers.Conv2D, filters, 3, strides=stride, use_bias=False, name=f"{name}_conv")(x)
    return layer(batch_norm, True, name=f"{name}_bn")(x)


def _stem(layer, images, channels, imagenet):
    """Returns (s0, s1, C_prev_prev, C_prev, reduction_prev)."""
    if not imagenet:
        s = _conv_bn(layer, images, STEM_MULTIPLIER * channels, 1, "stem")
        return s, s, STEM_MULTIPLIER * channels, STEM_MULTIPLIER * channels, False
    if channels % 2:
        raise ValueError(f"The ImageNet stem needs an even init_channels, got {channels}.")
    s0 = _conv_bn(layer, images, channels // 2, 2, "stem0_a")
    s0 = _conv_bn(layer, s0, channels, 2, "stem0_b", relu_before=True)
    s1 = _conv_bn(layer, s0, channels, 2, "stem1", relu_before=True)
    return s0, s1, channels, channels, True


def _auxiliary_head(layer, x, num_classes, imagenet):
    """DARTS AuxiliaryHeadCIFAR / AuxiliaryHeadImageNet (the latter without the 768 BN)."""
    side = min(x.shape[1], x.shape[2])
    stride = 2 if imagenet else 3
    if (side - 5) // stride + 1 < 2:
        raise ValueError(
            f"The auxiliary head needs a feature map of at least {5 + stride} pixels after cell "
            f"2 * num_cells // 3, got {side}; use a larger input or auxiliary=False."
        )
    x = layer(keras.layers.ReLU, name="auxiliary_relu_0")(x)
    x = layer(keras.layers.AveragePooling2D, 5, strides=stride, name="auxiliary_pool")(x)
    x = layer(keras.layers.Conv2D, 128, 1, use_bias=False, name="auxiliary_conv_0")(x)
    x = layer(batch_norm, True, name="auxiliary_bn_0")(x)
    x = layer(keras.layers.ReLU, name="auxiliary_relu_1")(x)
    x = layer(keras.layers.Conv2D, 768, 2, use_bias=False, name="auxiliary_conv_1")(x)
    if not imagenet:
        x = layer(batch_norm, True, name="auxiliary_bn_1")(x)
    x = layer(keras.layers.ReLU, name="auxiliary_relu_2")(x)
    # 1x1 at the DARTS input sizes; pooling keeps other sizes working.
    x = layer(keras.layers.GlobalAveragePooling2D, name="auxiliary_pool_global")(x)
    return layer(keras.layers.Dense, num_classes, name="auxiliary_classifier")(x)


def _darts_network(layer, images, make_cell, num_classes, init_channels, num_cells, auxiliary=False):
    """Lays out a DARTS network on `images`.

    Args:
        layer: the `LayerCache` that makes (or reuses) every named layer.
        images: images of shape (B, H, W, 3): a `keras.Input` (building a
            network), or a batch (a supernet's `call`, its layers reused).
        make_cell: `(index, channels, reduction, reduction_prev, name) -> fn(s0, s1)`.
        num_classes, init_channels, num_cells: network size.
        auxiliary: whether to add the auxiliary head.

    Returns:
        `logits`, or `[logits, aux_logits]` with `auxiliary`.
    """
    imagenet = is_imagenet_input(images.shape[1:])
    s0, s1, _, _, reduction_prev = _stem(layer, images, init_channels, imagenet)
    channels = init_channels
    reductions = reduction_cells(num_cells)
    aux_logits = None
    for i in range(num_cells):
        reduction = i in reductions
        if reduction:
            channels *= 2
        cell = make_cell(i, channels, reduction, reduction_prev, f"cell_{i}")
        s0, s1 = s1, cell(s0, s1)
        reduction_prev = reduction
        if auxiliary and i == 2 * num_cells // 3:
            aux_logits = _auxiliary_head(layer, s1, num_classes, imagenet)
    x = layer(keras.layers.GlobalAveragePooling2D, name="global_pool")(s1)
    logits = layer(keras.layers.Dense, num_classes, name="classifier")(x)
    return [logits, aux_logits] if auxiliary else logits


def _genotype_of(genotype):
    if isinstance(genotype, Architecture):
        if genotype.space != "darts":
            raise ValueError(f"Expected a 'darts' architecture, got space {genotype.space!r}.")
        return genotype.genotype
    if isinstance(genotype, DartsGenotype):
        return genotype
    if isinstance(genotype, dict):
        return DartsGenotype.from_dict(genotype)
    raise ValueError(
        f"genotype must be a DartsGenotype, a 'darts' Architecture or its dict form, got {type(genotype).__name__}."
    )


def build_darts_model(genotype, num_classes, input_shape, init_channels=36, num_cells=20, auxiliary=False,
                      drop_path_rate=0.0, affine=True, name=None):
    """Builds the DARTS evaluation network of `genotype` as a functional `keras.Model`.

    Args:
        genotype: a `DartsGenotype`, a `"darts"` `Architecture`, or the genotype's dict form.
        num_classes: number of classes.
        input_shape: (height, width, channels); a side >= 128 selects the ImageNet stems.
        init_channels: C of the first cells (36 CIFAR, 46-48 ImageNet mobile).
        num_cells: number of cells (20 CIFAR, 14 ImageNet).
        auxiliary: add the auxiliary head after cell `2 * num_cells // 3`; the
            model then has two outputs `[logits, aux_logits]`.
        drop_path_rate: initial drop-path rate of the cells' non-identity ops
            (ramp it with `unas_keras.layers.drop_path.DropPathSchedule`); 0 adds no drop-path.
        affine: whether the cells' batch normalizations have scale and offset
            (the stem, head and auxiliary head always have them).
        name: model name (default "darts").

    Returns:
        A `keras.Model` mapping images to logits (or `[logits, aux_logits]`).
    """
    genotype = _genotype_of(genotype)
    input_shape = _check_input_shape(input_shape)
    num_classes = _check_positive(num_classes, "num_classes")
    init_channels = _check_positive(init_channels, "init_channels")
    num_cells = _check_positive(num_cells, "num_cells")
    if not 0.0 <= drop_path_rate < 1.0:
        raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate!r}.")

    layer = LayerCache()

    def make_cell(index, channels, reduction, reduction_prev, cell_name):
        cell = layer(DartsCell, channels, genotype.reduce if reduction else genotype.normal, reduction=reduction,
                     reduction_prev=reduction_prev, affine=affine, drop_path_rate=drop_path_rate, name=cell_name)
        return lambda s0, s1: cell([s0, s1])

    images = keras.Input(shape=input_shape, name="images")
    outputs = _darts_network(layer, images, make_cell, num_classes, init_channels, num_cells, auxiliary)
    return keras.Model(images, outputs, name=name or "darts")


def mix_weights(samples, num_nodes=NUM_NODES):
    """Edge weights of both cell types from per-decision selector samples.

    Args:
        samples: dict decision name -> tensor `[N, 2, choices]` (one-hot or
            relaxed) for every `"{cell}_node{n}_inputs"` (choices n + 2) and
            `"{cell}_node{n}_ops"` (choices K) of `DartsSearchSpace`.
        num_nodes: nodes per cell.

    Returns:
        `{"normal": [N, 14, K], "reduce": [N, 14, K]}`; node n's rows are
        `i (x) o + i' (x) o'`.

    Raises:
        ValueError: if a decision is missing or has the wrong shape.
    """
    out = {}
    for cell in CELL_TYPES:
        rows = []
        for n in range(num_nodes):
            keys = (f"{cell}_node{n}_inputs", f"{cell}_node{n}_ops")
            for key in keys:
                if key not in samples:
                    raise ValueError(f"samples lack the decision {key!r}.")
            inputs, op_choice = samples[keys[0]], samples[keys[1]]
            if len(inputs.shape) != 3 or inputs.shape[1] != 2 or inputs.shape[2] != n + 2:
                raise ValueError(f"{keys[0]} must have shape [N, 2, {n + 2}], got {tuple(inputs.shape)}.")
            if len(op_choice.shape) != 3 or op_choice.shape[1] != 2:
                raise ValueError(f"{keys[1]} must have shape [N, 2, K], got {tuple(op_choice.shape)}.")
            inputs = ops.convert_to_tensor(inputs)
            op_choice = ops.cast(ops.convert_to_tensor(op_choice), inputs.dtype)
            rows.append(ops.einsum("nrj,nrk->njk", inputs, op_choice))
        out[cell] = ops.concatenate(rows, axis=1)
    return out


#: `one_hot_samples` under its former name (`unas_keras.networks.supernet.one_hot_samples`).
architecture_samples = one_hot_samples


@keras.saving.register_keras_serializable(package="unas_keras")
class DartsSupernet(Supernet):
    """The UNAS DARTS-space supernet (search form).

    Call as `model((images, weights), training=True)` with
    `weights = {"normal": [N, 14, K], "reduce": [N, 14, K]}` (see
    `mix_weights`); N is the batch size (per-example architectures) or 1 (one
    per minibatch). Returns logits. Batch normalizations inside the cells have
    no scale/offset; the stem's do, as in the UNAS release. The layers are laid
    out by the derived network's function (`build_darts_model`), with
    `DartsSearchCell`s in place of `DartsCell`s.

    Args:
        num_classes: number of classes.
        input_shape: (height, width, channels); a side >= 128 selects the ImageNet stems.
        ops: op-set name or list of op names of the search space.
        init_channels: C (16 in the CIFAR search).
        num_cells: number of cells (8 in the CIFAR search).
        skip_threshold: ops whose weight is below this for the whole batch are
            not evaluated (0 disables it; the UNAS release uses 0.05).
        edge_grouping: how the cells run their edges' ops: `"by_source"` (four groups per cell, the
            smallest graph) or `"per_edge"`; see `DartsSearchCell`.
        name: model name.

    Attributes:
        search_space: the `DartsSearchSpace` whose decisions the weights mix.
        image_shape: `(height, width, channels)`.
    """

    def __init__(self, num_classes, input_shape, ops="unas", init_channels=16, num_cells=8,
                 skip_threshold=0.0, edge_grouping="by_source", name="darts_supernet", **kwargs):
        search_space = DartsSearchSpace(ops)
        input_shape = _check_input_shape(input_shape)
        num_classes = _check_positive(num_classes, "num_classes")
        init_channels = _check_positive(init_channels, "init_channels")
        num_cells = _check_positive(num_cells, "num_cells")
        super().__init__(search_space, num_classes, input_shape, name=name, **kwargs)
        self.op_set = ops if isinstance(ops, str) else list(ops)
        self.init_channels = init_channels
        self.num_cells = num_cells
        self.skip_threshold = float(skip_threshold)
        self.edge_grouping = edge_grouping
        rows = sum(n + 2 for n in range(NUM_NODES))
        images = keras.Input(shape=input_shape, name="images")
        weights = {cell: keras.Input(shape=(rows, len(search_space.ops)), name=f"{cell}_weights")
                   for cell in CELL_TYPES}
        layers = LayerCache()
        self._layout(layers, images, weights)  # makes and builds the layers
        self._network_layers = layers.layers
        self.built = True

    def _layout(self, layer, images, weights):
        def make_cell(index, channels, reduction, reduction_prev, cell_name):
            cell = layer(DartsSearchCell, channels, self.op_set, reduction=reduction, reduction_prev=reduction_prev,
                         skip_threshold=self.skip_threshold, affine=False, edge_grouping=self.edge_grouping,
                         name=cell_name)
            cell_weights = weights["reduce" if reduction else "normal"]
            return lambda s0, s1: cell([s0, s1, cell_weights])

        return _darts_network(layer, images, make_cell, self.num_classes, self.init_channels, self.num_cells)

    def call(self, inputs, training=None, one_hot=False):
        """Logits of `(images, weights)`; see `Supernet.call` (`one_hot` changes nothing here)."""
        images, weights = inputs
        return self._layout(LayerCache(self._network_layers), images, weights)

    def mix_weights(self, samples):
        """`mix_weights(samples)`, checking the op count against this supernet's space."""
        out = mix_weights(samples)
        k = out["normal"].shape[-1]
        if k != len(self.search_space.ops):
            raise ValueError(f"samples choose among {k} ops; this supernet has {len(self.search_space.ops)}.")
        return out

    def get_config(self):
        return {
            "num_classes": self.num_classes,
            "input_shape": list(self.image_shape),
            "ops": self.op_set,
            "init_channels": self.init_channels,
            "num_cells": self.num_cells,
            "skip_threshold": self.skip_threshold,
            "edge_grouping": self.edge_grouping,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def build_darts_supernet(num_classes, input_shape, ops="unas", init_channels=16, num_cells=8,
                         skip_threshold=0.0, edge_grouping="by_source"):
    """Builds the UNAS DARTS-space supernet; see `DartsSupernet`."""
    return DartsSupernet(num_classes, input_shape, ops=ops, init_channels=init_channels,
                         num_cells=num_cells, skip_threshold=skip_threshold, edge_grouping=edge_grouping)


# The names the space registry (unas_keras.space.spec.SpaceSpec) calls.
build_supernet = build_darts_supernet
build_model = build_darts_model
