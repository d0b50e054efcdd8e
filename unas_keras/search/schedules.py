"""The two optimizers of a search and their learning-rate schedules (docs/ALGORITHM.md section 6).

Weights: Adam with coupled L2 decay, cosine from `weight_lr` to `weight_lr_min` over the whole run.
Architecture logits: Adam with coupled L2 decay, cosine from `arch_lr` to `arch_lr_min` over the
architecture steps (the architecture optimizer only counts its own updates, so warm-up iterations do not
advance its schedule). Both rates are scaled by global batch / `lr_reference_batch`
(`SearchConfig.scaled_learning_rates`). The schedules are plain `keras.optimizers.schedules.CosineDecay`
objects (serialisable, restored with the optimizer), with `alpha = final / initial`.
"""

import keras

from unas_keras import _validate


def cosine_schedule(initial_learning_rate, final_learning_rate, decay_steps, name=None):
    """Cosine decay from `initial_learning_rate` to `final_learning_rate` over `decay_steps`.

    Args:
        initial_learning_rate: learning rate at step 0.
        final_learning_rate: learning rate from `decay_steps` on (<= initial).
        decay_steps: number of optimizer steps of the decay (>= 1).
        name: optional schedule name.

    Returns:
        A `keras.optimizers.schedules.CosineDecay`.

    Raises:
        ValueError: non-positive rates or steps, or a final rate above the initial one.
    """
    initial = _validate.check_float(initial_learning_rate, "initial_learning_rate", 0.0, strict=True)
    final = _validate.check_float(final_learning_rate, "final_learning_rate", 0.0)
    if final > initial:
        raise ValueError(f"final_learning_rate ({final}) must not exceed initial_learning_rate ({initial}).")
    decay_steps = _validate.check_int(decay_steps, "decay_steps", 1)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=initial, decay_steps=decay_steps, alpha=final / initial,
        name=name or "CosineDecay")


def search_optimizers(config, steps_per_epoch):
    """The weight and architecture optimizers of a search (`unas_keras.optimizers.Adam`, PyTorch's).

    The weight decay is coupled L2 as in the release (the moments see `g + wd * w`). The weights'
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
        weight_decay=config.weight_decay, name="weight_adam")
    arch_optimizer = optimizers.Adam(
        learning_rate=cosine_schedule(arch_lr, arch_lr_min, max(search_steps, 1), name="arch_cosine_decay"),
        weight_decay=config.arch_weight_decay, name="arch_adam")
    return weight_optimizer, arch_optimizer
