"""Shared pytest set-up: two logical CPU devices, quiet TensorFlow logs."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

# Split the CPU into two logical devices before TensorFlow initialises, so
# MirroredStrategy tests have two replicas on this machine.
_cpus = tf.config.list_physical_devices("CPU")
try:
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
    )
except RuntimeError:  # already initialised (e.g. by a plugin); tests that need 2 devices skip
    pass
