"""Which supernet forward passes one search iteration runs, decided once in plain Python.

A search iteration (docs/ALGORITHM.md) evaluates the supernet on the train and/or val batch at the hard
architecture sample `z` and/or at the estimator's relaxed sample `zeta_in`, and trains the weights on
the train batch at `stop_grad(zeta_in)`. Which of these passes are needed follows from three facts:

* the estimator: whether its surrogate reads the loss at hard samples and/or at relaxed samples;
* the objective: whether it reads the train batch and/or the val batch;
* the memory option `recompute_val_pass`.

`plan_passes` turns them into a `PassPlan`: which passes run without gradient (values only: the hard
passes, which may run only the chosen blocks and share one loop), which run with gradient, which pass
doubles as the weight step's forward, and whether the relaxed val pass is split in two. Nothing here
imports TensorFlow, so the plan is testable on its own; `SearchModel` only carries it out.
"""

import dataclasses
from typing import Optional, Tuple

#: Sample kinds: the hard one-hot sample `z`, the estimator's relaxed input `zeta_in`, and
#: `stop_grad(zeta_in)` (the weight step's input when no relaxed train pass exists).
HARD, RELAXED, DETACHED = "hard", "relaxed", "detached"
#: Batches.
TRAIN, VAL = "train", "val"


@dataclasses.dataclass(frozen=True)
class Pass:
    """One supernet forward pass: a batch at an architecture sample.

    Attributes:
        sample: `HARD`, `RELAXED` or `DETACHED`.
        batch: `TRAIN` or `VAL`.
    """

    sample: str
    batch: str

    @property
    def name(self):
        """Its name in logs and diagnostics: "hard_train", "relaxed_val", "weight_train", ..."""
        return f"{'weight' if self.sample == DETACHED else self.sample}_{self.batch}"


HARD_TRAIN, HARD_VAL = Pass(HARD, TRAIN), Pass(HARD, VAL)
RELAXED_TRAIN, RELAXED_VAL = Pass(RELAXED, TRAIN), Pass(RELAXED, VAL)
DETACHED_TRAIN = Pass(DETACHED, TRAIN)


@dataclasses.dataclass(frozen=True)
class PassPlan:
    """The forward passes of one search iteration.

    Attributes:
        without_gradient: passes run for their values only (not recorded on the gradient tape), in
            this order. Passes of equal shapes may run as the iterations of one loop.
        with_gradient: passes recorded on the tape, in this order.
        weight_pass: the pass whose cross-entropy is the weight step's loss (one of
            `with_gradient`): the relaxed train pass when there is one (its value and weight gradient
            are those of a forward at `stop_grad(zeta_in)`), the hard train pass when the relaxed
            sample is the hard one (REINFORCE), else a `DETACHED` train pass of its own.
        recomputed: a pass of `without_gradient` that runs again, with gradient, after the gradients
            of the other passes are taken (the relaxed val pass when split), so that only one relaxed
            pass's activations are held at a time: about half the activation memory for one more
            forward. None when nothing is recomputed.
        hard_loss: whether the estimator reads the objective at the hard sample.
        relaxed_loss: whether it reads the objective at the relaxed sample.
    """

    without_gradient: Tuple[Pass, ...]
    with_gradient: Tuple[Pass, ...]
    weight_pass: Pass
    recomputed: Optional[Pass]
    hard_loss: bool
    relaxed_loss: bool

    @property
    def passes(self):
        """Every pass whose values the iteration uses, in the order run."""
        return self.without_gradient + self.with_gradient

    @property
    def metric_train_pass(self):
        """The pass the train metrics are logged from: hard if run, else relaxed, else the weight pass."""
        return next((p for p in (HARD_TRAIN, RELAXED_TRAIN) if p in self.passes), self.weight_pass)

    @property
    def metric_val_pass(self) -> Optional[Pass]:
        """The pass the val loss and accuracy are logged from (hard if run, else relaxed), or None."""
        return next((p for p in (HARD_VAL, RELAXED_VAL) if p in self.passes), None)

    def objective_passes(self, sample):
        """`(train pass or None, val pass or None)` the objective at `sample` (HARD / RELAXED) reads."""
        return tuple(Pass(sample, batch) if Pass(sample, batch) in self.passes else None
                     for batch in (TRAIN, VAL))


def plan_passes(*, hard_loss, relaxed_loss, train_batch, val_batch, recompute_val_pass):
    """Decides the forward passes of a search iteration.

    Args:
        hard_loss: the estimator reads the objective at hard samples (`Estimator.needs_hard_loss`).
        relaxed_loss: it reads the objective at relaxed samples (`Estimator.needs_relaxed_loss`).
        train_batch: the objective reads the train batch (`objectives.uses_train_batch`).
        val_batch: the objective reads the val batch (`objectives.uses_val_batch`).
        recompute_val_pass: split the relaxed val pass when the relaxed train pass is also held
            (see `PassPlan.recomputed`).

    Returns:
        A `PassPlan`.

    Raises:
        ValueError: if no estimator loss or no batch is read, or a flag is not a bool.
    """
    flags = {"hard_loss": hard_loss, "relaxed_loss": relaxed_loss, "train_batch": train_batch,
             "val_batch": val_batch, "recompute_val_pass": recompute_val_pass}
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise ValueError(f"`{name}` must be a bool. Received: {value!r}")
    if not (hard_loss or relaxed_loss):
        raise ValueError("The estimator must read the hard or the relaxed loss (or both).")
    if not (train_batch or val_batch):
        raise ValueError("The objective must read the train or the val batch (or both).")

    # REINFORCE's relaxed sample is the hard one: its hard train pass is the weight step's forward.
    hard_train_is_weight_pass = hard_loss and not relaxed_loss and train_batch
    split_val = recompute_val_pass and relaxed_loss and train_batch and val_batch

    without_gradient = []
    if hard_loss and val_batch:
        without_gradient.append(HARD_VAL)
    if hard_loss and train_batch and not hard_train_is_weight_pass:
        without_gradient.append(HARD_TRAIN)
    if split_val:
        without_gradient.append(RELAXED_VAL)

    with_gradient = []
    if hard_train_is_weight_pass:
        with_gradient.append(HARD_TRAIN)
    if relaxed_loss and train_batch:
        with_gradient.append(RELAXED_TRAIN)
    if relaxed_loss and val_batch and not split_val:
        with_gradient.append(RELAXED_VAL)
    if relaxed_loss and train_batch:
        weight_pass = RELAXED_TRAIN
    elif hard_train_is_weight_pass:
        weight_pass = HARD_TRAIN
    else:
        weight_pass = DETACHED_TRAIN
        with_gradient.append(DETACHED_TRAIN)
    return PassPlan(without_gradient=tuple(without_gradient), with_gradient=tuple(with_gradient),
                    weight_pass=weight_pass, recomputed=RELAXED_VAL if split_val else None,
                    hard_loss=hard_loss, relaxed_loss=relaxed_loss)
