"""Seed handling shared by the estimators and the architecture distribution.

`keras.random` (Keras 3.15, TensorFlow backend) accepts an int, a
`keras.random.SeedGenerator` or `None` as a seed; it does not accept a
tensor. The search engine needs stateless draws keyed by a per-replica,
per-step integer tensor so that replicas of a `tf.distribute` strategy draw
different noise. This module adapts such tensors for `keras.random` and
splits one seed into several independent ones.
"""

import keras
import numpy as np
from keras import ops

_MAX_SEED = 2**31 - 1


class _TensorSeed(keras.random.SeedGenerator):
    """Presents a fixed `[2]` integer tensor as a seed generator.

    `keras.random` draws a seed from a `SeedGenerator` by calling its `next()`
    method; returning the wrapped tensor makes the draw stateless and keyed
    by the tensor. The parent constructor is deliberately not called: it would
    create a state variable that this wrapper does not need.
    """

    def __init__(self, seed_tensor):  # pylint: disable=super-init-not-called
        self.name = "tensor_seed"
        self._seed_tensor = seed_tensor

    def next(self, ordered=True):
        del ordered
        return self._seed_tensor


def to_keras_seed(seed):
    """Converts any supported seed into something `keras.random` accepts.

    Args:
        seed: `None` (the Keras global generator), a Python int (stateless and
            repeatable), a `keras.random.SeedGenerator` (advances on every
            draw) or a 2-element integer tensor / array / sequence (stateless,
            keyed by its value; usable inside `tf.function` and per replica).

    Returns:
        `None`, an int or a `keras.random.SeedGenerator`.

    Raises:
        ValueError: if `seed` is of another type or a tensor of another shape.
    """
    if seed is None or isinstance(seed, keras.random.SeedGenerator):
        return seed
    if isinstance(seed, (bool, np.bool_)):
        raise ValueError(f"`seed` must not be a bool. Received: seed={seed!r}")
    if isinstance(seed, (int, np.integer)):
        return int(seed)
    try:
        tensor = ops.convert_to_tensor(seed)
    except Exception as error:  # pragma: no cover - depends on backend messages
        raise ValueError(
            "`seed` must be None, an int, a keras.random.SeedGenerator or a "
            f"2-element integer tensor. Received: {seed!r}"
        ) from error
    dtype = keras.backend.standardize_dtype(tensor.dtype)
    if "int" not in dtype:
        raise ValueError(
            "A tensor `seed` must have an integer dtype. Received dtype "
            f"{dtype}."
        )
    if tuple(tensor.shape) != (2,):
        raise ValueError(
            "A tensor `seed` must have shape [2] (as for stateless random "
            f"ops). Received shape {tuple(tensor.shape)}."
        )
    return _TensorSeed(tensor)


def split_seed(seed, num):
    """Derives `num` independent stateless seeds from one seed.

    Args:
        seed: any seed accepted by `to_keras_seed`.
        num: number of seeds to derive (positive int).

    Returns:
        A list of `num` int32 tensors of shape `[2]`, each usable as a seed
        by `to_keras_seed` and by every estimator's `sample`. The same int or
        tensor seed always gives the same list.
    """
    if not isinstance(num, (int, np.integer)) or num < 1:
        raise ValueError(f"`num` must be a positive int. Received: {num!r}")
    seeds = keras.random.randint(
        (int(num), 2), 0, _MAX_SEED, dtype="int32", seed=to_keras_seed(seed)
    )
    return [seeds[i] for i in range(int(num))]
