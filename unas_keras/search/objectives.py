"""The search objectives of UNAS (docs/ALGORITHM.md section 4), as per-example / per-sample tensors.

Everything here is a pure function on tensors written with `keras.ops`, so it
can be used inside `tf.function` and under any `tf.distribute` strategy.

* `cross_entropy`: per-example sparse categorical cross-entropy from logits.
* `objective_per_example`: `"train"` (L_train), `"val"` (L_val) or `"gen_gap"`
  (the paper's generalization-gap loss `L_train + lambda * |L_val - L_train|`,
  taken per (train example i, val example i) pair, then averaged -- not
  `|mean - mean|`).
* `per_sample`: per-example values averaged within each architecture sample
  (one sample per example, or one per minibatch).
* `pair_penalty`: the DARTS duplicate-pair penalty term added per sample.
* `latency_lambda` / `latency_hinge`: `lambda_lat(step) * max(0, lat - target)`
  with lambda ramped linearly from 0.
* `linear_latency`: the linear (ridge) latency surrogate `g` evaluated on
  one-hot or relaxed samples (differentiable).
"""

from keras import ops

from unas_keras.config.search_config import OBJECTIVES, SearchConfig  # noqa: F401  (re-exported)

#: Default weight of the generalization gap term (the search's).
DEFAULT_GEN_GAP_LAMBDA = SearchConfig.default("gen_gap_lambda")

#: Default weight of the DARTS duplicate-pair penalty (0 for other spaces).
DEFAULT_PAIR_PENALTY = 0.2


def check_objective(objective):
    """Returns `objective` if it is one of `OBJECTIVES`.

    Raises:
        ValueError: for any other value.
    """
    if not isinstance(objective, str) or objective not in OBJECTIVES:
        raise ValueError(
            f"Unknown objective {objective!r}; expected one of {list(OBJECTIVES)}."
        )
    return objective


def uses_train_batch(objective):
    """Whether the architecture objective reads the train batch."""
    return check_objective(objective) in ("gen_gap", "train")


def uses_val_batch(objective):
    """Whether the architecture objective reads the held-out (val) batch."""
    return check_objective(objective) in ("gen_gap", "val")


def cross_entropy(labels, logits):
    """Per-example sparse categorical cross-entropy.

    Args:
        labels: `[B]` integer class ids (or `[B, 1]`).
        logits: `[B, classes]` unnormalised scores.

    Returns:
        `[B]` float losses in the dtype of `logits` (at least float32).
    """
    labels = ops.reshape(labels, (-1,))
    logits = ops.cast(logits, "float32") if "float16" in str(logits.dtype) else logits
    return ops.sparse_categorical_crossentropy(labels, logits, from_logits=True)


def correct(labels, logits):
    """`[B]` float 1.0 where `argmax(logits) == labels`, else 0.0."""
    labels = ops.cast(ops.reshape(labels, (-1,)), "int32")
    predicted = ops.cast(ops.argmax(logits, axis=-1), "int32")
    return ops.cast(ops.equal(predicted, labels), "float32")


def generalization_gap(train_loss, val_loss, gen_gap_lambda=DEFAULT_GEN_GAP_LAMBDA):
    """`L_train + lambda * |L_val - L_train|`, per example pair.

    Args:
        train_loss: `[B]` loss of train example i.
        val_loss: `[B]` loss of val example i (same architecture as train example i).
        gen_gap_lambda: weight `lambda` of the gap.

    Returns:
        `[B]`.
    """
    return train_loss + gen_gap_lambda * ops.abs(val_loss - train_loss)


