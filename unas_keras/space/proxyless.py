"""The ProxylessNAS space: a stack of MBConv choice blocks.

The backbone (widths, strides, depths) is data, so MobileNetV2 and the
ProxylessNAS networks are points of one family. Layer choices are written
`"k{kernel}e{expansion}"` (an MBConv block) or `"zero"` (the layer is skipped).
The first layer of each stage changes the width and may not be `"zero"`.
"""

import dataclasses
import random
import re

from unas_keras._validate import check_float, require_dict, require_int, require_list, require_str
from unas_keras.space.spec import SpaceSpec

KERNELS = (3, 5, 7)
EXPANSIONS = (3, 6)
ZERO = "zero"
#: Choices of a stage-first layer, in decision order.
BLOCK_CHOICES = tuple(f"k{k}e{e}" for k in KERNELS for e in EXPANSIONS)
#: Choices of an optional (width-keeping) layer, in decision order.
OPTIONAL_CHOICES = (ZERO,) + BLOCK_CHOICES

_BLOCK_RE = re.compile(r"^k([0-9]+)e([0-9]+)$")


def parse_block(choice):
    """Returns `(kernel, expansion)` of a block choice, or `None` for `"zero"`."""
    if choice == ZERO:
        return None
    match = _BLOCK_RE.match(choice)
    if not match:
        raise ValueError(f"Malformed block {choice!r}; expected 'k<kernel>e<expansion>' or 'zero'.")
    return int(match.group(1)), int(match.group(2))


@dataclasses.dataclass(frozen=True)
class MBConvBackbone:
    """Widths, strides and depths of an MBConv network.

    Args:
        stem_channels: output channels of the stride-2 3x3 stem convolution.
        first_block_channels: output channels of the fixed expansion-1,
            kernel-3 MBConv that follows the stem.
        stage_channels: output width of each stage.
        stage_strides: stride of the first layer of each stage.
        stage_depths: number of layers of each stage.
        head_channels: width of the final 1x1 convolution.
    """

    stem_channels: int = 40
    first_block_channels: int = 24
    stage_channels: tuple = (32, 56, 112, 128, 256, 432)
    stage_strides: tuple = (2, 2, 2, 1, 2, 1)
    stage_depths: tuple = (4, 4, 4, 4, 4, 1)
    head_channels: int = 1728

    def __post_init__(self):
        for field in ("stem_channels", "first_block_channels", "head_channels"):
            value = require_int(getattr(self, field), f"proxyless backbone {field}")
            if value < 1:
                raise ValueError(f"proxyless backbone {field} must be >= 1, got {value}.")
        lengths = set()
        for field in ("stage_channels", "stage_strides", "stage_depths"):
            values = require_list(getattr(self, field), f"proxyless backbone {field}")
            for i, v in enumerate(values):
                require_int(v, f"proxyless backbone {field}[{i}]")
                if v < 1:
                    raise ValueError(f"proxyless backbone {field}[{i}] must be >= 1, got {v}.")
                if field == "stage_strides" and v not in (1, 2):
                    raise ValueError(f"proxyless backbone stage_strides[{i}] must be 1 or 2, got {v}.")
            object.__setattr__(self, field, values)
            lengths.add(len(values))
        if len(lengths) != 1 or not self.stage_channels:
            raise ValueError(
                "proxyless backbone stage_channels, stage_strides and stage_depths must be "
                "non-empty and of the same length."
            )

    @property
    def num_layers(self):
        """Number of searchable layers."""
        return sum(self.stage_depths)

    def layer_plan(self):
        """List of `(out_channels, stride, is_stage_first)` per searchable layer."""
        plan = []
        for channels, stride, depth in zip(self.stage_channels, self.stage_strides, self.stage_depths):
            for i in range(depth):
                plan.append((channels, stride if i == 0 else 1, i == 0))
        return plan

    def to_dict(self):
        return {f.name: (list(v) if isinstance(v, tuple) else v)
                for f in dataclasses.fields(self) for v in [getattr(self, f.name)]}

    @classmethod
    def from_dict(cls, payload):
        names = [f.name for f in dataclasses.fields(cls)]
        require_dict(payload, "proxyless backbone", required=names)
        return cls(**payload)


