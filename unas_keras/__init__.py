"""unas_keras: UNAS neural architecture search for Keras 3 / TensorFlow.

Quick reference (see README.md):

    import unas_keras as uk
    arch = uk.presets.get("darts_v2")
    model = uk.build_model(arch, num_classes=10, input_shape=(32, 32, 3))
    result = uk.search(space="darts", dataset="digits")
"""

__version__ = "0.1.0"

from unas_keras._quiet_import import import_tensorflow as _import_tensorflow

_import_tensorflow()

# Architectures as plain data (no TensorFlow needed for these).
from unas_keras.space import Architecture, presets, sample_architecture  # noqa: E402

# Keras layers: importing them registers them, so saved `.keras` models reload.
from unas_keras.layers import (  # noqa: E402,F401
    darts_cell, darts_ops, drop_path, mbconv, mbconv_choice, nb201_cell, nb201_ops)
from unas_keras import data, estimators, latency, optimizers, profile, visualize  # noqa: E402
from unas_keras.networks import build_model, build_supernet  # noqa: E402
from unas_keras.networks import darts as _darts, nb201 as _nb201, proxyless as _proxyless  # noqa: E402,F401
from unas_keras.search.search_model import SearchModel  # noqa: E402
from unas_keras.tuner import UNASTuner  # noqa: E402

# `uk.search` is the search function; the engine package stays importable as
# `unas_keras.search.<module>`.
from unas_keras.search.runner import SearchResult, search  # noqa: E402

__all__ = [
    "Architecture",
    "SearchModel",
    "SearchResult",
    "UNASTuner",
    "build_model",
    "build_supernet",
    "data",
    "estimators",
    "latency",
    "optimizers",
    "presets",
    "profile",
    "sample_architecture",
    "search",
    "visualize",
]
