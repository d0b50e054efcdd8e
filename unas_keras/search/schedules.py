"""Learning-rate schedules of the UNAS search (docs/ALGORITHM.md section 6).

Weights: Adam, cosine decay 3e-4 -> 1e-4 over the whole run. Architecture
logits: Adam, cosine decay 1e-3 -> 3e-4 over the architecture steps (the
architecture optimizer only counts its own updates, so warm-up iterations do
not advance its schedule). On CIFAR both initial learning rates are scaled by
global batch / 64 (`scale_learning_rate`); the caller decides.

The schedules are plain `keras.optimizers.schedules.CosineDecay` objects
(serialisable, restored with the optimizer), with `alpha = final / initial`.
"""

import keras

#: Release defaults (before batch scaling).
WEIGHT_LR = 3e-4
WEIGHT_LR_MIN = 1e-4
WEIGHT_DECAY = 3e-4
ARCH_LR = 1e-3
ARCH_LR_MIN = 3e-4
ARCH_WEIGHT_DECAY = 1e-6
REFERENCE_BATCH_SIZE = 64


def _positive(value, what):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"`{what}` must be a positive number. Received: {value!r}")
    return value


def scale_learning_rate(learning_rate, global_batch_size, reference_batch_size=REFERENCE_BATCH_SIZE):
    """Linear batch scaling: `learning_rate * global_batch_size / reference_batch_size`.

    Args:
        learning_rate: the learning rate at `reference_batch_size`.
        global_batch_size: the batch size summed over every replica.
        reference_batch_size: the batch size `learning_rate` was tuned for (64).

    Returns:
        The scaled learning rate (float).
    """
    _positive(learning_rate, "learning_rate")
    _positive(global_batch_size, "global_batch_size")
    _positive(reference_batch_size, "reference_batch_size")
    return float(learning_rate) * float(global_batch_size) / float(reference_batch_size)


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
    _positive(initial_learning_rate, "initial_learning_rate")
    if isinstance(final_learning_rate, bool) or not isinstance(final_learning_rate, (int, float)) \
            or final_learning_rate < 0:
        raise ValueError(
            f"`final_learning_rate` must be a number >= 0. Received: {final_learning_rate!r}"
        )
    if final_learning_rate > initial_learning_rate:
        raise ValueError(
            f"`final_learning_rate` ({final_learning_rate}) must not exceed "
            f"`initial_learning_rate` ({initial_learning_rate})."
        )
    if isinstance(decay_steps, bool) or not isinstance(decay_steps, int) or decay_steps < 1:
        raise ValueError(f"`decay_steps` must be an int >= 1. Received: {decay_steps!r}")
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=float(initial_learning_rate),
        decay_steps=decay_steps,
        alpha=float(final_learning_rate) / float(initial_learning_rate),
        name=name or "CosineDecay",
    )


def weight_schedule(decay_steps, global_batch_size=None, initial_learning_rate=WEIGHT_LR,
                    final_learning_rate=WEIGHT_LR_MIN, reference_batch_size=REFERENCE_BATCH_SIZE):
    """The supernet weights' schedule (3e-4 -> 1e-4 cosine by default).

    Args:
        decay_steps: optimizer steps of the run (every iteration, warm-up included).
        global_batch_size: if given, both rates are scaled by
            `global_batch_size / reference_batch_size`.
        initial_learning_rate: rate at step 0 (before scaling).
        final_learning_rate: rate at the end (before scaling).
        reference_batch_size: see `scale_learning_rate`.

    Returns:
        A `keras.optimizers.schedules.CosineDecay`.
    """
    return _scaled_cosine(initial_learning_rate, final_learning_rate, decay_steps, global_batch_size,
                          reference_batch_size, "weight_cosine_decay")


def arch_schedule(decay_steps, global_batch_size=None, initial_learning_rate=ARCH_LR,
                  final_learning_rate=ARCH_LR_MIN, reference_batch_size=REFERENCE_BATCH_SIZE):
    """The architecture logits' schedule (1e-3 -> 3e-4 cosine by default).

    Args:
        decay_steps: architecture steps of the run (iterations after warm-up).
        global_batch_size: if given, both rates are scaled by
            `global_batch_size / reference_batch_size`.
        initial_learning_rate: rate at step 0 (before scaling).
        final_learning_rate: rate at the end (before scaling).
        reference_batch_size: see `scale_learning_rate`.

    Returns:
        A `keras.optimizers.schedules.CosineDecay`.
    """
    return _scaled_cosine(initial_learning_rate, final_learning_rate, decay_steps, global_batch_size,
                          reference_batch_size, "arch_cosine_decay")


def _scaled_cosine(initial_learning_rate, final_learning_rate, decay_steps, global_batch_size,
                   reference_batch_size, name):
    if global_batch_size is not None:
        initial_learning_rate = scale_learning_rate(initial_learning_rate, global_batch_size,
                                                    reference_batch_size)
        final_learning_rate = scale_learning_rate(final_learning_rate, global_batch_size,
                                                  reference_batch_size)
    return cosine_schedule(initial_learning_rate, final_learning_rate, decay_steps, name=name)


def search_optimizers(total_steps, warmup_steps=0, global_batch_size=None, scale_by_batch=True,
                      weight_decay=WEIGHT_DECAY, arch_weight_decay=ARCH_WEIGHT_DECAY):
    """The two Adam optimizers of a UNAS search with the release's settings.

    The weight decay is coupled L2 as in the release (PyTorch Adam's
    `weight_decay`: the moments see `g + wd * w`; `unas_keras.optimizers.Adam`).
    The weights' global-norm clip is `SearchModel(weight_clipnorm=5)`.

    Args:
        total_steps: search iterations of the run, warm-up included.
        warmup_steps: weight-only iterations (the architecture schedule spans
            `total_steps - warmup_steps` architecture steps).
        global_batch_size: the global batch size (needed when `scale_by_batch`).
        scale_by_batch: scale the learning rates by global batch / 64 (CIFAR).
        weight_decay: weight decay of the supernet weights.
        arch_weight_decay: weight decay of the architecture logits.

    Returns:
        `(weight_optimizer, arch_optimizer)`, two `unas_keras.optimizers.Adam`.
    """
    if scale_by_batch and global_batch_size is None:
        raise ValueError("`global_batch_size` is needed when `scale_by_batch` is True.")
    batch = global_batch_size if scale_by_batch else None
    from unas_keras import optimizers

    weight_opt = optimizers.Adam(
        learning_rate=weight_schedule(max(int(total_steps), 1), batch),
        weight_decay=weight_decay, name="weight_adam")
    arch_opt = optimizers.Adam(
        learning_rate=arch_schedule(max(int(total_steps) - int(warmup_steps), 1), batch),
        weight_decay=arch_weight_decay, name="arch_adam")
    return weight_opt, arch_opt