#: The ProxylessNAS-GPU backbone searched by UNAS (21 layers in 6 stages).
PROXYLESS_BACKBONE = MBConvBackbone()
#: The MobileNetV2 (width 1.0) backbone.
MOBILENET_V2_BACKBONE = MBConvBackbone(
    stem_channels=32,
    first_block_channels=16,
    stage_channels=(24, 32, 64, 96, 160, 320),
    stage_strides=(2, 2, 2, 1, 2, 1),
    stage_depths=(2, 3, 4, 3, 3, 1),
    head_channels=1280,
)


@dataclasses.dataclass(frozen=True)
class ProxylessGenotype:
    """Per-layer block choices on an MBConv backbone.

    Args:
        layers: one choice per searchable layer (`"k3e6"`, ..., or `"zero"`).
        backbone: the `MBConvBackbone` (default: the ProxylessNAS one).
    """

    layers: tuple
    backbone: MBConvBackbone = PROXYLESS_BACKBONE

    def __post_init__(self):
        if not isinstance(self.backbone, MBConvBackbone):
            raise ValueError("proxyless genotype backbone must be an MBConvBackbone.")
        layers = require_list(self.layers, "proxyless layers")
        if len(layers) != self.backbone.num_layers:
            raise ValueError(
                f"proxyless layers: expected {self.backbone.num_layers} layers for this backbone "
                f"(stage depths {list(self.backbone.stage_depths)}), got {len(layers)}."
            )
        for i, (choice, (_, _, first)) in enumerate(zip(layers, self.backbone.layer_plan())):
            where = f"proxyless layer {i}"
            require_str(choice, where)
            if choice == ZERO:
                if first:
                    raise ValueError(
                        f"{where}: 'zero' is not allowed on the first layer of a stage (it changes "
                        f"the width); allowed: {list(BLOCK_CHOICES)}."
                    )
                continue
            allowed = BLOCK_CHOICES if first else OPTIONAL_CHOICES
            if choice not in BLOCK_CHOICES:
                raise ValueError(f"{where}: unknown choice {choice!r}; allowed: {list(allowed)}.")
        object.__setattr__(self, "layers", layers)

    def to_dict(self):
        out = {"layers": list(self.layers)}
        if self.backbone != PROXYLESS_BACKBONE:
            out["backbone"] = self.backbone.to_dict()
        return out

    @classmethod
    def from_dict(cls, payload):
        require_dict(payload, "proxyless genotype", required=("layers",), optional=("backbone",))
        backbone = PROXYLESS_BACKBONE
        if "backbone" in payload:
            backbone = MBConvBackbone.from_dict(payload["backbone"])
        return cls(layers=payload["layers"], backbone=backbone)

    def compact(self):
        return " ".join(self.layers)


