"""Drop-path (per-example stochastic depth of one cell branch), with a rampable rate.

`DropPath` zeroes a whole example's branch with probability `rate` during
training and scales the survivors by `1 / (1 - rate)`, as DARTS's `drop_path`.
The rate lives in a non-trainable variable, so `set_drop_path_rate` (or the
`DropPathSchedule` callback, DARTS's linear ramp `rate * epoch / epochs`) can
change it between steps without retracing the model.
"""

import keras
from keras import ops

from unas_keras import _compat


def _check_rate(rate):
    if not 0.0 <= float(rate) < 1.0:
        raise ValueError(f"drop-path rate must be in [0, 1), got {rate!r}.")
    return float(rate)


@keras.saving.register_keras_serializable(package="unas_keras")
class DropPath(keras.layers.Layer):
    """Drops the whole input of an example with probability `rate` in training.

    Each call draws an independent mask, so one layer can serve several
    branches. At inference it is the identity.

    Args:
        rate: initial drop probability in [0, 1); stored in the non-trainable
            variable `rate_variable`.
        seed: optional integer seed of the layer's random stream.
        **kwargs: base `Layer` arguments.
    """

    def __init__(self, rate=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = _check_rate(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed, name="seed_generator")
        self.rate_variable = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(self.rate),
            trainable=False,
            name="drop_path_rate",
        )
        self.built = True

    def set_rate(self, rate):
        """Sets the current drop probability (in [0, 1))."""
        self.rate_variable.assign(_check_rate(rate))

    def call(self, inputs, training=None):
        if not training:
            return inputs
        keep = 1.0 - ops.cast(self.rate_variable, inputs.dtype)
        shape = (ops.shape(inputs)[0],) + (1,) * (len(inputs.shape) - 1)
        noise = keras.random.uniform(shape, dtype=inputs.dtype, seed=self.seed_generator)
        mask = ops.floor(keep + noise)  # 1 with probability keep, else 0
        return inputs * (mask / keep)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


def drop_path_layers(model):
    """Every `DropPath` layer inside `model` (nested layers included)."""
    return [layer for layer in _compat.flatten_layers(model) if isinstance(layer, DropPath)]


def set_drop_path_rate(model, rate):
    """Sets the drop probability of every `DropPath` layer of `model`; returns how many."""
    layers = drop_path_layers(model)
    for layer in layers:
        layer.set_rate(rate)
    return len(layers)


class DropPathSchedule(keras.callbacks.Callback):
    """Ramps the drop-path rate linearly: `final_rate * epoch / epochs` at each epoch start.

    This is the DARTS evaluation schedule (0 in the first epoch).

    Args:
        final_rate: the rate the ramp reaches at epoch `epochs`, in [0, 1).
        epochs: length of the ramp (the training length in DARTS), >= 1.
    """

    def __init__(self, final_rate, epochs):
        super().__init__()
        self.final_rate = _check_rate(final_rate)
        if int(epochs) < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs!r}.")
        self.epochs = int(epochs)

    def rate_at(self, epoch):
        """The scheduled rate at the start of `epoch` (0-based)."""
        return self.final_rate * min(epoch, self.epochs) / self.epochs

    def on_epoch_begin(self, epoch, logs=None):
        set_drop_path_rate(self.model, self.rate_at(epoch))
