"""The TensorFlow resource handle behind a Keras (or TensorFlow) variable."""

import keras


def resource_handle(variable):
    """The resource handle of a Keras or TensorFlow variable, for the `tf.raw_ops` that take one."""
    return (variable.value if isinstance(variable, keras.Variable) else variable).handle
