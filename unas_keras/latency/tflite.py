"""Keras -> TFLite conversion and Keras-vs-LiteRT verification.

Conversion traces the model's inference function (`training=False`) with a
fixed input signature, folds the variables into constants and converts the
frozen function with `TFLiteConverter.from_concrete_functions`. Two other
routes give the same model more slowly: the traced function with a `tf.Module`
that tracks the variables (Keras 3 models are not TensorFlow trackables), which
the converter saves as a SavedModel first (int8 export of a derived DARTS
network: 11 s against 5 s frozen), and `model.export(...,
format="tf_saved_model")` + `from_saved_model`. A frozen graph is one protocol
buffer, limited to 2 GiB, so models with 1 GiB of weights or more take the
`tf.Module` route. The signature has a fixed batch size (1 by default), the
deployment setting latency is measured in.
"""

import dataclasses
import os
import tempfile
import zipfile

import numpy as np

from unas_keras import _compat
from unas_keras._atomic import write_bytes_atomic

#: Ways to turn a Keras model into a TFLite model (see `convert_to_tflite`).
CONVERSION_METHODS = ("auto", "concrete", "saved_model", "frozen_graph")
#: `method="auto"` freezes models whose weights take less than this; a frozen graph is one protocol buffer
#: (at most 2 GiB).
FREEZE_LIMIT_BYTES = 1 << 30
#: Supported quantization modes.
QUANTIZE_MODES = ("none", "float16", "int8")

#: Per-mode tolerance on the largest absolute difference between the Keras and
#: the LiteRT outputs: `atol + rtol * max|keras output|`.
TOLERANCES = {
    "none": {"atol": 1e-5, "rtol": 1e-3},
    "float16": {"atol": 1e-3, "rtol": 3e-2},
    "int8": {"atol": 1e-2, "rtol": 0.25},
}


def _check_quantize(quantize):
    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"Unknown quantize mode {quantize!r}; expected one of {list(QUANTIZE_MODES)}.")


def model_input_shape(model, input_shape=None):
    """Returns the `(height, width, channels)` input shape of a single-input model.

    Args:
        model: a `keras.Model`.
        input_shape: an explicit shape overriding the model's (needed when the
            model was built with unknown spatial dimensions).

    Raises:
        ValueError: if the model has several inputs or an unknown shape.
    """
    if input_shape is not None:
        shape = tuple(int(d) for d in input_shape)
    else:
        inputs = getattr(model, "inputs", None)
        if not inputs or len(inputs) != 1:
            raise ValueError(
                "TFLite export needs a built model with exactly one input; got "
                f"{0 if not inputs else len(inputs)} inputs."
            )
        shape = tuple(inputs[0].shape[1:])
    if not shape or any(d is None for d in shape):
        raise ValueError(
            f"The model input shape {shape} has unknown dimensions; pass input_shape=(h, w, c)."
        )
    return shape


def _as_batches(representative_data, input_shape):
    """Yields float32 arrays of shape [1, *input_shape] from arrays or an iterable."""
    if isinstance(representative_data, np.ndarray):
        samples = representative_data
        if samples.shape[1:] != tuple(input_shape):
            raise ValueError(
                f"representative_data has sample shape {samples.shape[1:]}, the model expects "
                f"{tuple(input_shape)}."
            )
        for sample in samples:
            yield sample[None].astype(np.float32)
        return
    for sample in representative_data:
        sample = np.asarray(sample, dtype=np.float32)
        if sample.shape == tuple(input_shape):
            sample = sample[None]
        if sample.shape[1:] != tuple(input_shape):
            raise ValueError(
                f"representative_data sample has shape {sample.shape}, the model expects "
                f"{tuple(input_shape)} (or a batch of them)."
            )
        for row in sample:
            yield row[None]


def _weight_bytes(model):
    import tensorflow as tf

    return sum(int(np.prod(w.shape)) * tf.as_dtype(w.dtype).size for w in model.weights)


