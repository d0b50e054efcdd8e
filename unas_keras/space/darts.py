"""The DARTS cell space with UNAS's factorized input/operation selectors.

A cell has two inputs (the outputs of the two previous cells, indices 0 and 1)
and `NUM_NODES` intermediate nodes; node `n` may read any of the `n + 2` earlier
states (index `m >= 2` is node `m - 2`). Each node keeps two (operation, input)
pairs. A network has a normal and a reduction cell type.
"""

import dataclasses
import random

from unas_keras._validate import check_int, require_dict, require_int, require_list, require_str
from unas_keras.space.spec import SpaceSpec

NUM_NODES = 4
#: How a search cell may run its edges' ops (`DartsSearchCell`'s `edge_grouping`); the first is the default.
EDGE_GROUPINGS = ("by_source", "per_edge")
CELL_TYPES = ("normal", "reduce")

#: The 7 UNAS operations, in the order of the UNAS search (CIFAR).
UNAS_OPS = (
    "skip_connect",
    "sep_conv_3x3",
    "max_pool_3x3",
    "dil_conv_3x3",
    "sep_conv_5x5",
    "avg_pool_3x3",
    "sep_conv_7x7",
)
#: The first 5 UNAS operations, used for the ImageNet search.
UNAS_IMAGENET_OPS = UNAS_OPS[:5]
#: The original DARTS 8-operation list (DARTS genotypes use these names).
DARTS_OPS = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)
#: Named operation lists a search can use.
OP_SETS = {"unas": UNAS_OPS, "unas_imagenet": UNAS_IMAGENET_OPS, "darts": DARTS_OPS}
#: Every operation a derived DARTS-space cell may use.
ALL_OPS = tuple(dict.fromkeys(UNAS_OPS + DARTS_OPS))


def num_edges(num_nodes=NUM_NODES):
    """Number of (node, input) edges of a cell: 2 + 3 + ... + (num_nodes + 1)."""
    return sum(n + 2 for n in range(num_nodes))


def edge_index(node, input_index):
    """Index of the edge from state `input_index` into `node`, in cell edge order."""
    return sum(m + 2 for m in range(node)) + input_index


def resolve_ops(ops):
    """Returns an operation tuple from a set name or a list of operation names."""
    if isinstance(ops, str):
        if ops not in OP_SETS:
            raise ValueError(f"Unknown DARTS op set {ops!r}; expected one of {sorted(OP_SETS)}.")
        return OP_SETS[ops]
    ops = tuple(ops)
    if not ops:
        raise ValueError("The DARTS op list is empty.")
    for op in ops:
        if op not in ALL_OPS:
            raise ValueError(f"Unknown DARTS operation {op!r}; allowed: {list(ALL_OPS)}.")
    if len(set(ops)) != len(ops):
        raise ValueError(f"Duplicate operation in {list(ops)}.")
    return ops


def _parse_cell(value, cell):
    nodes = require_list(value, f"darts {cell} cell", length=NUM_NODES)
    parsed = []
    for n, node in enumerate(nodes):
        where = f"darts {cell} cell, node {n}"
        pairs = require_list(node, where, length=2)
        parsed_pairs = []
        for p, pair in enumerate(pairs):
            pwhere = f"{where}, pair {p}"
            op, inp = require_list(pair, pwhere, length=2)
            require_str(op, f"{pwhere} operation")
            if op not in ALL_OPS:
                raise ValueError(f"{pwhere}: unknown operation {op!r}; allowed: {list(ALL_OPS)}.")
            require_int(inp, f"{pwhere} input")
            if not 0 <= inp < n + 2:
                raise ValueError(
                    f"{pwhere}: input {inp} does not exist (node {n} may read inputs 0..{n + 1})."
                )
            parsed_pairs.append((op, inp))
        parsed.append(tuple(parsed_pairs))
    return tuple(parsed)


@dataclasses.dataclass(frozen=True)
class DartsGenotype:
    """A derived DARTS-space cell pair.

    Args:
        normal: 4 nodes, each a pair of `(operation, input)` tuples.
        reduce: the same for the reduction cell.
    """

    normal: tuple
    reduce: tuple

    def __post_init__(self):
        object.__setattr__(self, "normal", _parse_cell(self.normal, "normal"))
        object.__setattr__(self, "reduce", _parse_cell(self.reduce, "reduce"))

    def cell(self, cell_type):
        """Returns the nodes of `"normal"` or `"reduce"`."""
        return self.normal if cell_type == "normal" else self.reduce

    def ops_used(self):
        """Sorted operation names used by either cell."""
        return sorted({op for cell in (self.normal, self.reduce) for node in cell for op, _ in node})

    def to_dict(self):
        return {
            cell: [[[op, inp] for op, inp in node] for node in self.cell(cell)]
            for cell in CELL_TYPES
        }

    @classmethod
    def from_dict(cls, payload):
        require_dict(payload, "darts genotype", required=CELL_TYPES)
        return cls(normal=payload["normal"], reduce=payload["reduce"])

    def compact(self):
        def fmt(cell):
            return " | ".join(" ".join(f"{op}({inp})" for op, inp in node) for node in cell)

        return f"normal[{fmt(self.normal)}] reduce[{fmt(self.reduce)}]"


