"""ProxylessNAS-space networks: the derived network and the search supernet.

One builder (`_ProxylessLayers`) makes the layers of both forms, so the two
cannot drift: stem 3x3 stride-2 convolution (BN, ReLU6), a fixed MBConv
(expansion 1, kernel 3), the searchable layers of `backbone.layer_plan()`,
head 1x1 convolution (BN, ReLU6), global average pooling, dropout, dense.
The derived network puts one `MBConv` per chosen layer (a `"zero"` layer is
absent); the supernet puts one `MBConvChoice` per layer. Layer `i` of the
plan is named `layer_{i}` in both forms, and a supernet candidate is named
after its choice (`"k3e6"`), so weights map one to one
(`inherit_supernet_weights`).

With `MOBILENET_V2_BACKBONE` and every block `"k3e6"` the derived network is
`keras.applications.MobileNetV2` layer for layer (same weight shapes in the
same order, same padding, same width rounding).
"""

import keras
from keras import ops

from unas_keras import _compat
from unas_keras.layers.fused_batch_norm import FusedBatchNormalization
from unas_keras.layers.mbconv import MBConv
from unas_keras.layers.mbconv_choice import DEFAULT_SKIP_THRESHOLD, MBConvChoice
from unas_keras.networks.supernet import Supernet
from unas_keras.space.proxyless import (
    BLOCK_CHOICES,
    OPTIONAL_CHOICES,
    PROXYLESS_BACKBONE,
    MBConvBackbone,
    ProxylessGenotype,
    ProxylessSearchSpace,
    parse_block,
)

#: BatchNormalization epsilon of every layer (MobileNetV2's and ProxylessNAS's).
BN_EPSILON = 1e-3


def make_divisible(value, divisor=8, min_value=None):
    """MobileNet's channel rounding (`keras.applications.MobileNetV2`'s rule).

    Rounds `value` to the nearest multiple of `divisor` (at least `min_value`,
    default `divisor`), never going more than 10% below `value`.
    """
    if min_value is None:
        min_value = divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def scaled_widths(backbone, width_multiplier):
    """Channel counts of a backbone at a width multiplier, as MobileNetV2 scales them.

    Returns:
        dict with `stem`, `first_block`, `stages` (tuple) and `head`.
    """
    if not width_multiplier > 0:
        raise ValueError(f"width_multiplier must be > 0, got {width_multiplier!r}.")
    w = float(width_multiplier)
    head = backbone.head_channels
    if w > 1.0:
        head = make_divisible(head * w)
    return {
        "stem": make_divisible(backbone.stem_channels * w),
        "first_block": make_divisible(int(backbone.first_block_channels * w)),
        "stages": tuple(make_divisible(int(c * w)) for c in backbone.stage_channels),
        "head": head,
    }


def _check_shape(input_shape):
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or any(s is not None and (not isinstance(s, int) or s < 1)
                                    for s in input_shape) or input_shape[-1] is None:
        raise ValueError(
            f"input_shape must be (height, width, channels) with positive ints, got {input_shape!r}."
        )
    return input_shape


class _ProxylessLayers:
    """Makes the layers of a ProxylessNAS-space network (either form).

    Args:
        backbone: the `MBConvBackbone`.
        num_classes: classifier width.
        width_multiplier: channel multiplier (MobileNetV2 rounding).
        dropout_rate: dropout before the classifier (no layer when 0).
        bn_momentum: BatchNormalization momentum.
        bn_affine: BatchNormalization with scale and offset.
        searchable: function `(index, out_channels, stride, is_stage_first)`
            -> a layer, or `None` to leave the layer out.
    """

    def __init__(self, backbone, num_classes, width_multiplier, dropout_rate, bn_momentum,
                 bn_affine, searchable):
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}.")
        if not 0.0 <= dropout_rate < 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate!r}.")
        widths = scaled_widths(backbone, width_multiplier)

        def bn(name):
            return FusedBatchNormalization(
                epsilon=BN_EPSILON, momentum=bn_momentum, center=bn_affine, scale=bn_affine,
                name=name)

        self.stem = [
            keras.layers.Conv2D(widths["stem"], 3, strides=2, padding="same", use_bias=False,
                                name="stem_conv"),
            bn("stem_bn"),
            keras.layers.ReLU(6.0, name="stem_relu"),
            MBConv(widths["first_block"], 3, 1, stride=1, bn_epsilon=BN_EPSILON,
                   bn_momentum=bn_momentum, bn_affine=bn_affine, name="first_block"),
        ]
        self.searchable = []
        stage_width = dict(zip(backbone.stage_channels, widths["stages"]))
        for i, (channels, stride, first) in enumerate(backbone.layer_plan()):
            layer = searchable(i, stage_width[channels], stride, first)
            if layer is not None:
                self.searchable.append(layer)
        self.head = [
            keras.layers.Conv2D(widths["head"], 1, use_bias=False, name="head_conv"),
            bn("head_bn"),
            keras.layers.ReLU(6.0, name="head_relu"),
            keras.layers.GlobalAveragePooling2D(name="pool"),
        ]
        if dropout_rate > 0:
            self.head.append(keras.layers.Dropout(dropout_rate, name="dropout"))
        self.head.append(keras.layers.Dense(num_classes, name="classifier"))


