"""Pictures and TensorBoard summaries of a search's architecture distribution.

`ArchitectureSnapshots` records the probability of every decision at the end
of each epoch (in `probabilities_history.json`, so a resumed search keeps the
epochs before the interruption), writes them to TensorBoard as images, and at
the end draws `probabilities.png` (heat maps over the epochs) and
`architecture.png` (the derived architecture) into the output folder.
"""

import json
import os

import keras
import numpy as np

from unas_keras import visualize
from unas_keras._atomic import write_text_atomic

SNAPSHOTS_FILE = "probabilities_history.json"


class ArchitectureSnapshots(keras.callbacks.Callback):
    """Keeps per-epoch architecture probabilities and draws the search's pictures.

    Args:
        output_dir: the search's output folder.
        log_dir: TensorBoard folder for probability images (None: no summaries).
        choice_labels: optional dict decision name -> choice labels for the heat map.
    """

    def __init__(self, output_dir, log_dir=None, choice_labels=None):
        super().__init__()
        self.output_dir = output_dir
        self.log_dir = log_dir
        self.choice_labels = choice_labels
        self.snapshots = self._load()
        self._writer = None
        self._trimmed = False

    @property
    def path(self):
        return os.path.join(self.output_dir, SNAPSHOTS_FILE)

    def _load(self):
        try:
            with open(self.path, encoding="utf-8") as f:
                snapshots = json.load(f)
            return snapshots if isinstance(snapshots, list) else []
        except (OSError, ValueError):
            return []

    def on_epoch_begin(self, epoch, logs=None):
        if not self._trimmed:  # a resumed run restarts at `epoch`: forget later snapshots
            self.snapshots = self.snapshots[:epoch]
            self._trimmed = True

    def on_epoch_end(self, epoch, logs=None):
        probabilities = self.model.arch_probabilities()
        self.snapshots.append(probabilities)
        write_text_atomic(self.path, json.dumps(self.snapshots))
        if self.log_dir:
            self._summaries(epoch, probabilities)

    def _summaries(self, epoch, probabilities):
        import tensorflow as tf

        if self._writer is None:
            self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "architecture"))
        with self._writer.as_default(step=epoch):
            for name, probs in probabilities.items():
                probs = np.asarray(probs, dtype=np.float32)
                tf.summary.image(f"probabilities/{name}", probs[None, :, :, None])
                entropy = -np.sum(probs * np.log(np.clip(probs, 1e-12, 1.0)), axis=-1)
                tf.summary.scalar(f"entropy/{name}", float(entropy.sum()))
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self.snapshots:
            visualize.plot_probability_evolution(
                self.snapshots, os.path.join(self.output_dir, "probabilities.png"),
                choice_labels=self.choice_labels, title="Architecture probabilities per epoch")
        visualize.plot_architecture(self.model.derive_architecture(),
                                    os.path.join(self.output_dir, "architecture.png"),
                                    title="Derived architecture")
