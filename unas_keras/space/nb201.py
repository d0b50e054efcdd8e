"""The NAS-Bench-201 (NATS-Bench topology) cell space.

A cell has 4 nodes; node `j` sums one operation applied to each earlier node
`i < j`, giving 6 edges. Its text form is the benchmark's own string,
`|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`, where `op~i` is the edge from node `i`.
"""

import dataclasses
import random

from unas_keras._validate import check_int, require_dict, require_list, require_str
from unas_keras.space.spec import SpaceSpec

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NUM_NODES = 4
#: `(to_node, from_node)` of each edge, in the order of the benchmark string.
EDGES = tuple((j, i) for j in range(1, NUM_NODES) for i in range(j))


def parse_string(text):
    """Parses the benchmark string into a tuple of 6 operation names.

    Raises:
        ValueError: if the string is malformed or names an unknown operation.
    """
    require_str(text, "nb201 cell string")
    nodes = text.split("+")
    if len(nodes) != NUM_NODES - 1:
        raise ValueError(
            f"nb201 cell string {text!r}: expected {NUM_NODES - 1} '+'-separated nodes, got {len(nodes)}."
        )
    ops = []
    for j, node in enumerate(nodes, start=1):
        if not (node.startswith("|") and node.endswith("|")) or len(node) < 2:
            raise ValueError(f"nb201 cell string {text!r}: node {j} {node!r} must look like '|op~0|...|'.")
        entries = node[1:-1].split("|")
        if len(entries) != j:
            raise ValueError(f"nb201 cell string {text!r}: node {j} needs {j} edges, got {len(entries)}.")
        for i, entry in enumerate(entries):
            op, sep, src = entry.partition("~")
            if not sep or src != str(i):
                raise ValueError(
                    f"nb201 cell string {text!r}: node {j} edge {i} must be 'op~{i}', got {entry!r}."
                )
            if op not in OPS:
                raise ValueError(f"nb201 cell string {text!r}: unknown operation {op!r}; allowed: {list(OPS)}.")
            ops.append(op)
    return tuple(ops)


def format_string(ops):
    """Formats 6 edge operations as the benchmark string."""
    nodes, k = [], 0
    for j in range(1, NUM_NODES):
        nodes.append("|" + "|".join(f"{ops[k + i]}~{i}" for i in range(j)) + "|")
        k += j
    return "+".join(nodes)


@dataclasses.dataclass(frozen=True)
class NB201Genotype:
    """The 6 edge operations of a NAS-Bench-201 cell, in `EDGES` order."""

    edges: tuple

    def __post_init__(self):
        edges = require_list(self.edges, "nb201 edges", length=len(EDGES))
        for k, op in enumerate(edges):
            require_str(op, f"nb201 edge {k}")
            if op not in OPS:
                raise ValueError(f"nb201 edge {k} ({EDGES[k][1]}->{EDGES[k][0]}): unknown operation "
                                 f"{op!r}; allowed: {list(OPS)}.")
        object.__setattr__(self, "edges", edges)

    @classmethod
    def from_string(cls, text):
        """Builds the genotype from the benchmark string."""
        return cls(parse_string(text))

    def to_string(self):
        """The benchmark string of this cell."""
        return format_string(self.edges)

    def to_dict(self):
        return {"cell": self.to_string()}

    @classmethod
    def from_dict(cls, payload):
        require_dict(payload, "nb201 genotype", required=("cell",))
        return cls.from_string(payload["cell"])

    def compact(self):
        return self.to_string()


class NB201SearchSpace:
    """One decision, `"edges"`: 6 rows of `len(OPS)` choices."""

    name = "nb201"

    def options(self):
        """The constructor options that rebuild this space (none), JSON-compatible."""
        return {}

    def decisions(self):
        return {"edges": (len(EDGES), len(OPS))}

    def to_architecture(self, choices, name=None):
        from unas_keras.space.architecture import Architecture

        return Architecture("nb201", NB201Genotype(tuple(OPS[int(c)] for c in choices["edges"])), name=name)

    def encode(self, architecture):
        return {"edges": [OPS.index(op) for op in architecture.genotype.edges]}

    def sample(self, seed=None):
        rng = random.Random(seed)
        return self.to_architecture({"edges": [rng.randrange(len(OPS)) for _ in EDGES]})


def _check_supernet_options(options):
    """Validates the NAS-Bench-201 supernet options (`channels`, `cells_per_stage`)."""
    out = dict(options)
    out["channels"] = check_int(out["channels"], "channels", 1)
    out["cells_per_stage"] = check_int(out["cells_per_stage"], "cells_per_stage", 1)
    return out


SPEC = SpaceSpec(
    name="nb201",
    search_space_class=NB201SearchSpace,
    genotype_class=NB201Genotype,
    networks_module="unas_keras.networks.nb201",
    supernet_options=("channels", "cells_per_stage"),
    check_supernet_options=_check_supernet_options,
    network_options=("channels", "cells_per_stage"),
    inherited_network_options=("channels", "cells_per_stage"),
    option_help={"channels": "NAS-Bench-201 space: channels of the first stage.",
                 "cells_per_stage": "NAS-Bench-201 space: cells per stage."},
    plotter="plot_nb201_cell",
    text_column="ArchitectureString",
    profile_defaults={
        "demo": dict(resolution=16, image_channels=1, batch_size=32, epochs=6, warmup_epochs=1,
                     sampling="per_example", soften_eps=0.0,
                     space_options=dict(channels=8, cells_per_stage=1)),
        "cifar": dict(resolution=32, image_channels=3, batch_size=128, epochs=100, warmup_epochs=15,
                      sampling="per_example", soften_eps=0.0,
                      space_options=dict(channels=16, cells_per_stage=5)),
        "imagenet": dict(resolution=64, image_channels=3, batch_size=192, epochs=35, warmup_epochs=20,
                         sampling="per_minibatch", soften_eps=0.08,
                         space_options=dict(channels=16, cells_per_stage=5)),
        "generic": dict(resolution=32, image_channels=3, batch_size=32, epochs=10, warmup_epochs=2,
                        sampling="per_example", soften_eps=0.0,
                        space_options=dict(channels=8, cells_per_stage=1)),
    },
)