class ProxylessSearchSpace:
    """The decisions of the ProxylessNAS space.

    Decision `"first"` has one row per stage-first layer (choices
    `BLOCK_CHOICES`), `"optional"` one row per other layer (choices
    `OPTIONAL_CHOICES`, `"zero"` first).

    Args:
        backbone: the `MBConvBackbone` to search on (or its dict form).
    """

    name = "proxyless"

    def __init__(self, backbone=PROXYLESS_BACKBONE):
        if isinstance(backbone, dict):
            backbone = MBConvBackbone.from_dict(backbone)
        if not isinstance(backbone, MBConvBackbone):
            raise ValueError(f"backbone must be an MBConvBackbone or its dict form, got {type(backbone).__name__}.")
        self.backbone = backbone
        self._first = [i for i, (_, _, f) in enumerate(backbone.layer_plan()) if f]
        self._optional = [i for i, (_, _, f) in enumerate(backbone.layer_plan()) if not f]

    def options(self):
        """The constructor options that rebuild this space, JSON-compatible."""
        return {"backbone": self.backbone.to_dict()}

    def decisions(self):
        out = {"first": (len(self._first), len(BLOCK_CHOICES))}
        if self._optional:
            out["optional"] = (len(self._optional), len(OPTIONAL_CHOICES))
        return out

    def to_architecture(self, choices, name=None):
        from unas_keras.space.architecture import Architecture

        layers = [None] * self.backbone.num_layers
        for row, i in enumerate(self._first):
            layers[i] = BLOCK_CHOICES[int(choices["first"][row])]
        for row, i in enumerate(self._optional):
            layers[i] = OPTIONAL_CHOICES[int(choices["optional"][row])]
        return Architecture("proxyless", ProxylessGenotype(tuple(layers), self.backbone), name=name)

    def encode(self, architecture):
        layers = architecture.genotype.layers
        out = {"first": [BLOCK_CHOICES.index(layers[i]) for i in self._first]}
        if self._optional:
            out["optional"] = [OPTIONAL_CHOICES.index(layers[i]) for i in self._optional]
        return out

    def sample(self, seed=None):
        rng = random.Random(seed)
        choices = {
            name: [rng.randrange(k) for _ in range(rows)]
            for name, (rows, k) in self.decisions().items()
        }
        return self.to_architecture(choices)


def _check_supernet_options(options):
    """Validates the ProxylessNAS supernet options (`width_multiplier`, `backbone`)."""
    out = dict(options)
    out["width_multiplier"] = check_float(out["width_multiplier"], "width_multiplier", 0.0, strict=True)
    if out.get("backbone") is not None:
        # Another depth / width plan than ProxylessNAS's 21 layers.
        backbone = out["backbone"]
        if not isinstance(backbone, MBConvBackbone):
            backbone = MBConvBackbone.from_dict(backbone)  # raises ValueError on a malformed plan
        out["backbone"] = backbone.to_dict()
    return out


def _builder_options(options):
    """The supernet builder's options: a backbone dict as an `MBConvBackbone`."""
    out = dict(options)
    if out.get("backbone") is not None and not isinstance(out["backbone"], MBConvBackbone):
        out["backbone"] = MBConvBackbone.from_dict(out["backbone"])
    if "backbone" in out and out["backbone"] is None:
        del out["backbone"]
    return out


SPEC = SpaceSpec(
    name="proxyless",
    search_space_class=ProxylessSearchSpace,
    genotype_class=ProxylessGenotype,
    networks_module="unas_keras.networks.proxyless",
    supernet_options=("width_multiplier", "backbone"),
    check_supernet_options=_check_supernet_options,
    builder_options=_builder_options,
    search_space_options=("backbone",),
    network_options=("width_multiplier", "dropout_rate"),
    inherited_network_options=("width_multiplier",),
    has_default_latency=True,
    option_help={"width_multiplier": "ProxylessNAS space: width multiplier.",
                 "backbone": "ProxylessNAS space: the MBConv backbone plan (an MBConvBackbone or its dict; "
                             "default ProxylessNAS's 21 layers)."},
    plotter="plot_mbconv_strip",
    profile_defaults={
        "demo": dict(resolution=32, image_channels=1, batch_size=32, epochs=6, warmup_epochs=1,
                     sampling="per_minibatch", soften_eps=0.0, space_options=dict(width_multiplier=0.25)),
        "cifar": dict(resolution=32, image_channels=3, batch_size=128, epochs=100, warmup_epochs=15,
                      sampling="per_minibatch", soften_eps=0.0, space_options=dict(width_multiplier=1.0)),
        # ImageNet (the release: 20 warm-up + 15 search epochs, one architecture per minibatch).
        "imagenet": dict(resolution=224, image_channels=3, batch_size=192, epochs=35, warmup_epochs=20,
                         sampling="per_minibatch", soften_eps=0.08, space_options=dict(width_multiplier=1.0)),
        "generic": dict(resolution=32, image_channels=3, batch_size=32, epochs=10, warmup_epochs=2,
                        sampling="per_minibatch", soften_eps=0.0, space_options=dict(width_multiplier=0.25)),
    },
)
