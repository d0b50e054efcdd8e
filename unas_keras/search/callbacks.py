"""Keras callbacks of a search run: per-epoch history, latency report, progress lines, and checkpoints.

They work both under `model.fit` and under the custom multi-worker loop (`distributed.py`), which drives
them through a `keras.callbacks.CallbackList` with the same calls `fit` makes.

Batch indices: when a run resumes in the middle of epoch `e` at step `s`, the first (partial) epoch is
run with `steps_per_epoch - s` steps and its batches are numbered from 0 by `fit`; the callbacks add the
offset themselves (`resume_epoch`, `resume_step`), so the step numbers they record and print are always
positions within the full epoch.
"""

import math
import sys
import time

import keras
import numpy as np

from unas_keras.search import checkpoint as checkpoint_lib


def _to_float(value):
    try:
        value = float(np.asarray(value))
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


class HistoryRecorder(keras.callbacks.Callback):
    """Collects the epoch-end logs into a dict of per-epoch lists.

    Keys: every metric in the logs plus `epoch` (1-based) and `epoch_time_s`. The history survives a
    resume through `get_state` / `set_state` (it is stored in every checkpoint).
    """

    def __init__(self):
        super().__init__()
        self.history = {}
        self._epoch_start = None

    def get_state(self):
        """Returns a JSON-serialisable copy of the history."""
        return {k: list(v) for k, v in self.history.items()}

    def set_state(self, state):
        """Replaces the history with a saved one."""
        self.history = {k: list(v) for k, v in (state or {}).items()}

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        row = {"epoch": epoch + 1}
        for key, value in sorted(logs.items()):
            row[key] = _to_float(value)
        row["epoch_time_s"] = round(time.time() - (self._epoch_start or time.time()), 3)
        for key, value in row.items():
            self.history.setdefault(key, []).append(value)


class LatencyReport(keras.callbacks.Callback):
    """Adds the derived (argmax) architecture's latency and whether it meets the target to the epoch logs.

    Register it before the callbacks that read the logs (history, progress, TensorBoard): Keras passes
    one logs dict to every callback in turn.

    Args:
        latency: the latency model (`predict_ms(architecture)`).
        target_ms: the latency target, or None (then only `argmax_latency_ms` is added).

    Logs added at each epoch end: `argmax_latency_ms` (latency of `model.derive_architecture()`, the
    architecture the run would return now) and, with a target, `target_met` (1.0 when
    `argmax_latency_ms <= target_ms`, else 0.0). The model logs `latency_ms` itself: the expected latency
    under the current distribution (linear surrogate).
    """

    def __init__(self, latency, target_ms=None):
        super().__init__()
        self.latency = latency
        self.target_ms = target_ms

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        argmax_ms = float(self.latency.predict_ms(self.model.derive_architecture()))
        logs["argmax_latency_ms"] = argmax_ms
        if self.target_ms is not None:
            logs["target_met"] = float(argmax_ms <= self.target_ms)


