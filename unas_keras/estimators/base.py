"""The estimator interface and the pieces every estimator shares.

An estimator turns categorical logits into samples and per-sample losses into
a scalar *surrogate loss* whose gradient with respect to the logits estimates

    d/d logits  E_{z ~ Cat(softmax(logits))} [ L(z) ].

Two levels of API:

* `surrogate_loss(logits, loss_fn, ...)`: everything in one call, for any
  small categorical problem (logits `[G, K]`).
* `sample(logits, seed)` and `surrogate_from_losses(...)`: the two halves, for
  a caller (the search engine) that evaluates the losses itself, possibly on a
  large network and inside `tf.function` / `tf.distribute`.

Only `keras.ops` and `keras.random` are used here.
"""

from typing import Any, NamedTuple

import keras
from keras import ops

from unas_keras import _settings
from unas_keras.estimators import seeds as seeds_lib

# Uniform noise is kept inside [_EPS, 1 - _EPS] so Gumbel noise stays finite.
UNIFORM_EPS = 1e-6


class CategoricalSample(NamedTuple):
    """One draw from a batch of independent categoricals.

    Attributes:
        hard: `[..., K]` exact one-hot float tensor (argmax of the perturbed
            logits; entries are exactly 0.0 or 1.0).
        relaxed: `[..., K]` the input for the relaxed (differentiable) loss
            evaluation: `zeta_in` for rebar/relax, the Gumbel-softmax sample for
            gumbel_softmax, `hard` for reinforce.
        log_prob: `[...]` log-probability of `hard`,
            `sum_K hard * log_softmax(logits)`.
    """

    hard: Any
    relaxed: Any
    log_prob: Any


def next_baseline(baseline, hard_loss_mean, decay, initialized=None):
    """Moving-average update of a REINFORCE baseline (pure function).

    Args:
        baseline: current baseline value (scalar tensor or float).
        hard_loss_mean: mean loss of the hard samples of this step.
        decay: decay in `[0, 1)`; the new value is
            `decay * baseline + (1 - decay) * hard_loss_mean`.
        initialized: optional scalar bool tensor; where it is False the new
            baseline is `hard_loss_mean` (first step).

    Returns:
        The updated baseline (scalar tensor).
    """
    decay = _check_decay(decay)
    baseline = ops.convert_to_tensor(baseline)
    hard_loss_mean = ops.cast(hard_loss_mean, baseline.dtype)
    updated = decay * baseline + (1.0 - decay) * hard_loss_mean
    if initialized is None:
        return updated
    return ops.where(initialized, updated, hard_loss_mean)


def _check_decay(decay):
    if isinstance(decay, bool) or not isinstance(decay, (int, float)):
        raise ValueError(f"`decay` must be a float in [0, 1). Received: {decay!r}")
    if not 0.0 <= float(decay) < 1.0:
        raise ValueError(f"`decay` must be in [0, 1). Received: {decay}")
    return float(decay)


def check_float_tensor(x, name, min_rank=None, rank=None):
    """Converts `x` to a tensor and checks its dtype and rank.

    Raises:
        ValueError: if `x` is not floating point or has the wrong rank.
    """
    x = ops.convert_to_tensor(x)
    dtype = keras.backend.standardize_dtype(x.dtype)
    if "float" not in dtype:
        raise ValueError(f"`{name}` must be a floating point tensor. Received dtype {dtype}.")
    shape = tuple(x.shape)
    if rank is not None and len(shape) != rank:
        raise ValueError(
            f"`{name}` must have rank {rank}. Received shape {shape}."
        )
    if min_rank is not None and len(shape) < min_rank:
        raise ValueError(
            f"`{name}` must have rank >= {min_rank}. Received shape {shape}."
        )
    return x


def gumbel_perturbed_logits(logits, seed):
    """Normalised logits plus Gumbel noise.

    Args:
        logits: `[..., K]` float tensor.
        seed: any seed accepted by `seeds.to_keras_seed`.

    Returns:
        `(log_p, u, z)`: `log_p = log_softmax(logits)`, the clamped uniform
        noise `u` and the perturbed logits `z = log_p - log(-log u)`.
    """
    log_p = ops.log_softmax(logits, axis=-1)
    u = keras.random.uniform(
        ops.shape(logits), dtype=logits.dtype, seed=seeds_lib.to_keras_seed(seed)
    )
    u = ops.clip(u, UNIFORM_EPS, 1.0 - UNIFORM_EPS)
    z = log_p - ops.log(-ops.log(u))
    return log_p, u, z


