"""Scoring an architecture: train its derived network with the paper's recipe, evaluate it, profile it.

`score_architecture` is the one train-evaluate-profile sequence of the package: `apps/train.py` runs it
for a full training (with its backup, best-model and TensorBoard callbacks), `UNASTuner` for the short
training that ranks each trial's architecture.

```python
from unas_keras import data, scoring, training

train_ds, val_ds, info = data.eval_data("digits", image_size=16, batch_size=32, channels=1, start_epoch=0)
score = scoring.score_architecture(arch, train_ds, val_ds, num_classes=info.num_classes,
                                   input_shape=info.input_shape, steps_per_epoch=info.steps_per_epoch,
                                   recipe=training.Recipe(epochs=2))
score.metrics   # {"val_accuracy": ..., "val_loss": ..., "params": ..., "macs": ...}
```
"""

import contextlib
import dataclasses
from typing import Any, Dict

import keras

from unas_keras import _compat
from unas_keras import profile as profile_lib
from unas_keras import training
from unas_keras.networks import build_model
from unas_keras.search import graph_optimization as graph_optimization_lib

#: The metrics `score_architecture` can report, in order.
METRIC_NAMES = ("val_accuracy", "val_loss", "params", "macs", "latency_ms")


@dataclasses.dataclass(frozen=True)
class LatencySettings:
    """How `score_architecture` times a network with LiteRT (batch 1, float32 TFLite).

    Attributes:
        threads: LiteRT CPU threads.
        runs: timed invocations (the median is reported).
    """

    threads: int = 1
    runs: int = 20


@dataclasses.dataclass
class Score:
    """What `score_architecture` returns.

    Attributes:
        model: the trained derived network (compiled with the recipe).
        metrics: `val_accuracy`, `val_loss`, `params` (auxiliary head excluded) and, when they could be
            measured, `macs` and `latency_ms` (see `METRIC_NAMES`); plain floats.
        history: Keras' per-epoch logs of the training (lists of floats).
        errors: metric name -> why it is missing (e.g. a network that does not convert to TFLite).
        initial_epoch: the epoch the training started from (> 0 when resumed from a backup).
    """

    model: Any
    metrics: Dict[str, float]
    history: Dict[str, list]
    errors: Dict[str, str]
    initial_epoch: int = 0


def score_architecture(architecture, train_batches, val_batches, *, num_classes, input_shape, steps_per_epoch,
                       recipe, network_options=None, seed=0, strategy=None, callbacks=(), backup=None,
                       on_start=None, validate_each_epoch=False, verbose=0, count_macs=True, latency=None,
                       keep_kernel_cache=False, graph_optimization="auto"):
    """Builds an architecture's derived network, trains it with `recipe`, evaluates and profiles it.

    The sequence: seed (`keras.utils.set_random_seed(seed)`), `build_model` and `recipe.compile` (in
    `strategy`'s scope), restore `backup`, `model.fit`, `model.evaluate` on `val_batches`, then parameters,
    multiply-adds and (with `latency`) LiteRT latency. Every epoch's random layers are reseeded from
    `(seed, epoch)` (`training.EpochSeeds`) and a network built with a `drop_path_rate` gets the linear
    drop-path ramp, so a resumed training ends with the same model as an uninterrupted one.

    Args:
        architecture: a `unas_keras.Architecture`.
        train_batches: the training batches, `(images, int labels)`, at least `recipe.epochs *
            steps_per_epoch` of them; or a function `start_epoch -> such batches from that epoch on` (needed
            to resume from `backup`).
        val_batches: the evaluation batches, `(images, int labels)`.
        num_classes: classes of the classifier.
        input_shape: `(height, width, channels)`.
        steps_per_epoch: optimizer steps per epoch.
        recipe: a `training.Recipe`.
        network_options: options of `build_model` (e.g. `init_channels`, `auxiliary`, `drop_path_rate`).
        seed: seed of the initial weights and of the random layers.
        strategy: a `tf.distribute.Strategy` to build and train under (None: the default).
        callbacks: more Keras callbacks for `fit` (after the recipe's own).
        backup: a `training.TrainingBackup`: restored before `fit` (the training resumes from its epoch)
            and written at each epoch end, after `callbacks`.
        on_start: called as `on_start(model, initial_epoch)` just before `fit` (e.g. to print a line).
        validate_each_epoch: evaluate on `val_batches` at each epoch end too (`val_*` logs for callbacks).
        verbose: `fit`'s verbosity.
        count_macs: count the multiply-adds.
        keep_kernel_cache: seed without clearing TensorFlow's kernel cache
            (`_compat.set_random_seed_keeping_functions`, the same seeds): a search step traced earlier in
            the process and reused later (`UNASTuner`'s trials) stays instantiated.
        latency: `LatencySettings` to time the network with LiteRT, or None.
        graph_optimization: how TensorFlow's graph optimiser treats the training and evaluation
            functions: "auto", "lean" or "full", as for the search step
            (`unas_keras.search.graph_optimization`, which has the measurements). The results do not
            depend on it.

    Returns:
        A `Score`.

    Raises:
        ValueError: bad settings, or empty evaluation data.
    """
    network_options = dict(network_options or {})
    rewrite_options = graph_optimization_lib.rewrite_options(graph_optimization)  # raises on a bad name
    if keep_kernel_cache:
        _compat.set_random_seed_keeping_functions(seed)
    else:
        keras.utils.set_random_seed(seed)
    with _scope(strategy):
        model = build_model(architecture, num_classes, input_shape, **network_options)
        recipe.compile(model, steps_per_epoch)
        initial_epoch = backup.restore(model) if backup is not None else 0
    if callable(train_batches):
        train_batches = train_batches(initial_epoch)
    elif initial_epoch:
        raise ValueError("Resuming from a backup needs train_batches as a function of the start epoch.")
    num_outputs = len(model.outputs)
    val_batches = training.one_hot_labels(val_batches, num_classes, num_outputs)
    fit_callbacks = [training.EpochSeeds(seed)]
    if network_options.get("drop_path_rate"):
        fit_callbacks.append(training.DropPathSchedule(network_options["drop_path_rate"], recipe.epochs))
    fit_callbacks += list(callbacks) + ([backup] if backup is not None else [])
    if on_start is not None:
        on_start(model, initial_epoch)
    with _compat.function_rewrite_options(rewrite_options):
        history = model.fit(training.one_hot_labels(train_batches, num_classes, num_outputs),
                            validation_data=val_batches if validate_each_epoch else None, epochs=recipe.epochs,
                            initial_epoch=initial_epoch, steps_per_epoch=steps_per_epoch,
                            callbacks=fit_callbacks, shuffle=False, verbose=verbose)
        metrics = _evaluate_compiled(model, val_batches)
    measured, errors = profile_model(model, count_macs=count_macs, latency=latency)
    metrics.update(measured)
    return Score(model=model, metrics=metrics, errors=errors, initial_epoch=initial_epoch,
                 history={k: [float(v) for v in values] for k, values in history.history.items()})