class DartsSearchSpace:
    """The decisions of the factorized DARTS search space.

    Per cell type and node `n`: input logits of shape `[2, n + 2]` (decision
    `"{cell}_node{n}_inputs"`) and op logits of shape `[2, len(ops)]`
    (`"{cell}_node{n}_ops"`).

    Args:
        ops: an op-set name (`"unas"`, `"unas_imagenet"`, `"darts"`) or a list
            of operation names.
    """

    name = "darts"

    def __init__(self, ops="unas"):
        self.ops = resolve_ops(ops)

    def options(self):
        """The constructor options that rebuild this space, JSON-compatible."""
        return {"ops": list(self.ops)}

    def decisions(self):
        """Ordered dict of decision name -> (rows, choices)."""
        out = {}
        for cell in CELL_TYPES:
            for n in range(NUM_NODES):
                out[f"{cell}_node{n}_inputs"] = (2, n + 2)
                out[f"{cell}_node{n}_ops"] = (2, len(self.ops))
        return out

    def to_architecture(self, choices, name=None):
        """Builds the architecture from per-decision row choices (ints)."""
        from unas_keras.space.architecture import Architecture

        cells = {}
        for cell in CELL_TYPES:
            nodes = []
            for n in range(NUM_NODES):
                inputs = choices[f"{cell}_node{n}_inputs"]
                ops = choices[f"{cell}_node{n}_ops"]
                nodes.append(tuple((self.ops[int(ops[r])], int(inputs[r])) for r in range(2)))
            cells[cell] = tuple(nodes)
        return Architecture("darts", DartsGenotype(**cells), name=name)

    def encode(self, architecture):
        """Per-decision row choices of `architecture` (inverse of `to_architecture`)."""
        out = {}
        for cell in CELL_TYPES:
            for n, node in enumerate(architecture.genotype.cell(cell)):
                for op, _ in node:
                    if op not in self.ops:
                        raise ValueError(
                            f"Operation {op!r} of the {cell} cell is not in this space's ops {list(self.ops)}."
                        )
                out[f"{cell}_node{n}_inputs"] = [inp for _, inp in node]
                out[f"{cell}_node{n}_ops"] = [self.ops.index(op) for op, _ in node]
        return out

    def sample(self, seed=None):
        """Uniformly random architecture."""
        rng = random.Random(seed)
        choices = {
            name: [rng.randrange(k) for _ in range(rows)]
            for name, (rows, k) in self.decisions().items()
        }
        return self.to_architecture(choices)


def _check_supernet_options(options):
    """Validates the DARTS supernet options (`ops`, `init_channels`, `num_cells`, `edge_grouping`)."""
    out = dict(options)
    if out.get("edge_grouping", EDGE_GROUPINGS[0]) not in EDGE_GROUPINGS:
        raise ValueError(f"edge_grouping must be one of {list(EDGE_GROUPINGS)}, got {out['edge_grouping']!r}.")
    out["init_channels"] = check_int(out["init_channels"], "init_channels", 1)
    out["num_cells"] = check_int(out["num_cells"], "num_cells", 3)
    try:
        resolve_ops(out["ops"])
    except ValueError as err:  # name the option; the message lists the allowed names
        raise ValueError(f"ops: {err}") from None
    except TypeError:
        raise ValueError(f"ops must be an op-set name or a list of operation names, got {out['ops']!r}.") from None
    out["ops"] = out["ops"] if isinstance(out["ops"], str) else list(out["ops"])
    return out


SPEC = SpaceSpec(
    name="darts",
    search_space_class=DartsSearchSpace,
    genotype_class=DartsGenotype,
    networks_module="unas_keras.networks.darts",
    supernet_options=("ops", "init_channels", "num_cells", "edge_grouping"),
    check_supernet_options=_check_supernet_options,
    search_space_options=("ops",),
    network_options=("init_channels", "num_cells", "auxiliary", "drop_path_rate"),
    inherited_network_options=("init_channels", "num_cells"),
    option_help={"ops": "DARTS space: op set (unas, unas_imagenet, darts) or a list of op names "
                        "(comma-separated on the command line).",
                 "init_channels": "DARTS space: initial channels C.",
                 "num_cells": "DARTS space: number of cells.",
                 "edge_grouping": "DARTS space: how a search cell runs its 14 edges' ops: by_source (4 "
                                  "groups per cell: the smallest graph, fastest to trace) or per_edge (on "
                                  "CPU, faster steps at CIFAR sizes). Checkpoints hold one of them."},
    plotter="plot_darts_cell",
    profile_defaults={
        # digits: 8x8 grey images upsampled to 16x16 (two reductions -> 4x4); 3 cells (normal, reduce,
        # reduce) with all 7 UNAS ops, C = 8: tracing the supernet's step dominates a short run.
        "demo": dict(resolution=16, image_channels=1, batch_size=32, epochs=6, warmup_epochs=1,
                     sampling="per_example", soften_eps=0.0,
                     space_options=dict(ops="unas", init_channels=8, num_cells=3, edge_grouping="by_source")),
        # CIFAR (the release: 4 GPUs x 32, 15 warm-up + 85 search epochs, 7 ops, per-example samples).
        "cifar": dict(resolution=32, image_channels=3, batch_size=128, epochs=100, warmup_epochs=15,
                      sampling="per_example", soften_eps=0.0,
                      space_options=dict(ops="unas", init_channels=16, num_cells=8, edge_grouping="by_source")),
        # ImageNet (the release: 8 GPUs x 24, 5 + 15 epochs, 14 cells, 5 ops, one architecture per
        # minibatch, logits softened with eps 0.08).
        "imagenet": dict(resolution=224, image_channels=3, batch_size=192, epochs=20, warmup_epochs=5,
                         sampling="per_minibatch", soften_eps=0.08,
                         space_options=dict(ops="unas_imagenet", init_channels=16, num_cells=14, edge_grouping="by_source")),
        "generic": dict(resolution=32, image_channels=3, batch_size=32, epochs=10, warmup_epochs=2,
                        sampling="per_example", soften_eps=0.0,
                        space_options=dict(ops="unas", init_channels=8, num_cells=5, edge_grouping="by_source")),
    },
)
