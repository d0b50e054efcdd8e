"""The two optimizers of a search and their learning-rate schedules (docs/ALGORITHM.md section 6).

Weights: Adam with coupled L2 decay, cosine from `weight_lr` to `weight_lr_min` over the whole run.
Architecture logits: Adam with coupled L2 decay, cosine from `arch_lr` to `arch_lr_min` over the
architecture steps (the architecture optimizer only counts its own updates, so warm-up iterations do not
advance its schedule). Both rates are scaled by global batch / `lr_reference_batch`
(`SearchConfig.scaled_learning_rates`). The schedules are `VariableCosineDecay`: Keras' `CosineDecay`
(the same values at every step, `alpha = final / initial`) reading its rates from variables
(`unas_keras._settings.Setting`), so that a traced search step that is reused for a search with other
learning rates (`unas_keras.search.model_cache`) takes them without tracing again. Each optimizer also
holds its coupled weight decay in a variable (`variable_weight_decay=True`).
"""

import math

import keras
from keras import ops

from unas_keras import _settings, _validate


@keras.saving.register_keras_serializable(package="unas_keras")
class VariableCosineDecay(keras.optimizers.schedules.LearningRateSchedule):
    """`keras.optimizers.schedules.CosineDecay` (without warm-up) whose rates are variables.

    `lr(step) = initial_learning_rate * ((1 - alpha) * 0.5 * (1 + cos(pi * min(step, decay_steps) /
    decay_steps)) + alpha)`, computed with the same float32 operations as Keras' schedule (the same values).
    `initial_learning_rate`, `alpha` and `1 - alpha` are `Setting`s (`settings`): `set_rates` changes them
    for a traced optimizer step without tracing it again. They are not checkpointed (settings of the run).

    Args:
        initial_learning_rate: learning rate at step 0 (float).
        decay_steps: number of steps of the decay (> 0; a constant of the traced step).
        alpha: final learning rate as a fraction of the initial one.
        name: schedule name.
    """

    def __init__(self, initial_learning_rate, decay_steps, alpha=0.0, name="VariableCosineDecay"):
        super().__init__()
        self.decay_steps = decay_steps
        self.name = name
        if self.decay_steps <= 0:
            raise ValueError(f"Argument `decay_steps` must be > 0. Received: decay_steps={self.decay_steps}")
        self._initial = _settings.Setting(initial_learning_rate, name=f"{name}_initial_learning_rate")
        self._alpha = _settings.Setting(alpha, name=f"{name}_alpha")
        # 1 - alpha rounded from the double, as Keras' Python-float arithmetic does (not 1 - float32(alpha)).
        self._one_minus_alpha = _settings.Setting(1 - float(alpha), name=f"{name}_one_minus_alpha")

    @property
    def initial_learning_rate(self):
        return self._initial.value

    @property
    def alpha(self):
        return self._alpha.value

    @property
    def settings(self):
        """The schedule's `Setting`s (initial rate, alpha, 1 - alpha)."""
        return [self._initial, self._alpha, self._one_minus_alpha]

    def set_rates(self, initial_learning_rate, alpha):
        """Sets the initial rate and the final fraction `alpha` (read by a traced step at its next run)."""
        self._initial.assign(initial_learning_rate)
        self._alpha.assign(alpha)
        self._one_minus_alpha.assign(1 - float(alpha))

    def __call__(self, step):
        with keras.name_scope(self.name):
            initial_learning_rate = self._initial.read("float32")
            dtype = initial_learning_rate.dtype
            decay_steps = ops.cast(self.decay_steps, dtype)
            completed_fraction = ops.divide(ops.minimum(ops.cast(step, dtype), decay_steps), decay_steps)
            pi = ops.array(math.pi, dtype=dtype)
            cosine_decayed = 0.5 * (1.0 + ops.cos(ops.multiply(pi, completed_fraction)))
            decayed = self._one_minus_alpha.read(dtype) * cosine_decayed + self._alpha.read(dtype)
            return ops.multiply(initial_learning_rate, decayed)

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "alpha": self.alpha, "name": self.name}


def cosine_schedule(initial_learning_rate, final_learning_rate, decay_steps, name=None):
    """Cosine decay from `initial_learning_rate` to `final_learning_rate` over `decay_steps`.

    Args:
        initial_learning_rate: learning rate at step 0.
        final_learning_rate: learning rate from `decay_steps` on (<= initial).
        decay_steps: number of optimizer steps of the decay (>= 1).
        name: optional schedule name.

    Returns:
        A `VariableCosineDecay` (the values of `keras.optimizers.schedules.CosineDecay`).

    Raises:
        ValueError: non-positive rates or steps, or a final rate above the initial one.
    """
    initial = _validate.check_float(initial_learning_rate, "initial_learning_rate", 0.0, strict=True)
    final = _validate.check_float(final_learning_rate, "final_learning_rate", 0.0)
    if final > initial:
        raise ValueError(f"final_learning_rate ({final}) must not exceed initial_learning_rate ({initial}).")
    decay_steps = _validate.check_int(decay_steps, "decay_steps", 1)
    return VariableCosineDecay(initial_learning_rate=initial, decay_steps=decay_steps, alpha=final / initial,
                               name=name or "VariableCosineDecay")


def search_optimizers(config, steps_per_epoch):
    """The weight and architecture optimizers of a search (`unas_keras.optimizers.Adam`, PyTorch's).

    The weight decay is coupled L2 as in the release (the moments see `g + wd * w`); the rates and the
    weight decays are variables (`unas_keras._settings.Setting`, see the module docstring). The weights'
    global-norm clip is applied by `SearchModel(weight_clipnorm=...)` to the global-batch gradient before
    the optimizer adds the decay.

    Args:
        config: the `unas_keras.config.SearchConfig` of the run.
        steps_per_epoch: iterations per epoch.

    Returns:
        `(weight_optimizer, arch_optimizer)`.
    """
    from unas_keras import optimizers

    weight_lr, weight_lr_min, arch_lr, arch_lr_min = config.scaled_learning_rates()
    total = config.epochs * steps_per_epoch
    search_steps = (config.epochs - config.warmup_epochs) * steps_per_epoch
    weight_optimizer = optimizers.Adam(
        learning_rate=cosine_schedule(weight_lr, weight_lr_min, max(total, 1), name="weight_cosine_decay"),
        weight_decay=config.weight_decay, variable_weight_decay=True, name="weight_adam")
    arch_optimizer = optimizers.Adam(
        learning_rate=cosine_schedule(arch_lr, arch_lr_min, max(search_steps, 1), name="arch_cosine_decay"),
        weight_decay=config.arch_weight_decay, variable_weight_decay=True, name="arch_adam")
    return weight_optimizer, arch_optimizer
