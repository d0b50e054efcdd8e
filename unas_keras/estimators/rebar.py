"""REBAR (Tucker et al. 2017, eta = 1): the UNAS estimator for differentiable losses."""

from keras import ops

from unas_keras.estimators import base

# Lower bound for -log(v) of the conditional noise (keeps the log finite).
_TINY = 1e-30


def conditional_perturbed_logits(log_p, u, z, hard):
    """Perturbed logits `z_tilde ~ p(z | argmax z = hard)` that equal `z` in value.

    The conditional Gumbel construction on normalised logits: with the argmax
    `k` and noise `v`, `z_tilde_k = -log(-log v_k)` and
    `z_tilde_i = -log(-log v_i / p_i - log v_k)` for `i != k`. The noise `v` is
    recovered from `z` itself (and held fixed), so `z_tilde == z` in value
    while its gradient w.r.t. the logits is that of the conditional sample.
    Written in a form that stays finite for tiny probabilities:
    with `a = -log v` (no gradient), `z_tilde_i = log p_i - log(a_i + p_i a_k)`
    and `a_i = -log u_i - p_i exp(-z_k)`.

    Args:
        log_p: `[..., K]` normalised logits.
        u: `[..., K]` the uniform noise that produced `z`.
        z: `[..., K]` perturbed logits `log_p - log(-log u)`.
        hard: `[..., K]` one-hot argmax of `z`.

    Returns:
        `[..., K]` conditional perturbed logits.
    """
    p = ops.exp(log_p)
    z_k = ops.stop_gradient(ops.sum(hard * z, axis=-1, keepdims=True))
    a_k = ops.exp(-z_k)
    a = ops.stop_gradient(-ops.log(u) - p * a_k)
    a = ops.maximum(a, _TINY)
    z_other = log_p - ops.log(a + p * a_k)
    return ops.where(hard > 0, ops.broadcast_to(z_k, ops.shape(z)), z_other)


class Rebar(base.Estimator):
    """REBAR with eta = 1, as UNAS uses it (alias "unas").

    `sample` returns `relaxed = zeta - zeta_tilde + stop_grad(zeta_tilde)`
    (value `zeta`, gradient `d zeta - d zeta_tilde`), and the surrogate is

        mean(stop_grad(L(z) - L(zeta_in)) * log p(z)) + mean(L(zeta_in)),

    unbiased for `E_z[L(z)]` when `L` is differentiable.

    Args:
        temperature: relaxation temperature `tau` (> 0).
    """

    name = "rebar"
    needs_hard_loss = True
    needs_relaxed_loss = True

    def sample(self, logits, seed=None):
        logits = base.check_float_tensor(logits, "logits", min_rank=1)
        log_p, u, z = base.gumbel_perturbed_logits(logits, seed)
        hard = base.hard_one_hot(z)
        tau = self._tau(z.dtype)
        zeta = ops.softmax(z / tau, axis=-1)
        z_tilde = conditional_perturbed_logits(log_p, u, z, hard)
        zeta_tilde = ops.softmax(z_tilde / tau, axis=-1)
        relaxed = zeta - zeta_tilde + ops.stop_gradient(zeta_tilde)
        return base.CategoricalSample(hard=hard, relaxed=relaxed, log_prob=base.log_prob_of(hard, log_p))

    def surrogate_from_losses(self, log_prob, hard_loss, relaxed_loss, baseline=None):
        del baseline
        if hard_loss is None or relaxed_loss is None:
            raise ValueError(
                f"{self.name} needs both `hard_loss` and `relaxed_loss` (the loss "
                "at the hard samples and at the relaxed samples)."
            )
        log_prob = base.check_per_sample(log_prob, "log_prob")
        hard_loss = ops.cast(base.check_per_sample(hard_loss, "hard_loss"), log_prob.dtype)
        relaxed_loss = ops.cast(base.check_per_sample(relaxed_loss, "relaxed_loss"), log_prob.dtype)
        advantage = ops.stop_gradient(hard_loss - relaxed_loss)
        return ops.mean(advantage * log_prob) + ops.mean(relaxed_loss)
