"""Search spaces and architectures as plain data (no TensorFlow import)."""

from unas_keras.space import darts, nb201, presets, proxyless, registry
from unas_keras.space.architecture import SCHEMA_VERSION, Architecture, sample_architecture, space_names