def hard_one_hot(z):
    """Exact one-hot of `argmax(z, -1)` in `z`'s dtype (no gradient)."""
    num_classes = z.shape[-1]
    return ops.one_hot(ops.argmax(z, axis=-1), num_classes, dtype=z.dtype)


def log_prob_of(hard, log_p):
    """`sum_K hard * log_p`, robust to `-inf` entries of unchosen classes."""
    return ops.sum(ops.where(hard > 0, log_p, ops.zeros_like(log_p)), axis=-1)


class Estimator:
    """Base class of the gradient estimators.

    Subclasses implement `sample` and `surrogate_from_losses` and set the two
    class attributes below.

    Attributes:
        needs_hard_loss: whether `surrogate_from_losses` uses `hard_loss`.
        needs_relaxed_loss: whether it uses `relaxed_loss`.
    """

    name = "estimator"
    needs_hard_loss = True
    needs_relaxed_loss = True

    def __init__(self, temperature=0.4):
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
            raise ValueError(
                f"`temperature` must be a positive float. Received: {temperature!r}"
            )
        if not float(temperature) > 0.0:
            raise ValueError(f"`temperature` must be > 0. Received: {temperature}")
        self._temperature = float(temperature)
        self._temperature_setting = None

    @property
    def temperature(self):
        """The relaxation temperature `tau` (float)."""
        if self._temperature_setting is not None:
            return self._temperature_setting.value
        return self._temperature

    def temperature_variable(self):
        """Holds `temperature` in a variable that the relaxation reads from now on, and returns its setting.

        Traced code then reads the variable instead of a constant, so that a traced step can be given another
        temperature (`unas_keras._settings.Setting.assign`) without tracing again. The values are those of the
        float up to float32 rounding (TensorFlow's graph optimiser turns a division by a constant into a
        multiplication by its reciprocal, not a division by a variable). Call it where the caller creates its
        state (in its `tf.distribute` scope); the variable is not among `variables` (a setting of the run, not
        checkpointed state).

        Returns:
            The `unas_keras._settings.Setting` (the same one at every call).
        """
        if self._temperature_setting is None:
            self._temperature_setting = _settings.Setting(self._temperature, name="temperature")
        return self._temperature_setting

    def _tau(self, dtype):
        """`temperature` as the relaxation uses it: the float, or a read of its variable."""
        if self._temperature_setting is None:
            return self._temperature
        return self._temperature_setting.read(dtype)

    # ------------------------------------------------------------------ API
    def sample(self, logits, seed=None):
        """Draws one sample per categorical.

        Args:
            logits: `[..., K]` float tensor; every leading index is an
                independent categorical (e.g. `[batch, rows, K]`).
            seed: `None`, int, `keras.random.SeedGenerator` or a 2-element
                integer tensor (stateless; e.g. per replica and step).

        Returns:
            A `CategoricalSample` with `hard` / `relaxed` `[..., K]` and
            `log_prob` `[...]`.
        """
        raise NotImplementedError

    def surrogate_from_losses(self, log_prob, hard_loss, relaxed_loss, baseline=None):
        """Scalar surrogate from per-sample quantities.

        Args:
            log_prob: `[N]` log-probability of each hard sample (summed over
                every categorical of that sample).
            hard_loss: `[N]` loss at the hard samples (no gradient needed),
                or None if `needs_hard_loss` is False.
            relaxed_loss: `[N]` loss at the relaxed samples (with gradient),
                or None if `needs_relaxed_loss` is False.
            baseline: REINFORCE baseline (scalar); ignored by the others.

        Returns:
            A scalar whose gradient estimates d E[L] / d logits.
        """
        raise NotImplementedError

    def surrogate_loss(self, logits, loss_fn, num_samples=64, seed=None):
        """Samples, evaluates `loss_fn` and returns the surrogate loss.

        Args:
            logits: `[G, K]` float tensor: G independent categoricals.
            loss_fn: callable mapping samples `[num_samples, G, K]` to losses
                `[num_samples]`.
            num_samples: number of independent samples (positive int).
            seed: see `sample`.

        Returns:
            A scalar whose gradient w.r.t. `logits` estimates
            `d/d logits E_z[loss_fn(z)]`.

        Raises:
            ValueError: on logits that are not a rank-2 float tensor, a
                non-positive `num_samples` or a `loss_fn` result of the wrong
                shape.
        """
        logits = check_float_tensor(logits, "logits", rank=2)
        num_samples = _check_num_samples(num_samples)
        batched = ops.broadcast_to(
            ops.expand_dims(logits, 0), (num_samples,) + tuple(logits.shape)
        )
        sample = self.sample(batched, seed)
        log_prob = ops.sum(sample.log_prob, axis=-1)
        hard_loss = relaxed_loss = None
        if self.needs_hard_loss:
            hard_loss = ops.stop_gradient(
                evaluate_loss(loss_fn, sample.hard, num_samples, logits.dtype, "loss_fn")
            )
        if self.needs_relaxed_loss:
            relaxed_loss = self._relaxed_loss(loss_fn, sample.relaxed, num_samples, logits.dtype)
        return self._surrogate(log_prob, hard_loss, relaxed_loss)

    # ---------------------------------------------------------------- state
    # An estimator owns its state (REINFORCE: the moving-average baseline). A caller running its own
    # steps (the search engine) creates it in its `tf.distribute` scope with `create_state`, tracks
    # `variables` (so they are checkpointed with it), asks `baseline_for_step` for the baseline to pass
    # to `surrogate_from_losses` and calls `update_baseline` after the step.

    @property
    def variables(self):
        """The state variables (a list; empty for an estimator without state)."""
        return []

    def create_state(self):
        """Creates the state variables if they do not exist yet (none here)."""

    def baseline_for_step(self, hard_loss, step, first_step=0):
        """The baseline the surrogate of step `step` uses, or None (no baseline here).

        Args:
            hard_loss: `[N]` loss at this step's hard samples.
            step: the step's index (int or scalar int tensor).
            first_step: the index of the first step; steps up to it start the baseline afresh.
        """
        del hard_loss, step, first_step
        return None

    def update_baseline(self, baseline, hard_loss):
        """Updates the state after a step that used `baseline` (nothing here)."""
        del baseline, hard_loss

    def get_config(self):
        """Constructor arguments as a dict (JSON-friendly)."""
        return {"temperature": self.temperature}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    # ---------------------------------------------------------------- hooks
    def _relaxed_loss(self, loss_fn, relaxed, num_samples, dtype):
        return evaluate_loss(loss_fn, relaxed, num_samples, dtype, "loss_fn")

    def _surrogate(self, log_prob, hard_loss, relaxed_loss):
        return self.surrogate_from_losses(log_prob, hard_loss, relaxed_loss)


def _check_num_samples(num_samples):
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"`num_samples` must be a positive int. Received: {num_samples!r}")
    return num_samples


def evaluate_loss(fn, samples, num_samples, dtype, fn_name):
    """Calls `fn(samples)` and checks that it returns `[num_samples]` values.

    Raises:
        ValueError: if the result is not a rank-1 tensor of length
            `num_samples`.
    """
    out = ops.convert_to_tensor(fn(samples))
    shape = tuple(out.shape)
    if len(shape) != 1 or (shape[0] is not None and shape[0] != num_samples):
        raise ValueError(
            f"`{fn_name}` must return one loss per sample, a tensor of shape "
            f"[num_samples] = [{num_samples}], given samples of shape "
            f"{tuple(samples.shape)}. Received shape {shape}."
        )
    return ops.cast(out, dtype)


def check_per_sample(x, name):
    """Checks that a per-sample quantity is a rank-1 tensor."""
    x = ops.convert_to_tensor(x)
    if len(x.shape) != 1:
        raise ValueError(
            f"`{name}` must be a rank-1 tensor [N] (one value per sample). "
            f"Received shape {tuple(x.shape)}."
        )
    return x
