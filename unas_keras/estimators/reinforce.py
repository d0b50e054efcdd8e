"""REINFORCE (score function) with a moving-average baseline."""

import keras
from keras import ops

from unas_keras.estimators import base


class Reinforce(base.Estimator):
    """Score-function estimator: `stop_grad(L(z) - b) * log p(z) + b`.

    Unbiased for any loss, including one with no gradient (the loss is only
    evaluated at hard samples). `surrogate_loss` keeps its own moving-average
    baseline in a non-trainable `keras.Variable`: the first call sets it to
    the batch mean, later calls use it and then update it with
    `next_baseline`. A caller that owns the baseline (the search engine)
    passes it to `surrogate_from_losses` instead.

    Args:
        temperature: accepted for a uniform interface; unused.
        baseline_decay: moving-average decay of the baseline, in `[0, 1)`.
    """

    name = "reinforce"
    needs_hard_loss = True
    needs_relaxed_loss = False

    def __init__(self, temperature=0.4, baseline_decay=0.9):
        super().__init__(temperature=temperature)
        self.baseline_decay = base._check_decay(baseline_decay)  # pylint: disable=protected-access
        self._baseline = None
        self._initialized = None

    def _ensure_state(self):
        if self._baseline is None:
            self._baseline = keras.Variable(
                0.0, trainable=False, dtype="float32", name="reinforce_baseline"
            )
            self._initialized = keras.Variable(
                False, trainable=False, dtype="bool", name="reinforce_baseline_initialized"
            )

    @property
    def baseline(self):
        """The current moving-average baseline (None before the first call)."""
        if self._baseline is None:
            return None
        return self._baseline.value

    def reset_baseline(self):
        """Forgets the baseline; the next call re-initialises it."""
        if self._initialized is not None:
            self._initialized.assign(False)

    def sample(self, logits, seed=None):
        logits = base.check_float_tensor(logits, "logits", min_rank=1)
        log_p, _, z = base.gumbel_perturbed_logits(logits, seed)
        hard = base.hard_one_hot(z)
        return base.CategoricalSample(hard=hard, relaxed=hard, log_prob=base.log_prob_of(hard, log_p))

    def surrogate_from_losses(self, log_prob, hard_loss, relaxed_loss=None, baseline=None):
        del relaxed_loss
        log_prob = base.check_per_sample(log_prob, "log_prob")
        if hard_loss is None:
            raise ValueError("reinforce needs `hard_loss` (the loss at the hard samples).")
        hard_loss = ops.stop_gradient(
            ops.cast(base.check_per_sample(hard_loss, "hard_loss"), log_prob.dtype)
        )
        if baseline is None:
            baseline = ops.zeros((), dtype=log_prob.dtype)
        baseline = ops.stop_gradient(ops.cast(baseline, log_prob.dtype))
        return ops.mean((hard_loss - baseline) * log_prob) + baseline

    def _surrogate(self, log_prob, hard_loss, relaxed_loss):
        self._ensure_state()
        batch_mean = ops.cast(ops.mean(hard_loss), "float32")
        used = ops.where(self._initialized.value, self._baseline.value, batch_mean)
        loss = self.surrogate_from_losses(log_prob, hard_loss, None, baseline=used)
        # Updated after use; on the first call `used` is the batch mean itself.
        self._baseline.assign(base.next_baseline(used, batch_mean, self.baseline_decay))
        self._initialized.assign(True)
        return loss

    def get_config(self):
        return {"temperature": self.temperature, "baseline_decay": self.baseline_decay}
