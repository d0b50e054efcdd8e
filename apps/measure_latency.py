"""Measures the on-CPU latency of a model with LiteRT and prints the median in ms.

    python apps/measure_latency.py --model=runs/demo/model.tflite [--threads=1] [--runs=50]

`--model` is a `.tflite` file or a `.keras` model (converted to float32 TFLite
first). Prints `<median> ms ...` on one line (`--json`: the statistics as
JSON: median, mean, p10, p90, std, min). Bad input: one line, status 2.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import flags, logging  # noqa: E402

from unas_keras import cli  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "A .tflite file or a .keras model.")
flags.DEFINE_integer("threads", 1, "LiteRT CPU threads.")
flags.DEFINE_integer("runs", 50, "Timed invocations.")
flags.DEFINE_integer("warmup", 5, "Untimed invocations first.")
flags.DEFINE_boolean("json", False, "Print the statistics as one JSON object instead.")


def main(argv):
    del argv
    logging.set_verbosity(logging.ERROR)
    if not FLAGS.model:
        raise cli.UsageError("--model is required (a .tflite or .keras file).")
    if not FLAGS.model.endswith((".tflite", ".keras")):
        raise cli.UsageError(f"--model must be a .tflite or .keras file, got {FLAGS.model}.")
    if not os.path.isfile(FLAGS.model):
        raise cli.UsageError(f"model file not found: {FLAGS.model}")
    if FLAGS.threads < 1 or FLAGS.runs < 1 or FLAGS.warmup < 0:
        raise cli.UsageError("--threads and --runs must be >= 1, --warmup >= 0.")
    # Importing the package imports TensorFlow with its start-up notices hidden (TF_CPP_MIN_LOG_LEVEL >= 2,
    # set above).
    from unas_keras.latency import measure_tflite_stats

    stats = measure_tflite_stats(FLAGS.model, threads=FLAGS.threads, runs=FLAGS.runs, warmup=FLAGS.warmup)
    if FLAGS.json:
        print(json.dumps(dict(stats, model=FLAGS.model)))
    else:
        print(f"{stats['median_ms']:.4f} ms (median of {stats['runs']} runs, {stats['threads']} thread(s), "
              f"LiteRT; p10 {stats['p10_ms']:.4f}, p90 {stats['p90_ms']:.4f})")


if __name__ == "__main__":
    cli.run_app(main)
