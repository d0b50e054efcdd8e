"""The linear latency surrogate g(z): ridge regression on one-hot choices.

UNAS makes a non-differentiable latency L_n(z) usable in its RELAX-style
estimator through a cheap differentiable model g(z) ~= L_n(z). As in the
release, g is a ridge regression on the concatenated one-hot choices of every
decision:

    g(z) = bias + sum_d sum_{r, k} W_d[r, k] * z_d[r, k]

so g of a relaxed sample (soft one-hots) is differentiable. The intercept is
not penalised (features are centred before the closed-form fit).
"""

import json
import os

import numpy as np

from unas_keras._atomic import write_text_atomic

FORMAT = "unas_keras.latency_surrogate"
VERSION = 1


def _resolve_space(search_space):
    if isinstance(search_space, str):
        from unas_keras.space import registry

        return registry.get(search_space).search_space()
    if not hasattr(search_space, "decisions") or not hasattr(search_space, "encode"):
        raise ValueError(
            "search_space must be a space name or an object with decisions() and encode(); got "
            f"{type(search_space).__name__}."
        )
    return search_space


def _space_payload(space):
    """JSON description of a space, enough to rebuild it on load: its name and `options()`."""
    out = {"name": getattr(space, "name", None)}
    options = getattr(space, "options", None)  # the registered spaces have it; a custom object may not
    if callable(options):
        out.update(options())
    return out


def _space_from_payload(payload):
    from unas_keras.space import registry

    return registry.get(payload["name"]).search_space(**{k: v for k, v in payload.items() if k != "name"})


def one_hot_features(decisions, choices):
    """Concatenated one-hot vector of per-decision row choices.

    Args:
        decisions: ordered dict name -> (rows, num_choices).
        choices: dict name -> list of row choices (ints).

    Returns:
        float64 array of length `sum(rows * num_choices)`.
    """
    parts = []
    for name, (rows, k) in decisions.items():
        if name not in choices:
            raise ValueError(f"Choices lack decision {name!r}.")
        row_choices = [int(c) for c in choices[name]]
        if len(row_choices) != rows or any(not 0 <= c < k for c in row_choices):
            raise ValueError(
                f"Decision {name!r} needs {rows} choices in [0, {k}), got {row_choices}."
            )
        block = np.zeros((rows, k))
        block[np.arange(rows), row_choices] = 1.0
        parts.append(block.ravel())
    return np.concatenate(parts)


class LatencySurrogate:
    """g(z) = bias + sum of per-decision weights at the chosen entries.

    Args:
        search_space: the space object (`decisions()`, `encode(arch)`).
        bias: intercept in ms.
        weights: dict decision name -> array `[rows, choices]` (ms).
        report: optional held-out report (see `latency_report`).
    """

    def __init__(self, search_space, bias, weights, report=None):
        self.search_space = _resolve_space(search_space)
        decisions = dict(self.search_space.decisions())
        if set(weights) != set(decisions):
            raise ValueError(
                f"Surrogate weights are for decisions {sorted(weights)}; the space has {sorted(decisions)}."
            )
        self.bias = float(bias)
        self.weights = {}
        for name, shape in decisions.items():
            w = np.asarray(weights[name], dtype=np.float64)
            if w.shape != tuple(shape):
                raise ValueError(f"Surrogate weight {name!r} has shape {w.shape}, expected {tuple(shape)}.")
            self.weights[name] = w
        self.report = report

    def features(self, architecture):
        """The concatenated one-hot vector of an architecture."""
        return one_hot_features(self.search_space.decisions(), self.search_space.encode(architecture))

    def predict(self, architecture):
        """g(architecture) in ms."""
        return self.predict_choices(self.search_space.encode(architecture))

    def predict_choices(self, choices):
        """g at per-decision row choices (dict name -> list of ints)."""
        decisions = self.search_space.decisions()
        x = one_hot_features(decisions, choices)
        return float(self.bias + x @ np.concatenate([self.weights[n].ravel() for n in decisions]))

    def predict_relaxed(self, samples):
        """g at (relaxed) one-hot arrays: dict name -> [..., rows, choices] -> array [...]."""
        total = self.bias
        for name, w in self.weights.items():
            total = total + np.sum(np.asarray(samples[name]) * w, axis=(-2, -1))
        return total

    def surrogate_weights(self, search_space=None):
        """`(bias, {decision: [rows, choices] array})`, the linear model the engine differentiates.

        Args:
            search_space: optional; if given, its decisions must match.
        """
        if search_space is not None:
            decisions = dict(_resolve_space(search_space).decisions())
            if decisions != dict(self.search_space.decisions()):
                raise ValueError(
                    f"Surrogate was fitted for decisions {dict(self.search_space.decisions())}, "
                    f"not {decisions}."
                )
        return self.bias, {name: w.copy() for name, w in self.weights.items()}

    def evaluate(self, architectures, latencies_ms):
        """Held-out figures of g against measured latencies (see `latency_report`)."""
        from unas_keras.latency.metrics import latency_report

        return latency_report([self.predict(a) for a in architectures], latencies_ms)

    def to_dict(self):
        return {
            "format": FORMAT,
            "version": VERSION,
            "space": _space_payload(self.search_space),
            "bias": self.bias,
            "weights": {name: w.tolist() for name, w in self.weights.items()},
            "report": self.report,
        }

    def save(self, path):
        """Writes the surrogate as JSON atomically."""
        write_text_atomic(path, json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path, search_space=None):
        """Reads a surrogate written by `save`.

        Args:
            path: the JSON file.
            search_space: optional space object to attach (default: rebuilt
                from the file).

        Raises:
            ValueError: if the file is missing, malformed or does not match.
        """
        path = os.fspath(path)
        try:
            with open(path, "rb") as f:
                payload = json.loads(f.read().decode("utf-8"))
        except OSError as err:
            raise ValueError(f"Cannot read latency surrogate {path}: {err.strerror}") from None
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
            raise ValueError(f"{path}: malformed latency surrogate JSON: {err}") from None
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise ValueError(f"{path}: not a unas_keras latency surrogate.")
        if payload.get("version") != VERSION:
            raise ValueError(f"{path}: unsupported version {payload.get('version')!r}.")
        try:
            space = search_space if search_space is not None else _space_from_payload(payload["space"])
            return cls(space, payload["bias"], payload["weights"], payload.get("report"))
        except (KeyError, TypeError) as err:
            raise ValueError(f"{path}: invalid latency surrogate: {err!r}") from None


