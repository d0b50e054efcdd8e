"""Times one full UNAS search iteration (architecture step + weight step) on random data.

The iteration is `SearchModel`'s training step exactly as `fit` runs it (the
same traced function): sample architectures, hard and relaxed passes on the
train and val batches, the estimator's surrogate, Adam on the logits, then the
weight step (Adam, clip-norm 5). The first `--warmup` iterations (tracing and
graph optimisation) are not timed.

Defaults follow the UNAS release and `/work/shared/bench/torch_ref/unas_darts_step.py`:

* darts: C = 16, 8 cells, 32x32x3 input, 10 classes, 7 ops, per-example
  architectures, rebar estimator, generalization-gap objective, batch 32.
* proxyless: resolution 96, batch 8, one architecture per minibatch, 1000
  classes, logit softening 0.08.

Usage:
    python benchmarks/search_step.py --space=darts --batch_size=32 --steps=5 --warmup=2 --threads=2

Prints one JSON object as its last line: impl, space, batch_size, median_step_s,
min_step_s, step_s, peak_rss_mb (the whole process, tracing included),
steps_peak_rss_mb (peak during the timed steps only, Linux), rss_before_steps_mb,
warmup_step_s (the first is tracing + graph optimisation), supernet_params,
threads, graph_optimization, versions, ...
"""

