"""The learned architecture distribution: one categorical logits weight per decision.

`ArchitectureDistribution` is generic over a decisions dict
`{name: (rows, choices)}` (as given by a search space's `decisions()`): every
row of every decision is an independent categorical over `choices` options.
It samples architectures with any gradient estimator of
`unas_keras.estimators`, reports probabilities, entropy and the argmax
architecture, and computes the DARTS duplicate-pair penalty. Only
`keras.ops` is used, so it runs inside `tf.function` and under
`tf.distribute` strategies.
"""

import re
from typing import Any, NamedTuple

import keras
from keras import ops

from unas_keras import estimators as estimators_lib

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PAIR_RE = re.compile(r"^(?P<cell>.+)_node(?P<node>\d+)_inputs$")


class ArchitectureSample(NamedTuple):
    """Samples of every decision, with the total log-probability.

    Attributes:
        samples: dict decision name -> `estimators.CategoricalSample` with
            `hard` / `relaxed` of shape `[num_samples, rows, choices]` and
            `log_prob` `[num_samples, rows]`.
        log_prob: `[num_samples]`, summed over every decision and row.
    """

    samples: Any
    log_prob: Any

    @property
    def hard(self):
        """dict name -> `[num_samples, rows, choices]` exact one-hot samples."""
        return {name: s.hard for name, s in self.samples.items()}

    @property
    def relaxed(self):
        """dict name -> `[num_samples, rows, choices]` relaxed samples."""
        return {name: s.relaxed for name, s in self.samples.items()}


def _validate_decisions(decisions):
    if not isinstance(decisions, dict) or not decisions:
        raise ValueError(
            "`decisions` must be a non-empty dict {name: (rows, choices)}. "
            f"Received: {decisions!r}"
        )
    out = {}
    for name, spec in decisions.items():
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ValueError(
                f"Decision name {name!r} is not a valid variable name "
                "(letters, digits and underscores, not starting with a digit)."
            )
        try:
            rows, choices = spec
        except (TypeError, ValueError):
            raise ValueError(
                f"Decision {name!r} must map to (rows, choices). Received: {spec!r}"
            ) from None
        for value, label in ((rows, "rows"), (choices, "choices")):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"Decision {name!r}: `{label}` must be a positive int. Received: {value!r}"
                )
        out[name] = (int(rows), int(choices))
    return out


def _find_pairs(decisions):
    """(inputs name, ops name) of every node with 2-row input and op decisions."""
    pairs = []
    for name, (rows, _) in decisions.items():
        match = _PAIR_RE.match(name)
        if not match:
            continue
        ops_name = f"{match.group('cell')}_node{match.group('node')}_ops"
        if rows == 2 and ops_name in decisions and decisions[ops_name][0] == 2:
            pairs.append((name, ops_name))
    return tuple(pairs)


