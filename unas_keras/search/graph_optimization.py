"""How TensorFlow's graph optimiser (Grappler) treats the search step (and derived-network training): its
defaults, or a lean set on CPU.

The first call of a traced search step runs Grappler over the whole step graph (tens of thousands of
nodes), and on a CPU-only host most of its passes find nothing to do. Measured on the benchmark
supernets (ProxylessNAS 96 px, batch 8; DARTS 8 cells, batch 32; benchmarks/search_step.py, one thread
of a 2-core CPU), per pass: the second optimisation round changed fewer than 0.1% of the nodes; the
memory optimiser (recomputation and swapping heuristics for accelerator memory) took a fifth of the time
and changed 23 nodes; the layout optimiser (layouts for GPUs), the loop optimiser and the implementation
selector changed none; the remapper, which fuses convolution + bias + activation chains the search ops
do not have, three; the MLIR (TFG) pass pipeline took 1.5 s. Leaving those out ("lean") took the first
step from 48.8 s to 32.5 s (ProxylessNAS) and from 57.1 s to 40.5 s (DARTS) at the same step time
(1.69 vs 1.79 s; 11.0 vs 10.8 s) and with 300 MB less memory for ProxylessNAS. Turning Grappler off
altogether started about as fast but used 300-700 MB more memory.

On hosts with a GPU or TPU the layout optimiser and remapper matter, so "auto" keeps TensorFlow's
defaults there.

Training and evaluating a derived network (`unas_keras.scoring.score_architecture`) use the same
settings: the first step of a derived DARTS network (8 cells, 16x16, batch 64) took 8.2 s instead of
10.5 s, at the same step time.
"""

import tensorflow as tf

from unas_keras._validate import check_choice

#: Accepted values of `SearchModel(graph_optimization=...)`.
GRAPH_OPTIMIZATIONS = ("auto", "lean", "full")

# Grappler settings of "lean": `RewriterConfig` field -> value (enum values by name).
_LEAN = {
    "meta_optimizer_iterations": "ONE",
    "memory_optimization": "NO_MEM_OPT",
    "layout_optimizer": "OFF",
    "remapping": "OFF",
    "loop_optimization": "OFF",
    "implementation_selector": "OFF",
    "disable_tfg_optimizer": True,
}


def has_accelerator():
    """Whether TensorFlow sees a GPU or TPU in this process."""
    return any(tf.config.list_logical_devices(kind) for kind in ("GPU", "TPU"))


def rewrite_options(graph_optimization):
    """The Grappler settings for a search step.

    Args:
        graph_optimization: "full" (TensorFlow's defaults), "lean" (see the module docstring) or
            "auto" ("lean" unless the process sees a GPU or TPU).

    Returns:
        `{RewriterConfig field: value}` (enum values by name), or None for TensorFlow's defaults.

    Raises:
        ValueError: an unknown `graph_optimization`.
    """
    check_choice(graph_optimization, "graph_optimization", GRAPH_OPTIMIZATIONS)
    if graph_optimization == "auto":
        graph_optimization = "full" if has_accelerator() else "lean"
    return dict(_LEAN) if graph_optimization == "lean" else None
