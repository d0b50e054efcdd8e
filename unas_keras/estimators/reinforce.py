"""REINFORCE (score function) with a moving-average baseline."""

import keras
from keras import ops

from unas_keras.estimators import base


class Reinforce(base.Estimator):
    """Score-function estimator: `stop_grad(L(z) - b) * log p(z) + b`.

    Unbiased for any loss, including one with no gradient (the loss is only
    evaluated at hard samples). The estimator keeps a moving-average baseline
    in a non-trainable `keras.Variable`: the first step uses the batch mean,
    later steps use the average, which is updated after use with
    `next_baseline`. `surrogate_loss` does this by itself; a caller running
    its own steps (the search engine) uses `baseline_for_step` and
    `update_baseline` (see `Estimator`).

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
        self._baseline = None      # the moving average
        self._calls = None         # `surrogate_loss` only: its calls since the last reset

    # ---------------------------------------------------------------- state
    @property
    def variables(self):
        return [] if self._baseline is None else [self._baseline]

    def create_state(self):
        """Creates the baseline variable (float32, mean of the replicas' values under `tf.distribute`)."""
        if self._baseline is None:
            self._baseline = keras.Variable(0.0, trainable=False, dtype="float32", name="reinforce_baseline",
                                            aggregation="mean")

    def baseline_for_step(self, hard_loss, step, first_step=0):
        """The batch mean of `hard_loss` up to the first step, the moving average after it."""
        self.create_state()
        return ops.where(step <= first_step, ops.cast(ops.mean(hard_loss), "float32"), self._baseline.value)

    def update_baseline(self, baseline, hard_loss):
        """Moves the average towards this step's batch mean (`next_baseline`)."""
        self._baseline.assign(base.next_baseline(baseline, ops.mean(hard_loss), self.baseline_decay))

    @property
    def baseline(self):
        """The current moving-average baseline (None before the state exists)."""
        if self._baseline is None:
            return None
        return self._baseline.value

    def reset_baseline(self):
        """Forgets the baseline; the next `surrogate_loss` call re-initialises it."""
        if self._calls is not None:
            self._calls.assign(0)

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
        if self._calls is None:
            self._calls = keras.Variable(0, trainable=False, dtype="int64", name="reinforce_calls")
        # On the first call the baseline used is the batch mean; it is updated after use.
        used = self.baseline_for_step(hard_loss, step=self._calls.value)
        loss = self.surrogate_from_losses(log_prob, hard_loss, None, baseline=used)
        self.update_baseline(used, hard_loss)
        self._calls.assign_add(1)
        return loss

    def get_config(self):
        return {"temperature": self.temperature, "baseline_decay": self.baseline_decay}
