"""Scalar hyper-parameters that a traced step reads from a variable, so that a new value needs no new trace.

A Python float in a traced step is a constant of its graph: a search that differs from the previous one
only by a learning rate would trace its step again (`unas_keras.search.model_cache`). A `Setting` keeps
the float (for configs and attributes) and a non-trainable float32 variable holding the same value, which
the step reads. Settings are no layer's or optimizer's tracked variables: they are not in `variables`,
not in checkpoints (the value is a setting of the run, given when the object is built), and `assign`
changes both the float and the variable.
"""

import keras
from keras import ops


class Setting:
    """A float hyper-parameter held as a Python float and in a non-trainable float32 variable.

    Create it where the objects reading it are created (in a `tf.distribute` strategy's scope, for a
    mirrored variable).

    Args:
        value: the float value.
        name: the variable's name.

    Attributes:
        name: the setting's name.
        variable: the `keras.Variable` (float32) a traced step reads.
    """

    def __init__(self, value, name):
        self.name = name
        self._value = float(value)
        self.variable = keras.Variable(self._value, dtype="float32", trainable=False, name=name,
                                       aggregation="only_first_replica")

    @property
    def value(self):
        """The Python float (as given: not rounded to float32)."""
        return self._value

    def assign(self, value):
        """Sets the value (float and variable); a traced step reads it at its next run."""
        self._value = float(value)
        self.variable.assign(self._value)

    def read(self, dtype="float32"):
        """The value as a tensor of `dtype` (in a traced function: a read of the variable)."""
        return ops.cast(self.variable, dtype)

    def __repr__(self):
        return f"Setting({self.name}={self._value!r})"


def copy_settings(targets, sources, owner):
    """Assigns the value of every setting of `sources` to the setting of `targets` at the same position.

    Args:
        targets: list of `Setting`.
        sources: list of `Setting`, the same names in the same order.
        owner: what holds them, for the error message.

    Raises:
        ValueError: the two lists do not name the same settings.
    """
    target_names = [s.name for s in targets]
    source_names = [s.name for s in sources]
    if target_names != source_names:
        raise ValueError(f"Cannot copy the settings of {owner}: {source_names} into {target_names}.")
    for target, source in zip(targets, sources):
        target.assign(source.value)
