"""NAS-Bench-201 networks: the benchmark's macro skeleton around a cell.

One builder, `_network`, makes both networks, so the supernet and the derived
network cannot drift apart:

    stem: 3x3 conv (no bias) to C, BN
    stage 1: N cells at width C
    residual reduction block (stride 2) to 2C, then N cells at width 2C
    residual reduction block (stride 2) to 4C, then N cells at width 4C
    BN, ReLU, global average pooling, dense classifier (logits)

C = `channels` (16) and N = `cells_per_stage` (5) in the benchmark. The
derived network (`build_nb201_model`) uses one `NB201Cell` per position with
affine BN everywhere; the supernet (`build_nb201_supernet`) uses
`NB201SearchCell`s whose convolution BNs have no affine parameters (as in the
benchmark's and UNAS's search networks); stem, reduction blocks and head are
identical in both.
"""

import keras

from unas_keras.layers import nb201_cell
from unas_keras.layers import nb201_ops
from unas_keras.networks.supernet import LayerCache, Supernet
from unas_keras.space import nb201 as nb201_space

NUM_STAGES = 3
EDGES_INPUT = "edges"


def _check_int(value, name, minimum=1):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}. Received: {value!r}")
    return value


def _check_input_shape(input_shape):
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise ValueError(f"`input_shape` must be (height, width, channels). Received: {input_shape!r}") from None
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"`input_shape` must be (height, width, channels) of positive ints. Received: {input_shape!r}")
    factor = 2 ** (NUM_STAGES - 1)
    if shape[0] % factor or shape[1] % factor:
        raise ValueError(
            f"NAS-Bench-201 networks halve the resolution {NUM_STAGES - 1} times with residual blocks "
            f"that need even sides: height and width must be multiples of {factor}. Received: {input_shape!r}"
        )
    return shape


def _edge_ops(genotype):
    from unas_keras.space.architecture import Architecture

    if isinstance(genotype, Architecture):
        if genotype.space != "nb201":
            raise ValueError(f"Expected an 'nb201' architecture, got a {genotype.space!r} one.")
        genotype = genotype.genotype
    if isinstance(genotype, str):
        genotype = nb201_space.NB201Genotype.from_string(genotype)
    if not isinstance(genotype, nb201_space.NB201Genotype):
        raise ValueError(
            "`genotype` must be an NB201Genotype, an 'nb201' Architecture or a benchmark string "
            f"like '|nor_conv_3x3~0|+|...|'. Received: {type(genotype).__name__}"
        )
    return tuple(genotype.edges)


def _network(layer, images, num_classes, channels, cells_per_stage, make_cell):
    """The macro skeleton; `make_cell(x, width, stage, index)` applies one cell.

    `layer` (a `LayerCache`) makes every named layer, or reuses it when a
    supernet's `call` lays the network out again on a batch.
    """
    x = layer(keras.layers.Conv2D, channels, 3, padding="same", use_bias=False, name="stem_conv")(images)
    x = layer(nb201_ops.batch_norm, True, name="stem_bn")(x)
    for stage in range(NUM_STAGES):
        width = channels * 2 ** stage
        if stage > 0:
            x = layer(nb201_ops.NB201ResidualBlock, width, strides=2, name=f"reduction_{stage}")(x)
        for index in range(cells_per_stage):
            x = make_cell(x, width, stage, index)
    x = layer(nb201_ops.batch_norm, True, name="head_bn")(x)
    x = layer(keras.layers.ReLU, name="head_relu")(x)
    x = layer(keras.layers.GlobalAveragePooling2D, name="global_pool")(x)
    return layer(keras.layers.Dense, num_classes, name="classifier")(x)


def build_nb201_model(genotype, num_classes, input_shape, channels=16, cells_per_stage=5):
    """Builds the benchmark network of a NAS-Bench-201 cell.

    Args:
        genotype: an `NB201Genotype`, an `"nb201"` `Architecture` or the
            benchmark string of the cell.
        num_classes: number of output classes.
        input_shape: `(height, width, channels)`; height and width multiples
            of 4 (32x32 for CIFAR, 16x16 for ImageNet16-120).
        channels: width C of the first stage (16 in the benchmark).
        cells_per_stage: N, cells per stage (5 in the benchmark).

    Returns:
        A functional `keras.Model` mapping images to logits. With the default
        options its trainable parameter count equals the benchmark's
        (PyTorch parameters, BN scale and offset included).

    Raises:
        ValueError: on a bad genotype or option.
    """
    edge_ops = _edge_ops(genotype)
    num_classes = _check_int(num_classes, "num_classes")
    input_shape = _check_input_shape(input_shape)
    channels = _check_int(channels, "channels")
    cells_per_stage = _check_int(cells_per_stage, "cells_per_stage")

    layer = LayerCache()

    def make_cell(x, width, stage, index):
        return layer(nb201_cell.NB201Cell, width, edge_ops, name=f"cell_{stage}_{index}")(x)

    images = keras.Input(input_shape, name="images")
    logits = _network(layer, images, num_classes, channels, cells_per_stage, make_cell)
    return keras.Model(images, logits, name="nb201_network")


