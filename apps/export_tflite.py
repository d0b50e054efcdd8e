"""Converts a trained `.keras` model to a `.tflite` model (optionally quantized).

    python apps/export_tflite.py --model=runs/demo/model.keras --output=runs/demo/model.tflite \
        [--quantize=none|float16|int8] [--verify] [--representative_dataset=NAME]

Only the inference graph is exported: a model trained with the auxiliary head
(outputs `[logits, aux_logits]`) is exported with its logits only.

`--quantize=int8` is full-integer quantization calibrated on `--num_calibration`
training images of the model's own data set, read from the metadata
`apps/train.py` writes beside the model (`<model>.json`), or of
`--representative_dataset` when given (a unas_keras dataset name, a folder of
class folders, or `random` for uniform noise, deliberately). Without either the
export refuses (status 2) rather than calibrate on the wrong images.
`--verify` runs the Keras inference model and the LiteRT interpreter on the
same `--num_verify` images (of that data set; random inputs, with a note, when
the data set is unknown), prints the largest absolute difference and the top-1
agreement, and fails (status 1, no output file) when the difference exceeds the
mode's tolerance. The output is written through a temporary file and a rename:
a failed export leaves no partial file. Bad input: one line on stderr, status 2.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import flags, logging  # noqa: E402

from unas_keras import cli  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Input Keras model (.keras).")
flags.DEFINE_string("output", None, "Output TFLite model (.tflite).")
flags.DEFINE_enum("quantize", "none", ["none", "float16", "int8"], "Quantization mode.")
flags.DEFINE_boolean("verify", False, "Compare Keras and LiteRT outputs; fail if out of tolerance.")
flags.DEFINE_string("representative_dataset", None,
                    "Dataset for int8 calibration and --verify inputs (a unas_keras dataset name, a folder of "
                    "class folders, or 'random'). Default: the data set recorded in <model>.json.")
flags.DEFINE_string("data_dir", None, "tensorflow-datasets data directory (default: the one recorded with "
                    "the model).")
flags.DEFINE_integer("num_calibration", 200, "Calibration images for --quantize=int8.")
flags.DEFINE_integer("num_verify", 32, "Images compared by --verify.")
flags.DEFINE_integer("threads", 1, "LiteRT threads for --verify.")


def _inputs(dataset, input_shape, num, seed, data_dir=None):
    """Preprocessed dataset images for the model, or random ones (with a note)."""
    import numpy as np

    def random_inputs(reason):
        if reason:
            print(f"note: {reason}; using random inputs instead.", file=sys.stderr)
        return np.random.default_rng(seed).random((num,) + tuple(input_shape), dtype=np.float32)

    if dataset == "random":
        return random_inputs(None)
    height, width, channels = input_shape
    if height != width:
        return random_inputs(f"the model's input {height}x{width} is not square")
    try:
        from unas_keras.data import representative_arrays
    except ImportError as err:
        return random_inputs(f"unas_keras.data.representative_arrays is unavailable ({err})")
    try:
        x, _ = representative_arrays(dataset, height, num=num, seed=seed, channels=channels, data_dir=data_dir)
    except ValueError as err:
        raise cli.UsageError(f"representative dataset {dataset}: {err}") from None
    return x


def _model_dataset(model_path):
    """(dataset, data_dir) the model was trained on: the flags, else the metadata beside the model."""
    from unas_keras import training

    metadata = training.read_metadata(model_path) or {}
    dataset = FLAGS.representative_dataset or metadata.get("dataset")
    if dataset is not None and not isinstance(dataset, str):
        dataset = None  # trained on in-memory arrays: nothing to reload
    return dataset, FLAGS.data_dir or metadata.get("data_dir")


def main(argv):
    del argv
    logging.set_verbosity(logging.ERROR)
    if not FLAGS.model:
        raise cli.UsageError("--model is required (a .keras file).")
    if not FLAGS.output:
        raise cli.UsageError("--output is required (a .tflite path).")
    if FLAGS.num_calibration < 1 or FLAGS.num_verify < 1 or FLAGS.threads < 1:
        raise cli.UsageError("--num_calibration, --num_verify and --threads must be >= 1.")
    if not os.path.isfile(FLAGS.model):
        raise cli.UsageError(f"model file not found: {FLAGS.model}")
    if os.path.isdir(FLAGS.output):
        raise cli.UsageError(f"--output {FLAGS.output} is a directory; give a file path.")
    # Importing the package imports TensorFlow with its start-up notices hidden (TF_CPP_MIN_LOG_LEVEL >= 2,
    # set above).
    from unas_keras import training
    from unas_keras.latency import tflite

    dataset, data_dir = _model_dataset(FLAGS.model)
    if FLAGS.quantize == "int8" and dataset is None:
        raise cli.UsageError(
            f"--quantize=int8 calibrates on images of the model's own data set, and {FLAGS.model} has no "
            f"record of it ({training.metadata_path(FLAGS.model)}, written by apps/train.py, is missing); pass "
            f"--representative_dataset=NAME (or =random to calibrate on noise).")
    # The inference graph: training-only outputs (the auxiliary head) are not exported.
    model = training.inference_model(tflite.load_keras_model(FLAGS.model))
    input_shape = tflite.model_input_shape(model)
    calibration = None
    if FLAGS.quantize == "int8":
        calibration = _inputs(dataset, input_shape, FLAGS.num_calibration, seed=0, data_dir=data_dir)
    try:
        data = tflite.convert_to_tflite(model, quantize=FLAGS.quantize, representative_data=calibration)
    except ValueError:
        raise  # a user mistake (e.g. mis-shaped calibration data): one line, status 2
    except Exception as err:  # noqa: BLE001 - converter failures: one clear line, status 1
        print(f"error: TFLite conversion failed: {str(err).strip().splitlines()[0]}", file=sys.stderr)
        sys.exit(1)
    if FLAGS.verify:
        if dataset is None:
            print("note: the model's data set is unknown (no metadata, no --representative_dataset); "
                  "verifying on random inputs.", file=sys.stderr)
        inputs = _inputs(dataset or "random", input_shape, FLAGS.num_verify, seed=1, data_dir=data_dir)
        report = tflite.verify_tflite(model, data, inputs, quantize=FLAGS.quantize, threads=FLAGS.threads)
        print(report.summary())
        if not report.passed:
            print(f"error: {FLAGS.output} not written: the TFLite model differs from the Keras model by "
                  f"{report.max_abs_diff:.3g} > {report.tolerance:.3g}.", file=sys.stderr)
            sys.exit(1)
    tflite.write_atomic(FLAGS.output, data)
    print(f"wrote {FLAGS.output} ({len(data)} bytes, quantize={FLAGS.quantize})")


if __name__ == "__main__":
    cli.run_app(main)
