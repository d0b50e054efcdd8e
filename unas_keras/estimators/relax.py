"""RELAX-style estimator: a non-differentiable loss with a differentiable control variate."""

from unas_keras.estimators import base
from unas_keras.estimators import rebar


class Relax(rebar.Rebar):
    """REBAR's construction with a separate differentiable control variate.

    The loss `L_n` is evaluated only at hard samples (it may have no
    gradient, e.g. a measured latency); a differentiable `g` is evaluated at
    the relaxed sample `zeta_in`:

        mean(stop_grad(L_n(z) - g(zeta_in)) * log p(z)) + mean(g(zeta_in)).

    Unbiased for `E[L_n(z)]` whatever `g` is; a `g` close to `L_n` lowers the
    variance. In `surrogate_from_losses`, `relaxed_loss` is `g(zeta_in)`.

    Args:
        control_variate: callable `samples [N, ...] -> [N]`, differentiable.
            Needed by `surrogate_loss`; optional when only
            `sample`/`surrogate_from_losses` are used.
        temperature: relaxation temperature `tau` (> 0).
    """

    name = "relax"

    def __init__(self, control_variate=None, temperature=0.4):
        super().__init__(temperature=temperature)
        if control_variate is not None and not callable(control_variate):
            raise ValueError(
                "`control_variate` must be a callable samples -> [num_samples]. "
                f"Received: {control_variate!r}"
            )
        self.control_variate = control_variate

    def _relaxed_loss(self, loss_fn, relaxed, num_samples, dtype):
        if self.control_variate is None:
            raise ValueError(
                "relax.surrogate_loss needs a differentiable control variate: "
                'uk.estimators.get("relax", control_variate=fn) with '
                "fn(samples) -> [num_samples]."
            )
        return base.evaluate_loss(self.control_variate, relaxed, num_samples, dtype, "control_variate")

    def get_config(self):
        return {"temperature": self.temperature, "control_variate": self.control_variate}
