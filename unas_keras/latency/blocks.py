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

from unas_keras.space.proxyless import PROXYLESS_BACKBONE, ZERO, MBConvBackbone, parse_block

STEM, MBCONV, HEAD = "stem", "mbconv", "head"


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


def _check_width(width_multiplier):
    if width_multiplier != 1.0:
        raise ValueError(
            f"Latency lookup tables support width_multiplier=1.0 only, got {width_multiplier}."
        )


def layer_blocks(backbone=PROXYLESS_BACKBONE, input_shape=(64, 64, 3), num_classes=10):
    """Per searchable layer, the `BlockSpec` of each choice (`None` for `zero`).

    Args:
        backbone: the `MBConvBackbone`.
        input_shape: network input `(h, w, c)`.
        num_classes: classifier width (only the head depends on it).

    Returns:
        `(stem, layers, head)`: the stem `BlockSpec`, a list with one dict
        choice -> `BlockSpec` (or `None` for `"zero"`) per layer, and the head
        `BlockSpec`.
    """
    from unas_keras.space.proxyless import BLOCK_CHOICES, OPTIONAL_CHOICES

    if not isinstance(backbone, MBConvBackbone):
        raise ValueError(f"backbone must be an MBConvBackbone, got {type(backbone).__name__}.")
    h, w, c = (int(d) for d in input_shape)
    stem = BlockSpec(STEM, (h, w, c), backbone.stem_channels, 3, backbone.first_block_channels, 2)
    shape = stem.output_shape
    layers = []
    for out_channels, stride, first in backbone.layer_plan():
        options = {}
        for choice in (BLOCK_CHOICES if first else OPTIONAL_CHOICES):
            if choice == ZERO:
                options[choice] = None
                continue
            kernel, expansion = parse_block(choice)
            options[choice] = BlockSpec(MBCONV, tuple(shape), out_channels, kernel, expansion, stride)
        layers.append(options)
        shape = next(b for b in options.values() if b is not None).output_shape
    head = BlockSpec(HEAD, tuple(shape), backbone.head_channels, 1, int(num_classes), 1)
    return stem, layers, head


def space_blocks(backbone=PROXYLESS_BACKBONE, input_shape=(64, 64, 3), num_classes=10):
    """Every distinct `BlockSpec` of the space (stem and head first), deduplicated."""
    stem, layers, head = layer_blocks(backbone, input_shape, num_classes)
    seen = {stem.key: stem, head.key: head}
    for options in layers:
        for block in options.values():
            if block is not None:
                seen.setdefault(block.key, block)
    return list(seen.values())


def architecture_blocks(architecture, input_shape=(64, 64, 3), num_classes=10):
    """The `BlockSpec`s a derived proxyless network is made of (zero layers omitted).

    Args:
        architecture: a proxyless `unas_keras.Architecture` (or a
            `ProxylessGenotype`).
        input_shape: network input `(h, w, c)`.
        num_classes: classifier width.
    """
    genotype = getattr(architecture, "genotype", architecture)
    if getattr(architecture, "space", "proxyless") != "proxyless" or not hasattr(genotype, "layers"):
        raise ValueError(
            "Latency lookup tables cover the proxyless space only; got a "
            f"{getattr(architecture, 'space', type(architecture).__name__)!r} architecture."
        )
    stem, layers, head = layer_blocks(genotype.backbone, input_shape, num_classes)
    blocks = [stem]
    for options, choice in zip(layers, genotype.layers):
        if options[choice] is not None:
            blocks.append(options[choice])
    blocks.append(head)
    return blocks


def build_block_model(block, bn_epsilon=1e-3):
    """A tiny `keras.Model` computing one block (for timing it on its own)."""
    import keras

    from unas_keras.layers.mbconv import MBConv, correct_pad

    inputs = keras.Input(block.input_shape, batch_size=1, name="block_input")
    if block.kind == MBCONV:
        x = MBConv(block.out_channels, block.kernel, block.expansion, stride=block.stride,
                   bn_epsilon=bn_epsilon, name="block")(inputs)
    elif block.kind == STEM:
        x = keras.layers.ZeroPadding2D(correct_pad(block.input_shape[:2], block.kernel))(inputs)
        x = keras.layers.Conv2D(block.out_channels, block.kernel, strides=block.stride,
                                padding="valid", use_bias=False)(x)
        x = keras.layers.BatchNormalization(epsilon=bn_epsilon)(x)
        x = keras.layers.ReLU(6.0)(x)
        x = MBConv(block.expansion, 3, 1, stride=1, bn_epsilon=bn_epsilon)(x)
    elif block.kind == HEAD:
        x = keras.layers.Conv2D(block.out_channels, 1, use_bias=False)(inputs)
        x = keras.layers.BatchNormalization(epsilon=bn_epsilon)(x)
        x = keras.layers.ReLU(6.0)(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        x = keras.layers.Dense(block.expansion)(x)
    else:
        raise ValueError(f"Unknown block kind {block.kind!r}.")
    return keras.Model(inputs, x, name=f"block_{block.key}")
