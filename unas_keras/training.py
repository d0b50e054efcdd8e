"""Training a derived network with the papers' evaluation recipe.

The recipe is explicit arguments (the configs in `configs/` hold the paper's
values per experiment): the global gradient norm clipped, then SGD with
momentum and coupled L2 weight decay with PyTorch semantics
(`unas_keras.optimizers.SGD`), a linear learning-rate warm-up then cosine
decay, label smoothing, the auxiliary-head loss weight and a linear drop-path
ramp.
"""

import keras

from unas_keras import optimizers

from unas_keras.layers.drop_path import DropPathSchedule  # noqa: F401  (re-exported)

def learning_rate_schedule(learning_rate, steps_per_epoch, epochs, warmup_epochs=0, final_fraction=0.0):
    """Linear warm-up to `learning_rate`, then cosine decay (Keras `CosineDecay`).

    Args:
        learning_rate: the peak learning rate.
        steps_per_epoch: optimizer steps per epoch.
        epochs: total epochs (warm-up included).
        warmup_epochs: epochs of linear warm-up from 0.
        final_fraction: the cosine ends at `final_fraction * learning_rate`.
    """
    warmup_steps = int(warmup_epochs * steps_per_epoch)
    decay_steps = max(int(epochs * steps_per_epoch) - warmup_steps, 1)
    if warmup_steps:
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0, decay_steps=decay_steps, alpha=final_fraction,
            warmup_target=learning_rate, warmup_steps=warmup_steps)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=learning_rate, decay_steps=decay_steps, alpha=final_fraction)


def compile_for_training(model, steps_per_epoch, epochs, learning_rate=0.05, momentum=0.9,
                         weight_decay=3e-4, warmup_epochs=0, label_smoothing=0.0,
                         auxiliary_weight=0.4, clipnorm=5.0):
    """Compiles a derived network with the evaluation recipe.

    The update is the paper's PyTorch loop: the raw gradient is clipped by its
    global norm (`clipnorm`), then `d = g + weight_decay * w` (coupled L2),
    `buf = momentum * buf + d`, `w -= lr * buf` (`unas_keras.optimizers.SGD`).
    A model with two outputs (logits and auxiliary logits) gets the auxiliary
    loss with weight `auxiliary_weight`; only the first output has the
    `accuracy` metric.

    Args:
        model: the derived `keras.Model` (outputs logits, or `[logits, aux_logits]`).
        steps_per_epoch: optimizer steps per epoch (for the schedule).
        epochs: total epochs.
        learning_rate: peak SGD learning rate.
        momentum: SGD momentum.
        weight_decay: coupled L2 weight decay, added to the gradient before
            the momentum (PyTorch `weight_decay`; 0 disables it).
        warmup_epochs: linear learning-rate warm-up epochs.
        label_smoothing: cross-entropy label smoothing.
        auxiliary_weight: weight of the auxiliary head's loss.
        clipnorm: clip of the global norm of all the weights' gradients
            together (`None` disables it).

    Returns:
        The compiled model.
    """
    if epochs < 1 or steps_per_epoch < 1:
        raise ValueError(f"epochs and steps_per_epoch must be >= 1, got {epochs} and {steps_per_epoch}.")
    optimizer = optimizers.SGD(
        learning_rate=learning_rate_schedule(learning_rate, steps_per_epoch, epochs, warmup_epochs),
        momentum=momentum, weight_decay=weight_decay, global_clipnorm=clipnorm)
    loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=label_smoothing)
    num_outputs = len(model.outputs) if isinstance(model.outputs, (list, tuple)) else 1
    if num_outputs == 2:
        model.compile(optimizer=optimizer, loss=[loss, loss], loss_weights=[1.0, auxiliary_weight],
                      metrics=[["accuracy"], []])
    else:
        model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
    return model


def one_hot_labels(dataset, num_classes, num_outputs=1):
    """Maps a `(images, int labels)` tf.data pipeline to one-hot targets.

    With `num_outputs=2` the target is repeated for the auxiliary output.
    """
    import tensorflow as tf

    def convert(images, labels):
        target = tf.one_hot(tf.cast(labels, tf.int32), num_classes)
        return images, (target, target) if num_outputs == 2 else target

    return dataset.map(convert, num_parallel_calls=tf.data.AUTOTUNE)