def build_proxyless_model(genotype, num_classes, input_shape, width_multiplier=1.0,
                          dropout_rate=0.0, bn_momentum=0.99, name=None):
    """Builds the derived network of a ProxylessNAS-space genotype.

    Args:
        genotype: a `ProxylessGenotype` (its backbone sets widths and depths).
        num_classes: number of classes (the output is logits).
        input_shape: `(height, width, channels)`.
        width_multiplier: channel multiplier, rounded as in MobileNetV2.
        dropout_rate: dropout before the classifier.
        bn_momentum: BatchNormalization momentum (MobileNetV2 uses 0.999;
            0.99 settles the moving statistics faster in short runs; it does
            not change the weights or inference).
        name: model name (default `"proxyless"`).

    Returns:
        A functional `keras.Model` mapping images to logits.
    """
    if not isinstance(genotype, ProxylessGenotype):
        raise ValueError(
            f"build_proxyless_model needs a ProxylessGenotype, got {type(genotype).__name__}.")
    input_shape = _check_shape(input_shape)

    def searchable(i, channels, stride, first):
        block = parse_block(genotype.layers[i])
        if block is None:
            return None
        kernel, expansion = block
        return MBConv(channels, kernel, expansion, stride=stride, bn_epsilon=BN_EPSILON,
                      bn_momentum=bn_momentum, name=f"layer_{i}")

    parts = _ProxylessLayers(genotype.backbone, num_classes, width_multiplier, dropout_rate,
                             bn_momentum, True, searchable)
    inputs = keras.Input(shape=input_shape, name="images")
    x = inputs
    for layer in parts.stem + parts.searchable + parts.head:
        x = layer(x)
    return keras.Model(inputs, x, name=name or "proxyless")