def convert_to_tflite(model, quantize="none", representative_data=None, input_shape=None,
                      batch_size=1, integer_io=False, method="auto"):
    """Converts a Keras model to a TFLite flatbuffer.

    Args:
        model: a single-input `keras.Model` (e.g. from `unas_keras.build_model`).
        quantize: `"none"` (float32), `"float16"` (float16 weights) or
            `"int8"` (full-integer quantization: every operator in int8,
            calibrated on `representative_data`).
        representative_data: calibration inputs for `"int8"`: an array
            `[N, h, w, c]` or an iterable of such arrays / single samples,
            ideally drawn from the training data (100-500 samples).
        input_shape: `(h, w, c)` override when the model's input shape has
            unknown dimensions.
        batch_size: batch dimension of the exported signature (1 for on-device
            latency).
        integer_io: for `"int8"`: make the model's input and output int8 too
            (otherwise they stay float32, with (de)quantization at the edges).
        method: `"frozen_graph"` (the inference function traced once, its
            variables folded into constants, then converted), `"concrete"`
            (the traced function with its variables tracked by a `tf.Module`;
            the converter saves a SavedModel first: about twice as slow),
            `"saved_model"` (`model.export(..., format="tf_saved_model")` then
            `TFLiteConverter.from_saved_model`; slower still) or `"auto"`
            (default: `"frozen_graph"` for models with less than
            `FREEZE_LIMIT_BYTES` of weights, else `"concrete"`). All give the
            same model.

    Returns:
        The `.tflite` model as bytes.

    Raises:
        ValueError: on an unknown mode, a missing or mis-shaped calibration set,
            or a model that cannot be exported.
    """
    _check_quantize(quantize)
    import tensorflow as tf

    shape = model_input_shape(model, input_shape)
    if quantize == "int8":
        if representative_data is None:
            raise ValueError("quantize='int8' needs representative_data (calibration inputs).")
        calibration = list(_as_batches(representative_data, shape))
        if not calibration:
            raise ValueError("representative_data is empty.")
    elif integer_io:
        raise ValueError("integer_io=True needs quantize='int8'.")
    signature = [tf.TensorSpec((batch_size,) + shape, tf.float32)]
    if method not in CONVERSION_METHODS:
        raise ValueError(f"Unknown conversion method {method!r}; expected one of {list(CONVERSION_METHODS)}.")
    if method == "auto":
        method = "frozen_graph" if _weight_bytes(model) < FREEZE_LIMIT_BYTES else "concrete"
    with tempfile.TemporaryDirectory(prefix="unas_keras_tflite_") as tmp:
        if method == "saved_model":
            export_dir = os.path.join(tmp, "saved_model")
            model.export(export_dir, format="tf_saved_model", input_signature=signature, verbose=False)
            converter = tf.lite.TFLiteConverter.from_saved_model(export_dir)
        elif method == "frozen_graph":
            serve = tf.function(lambda x: model(x, training=False), input_signature=signature)
            frozen = _compat.convert_variables_to_constants(serve.get_concrete_function())
            converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
        else:
            # A tf.Module that tracks the model's TensorFlow variables, so the
            # converter freezes them (the Keras 3 model itself is not a TF trackable).
            module = tf.Module()
            module.variables_to_freeze = [getattr(v, "value", v) for v in model.weights]
            module.serve = tf.function(lambda x: model(x, training=False), input_signature=signature)
            converter = tf.lite.TFLiteConverter.from_concrete_functions(
                [module.serve.get_concrete_function()], module)
        if quantize == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif quantize == "int8":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: ([x] for x in calibration)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            if integer_io:
                converter.inference_input_type = tf.int8
                converter.inference_output_type = tf.int8
        return bytes(converter.convert())


def make_interpreter(tflite_model, threads=1):
    """Returns an allocated LiteRT interpreter.

    Args:
        tflite_model: `.tflite` bytes or a path to a `.tflite` file.
        threads: number of CPU threads.

    Raises:
        ValueError: if the file is missing or is not a valid TFLite model.
    """
    from ai_edge_litert.interpreter import Interpreter

    if int(threads) < 1:
        raise ValueError(f"threads must be >= 1, got {threads}.")
    try:
        if isinstance(tflite_model, (bytes, bytearray)):
            interpreter = Interpreter(model_content=bytes(tflite_model), num_threads=int(threads))
        else:
            path = os.fspath(tflite_model)
            if not os.path.isfile(path):
                raise ValueError(f"TFLite model file not found: {path}")
            interpreter = Interpreter(model_path=path, num_threads=int(threads))
        interpreter.allocate_tensors()
    except ValueError as err:
        if "not found" in str(err):
            raise
        raise ValueError(f"Not a valid TFLite model: {str(err).splitlines()[0]}") from None
    except RuntimeError as err:
        raise ValueError(f"Not a valid TFLite model: {str(err).splitlines()[0]}") from None
    return interpreter


def _quantize_input(x, detail):
    dtype = detail["dtype"]
    if dtype == np.float32:
        return x.astype(np.float32)
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)


def _dequantize_output(y, detail):
    if detail["dtype"] == np.float32:
        return y
    scale, zero_point = detail["quantization"]
    return (y.astype(np.float32) - zero_point) * scale