@keras.saving.register_keras_serializable(package="unas_keras")
class NB201Supernet(Supernet):
    """The NAS-Bench-201 search supernet.

    Called as `supernet((images, weights), training=...)`, with weights
    `{"edges": [N, 6, 5]}` (N = batch size for one architecture per example,
    or 1 for one architecture for the whole batch); returns logits
    `[B, num_classes]`. Every edge computes `sum_k w[:, e, k] * op_k(x)`. The
    layers are laid out by the derived network's function (`_network`), with
    `NB201SearchCell`s in place of `NB201Cell`s.

    Args:
        num_classes: number of output classes.
        input_shape: `(height, width, channels)`, sides multiples of 4.
        channels: width C of the first stage (16 in the benchmark).
        cells_per_stage: N, cells per stage (5 in the benchmark).

    Attributes:
        search_space: an `NB201SearchSpace`.
        image_shape: `(height, width, channels)`.
    """

    def __init__(self, num_classes, input_shape, channels=16, cells_per_stage=5, **kwargs):
        num_classes = _check_int(num_classes, "num_classes")
        input_shape = _check_input_shape(input_shape)
        channels = _check_int(channels, "channels")
        cells_per_stage = _check_int(cells_per_stage, "cells_per_stage")
        kwargs.setdefault("name", "nb201_supernet")
        super().__init__(nb201_space.NB201SearchSpace(), num_classes, input_shape, **kwargs)
        self.channels = channels
        self.cells_per_stage = cells_per_stage
        rows, choices = self.search_space.decisions()[EDGES_INPUT]
        images = keras.Input(input_shape, name="images")
        edge_weights = keras.Input((rows, choices), name="edge_weights")
        layers = LayerCache()
        self._layout(layers, images, {EDGES_INPUT: edge_weights})  # makes and builds the layers
        self._network_layers = layers.layers
        self.built = True

    def _layout(self, layer, images, weights):
        edge_weights = weights[EDGES_INPUT]

        def make_cell(x, width, stage, index):
            return layer(nb201_cell.NB201SearchCell, width, name=f"cell_{stage}_{index}")([x, edge_weights])

        return _network(layer, images, self.num_classes, self.channels, self.cells_per_stage, make_cell)

    def call(self, inputs, training=None, one_hot=False):
        """Logits of `(images, {"edges": w})`; see `Supernet.call` (`one_hot` changes nothing here)."""
        images, weights = inputs
        return self._layout(LayerCache(self._network_layers), images, weights)

    def mix_weights(self, samples):
        """Maps architecture samples to the supernet's `weights` input.

        Args:
            samples: dict `{"edges": [N, 6, 5]}` (hard one-hot or relaxed
                samples; N = batch size or 1).

        Returns:
            `{"edges": [N, 6, 5]}`: in this space every edge's weights are the
            sample itself.

        Raises:
            ValueError: on a missing or unexpected decision, or a bad shape.
        """
        if not isinstance(samples, dict) or set(samples) != {EDGES_INPUT}:
            got = sorted(samples) if isinstance(samples, dict) else type(samples).__name__
            raise ValueError(f"NB201 samples must be a dict with exactly the key 'edges'. Received: {got}")
        edges = samples[EDGES_INPUT]
        expected = tuple(self.search_space.decisions()[EDGES_INPUT])
        shape = tuple(edges.shape)
        if len(shape) != 3 or shape[1:] != expected:
            raise ValueError(f"NB201 samples['edges'] must have shape [N, 6, 5]. Received shape {shape}.")
        return {EDGES_INPUT: edges}

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "num_classes": self.num_classes,
            "input_shape": list(self.image_shape),
            "channels": self.channels,
            "cells_per_stage": self.cells_per_stage,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)


def build_nb201_supernet(num_classes, input_shape, channels=16, cells_per_stage=5):
    """Builds the NAS-Bench-201 search supernet.

    Args:
        num_classes: number of output classes.
        input_shape: `(height, width, channels)`, sides multiples of 4.
        channels: width C of the first stage (16).
        cells_per_stage: N, cells per stage (5).

    Returns:
        An `NB201Supernet` (a `Supernet`) called as
        `supernet((images, {"edges": w}), training=...)`, with `search_space`
        and `mix_weights(samples)`.
    """
    return NB201Supernet(num_classes, input_shape, channels=channels, cells_per_stage=cells_per_stage)


# The names the space registry (unas_keras.space.spec.SpaceSpec) calls.
build_supernet = build_nb201_supernet
build_model = build_nb201_model
