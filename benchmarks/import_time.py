"""Wall time of `import unas_keras` in a fresh interpreter (and of a bare interpreter, for reference).

    python benchmarks/import_time.py --runs=5 [--module=unas_keras]

Each run starts a new `python -c "import <module>"`; the last line printed is one JSON object:
`{"module": ..., "runs": N, "median_s": ..., "interpreter_median_s": ..., "import_only_median_s": ...,
"modules_loaded": ..., "tensorflow_loaded": ..., "keras_loaded": ..., "keras_tuner_loaded": ...}`.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _wall(code, env):
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--module", default="unas_keras")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    imports, bare = [], []
    for _ in range(args.runs):  # interleaved, so that load on a shared machine hits both alike
        bare.append(_wall("pass", env))
        imports.append(_wall(f"import {args.module}", env))
    probe = subprocess.run(
        [sys.executable, "-c", f"import sys, json, {args.module}; print(json.dumps(["
         "len(sys.modules), 'tensorflow' in sys.modules, 'keras' in sys.modules, 'keras_tuner' in sys.modules]))"],
        check=True, env=env, capture_output=True, text=True)
    loaded, tensorflow, keras, keras_tuner = json.loads(probe.stdout.strip().splitlines()[-1])
    median, interpreter = statistics.median(imports), statistics.median(bare)
    print(json.dumps({"module": args.module, "runs": args.runs, "median_s": round(median, 4),
                      "interpreter_median_s": round(interpreter, 4),
                      "import_only_median_s": round(median - interpreter, 4), "modules_loaded": loaded,
                      "tensorflow_loaded": tensorflow, "keras_loaded": keras, "keras_tuner_loaded": keras_tuner}))


if __name__ == "__main__":
    main()