def evaluate(model, val_batches, num_classes):
    """Validation accuracy and loss of a derived network with Keras' `model.evaluate`.

    A model that is not compiled (e.g. rebuilt and loaded from weights) is compiled with the recipe's loss
    and metrics first (`training.compile_for_training`'s defaults: cross-entropy on logits, auxiliary
    loss weight 0.4, accuracy of the main output).

    Args:
        model: a derived network (`logits` or `[logits, aux_logits]` outputs).
        val_batches: `(images, int labels)` batches.
        num_classes: classes of the classifier.

    Returns:
        `{"val_accuracy": float or None, "val_loss": float}` (None: the model has no accuracy metric).
    """
    if not model.compiled:
        training.compile_for_training(model, steps_per_epoch=1, epochs=1)  # its optimizer is not used
    return _evaluate_compiled(model, training.one_hot_labels(val_batches, num_classes, len(model.outputs)))


def _evaluate_compiled(model, one_hot_batches):
    results = model.evaluate(one_hot_batches, verbose=0, return_dict=True)
    key = training.accuracy_key(results)
    return {"val_accuracy": float(results[key]) if key else None, "val_loss": float(results["loss"])}


def profile_model(model, count_macs=True, latency=None):
    """Parameters, multiply-adds and LiteRT latency of a network.

    Args:
        model: a built `keras.Model`.
        count_macs: count the multiply-adds (`unas_keras.profile.count_macs`).
        latency: `LatencySettings`, or None not to time the network.

    Returns:
        `(metrics, errors)`: `metrics` has `params` (auxiliary head excluded) and, when measured, `macs`
        and `latency_ms`; `errors` maps a metric that could not be measured to the reason.
    """
    metrics = {"params": float(profile_lib.count_params(model, exclude_auxiliary=True))}
    errors = {}
    if count_macs:
        try:
            metrics["macs"] = float(profile_lib.count_macs(model))
        except (ValueError, TypeError) as error:
            errors["macs"] = str(error)
    if latency is not None:
        try:
            from unas_keras import latency as latency_lib

            metrics["latency_ms"] = float(latency_lib.measure_tflite(model, threads=latency.threads,
                                                                     runs=latency.runs))
        except Exception as error:  # conversion or runtime failure: record it, keep the score
            errors["latency_ms"] = f"{type(error).__name__}: {error}"
    return metrics, errors


def _scope(strategy):
    return strategy.scope() if strategy is not None else contextlib.nullcontext()
