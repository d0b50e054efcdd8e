"""Gradient estimators for expectations over categorical distributions.

Usable on any categorical problem, not only NAS:

    est = uk.estimators.get("rebar", temperature=0.4)
    loss = est.surrogate_loss(logits, loss_fn, num_samples=64, seed=0)

Names: "reinforce", "gumbel_softmax", "rebar" (alias "unas") and "relax"
(a non-differentiable loss with a differentiable control variate).
"""

from unas_keras.estimators.analysis import enumerate_outcomes
from unas_keras.estimators.analysis import exact_gradient
from unas_keras.estimators.base import CategoricalSample
from unas_keras.estimators.base import Estimator
from unas_keras.estimators.base import next_baseline
from unas_keras.estimators.gumbel_softmax import GumbelSoftmax
from unas_keras.estimators.rebar import Rebar
from unas_keras.estimators.registry import accepted_options
from unas_keras.estimators.registry import get
from unas_keras.estimators.registry import names
from unas_keras.estimators.reinforce import Reinforce
from unas_keras.estimators.relax import Relax
from unas_keras.estimators.seeds import split_seed
from unas_keras.estimators.seeds import to_keras_seed

__all__ = [
    "CategoricalSample",
    "Estimator",
    "GumbelSoftmax",
    "Rebar",
    "Reinforce",
    "Relax",
    "accepted_options",
    "enumerate_outcomes",
    "exact_gradient",
    "get",
    "names",
    "next_baseline",
    "split_seed",
    "to_keras_seed",
]