def run_tflite(tflite_model, inputs, threads=1):
    """Runs a single-input TFLite model on every sample of `inputs`.

    Args:
        tflite_model: `.tflite` bytes or path.
        inputs: float array `[N, h, w, c]`.
        threads: CPU threads.

    Returns:
        float32 array `[N, ...]` of outputs (dequantized for integer models).
    """
    interpreter = make_interpreter(tflite_model, threads)
    in_detail = interpreter.get_input_details()[0]
    out_detail = interpreter.get_output_details()[0]
    batch = int(in_detail["shape"][0])
    inputs = np.asarray(inputs, dtype=np.float32)
    if tuple(inputs.shape[1:]) != tuple(in_detail["shape"][1:]):
        raise ValueError(
            f"inputs have sample shape {inputs.shape[1:]}, the TFLite model expects "
            f"{tuple(int(d) for d in in_detail['shape'][1:])}."
        )
    outputs = []
    for start in range(0, len(inputs), batch):
        chunk = inputs[start:start + batch]
        pad = batch - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
        interpreter.set_tensor(in_detail["index"], _quantize_input(chunk, in_detail))
        interpreter.invoke()
        out = _dequantize_output(interpreter.get_tensor(out_detail["index"]), out_detail)
        outputs.append(np.array(out[:batch - pad]))
    return np.concatenate(outputs, axis=0)


@dataclasses.dataclass(frozen=True)
class VerifyReport:
    """Keras-vs-LiteRT comparison on the same inputs.

    Attributes:
        quantize: the quantization mode the tolerance was taken for.
        num_samples: number of inputs compared.
        max_abs_diff: largest absolute difference of any output element.
        mean_abs_diff: mean absolute difference.
        top1_agreement: share of samples whose arg-max class agrees.
        output_scale: largest absolute Keras output (scales the tolerance).
        tolerance: the allowed `max_abs_diff`.
        passed: `max_abs_diff <= tolerance`.
    """

    quantize: str
    num_samples: int
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float
    output_scale: float
    tolerance: float
    passed: bool

    def summary(self):
        """One-line human summary."""
        status = "OK" if self.passed else "FAILED"
        return (
            f"verify {status} ({self.quantize}, {self.num_samples} inputs): max |keras - tflite| = "
            f"{self.max_abs_diff:.3g} (tolerance {self.tolerance:.3g}), top-1 agreement "
            f"{100 * self.top1_agreement:.1f}%"
        )

    def to_dict(self):
        return dataclasses.asdict(self)


def verify_tflite(model, tflite_model, inputs, quantize="none", threads=1, tolerance=None):
    """Compares a Keras model with its TFLite conversion on the same inputs.

    Args:
        model: the source `keras.Model`.
        tflite_model: `.tflite` bytes or path.
        inputs: float array `[N, h, w, c]`.
        quantize: the mode the model was converted with (selects the tolerance,
            see `TOLERANCES`).
        threads: LiteRT threads.
        tolerance: optional explicit allowed max absolute difference.

    Returns:
        A `VerifyReport`.
    """
    _check_quantize(quantize)
    inputs = np.asarray(inputs, dtype=np.float32)
    if inputs.ndim < 2 or len(inputs) == 0:
        raise ValueError("verify_tflite needs a non-empty batch of inputs [N, h, w, c].")
    expected = np.asarray(model(inputs, training=False), dtype=np.float32)
    actual = run_tflite(tflite_model, inputs, threads=threads)
    if expected.shape != actual.shape:
        raise ValueError(f"Output shapes differ: keras {expected.shape}, tflite {actual.shape}.")
    diff = np.abs(expected - actual)
    scale = float(np.max(np.abs(expected)))
    if tolerance is None:
        tol = TOLERANCES[quantize]
        tolerance = tol["atol"] + tol["rtol"] * scale
    flat_e = expected.reshape(len(expected), -1)
    flat_a = actual.reshape(len(actual), -1)
    agreement = float(np.mean(np.argmax(flat_e, axis=1) == np.argmax(flat_a, axis=1)))
    max_diff = float(diff.max())
    return VerifyReport(
        quantize=quantize,
        num_samples=int(len(inputs)),
        max_abs_diff=max_diff,
        mean_abs_diff=float(diff.mean()),
        top1_agreement=agreement,
        output_scale=scale,
        tolerance=float(tolerance),
        passed=bool(max_diff <= tolerance),
    )


def write_atomic(path, data):
    """Writes bytes to `path` through a temporary file and a rename."""
    return write_bytes_atomic(path, data)


def load_keras_model(path):
    """Loads a `.keras` model, registering unas_keras layers first.

    Raises:
        ValueError: if the file is missing or cannot be loaded.
    """
    import keras

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"Keras model file not found: {path}")
    for module in ("unas_keras.layers", "unas_keras.networks", "unas_keras.ops"):
        try:
            __import__(module)
        except ImportError:
            pass
    for module in ("unas_keras.layers.mbconv", "unas_keras.networks.proxyless",
                   "unas_keras.networks.darts", "unas_keras.networks.nb201"):
        try:
            __import__(module)
        except Exception:  # noqa: BLE001 - optional registrations only
            pass
    if path.endswith(".keras") and not zipfile.is_zipfile(path):
        raise ValueError(f"Cannot load Keras model {path}: not a .keras archive (not a zip file).")
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as err:  # noqa: BLE001 - any loader failure is a bad input file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"Cannot load Keras model {path}: {first}") from None
