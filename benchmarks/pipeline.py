"""Times the README's command-line pipeline (search, train, export, measure) app by app.

Runs the four commands of the README's "command-line pipeline" section, each in a process of its own
as a user would, into `--output_dir` (a temporary folder by default), and prints one JSON line: the
wall time of each app and the total. An app that fails stops the run with its exit status and the end
of its output.

    python benchmarks/pipeline.py [--output_dir=DIR] [--repo=PATH]

`--repo` runs the apps of another checkout (e.g. an older commit in a git worktree) for a before/after
comparison in one sitting.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def pipeline_commands(out):
    """The README's four commands, writing into folder `out`: `[(name, argv)]`."""
    return [
        ("search", ["apps/search.py", "--space=darts", "--dataset=digits", "--epochs=2",
                    f"--output_dir={out}"]),
        ("train", ["apps/train.py", f"--architecture={out}/architecture.json", "--dataset=digits", "--epochs=5",
                   "--init_channels=16", "--num_cells=8", f"--output={out}/model.keras"]),
        ("export", ["apps/export_tflite.py", f"--model={out}/model.keras", f"--output={out}/model.tflite",
                    "--quantize=int8", "--verify"]),
        ("latency", ["apps/measure_latency.py", f"--model={out}/model.tflite", "--threads=1", "--runs=50"]),
    ]


def run_pipeline(repo, out):
    """Runs the commands in `repo`; returns `{name: seconds}`. Exits on the first failing app."""
    env = dict(os.environ, PYTHONPATH=repo)
    times = {}
    for name, argv in pipeline_commands(out):
        start = time.perf_counter()
        done = subprocess.run([sys.executable] + argv, cwd=repo, env=env, capture_output=True, text=True,
                              check=False)
        times[name] = round(time.perf_counter() - start, 2)
        print(f"{name}: {times[name]} s", file=sys.stderr, flush=True)
        if done.returncode:
            tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
            sys.exit(f"{name} failed with status {done.returncode}:\n" + "\n".join(tail))
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", default=None, help="where the apps write (default: a temporary folder)")
    parser.add_argument("--repo", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        help="checkout whose apps run (default: this one)")
    args = parser.parse_args()
    repo = os.path.abspath(args.repo)
    with tempfile.TemporaryDirectory(prefix="unas_keras_pipeline_") as tmp:
        out = os.path.abspath(args.output_dir or os.path.join(tmp, "pipeline"))
        times = run_pipeline(repo, out)
    print(json.dumps({"benchmark": "pipeline", "repo": repo, **{f"{k}_s": v for k, v in times.items()},
                      "total_s": round(sum(times.values()), 2)}))


if __name__ == "__main__":
    main()