@keras.saving.register_keras_serializable(package="unas_keras")
class ProxylessSupernet(Supernet):
    """The ProxylessNAS-space search network.

    Called as `model((images, weights), training=...)` -> logits, where
    `weights = model.mix_weights(samples)`. Every searchable layer is an
    `MBConvChoice`; stage-first layers choose among `BLOCK_CHOICES`, the
    others among `OPTIONAL_CHOICES` (`"zero"` first, identity with dropout
    `zero_dropout`).

    Args:
        num_classes: number of classes.
        input_shape: `(height, width, channels)`.
        backbone: `MBConvBackbone` (or its dict form).
        width_multiplier: channel multiplier.
        skip_threshold: blocks whose weight is below this for the whole
            batch are not computed (see `MBConvChoice`; default 0 computes
            every block, which traces and runs leaner on CPU; 1e-6 skips the
            unchosen blocks of a one-hot sample; the UNAS release uses 0.05).
        zero_dropout: dropout of the `"zero"` candidate during search.
        dropout_rate: dropout before the classifier.
        bn_momentum: BatchNormalization momentum.
        bn_affine: BatchNormalization with scale/offset (the UNAS supernet
            uses none).
        **kwargs: `keras.Model` arguments (`name`, ...).

    Attributes:
        search_space: the `ProxylessSearchSpace` whose decisions the weights
            encode.
        image_shape: `(height, width, channels)`.
        skips_unchosen_blocks: `True`: with `one_hot=True` and one
            architecture per minibatch each layer runs only its chosen block.
    """

    skips_unchosen_blocks = True

    def __init__(self, num_classes, input_shape, backbone=PROXYLESS_BACKBONE, width_multiplier=1.0,
                 skip_threshold=DEFAULT_SKIP_THRESHOLD, zero_dropout=0.1, dropout_rate=0.0,
                 bn_momentum=0.99, bn_affine=False, **kwargs):
        kwargs.setdefault("name", "proxyless_supernet")
        if isinstance(backbone, dict):
            backbone = MBConvBackbone.from_dict(backbone)
        if not isinstance(backbone, MBConvBackbone):
            raise ValueError(f"backbone must be an MBConvBackbone, got {type(backbone).__name__}.")
        super().__init__(ProxylessSearchSpace(backbone), num_classes, _check_shape(input_shape), **kwargs)
        self.backbone = backbone
        self.width_multiplier = width_multiplier
        self.skip_threshold = 0.0 if skip_threshold is None else float(skip_threshold)
        self.zero_dropout = zero_dropout
        self.dropout_rate = dropout_rate
        self.bn_momentum = bn_momentum
        self.bn_affine = bn_affine

        def searchable(i, channels, stride, first):
            return MBConvChoice(
                channels, stride, BLOCK_CHOICES if first else OPTIONAL_CHOICES,
                zero_dropout=zero_dropout, skip_threshold=skip_threshold, bn_epsilon=BN_EPSILON,
                bn_momentum=bn_momentum, bn_affine=bn_affine, name=f"layer_{i}")

        parts = _ProxylessLayers(backbone, num_classes, width_multiplier, dropout_rate,
                                 bn_momentum, bn_affine, searchable)
        self.stem_layers = parts.stem
        self.choice_layers = parts.searchable
        self.head_layers = parts.head
        self.build((None,) + self.image_shape)

    def mix_weights(self, samples):
        """Turns per-decision samples into this network's weights input.

        Args:
            samples: dict `"first"` -> `[N, rows, 6]`, `"optional"` ->
                `[N, rows, 7]` (one-hot or relaxed; `N` = batch size for
                per-example architectures or 1 for one per minibatch).

        Returns:
            list, one `[N, K]` tensor per searchable layer in network order.
        """
        return mix_weights(samples, self.backbone)

    def build(self, input_shape):
        if self.built:  # built in __init__; later calls (deserialization) are no-ops
            return
        shape = (None,) + self.image_shape
        for layer in self.stem_layers + self.choice_layers + self.head_layers:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.built = True

    def call(self, inputs, training=None, one_hot=False):
        """Logits of `(images, weights)`; see `Supernet.call`.

        Args:
            inputs: `(images, weights)`, weights from `mix_weights`.
            training: Keras training flag.
            one_hot: the weights are a hard sample; with one architecture per
                minibatch each layer then runs only its chosen block.

        Returns:
            `[N, num_classes]` logits.
        """
        images, weights = inputs
        weights = list(weights)
        if len(weights) != len(self.choice_layers):
            raise ValueError(
                f"expected {len(self.choice_layers)} weight tensors (use model.mix_weights), "
                f"got {len(weights)}."
            )
        x = images
        for layer in self.stem_layers:
            x = layer(x, training=training)
        for layer, w in zip(self.choice_layers, weights):
            x = layer(x, w, training=training, one_hot=one_hot)
        for layer in self.head_layers:
            x = layer(x, training=training)
        return x

    def get_config(self):
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "input_shape": list(self.image_shape),
            "backbone": self.backbone.to_dict(),
            "width_multiplier": self.width_multiplier,
            "skip_threshold": self.skip_threshold,
            "zero_dropout": self.zero_dropout,
            "dropout_rate": self.dropout_rate,
            "bn_momentum": self.bn_momentum,
            "bn_affine": self.bn_affine,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def build_proxyless_supernet(num_classes, input_shape, backbone=PROXYLESS_BACKBONE,
                             width_multiplier=1.0, skip_threshold=DEFAULT_SKIP_THRESHOLD,
                             zero_dropout=0.1, dropout_rate=0.0, bn_momentum=0.99, bn_affine=False):
    """Builds (and builds the weights of) the ProxylessNAS-space supernet.

    See `ProxylessSupernet` for the arguments.

    Returns:
        A built `ProxylessSupernet`.
    """
    return ProxylessSupernet(
        num_classes, input_shape, backbone=backbone, width_multiplier=width_multiplier,
        skip_threshold=skip_threshold, zero_dropout=zero_dropout, dropout_rate=dropout_rate,
        bn_momentum=bn_momentum, bn_affine=bn_affine)


