"""The blocks a ProxylessNAS-space network is made of, as lookup-table keys.

A derived ProxylessNAS-space network is a fixed stem (3x3 stride-2
convolution + a kernel-3, expansion-1 MBConv), one MBConv per non-`zero`
searchable layer, and a fixed head (1x1 convolution, global average pooling,
classifier). Every layer's input shape is fixed by the backbone (a `zero`
layer keeps the shape), so a block is identified by its input shape, output
width, kernel, expansion and stride; identical blocks at different positions
share one table entry.
"""

import dataclasses

from unas_keras.space.proxyless import (
    PROXYLESS_BACKBONE,
    ZERO,
    MBConvBackbone,
    ProxylessGenotype,
    ProxylessSearchSpace,
    parse_block,
)

STEM, MBCONV, HEAD = "stem", "mbconv", "head"

_OTHER_SPACES = ("for other spaces measure whole networks and use DeviceTable / "
                 "LatencyModel.from_device_table")


def block_table_space(space, backbone=None):
    """The ProxylessNAS search space that per-block latency tables are made for.

    Per-block tables exist for the ProxylessNAS space only (its networks are a chain of
    blocks with fixed input shapes); this is the one place that says so for a space.

    Args:
        space: a space name (`unas_keras.space.space_names()`) or a search-space object.
        backbone: the `MBConvBackbone` to search on when `space` is a name (default: ProxylessNAS's).

    Returns:
        A `ProxylessSearchSpace`.

    Raises:
        ValueError: for another space (or an unknown name).
    """
    if isinstance(space, str):
        from unas_keras.space import registry

        if registry.get(space).search_space_class is not ProxylessSearchSpace:
            raise ValueError(f"Latency lookup tables cover the proxyless space only, got {space!r}; "
                             f"{_OTHER_SPACES}.")
        return ProxylessSearchSpace(backbone or PROXYLESS_BACKBONE)
    if not isinstance(space, ProxylessSearchSpace):
        name = getattr(space, "name", type(space).__name__)
        raise ValueError(f"Latency lookup tables cover the proxyless space only, got {name!r}; {_OTHER_SPACES}.")
    return space


