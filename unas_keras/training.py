"""Training a derived network with the papers' evaluation recipe.

The recipe is explicit arguments (the configs in `configs/` hold the paper's
values per experiment): the global gradient norm clipped, then SGD with
momentum and coupled L2 weight decay with PyTorch semantics
(`unas_keras.optimizers.SGD`), a linear learning-rate warm-up then cosine
decay, label smoothing, the auxiliary-head loss weight and a linear drop-path
ramp.
"""

import dataclasses
import json
import os
from typing import Optional

import keras
import numpy as np

from unas_keras import _atomic, _compat, optimizers

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
        The compiled model; when it is built, its optimizer, loss and metrics are built too.
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
    if model.built:
        _compat.build_training_state(model)  # else fit traces its train function twice
    return model


@dataclasses.dataclass(frozen=True)
class Recipe:
    """The evaluation recipe of a derived network: its epochs and the arguments of `compile_for_training`.

    Attributes:
        epochs: total epochs (warm-up included).
        learning_rate: peak SGD learning rate.
        momentum: SGD momentum.
        weight_decay: coupled L2 weight decay.
        warmup_epochs: linear learning-rate warm-up epochs.
        label_smoothing: cross-entropy label smoothing.
        auxiliary_weight: weight of the auxiliary head's loss.
        clipnorm: clip of the global gradient norm (None: no clipping).
    """

    epochs: int
    learning_rate: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 3e-4
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    auxiliary_weight: float = 0.4
    clipnorm: Optional[float] = 5.0

    @classmethod
    def from_options(cls, options):
        """The recipe of a dict of settings that holds its fields (other keys are ignored)."""
        return cls(**{f.name: options[f.name] for f in dataclasses.fields(cls) if f.name in options})

    def compile(self, model, steps_per_epoch):
        """Compiles `model` with this recipe (see `compile_for_training`); returns it."""
        options = dataclasses.asdict(self)
        epochs = options.pop("epochs")
        return compile_for_training(model, steps_per_epoch=steps_per_epoch, epochs=epochs, **options)


def one_hot_labels(dataset, num_classes, num_outputs=1):
    """Maps a `(images, int labels)` tf.data pipeline to one-hot targets.

    With `num_outputs=2` the target is repeated for the auxiliary output.
    """
    import tensorflow as tf

    def convert(images, labels):
        target = tf.one_hot(tf.cast(labels, tf.int32), num_classes)
        return images, (target, target) if num_outputs == 2 else target

    return dataset.map(convert, num_parallel_calls=tf.data.AUTOTUNE)


def inference_model(model):
    """The inference graph of a trained model: its first output only.

    Derived networks output `logits`, or `[logits, aux_logits]` when trained
    with the auxiliary head; the auxiliary head is a training-only output. A
    single-output model is returned as is.
    """
    outputs = model.outputs
    if not isinstance(outputs, (list, tuple)) or len(outputs) == 1:
        return model
    return keras.Model(model.inputs, outputs[0], name=f"{model.name}_inference")


def accuracy_key(logs, prefix=""):
    """The key of the (main output's) accuracy in Keras logs, e.g. `accuracy` or `classifier_accuracy`.

    Returns None when there is none. Auxiliary outputs carry no accuracy metric.
    """
    keys = [k for k in logs if k.startswith(prefix) and k.endswith("accuracy")]
    if prefix == "":
        keys = [k for k in keys if not k.startswith("val_")]
    return sorted(keys, key=len)[0] if keys else None


# ------------------------------------------------------------------- metadata beside a saved model
def metadata_path(model_path):
    """The JSON file `apps/train.py` writes beside a model: `<model_path>.json`."""
    return os.fspath(model_path) + ".json"


def write_metadata(model_path, metadata):
    """Writes a model's metadata (data set, input, outputs, recipe) atomically beside it."""
    _write_json(metadata_path(model_path), metadata)