@keras.saving.register_keras_serializable(package="unas_keras")
class ArchitectureDistribution(keras.layers.Layer):
    """Independent categoricals over a search space's decisions.

    Holds one trainable logits weight `[rows, choices]` per decision, named
    after the decision and initialised to zeros (the uniform distribution).

    Args:
        decisions: ordered dict `{name: (rows, choices)}`; names must be valid
            variable names (e.g. "normal_node0_inputs", "optional").
        soften_eps: logit softening; when > 0 the effective logits are
            `log(softmax(phi) + soften_eps)` (every choice keeps at least a
            little probability). 0 disables it.
        **kwargs: `keras.layers.Layer` arguments (`name` defaults to
            "architecture_distribution").
    """

    def __init__(self, decisions, soften_eps=0.0, **kwargs):
        kwargs.setdefault("name", "architecture_distribution")
        super().__init__(**kwargs)
        decisions = _validate_decisions(decisions)
        if isinstance(soften_eps, bool) or not isinstance(soften_eps, (int, float)) or soften_eps < 0:
            raise ValueError(f"`soften_eps` must be a float >= 0. Received: {soften_eps!r}")
        self.decisions = decisions
        self.soften_eps = float(soften_eps)
        self._names = tuple(decisions)
        self._pairs = _find_pairs(decisions)
        self._logit_vars = [
            self.add_weight(
                name=name, shape=(rows, choices), initializer="zeros", trainable=True
            )
            for name, (rows, choices) in decisions.items()
        ]
        self.built = True

    # ------------------------------------------------------------ logits
    @property
    def decision_names(self):
        """Decision names, in order."""
        return self._names

    @property
    def logit_variables(self):
        """dict name -> the trainable `[rows, choices]` logits variable."""
        return dict(zip(self._names, self._logit_vars))

    def logits(self):
        """dict name -> effective (softened if `soften_eps` > 0) logits `[rows, choices]`."""
        out = {}
        for name, var in zip(self._names, self._logit_vars):
            phi = ops.convert_to_tensor(var)
            if self.soften_eps > 0.0:
                phi = ops.log(ops.softmax(phi, axis=-1) + self.soften_eps)
            out[name] = phi
        return out

    def probabilities(self):
        """dict name -> `[rows, choices]` sampling probabilities (softened if enabled)."""
        return {name: ops.softmax(phi, axis=-1) for name, phi in self.logits().items()}

    def entropy(self):
        """Scalar: the entropy summed over every categorical (every row of every decision)."""
        total = 0.0
        for phi in self.logits().values():
            log_p = ops.log_softmax(phi, axis=-1)
            total = total - ops.sum(ops.exp(log_p) * log_p)
        return total

    def argmax(self):
        """dict name -> python list of the most likely choice per row (the derived architecture)."""
        return {
            name: [int(i) for i in ops.convert_to_numpy(ops.argmax(var, axis=-1))]
            for name, var in zip(self._names, self._logit_vars)
        }

    def as_json_dict(self):
        """dict name -> probabilities as nested lists of floats (JSON-ready)."""
        return {
            name: ops.convert_to_numpy(p).astype(float).tolist()
            for name, p in self.probabilities().items()
        }

    # ------------------------------------------------------------ sampling
    def sample(self, estimator, num_samples, seed=None):
        """Samples `num_samples` architectures.

        Args:
            estimator: an `estimators.Estimator` or an estimator name.
            num_samples: positive int, or a scalar int tensor (e.g. the
                dynamic batch size): the batch size for per-example
                architectures, 1 for one architecture per minibatch.
            seed: None, int, `keras.random.SeedGenerator` or a 2-element int
                tensor (stateless; pass a per-replica, per-step tensor so
                replicas draw different architectures). Every decision draws
                from its own seed derived with `estimators.split_seed`.

        Returns:
            An `ArchitectureSample`.
        """
        estimator = estimators_lib.get(estimator)
        if isinstance(num_samples, bool) or (isinstance(num_samples, int) and num_samples < 1):
            raise ValueError(f"`num_samples` must be a positive int. Received: {num_samples!r}")
        if not isinstance(num_samples, int) and len(getattr(num_samples, "shape", (None,))) != 0:
            raise ValueError(
                f"`num_samples` must be an int or a scalar int tensor. Received: {num_samples!r}"
            )
        seeds = estimators_lib.split_seed(seed, len(self._names))
        samples = {}
        log_prob = None
        for (name, phi), decision_seed in zip(self.logits().items(), seeds):
            rows, choices = self.decisions[name]
            batched = ops.broadcast_to(phi[None], (num_samples, rows, choices))
            sample = estimator.sample(batched, decision_seed)
            samples[name] = sample
            row_sum = ops.sum(sample.log_prob, axis=-1)
            log_prob = row_sum if log_prob is None else log_prob + row_sum
        return ArchitectureSample(samples=samples, log_prob=log_prob)

    @property
    def has_decision_pairs(self):
        """Whether the space has (inputs, ops) decision pairs that `pair_overlap` scores (DARTS cells)."""
        return bool(self._pairs)

    def pair_overlap(self, samples):
        """DARTS duplicate-pair penalty `sum_{cells, nodes} (i . i') (o . o')`.

        For every pair of decisions `{cell}_node{n}_inputs` and
        `{cell}_node{n}_ops` with 2 rows each, `(i, i')` are the two input
        rows and `(o, o')` the two op rows of a sample.

        Args:
            samples: dict decision name -> tensor `[num_samples, rows, choices]`
                (e.g. `ArchitectureSample.hard` or `.relaxed`).

        Returns:
            `[num_samples]`; zeros for spaces without such decision pairs.
        """
        if not isinstance(samples, dict) or not samples:
            raise ValueError("`samples` must be a non-empty dict name -> [num_samples, rows, choices].")
        for name, value in samples.items():
            if isinstance(value, estimators_lib.CategoricalSample):
                raise ValueError(
                    f"`samples[{name!r}]` is a CategoricalSample; pass tensors, e.g. "
                    "`arch_sample.hard` or `arch_sample.relaxed`."
                )
        missing = [n for pair in self._pairs for n in pair if n not in samples]
        if missing:
            raise ValueError(f"`samples` lacks the decisions {missing}.")
        if not self._pairs:
            first = ops.convert_to_tensor(next(iter(samples.values())))
            return ops.zeros_like(ops.sum(first, axis=tuple(range(1, len(first.shape)))))
        total = None
        for inputs_name, ops_name in self._pairs:
            inputs = samples[inputs_name]
            choices = samples[ops_name]
            same_input = ops.sum(inputs[:, 0] * inputs[:, 1], axis=-1)
            same_op = ops.sum(choices[:, 0] * choices[:, 1], axis=-1)
            term = same_input * same_op
            total = term if total is None else total + term
        return total

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "decisions": {name: [rows, k] for name, (rows, k) in self.decisions.items()},
                "soften_eps": self.soften_eps,
            }
        )
        return config
