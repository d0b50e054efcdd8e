"""Latency: TFLite conversion, LiteRT / GPU timing, lookup tables and surrogates.

* `convert_to_tflite`, `verify_tflite`, `run_tflite`: Keras -> `.tflite`
  (float32, float16, full-integer int8) and a Keras-vs-LiteRT comparison.
* `measure_tflite` (median ms), `measure_tflite_stats`, `measure_keras_gpu`.
* `build_lookup_table` / `LookupTable`: per-block LiteRT timings of the
  ProxylessNAS space; `predict(arch)` sums them.
* `fit_latency_surrogate` / `LatencySurrogate`: the ridge regression g on
  one-hot choices; `fit_calibrated_surrogate`: a lookup table corrected by
  whole-network measurements; `latency_report`: MAE, MAPE, rank correlations.
* `DeviceTable`: measured whole-network latencies of a device (a CSV keyed
  by architecture); `DeviceTable.latency_model()` for a constrained search.
* `export_block_models` / `LookupTable.from_device_results`: the lookup
  table's blocks as `.tflite` files to time on a phone, and the timings back.
* `LatencyModel`: what a latency-constrained search consumes
  (`predict_ms`, `surrogate_weights`); `LatencyModel.for_space(...)` builds or
  loads the table and derives g.
"""

from unas_keras.latency.blocks import BlockSpec, architecture_blocks, space_blocks, weight_count
from unas_keras.latency.device_blocks import export_block_models, parse_benchmark_output
from unas_keras.latency.device_table import DeviceTable
from unas_keras.latency.latency_model import (LatencyModel, fit_calibrated_surrogate,
                                              lookup_table_surrogate)
from unas_keras.latency.lookup_table import LookupTable, build_lookup_table
from unas_keras.latency.metrics import latency_report
from unas_keras.latency.surrogate import LatencySurrogate, fit_latency_surrogate
from unas_keras.latency.timing import (GPUUnavailableError, measure_keras_gpu, measure_tflite,
                                       measure_tflite_stats)
from unas_keras.latency.tflite import (CONVERSION_METHODS, QUANTIZE_MODES, TOLERANCES, VerifyReport,
                                       convert_to_tflite, run_tflite, verify_tflite)

__all__ = [
    "BlockSpec", "CONVERSION_METHODS", "DeviceTable", "GPUUnavailableError", "LatencyModel", "LatencySurrogate",
    "LookupTable", "QUANTIZE_MODES", "TOLERANCES", "VerifyReport", "architecture_blocks",
    "build_lookup_table", "convert_to_tflite", "export_block_models", "fit_calibrated_surrogate",
    "fit_latency_surrogate", "parse_benchmark_output",
    "latency_report", "lookup_table_surrogate", "measure_keras_gpu", "measure_tflite",
    "measure_tflite_stats", "run_tflite", "space_blocks", "verify_tflite", "weight_count",
]