def read_metadata(model_path):
    """The metadata written beside `model_path`, or None if there is none.

    Raises:
        ValueError: the file exists but is not a JSON object.
    """
    path = metadata_path(model_path)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            metadata = json.load(f)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read the model metadata {path}: {err}") from None
    if not isinstance(metadata, dict):
        raise ValueError(f"the model metadata {path} is not a JSON object.")
    return metadata


def _write_json(path, payload):
    _atomic.write_text_atomic(path, json.dumps(payload, indent=2) + "\n")


def save_model_atomic(model, path):
    """`model.save(path)` through a temporary file and a rename (a crash leaves the old file or none)."""
    return _atomic.write_file_atomic(path, model.save)


# ------------------------------------------------------------------- exact resume
class EpochSeeds(keras.callbacks.Callback):
    """Reseeds every random layer (dropout, drop-path) at each epoch start from `(seed, epoch)`.

    Keras does not save seed-generator states with the weights, so a resumed
    run would otherwise replay other masks; with this callback epoch `e`
    draws the same masks whether or not the run was interrupted before it.

    Args:
        seed: integer seed of the run.
    """

    def __init__(self, seed):
        super().__init__()
        self.seed = int(seed)

    def on_epoch_begin(self, epoch, logs=None):
        states = [v for v in self.model.variables if v.name == "seed_generator_state"]
        rng = np.random.default_rng([self.seed, int(epoch)])
        for variable in states:
            high = np.iinfo(np.int32).max
            value = rng.integers(1, high, size=tuple(variable.shape)).astype(keras.backend.standardize_dtype(
                variable.dtype))
            variable.assign(value)


class TrainingBackup(keras.callbacks.Callback):
    """Per-epoch backup of the whole training state, written atomically, and its restore.

    Like `keras.callbacks.BackupAndRestore` (weights and optimizer state in a
    `.weights.h5` file at each epoch end), with two differences that exact
    resume after `kill -9` needs: the file is replaced atomically (a kill
    mid-write leaves the previous backup, never a truncated one), and the
    epoch to resume from is the restored optimizer's step count divided by
    `steps_per_epoch`, so it can never disagree with the weights. `restore`
    runs before `fit`, so the caller can also position its data stream.

    Args:
        backup_dir: folder of the backup.
        steps_per_epoch: optimizer steps per epoch.
    """

    def __init__(self, backup_dir, steps_per_epoch):
        super().__init__()
        self.backup_dir = os.fspath(backup_dir)
        self.steps_per_epoch = int(steps_per_epoch)
        self.path = os.path.join(self.backup_dir, "latest.weights.h5")

    def restore(self, model):
        """Loads the backup into a compiled `model`; returns the epoch to resume from (0 if none)."""
        if not os.path.exists(self.path):
            return 0
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        model.load_weights(self.path)
        steps = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
        if steps % self.steps_per_epoch:
            raise ValueError(f"the backup {self.path} holds {steps} steps, not a whole number of epochs of "
                             f"{self.steps_per_epoch} steps; it belongs to another run.")
        return steps // self.steps_per_epoch

    def on_epoch_end(self, epoch, logs=None):
        _atomic.write_file_atomic(self.path, self.model.save_weights)


class BestModelCheckpoint(keras.callbacks.Callback):
    """Saves the model whenever `monitor` reaches a new maximum, atomically; the best value survives resume.

    Args:
        path: where to save (`.keras`).
        state_path: JSON file that records the best value and epoch.
        monitor: the log key to maximise (e.g. `val_accuracy`); None: the
            main output's validation accuracy.
    """

    def __init__(self, path, state_path, monitor=None):
        super().__init__()
        self.path = os.fspath(path)
        self.state_path = os.fspath(state_path)
        self.monitor = monitor
        self.best = None
        if os.path.exists(self.state_path):
            with open(self.state_path, encoding="utf-8") as f:
                self.best = json.load(f).get("value")

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        key = self.monitor or accuracy_key(logs, prefix="val_")
        if key is None or logs.get(key) is None:
            return
        value = float(logs[key])
        if self.best is not None and value <= self.best:
            return
        save_model_atomic(self.model, self.path)
        self.best = value
        _write_json(self.state_path, {"monitor": key, "value": value, "epoch": epoch + 1})
