"""Latency measurement: LiteRT on the CPU, TensorFlow on a GPU."""

import os
import time

import numpy as np


class GPUUnavailableError(RuntimeError):
    """Raised by `measure_keras_gpu` when TensorFlow sees no GPU."""


def _check_counts(runs, warmup):
    if int(runs) < 1:
        raise ValueError(f"runs must be >= 1, got {runs}.")
    if int(warmup) < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}.")


def _stats(times_ms):
    times = np.asarray(times_ms, dtype=np.float64)
    return {
        "median_ms": float(np.median(times)),
        "mean_ms": float(np.mean(times)),
        "p10_ms": float(np.percentile(times, 10)),
        "p90_ms": float(np.percentile(times, 90)),
        "std_ms": float(np.std(times)),
        "min_ms": float(np.min(times)),
        "runs": int(len(times)),
    }


def _tflite_bytes_or_path(model_or_tflite_path):
    """Turns a keras model or a `.keras` / `.tflite` path into something LiteRT can load."""
    from unas_keras.latency import tflite

    if isinstance(model_or_tflite_path, (bytes, bytearray)):
        return bytes(model_or_tflite_path)
    if isinstance(model_or_tflite_path, (str, os.PathLike)):
        path = os.fspath(model_or_tflite_path)
        if path.endswith(".keras"):
            return tflite.convert_to_tflite(tflite.load_keras_model(path))
        if not os.path.isfile(path):
            raise ValueError(f"Model file not found: {path}")
        return path
    if hasattr(model_or_tflite_path, "export") and hasattr(model_or_tflite_path, "inputs"):
        return tflite.convert_to_tflite(model_or_tflite_path)
    raise ValueError(
        "Expected a keras.Model, .tflite bytes, or a path to a .tflite / .keras file; got "
        f"{type(model_or_tflite_path).__name__}."
    )


def measure_tflite_stats(model_or_tflite_path, threads=1, runs=50, warmup=5):
    """Times single invocations of a TFLite model with LiteRT (default XNNPACK delegate).

    The input is filled once with random values; each of `runs` invocations is
    timed separately with `time.perf_counter` after `warmup` untimed ones.

    Args:
        model_or_tflite_path: a `keras.Model` (converted to float32 TFLite
            first), `.tflite` bytes, or a path to a `.tflite` or `.keras` file.
        threads: LiteRT CPU threads.
        runs: timed invocations.
        warmup: untimed invocations first.

    Returns:
        dict with `median_ms`, `mean_ms`, `p10_ms`, `p90_ms`, `std_ms`,
        `min_ms`, `runs`, `threads`.
    """
    from unas_keras.latency import tflite

    _check_counts(runs, warmup)
    interpreter = tflite.make_interpreter(_tflite_bytes_or_path(model_or_tflite_path), threads)
    rng = np.random.default_rng(0)
    for detail in interpreter.get_input_details():
        shape = detail["shape"]
        if detail["dtype"] == np.float32:
            value = rng.random(shape, dtype=np.float32)
        else:
            info = np.iinfo(detail["dtype"])
            value = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(detail["dtype"])
        interpreter.set_tensor(detail["index"], value)
    invoke = interpreter.invoke
    for _ in range(int(warmup)):
        invoke()
    times = []
    clock = time.perf_counter
    for _ in range(int(runs)):
        start = clock()
        invoke()
        times.append((clock() - start) * 1000.0)
    out = _stats(times)
    out["threads"] = int(threads)
    return out


def measure_tflite(model_or_tflite_path, threads=1, runs=50, warmup=5):
    """Median latency in milliseconds of one LiteRT invocation (see `measure_tflite_stats`)."""
    return measure_tflite_stats(model_or_tflite_path, threads=threads, runs=runs, warmup=warmup)["median_ms"]


def _gpu_devices():
    """The physical GPUs TensorFlow sees (separate so tests can mock it)."""
    import tensorflow as tf

    return tf.config.list_physical_devices("GPU")


def measure_keras_gpu(model, batch_size=1, runs=50, warmup=5, input_shape=None, device="/GPU:0",
                      return_stats=False):
    """Times a Keras model's inference on a GPU through TensorFlow.

    The forward pass is a `tf.function` (traced once during warm-up); each
    timed run ends with `.numpy()` of the output, which waits for the GPU.

    Args:
        model: a single-input `keras.Model`.
        batch_size: batch of the random input.
        runs: timed runs.
        warmup: untimed runs first (at least one is always made, for tracing).
        input_shape: `(h, w, c)` override of the model's input shape.
        device: the TensorFlow device to run on.
        return_stats: return the stats dict instead of the median.

    Returns:
        Median milliseconds per batch (or the stats dict).

    Raises:
        GPUUnavailableError: when TensorFlow sees no GPU (use `measure_tflite`
            for CPU latency).
    """
    _check_counts(runs, warmup)
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    gpus = _gpu_devices()
    if not gpus:
        raise GPUUnavailableError(
            "No GPU visible to TensorFlow (tf.config.list_physical_devices('GPU') is empty); "
            "measure_keras_gpu needs one. Use measure_tflite for CPU latency."
        )
    import tensorflow as tf

    from unas_keras.latency.tflite import model_input_shape

    shape = model_input_shape(model, input_shape)
    with tf.device(device):
        x = tf.random.uniform((int(batch_size),) + shape, seed=0)
        forward = tf.function(lambda inputs: model(inputs, training=False))
        for _ in range(max(1, int(warmup))):
            forward(x).numpy()
        times = []
        for _ in range(int(runs)):
            start = time.perf_counter()
            forward(x).numpy()
            times.append((time.perf_counter() - start) * 1000.0)
    out = _stats(times)
    out.update(batch_size=int(batch_size), device=device, gpu=str(getattr(gpus[0], "name", gpus[0])))
    return out if return_stats else out["median_ms"]