def objective_per_example(objective, train_loss=None, val_loss=None,
                          gen_gap_lambda=DEFAULT_GEN_GAP_LAMBDA):
    """The per-example architecture objective.

    Args:
        objective: `"gen_gap"`, `"train"` or `"val"`.
        train_loss: `[B]` per-example train losses (needed unless objective is "val").
        val_loss: `[B]` per-example val losses (needed unless objective is "train").
        gen_gap_lambda: weight of `|L_val - L_train|` for "gen_gap".

    Returns:
        `[B]` per-example objective values.

    Raises:
        ValueError: unknown objective, or a loss the objective needs is None.
    """
    check_objective(objective)
    if uses_train_batch(objective) and train_loss is None:
        raise ValueError(f"objective {objective!r} needs the per-example train losses.")
    if uses_val_batch(objective) and val_loss is None:
        raise ValueError(f"objective {objective!r} needs the per-example val losses.")
    if objective == "train":
        return train_loss
    if objective == "val":
        return val_loss
    return generalization_gap(train_loss, val_loss, gen_gap_lambda)


def per_sample(values, num_samples):
    """Averages per-example values within each architecture sample.

    Args:
        values: `[B]` per-example values; example i uses sample
            `i // (B / num_samples)` (per-example sampling: `num_samples == B`,
            identity; one architecture per minibatch: `num_samples == 1`, mean).
        num_samples: number of architecture samples (int or scalar tensor)
            dividing B.

    Returns:
        `[num_samples]`.
    """
    if isinstance(num_samples, int) and num_samples == 1:
        return ops.mean(values, axis=0, keepdims=True)
    if isinstance(num_samples, int) and values.shape[0] == num_samples:
        return values
    return ops.mean(ops.reshape(values, (num_samples, -1)), axis=1)


def pair_penalty(overlap, weight=DEFAULT_PAIR_PENALTY):
    """The DARTS duplicate-pair penalty term `lambda_arch * (i . i')(o . o')`, per sample.

    Args:
        overlap: `[N]` summed pair overlaps (`ArchitectureDistribution.pair_overlap`).
        weight: `lambda_arch` (0.2 in UNAS).

    Returns:
        `[N]`.
    """
    return weight * overlap


def latency_lambda(step, warmup_steps=0, final_lambda=0.1, ramp_steps=30000):
    """`lambda_lat` at a search iteration: 0 during warm-up, then linear up to `final_lambda`.

    Args:
        step: the search iteration (counting warm-up iterations), int or tensor.
        warmup_steps: weight-only warm-up iterations (no architecture steps).
        final_lambda: the value reached after `ramp_steps` architecture steps
            (per ms over the target).
        ramp_steps: architecture steps over which lambda grows from 0; 0 means
            no ramp.

    Returns:
        A float32 scalar.
    """
    step = ops.cast(step, "float32")
    arch_steps = ops.maximum(step - float(warmup_steps), 0.0)
    if ramp_steps <= 0:
        fraction = ops.ones_like(arch_steps)
    else:
        fraction = ops.minimum(arch_steps / float(ramp_steps), 1.0)
    return float(final_lambda) * fraction


def latency_hinge(latency_ms, target_ms, weight):
    """`weight * max(0, latency_ms - target_ms)` (per sample).

    Args:
        latency_ms: `[N]` latencies (measured or surrogate) in ms.
        target_ms: the latency target in ms.
        weight: `lambda_lat` (scalar, may be a tensor).

    Returns:
        `[N]`.
    """
    return weight * ops.relu(latency_ms - float(target_ms))


def linear_latency(bias, weights, samples):
    """The linear latency surrogate `g(z) = bias + sum_d sum(w_d * z_d)`.

    Args:
        bias: scalar intercept (ms).
        weights: dict decision name -> `[rows, choices]` array of per-choice
            coefficients (ms).
        samples: dict decision name -> `[N, rows, choices]` one-hot or relaxed
            samples (or probabilities with a leading axis, for the expectation).

    Returns:
        `[N]` surrogate latencies (differentiable in `samples`).

    Raises:
        ValueError: if a decision of `weights` is missing from `samples`.
    """
    total = None
    for name, w in weights.items():
        if name not in samples:
            raise ValueError(f"samples lack the decision {name!r} of the latency surrogate.")
        value = samples[name]
        term = ops.sum(value * ops.cast(ops.convert_to_tensor(w), value.dtype), axis=(1, 2))
        total = term if total is None else total + term
    if total is None:
        raise ValueError("The latency surrogate has no coefficients.")
    return total + float(bias)
