"""The relaxed (Gumbel-softmax / concrete) pathwise estimator."""

from keras import ops

from unas_keras.estimators import base


class GumbelSoftmax(base.Estimator):
    """Pathwise gradient of the relaxed objective `E[L(softmax((log p + g) / tau))]`.

    Low variance but biased for `E[L(z)]` over hard samples `z`; needs a
    differentiable loss. `sample(...).hard` is the argmax of the same
    perturbed logits (for logging or a hard forward pass).

    Args:
        temperature: softmax temperature `tau` (> 0).
    """

    name = "gumbel_softmax"
    needs_hard_loss = False
    needs_relaxed_loss = True

    def sample(self, logits, seed=None):
        logits = base.check_float_tensor(logits, "logits", min_rank=1)
        log_p, _, z = base.gumbel_perturbed_logits(logits, seed)
        hard = base.hard_one_hot(z)
        relaxed = ops.softmax(z / self._tau(z.dtype), axis=-1)
        return base.CategoricalSample(hard=hard, relaxed=relaxed, log_prob=base.log_prob_of(hard, log_p))

    def surrogate_from_losses(self, log_prob, hard_loss, relaxed_loss, baseline=None):
        del log_prob, hard_loss, baseline
        if relaxed_loss is None:
            raise ValueError("gumbel_softmax needs `relaxed_loss` (the loss at the relaxed samples).")
        return ops.mean(base.check_per_sample(relaxed_loss, "relaxed_loss"))
