"""What reusing the traced search model saves a `UNASTuner`: seed trials with and without reuse.

Runs a `UNASTuner` of `--trials` trials that differ only by seed (or, with `--vary=NAME --values=A,B,..`,
only by that tunable hyper-parameter, e.g. `arch_lr` or `gen_gap_lambda`, at seed 0; short searches on the
embedded digits set, no latency measurement) twice, each in its own process: once with
`reuse_search_model=True` (the default: trials after the first run on the first trial's traced model,
`unas_keras.search.model_cache`) and once with `reuse_search_model=False` (every trial builds and traces
its model). For each trial it reports the trial's wall time (search + scoring, keras-tuner's own overhead
excluded), the search's wall time (run.json), the time of the first step of each phase (warm-up and
search; tracing and graph optimisation included when the trial pays them), the median step, the number of
traces of the search step and whether both runs derived the same architecture for each seed (value).

Usage:
    python benchmarks/tuner_reuse.py --space=darts --trials=3 --epochs=2 --steps_per_epoch=4
    python benchmarks/tuner_reuse.py --space=darts --vary=weight_lr --values=3e-4,1e-3,3e-3

Prints one JSON object as its last line: {"space", "trials", "reuse": {...}, "no_reuse": {...},
"same_architectures", "search_time_saved_s"}; each mode has "trials": [{"seed", "trial_wall_s",
"search_wall_s", "first_warmup_step_s", "first_search_step_s", "median_step_s", "traces",
"architecture"}] (and the varied value under its name), "total_wall_s" and "peak_rss_mb".
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--space", default="darts", choices=("darts", "proxyless", "nb201"))
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2, help="search epochs (one of them warm-up)")
    parser.add_argument("--warmup_epochs", type=int, default=1)
    parser.add_argument("--steps_per_epoch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--vary", default="seed",
                        help="what the trials differ in: seed, or a tunable SearchConfig float (e.g. arch_lr)")
    parser.add_argument("--values", default="", help="with --vary=NAME: comma-separated values, one per trial")
    parser.add_argument("--mode", choices=("both", "reuse", "no_reuse"), default="both",
                        help="both: run the two modes, each in a child process, and compare them")
    args = parser.parse_args(argv)
    args.value_list = [float(v) for v in args.values.split(",") if v]
    if args.vary != "seed":
        if len(set(args.value_list)) < 2:
            parser.error("--vary=NAME needs --values with at least two different values")
        args.trials = len(args.value_list)
    return args


class _StepTimes:
    """Keras callback: the duration of every step of the searches (from the previous step's end)."""

    def __init__(self):
        import keras

        times = self.times = []

        class Callback(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.last = time.perf_counter()

            def on_train_batch_end(self, batch, logs=None):
                now = time.perf_counter()
                times[-1].append(now - self.last)
                self.last = now

        self.callback_class = Callback

    def new_search(self):
        self.times.append([])
        return self.callback_class()


def _run_mode(args, reuse):
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    sys.path.insert(0, ROOT)
    import unas_keras as uk
    from unas_keras.search import runner
    from unas_keras.search.search_model import SearchModel

    traces = []
    original_step = SearchModel.replica_step

    def counted_step(self, *a, **k):  # its Python body runs once per trace
        traces[-1] += 1
        return original_step(self, *a, **k)

    SearchModel.replica_step = counted_step
    steps = _StepTimes()
    original_search = runner.search

    def timed_search(*a, **k):
        traces.append(0)
        k["callbacks"] = list(k.get("callbacks") or []) + [steps.new_search()]
        return original_search(*a, **k)

    runner.search = timed_search
    seeds, hyperparameters = list(range(args.trials)), None
    if args.vary != "seed":
        import keras_tuner

        seeds, hyperparameters = [0], keras_tuner.HyperParameters()
        hyperparameters.Choice(args.vary, args.value_list)
    directory = tempfile.mkdtemp(prefix="tuner_reuse_")
    tuner = uk.UNASTuner(space=args.space, max_trials=args.trials, seeds=seeds, directory=directory,
                         hyperparameters=hyperparameters,
                         project_name="bench", seed=0, warmup_epochs=args.warmup_epochs,
                         steps_per_epoch=args.steps_per_epoch, train_epochs=1, train_steps_per_epoch=2,
                         measure_latency=False, reuse_search_model=reuse, search_verbose=0)
    started = time.perf_counter()
    tuner.search("digits", epochs=args.epochs, verbose=0)
    total = time.perf_counter() - started
    warmup_steps = args.warmup_epochs * args.steps_per_epoch
    trials = []
    for i, trial in enumerate(sorted(tuner.oracle.trials.values(), key=lambda t: int(t.trial_id))):
        trial_dir = tuner.get_trial_dir(trial.trial_id)
        with open(os.path.join(trial_dir, "result.json")) as f:
            result = json.load(f)
        with open(os.path.join(trial_dir, "search", "run.json")) as f:
            run = json.load(f)
        times = steps.times[i]
        trials.append({"seed": result["seed"], "trial_wall_s": result["wall_time_s"],
                       "search_wall_s": run["wall_time_s"],
                       "first_warmup_step_s": round(times[0], 2) if warmup_steps else None,
                       "first_search_step_s": round(times[warmup_steps], 2),
                       "median_step_s": round(statistics.median(times), 3), "traces": traces[i],
                       "architecture": result["architecture"]})
        if args.vary != "seed":
            trials[-1][args.vary] = trial.hyperparameters.values[args.vary]
    return {"trials": trials, "total_wall_s": round(total, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def _child(args, mode):
    argv = [sys.executable, os.path.abspath(__file__), f"--mode={mode}"] + [
        f"--{name}={getattr(args, name)}" for name in ("space", "trials", "epochs", "warmup_epochs",
                                                        "steps_per_epoch", "threads", "vary", "values")]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{mode} run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    args = _parse(sys.argv[1:] if argv is None else argv)
    if args.mode != "both":
        print(json.dumps(_run_mode(args, reuse=args.mode == "reuse")))
        return
    no_reuse = _child(args, "no_reuse")
    reuse = _child(args, "reuse")
    by_seed = lambda run: {t[args.vary]: t["architecture"] for t in run["trials"]}  # noqa: E731
    same = by_seed(reuse) == by_seed(no_reuse)
    saved = sum(a["search_wall_s"] for a in no_reuse["trials"]) - sum(a["search_wall_s"] for a in reuse["trials"])
    print(json.dumps({"space": args.space, "trials": args.trials, "vary": args.vary, "epochs": args.epochs,
                      "steps_per_epoch": args.steps_per_epoch, "threads": args.threads, "reuse": reuse,
                      "no_reuse": no_reuse, "same_architectures": same,
                      "search_time_saved_s": round(saved, 1)}))


if __name__ == "__main__":
    main()