def mix_weights(samples, backbone=PROXYLESS_BACKBONE):
    """`ProxylessSupernet.mix_weights` without a network: the per-layer weights input.

    Args:
        samples: dict `"first"` / `"optional"` -> `[N, rows, K]`.
        backbone: the backbone the samples belong to.

    Returns:
        list of `[N, K]` tensors, one per searchable layer in network order.
    """
    space = ProxylessSearchSpace(backbone)
    decisions = space.decisions()
    if not isinstance(samples, dict) or set(samples) != set(decisions):
        got = sorted(samples) if isinstance(samples, dict) else type(samples).__name__
        raise ValueError(f"samples must be a dict with keys {sorted(decisions)}, got {got}.")
    tensors = {}
    for key, (rows, k) in decisions.items():
        value = ops.convert_to_tensor(samples[key])
        if len(value.shape) != 3 or tuple(value.shape[1:]) != (rows, k):
            raise ValueError(
                f"samples[{key!r}] must have shape [N, {rows}, {k}], got {tuple(value.shape)}.")
        tensors[key] = value
    counters = {"first": 0, "optional": 0}
    out = []
    for _, _, first in backbone.layer_plan():
        key = "first" if first else "optional"
        out.append(tensors[key][:, counters[key], :])
        counters[key] += 1
    return out


def inherit_supernet_weights(model, supernet):
    """Copies a supernet's weights into a derived network of the same backbone.

    Layer `layer_{i}` of `model` (an `MBConv` with kernel k, expansion e)
    takes the weights of candidate `"k{k}e{e}"` of the supernet's
    `layer_{i}`; stem, first block and head are copied by name. BatchNorm
    scale/offset the supernet lacks (`bn_affine=False`) are set to 1 / 0.

    Args:
        model: a network from `build_proxyless_model` (same backbone, width
            and classes as the supernet).
        supernet: a built `ProxylessSupernet`.
    """
    source = {layer.name: layer for layer in supernet.stem_layers + supernet.head_layers}
    source.update({layer.name: layer for layer in supernet.choice_layers})
    for layer in model.layers:
        if not layer.weights:
            continue
        src = source.get(layer.name)
        if isinstance(src, MBConvChoice):
            src = src.candidate(f"k{layer.kernel_size}e{layer.expansion}")
        if src is None:
            raise ValueError(f"supernet has no layer matching {layer.name!r}.")
        _copy_layer(src, layer)


def _copy_layer(src, dst):
    """Copies weights between structurally equal layers, by variable name."""
    src_leaves = _weight_leaves(src)
    dst_leaves = _weight_leaves(dst)
    src_by_name = {l.name: l for l in src_leaves}
    for leaf in dst_leaves:
        origin = src_by_name.get(leaf.name)
        if origin is None:
            raise ValueError(f"no source for sub-layer {leaf.name!r} of {dst.name!r}.")
        origin_weights = {w.name: w for w in origin.weights}
        for w in leaf.weights:
            if w.name in origin_weights:
                if tuple(origin_weights[w.name].shape) != tuple(w.shape):
                    raise ValueError(
                        f"shape mismatch for {dst.name}/{leaf.name}/{w.name}: "
                        f"{tuple(origin_weights[w.name].shape)} vs {tuple(w.shape)}."
                    )
                w.assign(origin_weights[w.name])
            elif w.name in ("gamma", "beta"):
                w.assign(ops.ones_like(w) if w.name == "gamma" else ops.zeros_like(w))
            else:
                raise ValueError(f"no source for weight {dst.name}/{leaf.name}/{w.name}.")


def _weight_leaves(layer):
    """Layers without sub-layers that hold weights, `layer` included."""
    return [
        leaf for leaf in _compat.flatten_layers(layer, include_self=True, recursive=True)
        if leaf.weights and not _compat.flatten_layers(leaf, include_self=False, recursive=False)
    ]


# The names the space registry (unas_keras.space.spec.SpaceSpec) calls.
build_supernet = build_proxyless_supernet
build_model = build_proxyless_model
