"""Published architectures as data.

Each preset is an `Architecture`; `get(name)` returns it and `names()` lists
them. The DARTS-space cells are written as in their papers: per node two
(operation, input) pairs, inputs 0 = c_{k-2}, 1 = c_{k-1}, n >= 2 = node n-2.
"""

from unas_keras.space.architecture import Architecture
from unas_keras.space.darts import UNAS_IMAGENET_OPS, UNAS_OPS, DartsGenotype
from unas_keras.space.nb201 import NB201Genotype
from unas_keras.space.proxyless import MOBILENET_V2_BACKBONE, PROXYLESS_BACKBONE, ProxylessGenotype


def _indexed_cell(ops, nodes):
    """Cell from per-node ((op_index, input), (op_index, input)) pairs."""
    return tuple(tuple((ops[op], inp) for op, inp in node) for node in nodes)


def _darts_cell(edges):
    """Cell from the DARTS genotype list of 8 (op, input) edges, 2 per node."""
    return tuple((edges[2 * n], edges[2 * n + 1]) for n in range(len(edges) // 2))


def _unas(ops, normal, reduce):
    return DartsGenotype(_indexed_cell(ops, normal), _indexed_cell(ops, reduce))


_GENOTYPES = {
    # DARTS (Liu et al. 2019), first and second order, in its own 8-op space.
    "darts_v1": ("darts", DartsGenotype(
        _darts_cell([("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
                     ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)]),
        _darts_cell([("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
                     ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)]))),
    "darts_v2": ("darts", DartsGenotype(
        _darts_cell([("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
                     ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)]),
        _darts_cell([("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
                     ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)]))),
    # UNAS (Vahdat et al. 2020), op indices into the UNAS op lists.
    "unas_cifar10": ("darts", _unas(
        UNAS_OPS,
        [((4, 0), (0, 0)), ((0, 0), (3, 1)), ((1, 0), (3, 1)), ((1, 1), (3, 0))],
        [((1, 0), (4, 0)), ((0, 1), (1, 0)), ((5, 1), (0, 0)), ((4, 3), (5, 1))])),
    "unas_cifar100": ("darts", _unas(
        UNAS_OPS,
        [((1, 0), (3, 0)), ((3, 1), (1, 0)), ((0, 0), (1, 1)), ((4, 1), (1, 0))],
        [((6, 0), (1, 0)), ((1, 1), (4, 0)), ((6, 1), (3, 0)), ((3, 0), (1, 3))])),
    "unas_imagenet": ("darts", _unas(
        UNAS_IMAGENET_OPS,
        [((1, 0), (0, 0)), ((1, 0), (0, 1)), ((1, 1), (4, 0)), ((1, 0), (3, 1))],
        [((4, 0), (1, 1)), ((4, 0), (1, 1)), ((4, 1), (3, 0)), ((3, 3), (1, 1))])),
    # MobileNetV2 (width 1.0): every block kernel 3, expansion 6.
    "mobilenet_v2": ("proxyless", ProxylessGenotype(("k3e6",) * 16, MOBILENET_V2_BACKBONE)),
    # ProxylessNAS-GPU (Cai et al. 2019).
    "proxylessnas_gpu": ("proxyless", ProxylessGenotype((
        "k5e3", "zero", "zero", "zero",
        "k7e3", "zero", "zero", "k3e3",
        "k7e6", "zero", "zero", "k5e3",
        "k5e6", "zero", "k3e3", "k5e3",
        "k7e6", "k7e6", "k7e6", "k5e6",
        "k7e6"), PROXYLESS_BACKBONE)),
    # UNAS's result in the ProxylessNAS space.
    "unas_proxyless": ("proxyless", ProxylessGenotype((
        "k5e3", "k3e3", "zero", "zero",
        "k7e3", "zero", "zero", "zero",
        "k7e3", "k3e3", "k3e3", "k3e3",
        "k5e3", "k3e3", "k3e3", "k3e3",
        "k7e6", "k7e3", "k7e3", "k7e3",
        "k7e6"), PROXYLESS_BACKBONE)),
    # NAS-Bench-201: the best cell on CIFAR-10 (94.37%) and the ResNet-like cell.
    "nb201_best_cifar10": ("nb201", NB201Genotype.from_string(
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|")),
    "nb201_resnet": ("nb201", NB201Genotype.from_string(
        "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|")),
}


def names():
    """Returns the preset names."""
    return tuple(_GENOTYPES)


def get(name):
    """Returns the preset `Architecture` called `name`.

    Raises:
        ValueError: if `name` is not a preset (the message lists the valid ones).
    """
    if name not in _GENOTYPES:
        raise ValueError(f"Unknown preset {name!r}; valid presets: {', '.join(names())}.")
    space, genotype = _GENOTYPES[name]
    return Architecture(space, genotype, name=name)