class ProgressLogger(keras.callbacks.Callback):
    """Prints one line per epoch (and a line every `interval_s` seconds inside long epochs).

    Args:
        epochs: total number of epochs.
        steps_per_epoch: steps in a full epoch.
        warmup_epochs: epochs of weight-only warm-up (marked in the output).
        interval_s: seconds between in-epoch progress lines (only with verbose >= 1).
        verbose: 0 silent, 1 epoch lines and occasional progress, 2 also a line every `interval_s` / 6.
        stream: where to print (default stdout).
        resume_epoch, resume_step: position the run was resumed at (for batch numbering).
    """

    _KEYS = ("loss", "train_loss", "val_loss", "accuracy", "val_accuracy", "gen_gap", "entropy",
             "latency_ms", "argmax_latency_ms", "target_met")
    # Warm-up iterations train the weights only: nothing is evaluated on the val batches.
    _NOT_IN_WARMUP = ("val_loss", "val_accuracy", "gen_gap")

    def __init__(self, epochs, steps_per_epoch, warmup_epochs=0, interval_s=30.0, verbose=1, stream=None,
                 resume_epoch=0, resume_step=0):
        super().__init__()
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.warmup_epochs = warmup_epochs
        self.verbose = verbose
        self.interval_s = interval_s if verbose < 2 else max(interval_s / 6.0, 1.0)
        self.stream = stream
        self.resume_epoch = resume_epoch
        self.resume_step = resume_step
        self._epoch = 0
        self._offset = 0
        self._t_epoch = None
        self._t_last = None
        self._t_train = None
        self._t_first = None
        self._steps_done = 0

    def _print(self, text):
        if self.verbose:
            print(text, file=self.stream or sys.stdout, flush=True)

    def on_train_begin(self, logs=None):
        if self._t_train is None:
            self._t_train = time.time()
            self._print("(the first step of the warm-up and of the search phase each trace and compile the "
                        "supernet's step once; that can take minutes)")

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._offset = self.resume_step if epoch == self.resume_epoch else 0
        self._t_epoch = self._t_last = time.time()
        self._t_first = None

    def on_train_batch_end(self, batch, logs=None):
        self._steps_done += 1
        now = time.time()
        if batch == 0:
            # The rate excludes the epoch's first step (it may include tracing and compilation).
            self._t_first = now
        if self.verbose and now - self._t_last >= self.interval_s:
            self._t_last = now
            step = batch + 1 + self._offset
            if batch > 0:
                rate = (now - self._t_first) / batch
                timing = f"{rate:.2f} s/step, epoch ends in {rate * (self.steps_per_epoch - step):.0f} s"
            else:
                timing = f"first step {now - self._t_epoch:.0f} s"
            self._print(f"  epoch {self._epoch + 1}/{self.epochs} step {step}/{self.steps_per_epoch} "
                        f"({timing}){self._format(logs, self._epoch < self.warmup_epochs)}")

    def on_epoch_end(self, epoch, logs=None):
        now = time.time()
        elapsed = now - self._t_epoch
        remaining_epochs = self.epochs - epoch - 1
        eta = elapsed * remaining_epochs
        phase = "warm-up" if epoch < self.warmup_epochs else "search"
        self._print(f"epoch {epoch + 1}/{self.epochs} [{phase}] {elapsed:.1f} s"
                    f"{self._format(logs, epoch < self.warmup_epochs)}"
                    + (f" | about {eta:.0f} s left" if remaining_epochs else ""))

    def _format(self, logs, warmup=False):
        if not logs:
            return ""
        parts = []
        for key in self._KEYS:
            if key in logs and not (warmup and key in self._NOT_IN_WARMUP):
                value = _to_float(logs[key])
                if value is not None:
                    parts.append(f"{key} {value:.4f}")
        return (" - " + ", ".join(parts)) if parts else ""


class SearchCheckpoint(keras.callbacks.Callback):
    """Checkpoints the search at every epoch end and every `every_steps` steps inside an epoch.

    It also re-applies the saved metric accumulators when a run resumes mid-epoch (`fit` resets the
    metrics at the start of every epoch, after the variables were restored), so the resumed epoch's
    logged means equal an uninterrupted run's.

    Args:
        checkpointer: a `checkpoint.Checkpointer`.
        steps_per_epoch: steps in a full epoch.
        step_variable: the model's iteration counter (its value names the checkpoint).
        history: the `HistoryRecorder` whose state goes into each checkpoint.
        every_steps: also save every this many steps inside an epoch (None: only at epoch ends).
        metric_variables: the metrics' accumulator variables.
        resume_epoch, resume_step: where the run resumed.
        resume_metric_values: values of `metric_variables` saved at the resume point.
        extra_state: a callable returning extra JSON state to store (e.g. the configuration digest).
    """

    def __init__(self, checkpointer, steps_per_epoch, step_variable, history, every_steps=None,
                 metric_variables=(), resume_epoch=0, resume_step=0, resume_metric_values=None,
                 extra_state=None):
        super().__init__()
        self.checkpointer = checkpointer
        self.steps_per_epoch = steps_per_epoch
        self.step_variable = step_variable
        self.history = history
        self.every_steps = every_steps
        self.metric_variables = list(metric_variables)
        self.resume_epoch = resume_epoch
        self.resume_step = resume_step
        self.resume_metric_values = resume_metric_values
        self.extra_state = extra_state
        self._epoch = 0
        self._offset = 0
        self.last_saved_step = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._offset = 0
        if epoch == self.resume_epoch and self.resume_step > 0:
            self._offset = self.resume_step
            if self.resume_metric_values is not None:
                checkpoint_lib.assign_all(self.metric_variables, self.resume_metric_values)

    def on_train_batch_end(self, batch, logs=None):
        step_in_epoch = batch + 1 + self._offset
        if (self.every_steps and step_in_epoch % self.every_steps == 0
                and step_in_epoch < self.steps_per_epoch):
            self.save(self._epoch, step_in_epoch)

    def on_epoch_end(self, epoch, logs=None):
        # Runs after HistoryRecorder.on_epoch_end (it is registered after it), so the state holds
        # this epoch's row.
        self.save(epoch + 1, 0)

    def save(self, epoch, step_in_epoch):
        """Writes a checkpoint whose loop position is (`epoch`, `step_in_epoch`)."""
        global_step = int(np.asarray(self.step_variable.numpy()))
        state = {"epoch": int(epoch), "step_in_epoch": int(step_in_epoch), "global_step": global_step,
                 "history": self.history.get_state()}
        if self.extra_state is not None:
            state.update(self.extra_state())
        self.checkpointer.save(global_step, state)
        self.last_saved_step = global_step
