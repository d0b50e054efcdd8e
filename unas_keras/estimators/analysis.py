"""Exact expectations and gradients of small categorical problems, by enumeration.

Used to check estimators: for `G` independent categoricals with `K` classes,
every one of the `K**G` outcomes is enumerated, and the exact gradient follows
from the score-function identity
`d/d logits E[f(z)] = sum_z p(z) f(z) (z - softmax(logits))`
(exact, no sampling and no autodiff needed).
"""

import itertools

import numpy as np
from keras import ops

from unas_keras.estimators import base

_MAX_OUTCOMES = 1_000_000


def enumerate_outcomes(num_groups, num_classes, dtype="float32"):
    """Every joint one-hot outcome of `num_groups` categoricals.

    Args:
        num_groups: G >= 1.
        num_classes: K >= 1.
        dtype: numpy dtype of the result.

    Returns:
        numpy array `[K**G, G, K]` of one-hot rows, in lexicographic order.

    Raises:
        ValueError: bad sizes, or more than 1e6 outcomes.
    """
    for value, label in ((num_groups, "num_groups"), (num_classes, "num_classes")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{label}` must be a positive int. Received: {value!r}")
    if num_classes**num_groups > _MAX_OUTCOMES:
        raise ValueError(
            f"{num_classes}**{num_groups} outcomes is too many to enumerate "
            f"(limit {_MAX_OUTCOMES})."
        )
    eye = np.eye(num_classes, dtype=dtype)
    indices = list(itertools.product(range(num_classes), repeat=num_groups))
    return np.stack([eye[list(idx)] for idx in indices]).astype(dtype)


def exact_expectation(logits, loss_fn):
    """`E_{z ~ Cat(softmax(logits))}[loss_fn(z)]` by enumeration.

    Args:
        logits: `[G, K]` float tensor.
        loss_fn: callable `[M, G, K] -> [M]`.

    Returns:
        Scalar tensor.
    """
    logits = base.check_float_tensor(logits, "logits", rank=2)
    outcomes, prob, values = _enumerate(logits, loss_fn)
    del outcomes
    return ops.sum(prob * values)


def exact_gradient(logits, loss_fn):
    """Exact `d/d logits E_z[loss_fn(z)]` by enumeration.

    Args:
        logits: `[G, K]` float tensor.
        loss_fn: callable `[M, G, K] -> [M]`; need not be differentiable.

    Returns:
        `[G, K]` tensor.
    """
    logits = base.check_float_tensor(logits, "logits", rank=2)
    outcomes, prob, values = _enumerate(logits, loss_fn)
    probs = ops.softmax(logits, axis=-1)
    weights = ops.reshape(prob * values, (-1, 1, 1))
    return ops.sum(weights * (outcomes - probs[None]), axis=0)


def _enumerate(logits, loss_fn):
    num_groups, num_classes = tuple(logits.shape)
    outcomes = ops.convert_to_tensor(
        enumerate_outcomes(int(num_groups), int(num_classes)), dtype=logits.dtype
    )
    log_p = ops.log_softmax(logits, axis=-1)
    prob = ops.exp(ops.sum(outcomes * log_p[None], axis=(1, 2)))
    values = base.evaluate_loss(
        loss_fn, outcomes, int(outcomes.shape[0]), logits.dtype, "loss_fn"
    )
    return outcomes, prob, values