import argparse
import json
import os
import resource
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_DEFAULTS = {
    "darts": dict(batch_size=32, resolution=32, num_classes=10, sampling="per_example", soften_eps=0.0),
    "proxyless": dict(batch_size=8, resolution=96, num_classes=1000, sampling="per_minibatch",
                      soften_eps=0.08),
    "nb201": dict(batch_size=32, resolution=32, num_classes=10, sampling="per_example", soften_eps=0.0),
}


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--space", choices=sorted(_DEFAULTS), default="darts")
    parser.add_argument("--batch_size", type=int, default=None, help="darts 32, proxyless 8")
    parser.add_argument("--resolution", type=int, default=None, help="darts 32, proxyless 96")
    parser.add_argument("--num_classes", type=int, default=None, help="darts 10, proxyless 1000")
    parser.add_argument("--steps", type=int, default=5, help="timed iterations")
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations first (tracing)")
    parser.add_argument("--threads", type=int, default=2, help="intra- and inter-op threads")
    parser.add_argument("--inter_op_threads", type=int, default=None,
                        help="inter-op threads (default: --threads)")
    parser.add_argument("--estimator", default="rebar")
    parser.add_argument("--objective", default="gen_gap")
    parser.add_argument("--sampling", choices=["per_example", "per_minibatch"], default=None)
    parser.add_argument("--init_channels", type=int, default=16, help="darts C")
    parser.add_argument("--num_cells", type=int, default=8, help="darts cells")
    parser.add_argument("--ops", default="unas", help="darts op set name or comma-separated op names")
    parser.add_argument("--edge_grouping", default=None, help="darts: by_source (default) or per_edge")
    parser.add_argument("--width_multiplier", type=float, default=1.0, help="proxyless width")
    parser.add_argument("--skip_threshold", type=float, default=None,
                        help="supernet skip threshold (default: the supernet's own)")
    parser.add_argument("--graph_optimization", default="auto", choices=("auto", "lean", "full"),
                        help="Grappler settings of the step (SearchModel graph_optimization)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--count_nodes", action="store_true",
                        help="after the timed steps, trace the search step once more and report its graph size")
    args = parser.parse_args(argv)
    for name in ("steps", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")
    defaults = _DEFAULTS[args.space]
    for key in ("batch_size", "resolution", "num_classes", "sampling"):
        if getattr(args, key) is None:
            setattr(args, key, defaults[key])
    if args.batch_size < 1 or args.resolution < 8 or args.num_classes < 2:
        parser.error("--batch_size must be >= 1, --resolution >= 8, --num_classes >= 2")
    args.soften_eps = defaults["soften_eps"]
    return args


def _rss_mb(field):
    """A memory field of this process from /proc (Linux), in MB, or None elsewhere."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def _reset_peak_rss():
    """Resets the kernel's peak-RSS mark (VmHWM), so the timed steps' own peak can be read (Linux)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _graph_size(model, data):
    """Python tracing time of one search step and its graph's node count (functions included)."""
    import tensorflow as tf

    step = tf.function(lambda batch: model.replica_step(batch, warmup=False))
    start = time.perf_counter()
    graph_def = step.get_concrete_function(data).graph.as_graph_def()
    trace_s = time.perf_counter() - start
    nodes = len(graph_def.node) + sum(len(f.node_def) for f in graph_def.library.function)
    return {"trace_s": round(trace_s, 2), "graph_nodes": nodes}


def main(argv=None):
    args = _parse(sys.argv[1:] if argv is None else argv)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads or args.threads)
    import keras
    import numpy as np

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from unas_keras.networks import build_supernet
    from unas_keras.search import SearchModel, schedules

    keras.utils.set_random_seed(args.seed)
    from unas_keras.config import SearchConfig
    from unas_keras.space import registry

    spec = registry.get(args.space)
    options = {k: getattr(args, k) for k in spec.supernet_options if getattr(args, k, None) is not None}
    if isinstance(options.get("ops"), str) and "," in options["ops"]:
        options["ops"] = options["ops"].split(",")
    if args.skip_threshold is not None:
        options["skip_threshold"] = args.skip_threshold
    shape = (args.resolution, args.resolution, 3)
    supernet = build_supernet(args.space, args.num_classes, shape, **options)
    model = SearchModel(supernet, estimator=args.estimator, objective=args.objective,
                        sampling=args.sampling, soften_eps=args.soften_eps, seed=args.seed,
                        graph_optimization=args.graph_optimization)
    # The paper's optimizers, unscaled (batch = lr_reference_batch), over 1,000 steps.
    config = SearchConfig.resolve(space=args.space, dataset="cifar10", epochs=1000, warmup_epochs=0,
                                  batch_size=int(SearchConfig.default("lr_reference_batch")))
    weight_opt, arch_opt = schedules.search_optimizers(config, steps_per_epoch=1)
    model.compile(weight_optimizer=weight_opt, arch_optimizer=arch_opt)

    rng = np.random.default_rng(args.seed)

    def batch():
        return (rng.normal(size=(args.batch_size,) + shape).astype("float32"),
                rng.integers(0, args.num_classes, args.batch_size).astype("int32"))

    data = (batch(), batch())
    dataset = tf.data.Dataset.from_tensors(data).repeat()
    model.make_train_function()
    iterator = iter(dataset)

    times = []
    warmup_times = []
    logs = {}
    rss_before_steps_mb = None
    for it in range(args.warmup + args.steps):
        if it == args.warmup:
            rss_before_steps_mb = _rss_mb("VmRSS")
            _reset_peak_rss()
        start = time.perf_counter()
        logs = model.train_function(iterator)
        logs = {k: float(v) for k, v in logs.items()}  # waits for the step to finish
        elapsed = time.perf_counter() - start
        (times if it >= args.warmup else warmup_times).append(elapsed)
        if args.verbose:
            print(f"iter {it} {elapsed:.3f}s loss {logs['loss']:.4f} arch_loss {logs['arch_loss']:.4f} "
                  f"weight_loss {logs['weight_loss']:.4f}", flush=True)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    steps_peak_rss_mb = _rss_mb("VmHWM")
    graph = _graph_size(model, data) if args.count_nodes else {}
    result = {
        "impl": "unas_keras",
        "space": args.space,
        "batch_size": args.batch_size,
        "median_step_s": round(statistics.median(times), 4),
        "min_step_s": round(min(times), 4),
        "peak_rss_mb": round(peak_rss_mb, 1),
        "steps_peak_rss_mb": None if steps_peak_rss_mb is None else round(steps_peak_rss_mb, 1),
        "rss_before_steps_mb": None if rss_before_steps_mb is None else round(rss_before_steps_mb, 1),
        "warmup_step_s": [round(t, 2) for t in warmup_times],
        # Trainable only, as torch's parameters(); BN moving statistics are non-trainable weights here.
        "supernet_params": int(sum(np.prod(w.shape) for w in supernet.trainable_weights)),
        "resolution": args.resolution,
        "num_classes": args.num_classes,
        "threads": args.threads,
        "inter_op_threads": args.inter_op_threads or args.threads,
        "steps": args.steps,
        "warmup": args.warmup,
        "step_s": [round(t, 4) for t in times],
        "estimator": args.estimator,
        "objective": args.objective,
        "sampling": args.sampling,
        "skip_threshold": getattr(supernet, "skip_threshold", None),
        "edge_grouping": getattr(supernet, "edge_grouping", None),
        "graph_optimization": args.graph_optimization,
        "final_loss": round(logs.get("loss", float("nan")), 4),
        **graph,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