def fit_latency_surrogate(search_space, architectures, latencies_ms, l2=1.0, prior=None):
    """Fits g by ridge regression on the concatenated one-hot choices.

    Closed form with an unpenalised intercept:
    `w = (Xc^T Xc + l2 I)^-1 Xc^T (y - mean y)`, `bias = mean y - mean(X) . w`,
    `Xc = X - mean(X)`.

    Args:
        search_space: a space name or object (`decisions()`, `encode()`).
        architectures: sequence of `Architecture`s (or per-decision choice
            dicts).
        latencies_ms: their latencies (measured or from a lookup table).
        l2: ridge penalty (the release uses 1.0). Use a small value (e.g.
            1e-6) when the targets are exactly additive (a lookup-table sum).
        prior: optional `LatencySurrogate` (e.g. `lookup_table_surrogate`)
            to shrink towards instead of towards zero: the ridge is fitted to
            the residuals `latency - prior(arch)` and the prior's weights are
            added back. With few measurements this keeps the lookup table's
            per-block structure and learns only its systematic error.

    Returns:
        A `LatencySurrogate`.
    """
    space = _resolve_space(search_space)
    decisions = dict(space.decisions())
    y = np.asarray(latencies_ms, dtype=np.float64).ravel()
    architectures = list(architectures)
    if len(architectures) != y.size or y.size < 2:
        raise ValueError(
            f"fit_latency_surrogate needs >= 2 architectures with one latency each; got "
            f"{len(architectures)} architectures and {y.size} latencies."
        )
    if not np.all(np.isfinite(y)):
        raise ValueError("latencies_ms must be finite.")
    if float(l2) < 0:
        raise ValueError(f"l2 must be >= 0, got {l2}.")
    rows = [one_hot_features(decisions, a if isinstance(a, dict) else space.encode(a))
            for a in architectures]
    x = np.stack(rows)
    prior_w, prior_b = np.zeros(x.shape[1]), 0.0
    if prior is not None:
        if dict(prior.search_space.decisions()) != decisions:
            raise ValueError("The prior surrogate belongs to a space with other decisions.")
        prior_b = prior.bias
        prior_w = np.concatenate([prior.weights[name].ravel() for name in decisions])
        y = y - (prior_b + x @ prior_w)
    x_mean, y_mean = x.mean(axis=0), y.mean()
    xc = x - x_mean
    gram = xc.T @ xc + float(l2) * np.eye(x.shape[1])
    w = np.linalg.lstsq(gram, xc.T @ (y - y_mean), rcond=None)[0]
    bias = y_mean - x_mean @ w + prior_b
    w = w + prior_w
    weights, start = {}, 0
    for name, (r, k) in decisions.items():
        weights[name] = w[start:start + r * k].reshape(r, k)
        start += r * k
    return LatencySurrogate(space, bias, weights)