def proxyless_genotype(architecture):
    """The `ProxylessGenotype` of an architecture (or the genotype itself).

    Raises:
        ValueError: for an architecture of another space.
    """
    genotype = getattr(architecture, "genotype", architecture)
    if not isinstance(genotype, ProxylessGenotype):
        raise ValueError(
            "Latency lookup tables cover the proxyless space only; got a "
            f"{getattr(architecture, 'space', type(architecture).__name__)!r} architecture."
        )
    return genotype


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One timed unit of a network.

    Attributes:
        kind: `"stem"`, `"mbconv"` or `"head"`.
        input_shape: `(h, w, c)` of the block's input.
        out_channels: output width (stem: the stem conv width; head: the 1x1
            conv width).
        kernel: depthwise kernel side (mbconv), stem conv side (stem), 1 (head).
        expansion: MBConv expansion (stem: the first block's output width;
            head: the number of classes).
        stride: stride of the block.
    """

    kind: str
    input_shape: tuple
    out_channels: int
    kernel: int
    expansion: int
    stride: int

    @property
    def key(self):
        """Stable string key used in the JSON table."""
        h, w, c = self.input_shape
        if self.kind == STEM:
            return f"stem_{h}x{w}x{c}_c{self.out_channels}_k{self.kernel}_s{self.stride}_b{self.expansion}"
        if self.kind == HEAD:
            return f"head_{h}x{w}x{c}_c{self.out_channels}_n{self.expansion}"
        return (f"mbconv_{h}x{w}x{c}_c{self.out_channels}_k{self.kernel}_e{self.expansion}"
                f"_s{self.stride}")

    @property
    def output_shape(self):
        h, w, _ = self.input_shape
        side = lambda s: -(-s // self.stride)  # noqa: E731 - same/MobileNetV2 padding
        if self.kind == STEM:
            # Stem conv (stride 2) then the stride-1 first block.
            return (side(h), side(w), self.expansion)
        if self.kind == HEAD:
            return (self.expansion,)
        return (side(h), side(w), self.out_channels)


def weight_count(block):
    """Number of convolution / dense kernel weights of a block (what dominates its memory traffic).

    Biases and BatchNorm parameters (folded into biases by the TFLite
    converter) are not counted.
    """
    h, w, c = block.input_shape
    if block.kind == MBCONV:
        hidden = c * block.expansion
        expand = c * hidden if block.expansion != 1 else 0
        return expand + hidden * block.kernel ** 2 + hidden * block.out_channels
    if block.kind == STEM:
        stem = block.kernel ** 2 * c * block.out_channels
        return stem + block.out_channels * 9 + block.out_channels * block.expansion
    if block.kind == HEAD:
        return c * block.out_channels + block.out_channels * block.expansion
    raise ValueError(f"Unknown block kind {block.kind!r}.")


def _widths(backbone, width_multiplier):
    from unas_keras.networks.proxyless import scaled_widths

    return scaled_widths(backbone, width_multiplier)


def layer_blocks(backbone=PROXYLESS_BACKBONE, input_shape=(64, 64, 3), num_classes=10,
                 width_multiplier=1.0):
    """Per searchable layer, the `BlockSpec` of each choice (`None` for `zero`).

    Args:
        backbone: the `MBConvBackbone`.
        input_shape: network input `(h, w, c)`.
        num_classes: classifier width (only the head depends on it).
        width_multiplier: channel multiplier (rounded as the network does).

    Returns:
        `(stem, layers, head)`: the stem `BlockSpec`, a list with one dict
        choice -> `BlockSpec` (or `None` for `"zero"`) per layer, and the head
        `BlockSpec`.
    """
    from unas_keras.space.proxyless import BLOCK_CHOICES, OPTIONAL_CHOICES

    if not isinstance(backbone, MBConvBackbone):
        raise ValueError(f"backbone must be an MBConvBackbone, got {type(backbone).__name__}.")
    widths = _widths(backbone, width_multiplier)
    stage_width = dict(zip(backbone.stage_channels, widths["stages"]))
    h, w, c = (int(d) for d in input_shape)
    stem = BlockSpec(STEM, (h, w, c), widths["stem"], 3, widths["first_block"], 2)
    shape = stem.output_shape
    layers = []
    for out_channels, stride, first in backbone.layer_plan():
        options = {}
        for choice in (BLOCK_CHOICES if first else OPTIONAL_CHOICES):
            if choice == ZERO:
                options[choice] = None
                continue
            kernel, expansion = parse_block(choice)
            options[choice] = BlockSpec(MBCONV, tuple(shape), stage_width[out_channels], kernel,
                                        expansion, stride)
        layers.append(options)
        shape = next(b for b in options.values() if b is not None).output_shape
    head = BlockSpec(HEAD, tuple(shape), widths["head"], 1, int(num_classes), 1)
    return stem, layers, head


def space_blocks(backbone=PROXYLESS_BACKBONE, input_shape=(64, 64, 3), num_classes=10,
                 width_multiplier=1.0):
    """Every distinct `BlockSpec` of the space (stem and head first), deduplicated."""
    stem, layers, head = layer_blocks(backbone, input_shape, num_classes, width_multiplier)
    seen = {stem.key: stem, head.key: head}
    for options in layers:
        for block in options.values():
            if block is not None:
                seen.setdefault(block.key, block)
    return list(seen.values())


def architecture_blocks(architecture, input_shape=(64, 64, 3), num_classes=10, width_multiplier=1.0):
    """The `BlockSpec`s a derived proxyless network is made of (zero layers omitted).

    Args:
        architecture: a proxyless `unas_keras.Architecture` (or a
            `ProxylessGenotype`).
        input_shape: network input `(h, w, c)`.
        num_classes: classifier width.
        width_multiplier: channel multiplier.
    """
    genotype = proxyless_genotype(architecture)
    stem, layers, head = layer_blocks(genotype.backbone, input_shape, num_classes, width_multiplier)
    blocks = [stem]
    for options, choice in zip(layers, genotype.layers):
        if options[choice] is not None:
            blocks.append(options[choice])
    blocks.append(head)
    return blocks


def _fixed_parts(backbone, num_classes, width_multiplier):
    """Unbuilt copies of the stem and head layers of the real derived network.

    The network is built by `unas_keras.networks.proxyless.build_proxyless_model`
    (all stage-first layers `k3e3`, optional layers `zero`); the layers before
    its first `layer_{i}` are the stem, those after its last one the head.
    Copying them (from their configs) keeps the timed parts identical to the
    network.
    """
    from unas_keras.networks.proxyless import build_proxyless_model

    layers = tuple("k3e3" if first else ZERO for _, _, first in backbone.layer_plan())
    model = build_proxyless_model(ProxylessGenotype(layers, backbone), int(num_classes), (32, 32, 3),
                                  width_multiplier=width_multiplier)
    body = [layer for layer in model.layers if layer.__class__.__name__ != "InputLayer"]
    searchable = [i for i, layer in enumerate(body) if layer.name.startswith("layer_")]
    clone = lambda layer: layer.__class__.from_config(layer.get_config())  # noqa: E731
    stem = [clone(layer) for layer in body[:searchable[0]]]
    head = [clone(layer) for layer in body[searchable[-1] + 1:]]
    return stem, head


def build_block_model(block, backbone=PROXYLESS_BACKBONE, width_multiplier=1.0):
    """A tiny `keras.Model` computing one block (for timing it on its own).

    MBConv blocks use `unas_keras.layers.mbconv.MBConv` with the network's
    BatchNorm epsilon; stem and head are copies of the real network's layers
    (see `_fixed_parts`).
    """
    import keras

    from unas_keras.layers.mbconv import MBConv
    from unas_keras.networks.proxyless import BN_EPSILON

    inputs = keras.Input(block.input_shape, batch_size=1, name="block_input")
    if block.kind == MBCONV:
        x = MBConv(block.out_channels, block.kernel, block.expansion, stride=block.stride,
                   bn_epsilon=BN_EPSILON, name="block")(inputs)
    elif block.kind in (STEM, HEAD):
        num_classes = block.expansion if block.kind == HEAD else 1
        stem, head = _fixed_parts(backbone, num_classes, width_multiplier)
        x = inputs
        for layer in (stem if block.kind == STEM else head):
            x = layer(x)
        got = tuple(x.shape[1:])
        if got != tuple(block.output_shape):
            raise ValueError(
                f"The network's {block.kind} maps {block.input_shape} to {got}, the latency table "
                f"expects {block.output_shape}."
            )
    else:
        raise ValueError(f"Unknown block kind {block.kind!r}.")
    return keras.Model(inputs, x, name=f"block_{block.key}")
