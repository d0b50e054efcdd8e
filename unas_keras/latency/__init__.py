"""Latency: TFLite conversion, LiteRT / GPU timing, lookup tables and surrogates."""

from unas_keras.latency.blocks import BlockSpec, architecture_blocks, space_blocks, weight_count
from unas_keras.latency.lookup_table import LookupTable, build_lookup_table
from unas_keras.latency.timing import (GPUUnavailableError, measure_keras_gpu, measure_tflite,
                                       measure_tflite_stats)
from unas_keras.latency.tflite import (QUANTIZE_MODES, TOLERANCES, VerifyReport, convert_to_tflite,
                                       run_tflite, verify_tflite)
from unas_keras.latency.latency_model import (LatencyModel, fit_calibrated_surrogate,
                                              lookup_table_surrogate)
from unas_keras.latency.metrics import latency_report
from unas_keras.latency.surrogate import LatencySurrogate, fit_latency_surrogate
