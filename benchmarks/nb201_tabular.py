"""Gradient estimators on the NAS-Bench-201 table, at equal query budgets.

The table's 200-epoch test accuracy is a non-differentiable black-box loss,
`L(z) = (100 - accuracy(z)) / 100`, over the 5**6 = 15,625 cells. Under the
same budget of table queries, this compares

* random search: `budget` uniform draws, the best one seen is the answer;
* REINFORCE: `unas_keras.estimators.get("reinforce")` on a 6x5 logit table,
  moving-average baseline (the library's convention: the first step uses its
  batch mean), Adam;
* UNAS for a non-differentiable loss: `unas_keras.estimators.get("relax")`,
  i.e. REBAR's construction with a differentiable control variate `g`
  (docs/ALGORITHM.md section 3.4),
      surrogate = mean(sg(L(z) - g(zeta_in)) log p(z)) + mean(g(zeta_in)),
  where `g` is a ridge regression on the one-hot edges (and, with
  `--pairwise`, their pairwise interactions) refitted every `--refit_every`
  steps on all (z, L) pairs this run has queried so far (strictly earlier
  steps; on the first step `g` is the batch mean, as REINFORCE's baseline).

Both gradient methods draw `samples_per_step` architectures per step, each a
query; the answer is the argmax of the learned distribution. Every sample
counts as a query, repeated or not; the final architecture's accuracy is read
from the table for reporting and is not counted. Each seed's run is
independent of how many seeds are run (stateless noise keyed by (seed, step),
elementwise Adam), several seeds are simply computed in one `tf.function`.

    python benchmarks/nb201_tabular.py --dataset=cifar10 --budget=300 --seeds=30
    python benchmarks/nb201_tabular.py --dataset=all --tune   # equal grids, tuning seeds

The last line printed is one JSON object.

Latency-constrained mode (`--latency_table=CSV --latency_column=NAME [--target_ms=X]`, target default: the
column's median). Only accuracy look-ups count as queries; the device table is known, so latency
look-ups are free. REINFORCE's loss gains the device latency as a sampled hinge,
`L(z) = (100 - accuracy(z)) / 100 + w * max(0, latency(z) / target - 1)` (`--latency_weight` w, ramped up
from 0 over the first `--latency_ramp` share of the steps). UNAS keeps the sampled accuracy loss with its
ridge control variate and adds `w_u * max(0, latency / (target * (1 - m)) - 1)` (`--unas_latency_weight`
w_u, same ramp, `--unas_margin` m) by default as an exact expectation over all cells of the device table
under the sharpened policy `softmax(k * logits)` (`--unas_sharpness` k), a differentiable stand-in for the
latency of the policy's argmax (`--unas_latency_gradient=sampled`: the hinge on the queried samples, the
device's linear surrogate at the relaxed sample in the control variate; `--unas_penalty=linear` and
`--unas_dual_lr` give a Lagrangian term and dual ascent on the argmax's latency, measured and not kept).
Once the budget is spent, UNAS takes `--unas_final_steps` zero-query steps (a separate Adam,
`--unas_final_lr`): no accuracy look-up is left, so of its estimator only the control variate g remains,
refitted on every queried (z, L) pair, and the policy descends `E_p[g] + w_u * E_p[hinge]` exactly under
`p = softmax(--unas_final_sharpness * logits)` (g is multilinear in the one-hot edges, so `E_p[g]` is g at
the edge probabilities; the hinge sums over the free device table). This trades accuracy for latency edge
by edge from where the search ended, instead of leaving the argmax wherever the ramped hinge pushed it.
(`--unas_surrogate_weight` adds the same `E_p[g]` during the search, under the sharpened policy and with the
hinge's ramp: measured and not kept.)
The answer of REINFORCE and UNAS is their final policy's argmax (`--final_rule=feasible_argmax`: its most
probable cell that meets the target; `--final_queries=K`: the last K queries of the budget go to the K
most probable such cells, the best answers). Random search answers its best feasible query. The last line is
`{"target_ms", "constrained_optimum", "methods": {"random", "reinforce", "unas"}}`, each method with the
means over seeds of `final_accuracy`, `final_latency_ms`, `feasible_fraction`, `best_feasible_queried`;
the line before it holds the details (per-seed figures, plain-argmax figures, the surrogate's held-out
report).

    python benchmarks/nb201_tabular.py --dataset=cifar100 --latency_table=../shared/data/nb201_latency.csv \
        --latency_column=raspi4_ms
"""

import itertools
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Quiet TensorFlow C++ logs so that a bad input prints one line (absl app convention).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Small dense solves: one BLAS thread avoids oversubscription (several seeds are solved in a loop).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from unas_keras import cli  # noqa: E402
from unas_keras import nb201_table  # noqa: E402
from unas_keras.space import nb201 as nb201_space  # noqa: E402

NUM_EDGES = len(nb201_space.EDGES)
NUM_OPS = len(nb201_space.OPS)
PAIRS = tuple(itertools.combinations(range(NUM_EDGES), 2))
DATASETS = tuple(nb201_table.DATASET_COLUMNS)
NUM_ARCHITECTURES = NUM_OPS ** NUM_EDGES

QUERY_RULE = (
    "every sampled architecture is one table query, repeats included (no cache); each method gets exactly "
    "`budget` queries per seed; the final architecture's accuracy is read for reporting and not counted"
)
NOTE = (
    "Comparison between estimators at equal query budgets on the table's 200-epoch test accuracies (mean over "
    "the benchmark's seeds), used directly as the loss: a noise-free black box. NOT a reproduction of the "
    "NAS-Bench-201 paper's protocol (12-epoch validation accuracy as the search signal, searched cells then "
    "reported at 200 epochs); the paper's figures below are context only."
)
PAPER_ANCHORS_CIFAR10 = {
    "random_search": "93.70 +- 0.36",
    "reinforce": "93.85 +- 0.37",
    "rea": "93.92 +- 0.30",
    "gdas": "93.61 +- 0.09",
    "darts": "54.30",
    "optimum": "94.37",
}

FLAGS = flags.FLAGS
def _define_flags():
    """Defines the command-line flags (only when run as a script, so tests can import the module)."""
    flags.DEFINE_string("table", None, "NAS-Bench-201 CSV; default: $UNAS_NB201_TABLE, else <repo>/../shared/data/"
                        "nas_bench_201.csv.")
    flags.DEFINE_enum("dataset", "cifar10", list(DATASETS) + ["all"], "Table column to search on.")
    flags.DEFINE_integer("budget", 300, "Table queries per seed and method.")
    flags.DEFINE_integer("seeds", 30, "Independent runs per method.")
    flags.DEFINE_integer("seed_offset", 0, "First seed (tuning uses seeds from --tune_seed_offset).")
    flags.DEFINE_float("reinforce_lr", None, "REINFORCE: Adam learning rate on the logits (default 0.3; 0.6 with "
                       "--latency_table).")
    flags.DEFINE_integer("reinforce_samples", 10, "REINFORCE: architectures (queries) per step.")
    flags.DEFINE_float("baseline_decay", 0.9, "REINFORCE: moving-average decay of the baseline.")
    flags.DEFINE_float("unas_lr", None, "UNAS: Adam learning rate on the logits (default 0.3; 0.6 with "
                       "--latency_table).")
    flags.DEFINE_integer("unas_samples", 10, "UNAS: architectures (queries) per step.")
    flags.DEFINE_float("temperature", 0.4, "UNAS: relaxation temperature.")
    flags.DEFINE_float("ridge_lambda", 10.0, "UNAS: ridge penalty of the control variate g.")
    flags.DEFINE_bool("pairwise", True, "UNAS: g includes pairwise edge interactions.")
    flags.DEFINE_integer("refit_every", 1, "UNAS: refit g every this many steps.")
    flags.DEFINE_bool("tune", False, "Tune both methods on an equal grid on tuning seeds first, then evaluate.")
    flags.DEFINE_integer("tune_seeds", 20, "Seeds per grid point when tuning.")
    flags.DEFINE_integer("tune_seed_offset", 100000, "First tuning seed (disjoint from evaluation seeds).")
    flags.DEFINE_string("latency_table", None, "Device latency CSV (e.g. ../shared/data/nb201_latency.csv): "
                        "latency-constrained mode.")
    flags.DEFINE_string("latency_column", None, "Latency column of --latency_table (e.g. raspi4_ms).")
    flags.DEFINE_float("target_ms", None, "Latency target in ms (default: the column's median).")
    flags.DEFINE_float("latency_weight", 0.1, "REINFORCE: hinge weight per unit of relative excess over the target "
                       "(0.1: 10%% over the target costs one accuracy point).")
    flags.DEFINE_float("unas_latency_weight", UNAS_CONSTRAINED["latency_weight"], "UNAS: hinge weight per unit of relative excess over the "
                       "search bound target * (1 - --unas_margin).")
    flags.DEFINE_enum("unas_latency_gradient", UNAS_CONSTRAINED["latency_gradient"], list(LATENCY_GRADIENTS), "UNAS: the latency term's "
                      "gradient: 'exact' (expectation over all cells of the free device table, under the policy "
                      "sharpened by --unas_sharpness) or 'sampled' (the queried samples, with the device's "
                      "linear surrogate in the control variate).")
    flags.DEFINE_float("unas_sharpness", UNAS_CONSTRAINED["sharpness"], "UNAS, exact latency gradient: the expectation is taken under "
                       "softmax(sharpness * logits), a differentiable stand-in for the policy's argmax.")
    flags.DEFINE_float("unas_margin", UNAS_CONSTRAINED["margin"], "UNAS: the hinge (and the dual ascent) aims at target * (1 - margin).")
    flags.DEFINE_enum("unas_penalty", UNAS_CONSTRAINED["penalty"], list(PENALTIES), "UNAS: the latency term, a hinge or the linear "
                      "Lagrangian term latency / bound - 1.")
    flags.DEFINE_float("unas_dual_lr", UNAS_CONSTRAINED["dual_lr"], "UNAS: dual-ascent step of an extra multiplier driven by the policy "
                       "argmax's latency (0: off, a fixed ramped weight only).")
    flags.DEFINE_float("unas_surrogate_weight", UNAS_CONSTRAINED["surrogate_weight"], "UNAS, exact latency "
                       "gradient: weight of the exact expectation of the ridge control variate g under the same "
                       "sharpened policy, added next to the latency term with its ramp (0: off; measured, not kept).")
    flags.DEFINE_integer("unas_final_steps", UNAS_CONSTRAINED["final_steps"], "UNAS, exact latency gradient: "
                         "zero-query steps after the budget is spent, descending E_p[g] + the latency term exactly "
                         "(g: the control variate fitted on all queries; p: softmax(--unas_final_sharpness * "
                         "logits)); 0: off.")
    flags.DEFINE_float("unas_final_lr", UNAS_CONSTRAINED["final_lr"], "UNAS: Adam learning rate of the "
                       "zero-query steps.")
    flags.DEFINE_float("unas_final_sharpness", UNAS_CONSTRAINED["final_sharpness"], "UNAS: sharpness of the "
                       "policy in the zero-query steps (1: the policy itself).")
    flags.DEFINE_float("latency_ramp", 0.7, "Share of the steps over which the hinge weight ramps up from 0.")
    flags.DEFINE_enum("final_rule", "argmax", list(FINAL_RULES), "Final architecture of the gradient "
                      "methods: the policy's argmax, or its most probable cell meeting the target.")
    flags.DEFINE_integer("final_queries", 0, "Gradient methods: query the final policy's K most probable cells "
                         "(under --final_rule) and answer the best; the K queries come out of --budget.")
    flags.DEFINE_integer("variance_repeats", 200, "Repeats of the gradient-variance diagnostic (0 = skip it).")

#: Equal tuning grids: 3 learning rates x 3 sample sizes x 2 values of one
#: method-specific knob, 18 points each.
TUNE_LRS = (0.1, 0.3, 0.5)
TUNE_SAMPLES = (5, 10, 20)
TUNE_REINFORCE_KNOB = ("baseline_decay", (0.5, 0.9))
TUNE_UNAS_KNOB = ("ridge_lambda", (1.0, 10.0))


def _default(value, default):
    return default if value is None else value


def _progress(message):
    print(f"[nb201_tabular] {message}", file=sys.stderr, flush=True)


def _stats(values):
    values = np.asarray(values, dtype=np.float64)
    return {
        "mean": round(float(values.mean()), 4),
        "std": round(float(values.std()), 4),
        "min": round(float(values.min()), 4),
        "max": round(float(values.max()), 4),
    }


def _choices_of_index(index):
    digits = []
    for _ in range(NUM_EDGES):
        digits.append(index % NUM_OPS)
        index //= NUM_OPS
    return digits[::-1]


def _paired(a, b):
    """Paired comparison of per-seed final accuracies a - b (same seeds)."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return {
        "mean_difference": round(float(diff.mean()), 4),
        "standard_error": round(float(diff.std(ddof=1) / np.sqrt(len(diff))), 4) if len(diff) > 1 else None,
        "wins": int(np.sum(diff > 1e-9)),
        "ties": int(np.sum(np.abs(diff) <= 1e-9)),
        "losses": int(np.sum(diff < -1e-9)),
    }


def _summary(final_acc, best_acc, final_idx):
    counts = {}
    for idx in final_idx:
        counts[int(idx)] = counts.get(int(idx), 0) + 1
    idx, count = max(counts.items(), key=lambda kv: kv[1])
    return {
        "final_accuracies_per_seed": [round(float(v), 4) for v in final_acc],
        "final_accuracy": _stats(final_acc),
        "best_seen_accuracy": _stats(best_acc),
        "most_common_final": {
            "architecture": nb201_space.format_string([nb201_space.OPS[c] for c in _choices_of_index(idx)]),
            "runs": count,
        },
    }


def run_random_search(accuracies, budget, seeds):
    """Uniform sampling; the final architecture is the best one seen.

    Returns:
        (final accuracies, best-seen accuracies, final indices), one per seed.
    """
    finals, indices = [], []
    for seed in seeds:
        queried = _random_queries(seed, budget)
        best = queried[int(np.argmax(accuracies[queried]))]
        finals.append(float(accuracies[best]))
        indices.append(int(best))
    return finals, list(finals), indices


def _random_queries(seed, budget):
    return np.random.default_rng([seed, 7]).integers(0, NUM_ARCHITECTURES, size=budget)


FINAL_RULES = ("argmax", "feasible_argmax")
LATENCY_RULE = ("latency look-ups of the device table are free (a known, measured table, as a device's latency "
                "model is at search time): only accuracy look-ups count as queries")
PENALTIES = ("hinge", "linear")
LATENCY_GRADIENTS = ("sampled", "exact")
#: Constrained mode: both gradient methods' learning rate, and UNAS's latency handling, chosen on raspi4_ms
#: with tuning seeds 100000-100039 (README, "Benchmarks").
CONSTRAINED_LR = 0.6
UNAS_CONSTRAINED = {"latency_weight": 0.5, "latency_gradient": "exact", "sharpness": 3.0, "margin": 0.03,
                    "penalty": "hinge", "dual_lr": 0.0, "surrogate_weight": 0.0, "final_steps": 300,
                    "final_lr": 0.1, "final_sharpness": 1.0}


class LatencyConstraint:
    """A device's latency of every cell, the target, the latency term's weight and its ramp.

    Args:
        latencies: numpy `[5**6]` measured latencies (ms) indexed by `architecture_index`.
        target_ms: the latency target.
        weight: hinge weight per unit of relative excess (1.0: 10% over the target costs as much as 10
            accuracy points).
        surrogate: the device's linear surrogate g (a `LatencySurrogate` of the nb201 space).
        final_rule: `"argmax"` (the final policy's per-edge argmax) or `"feasible_argmax"` (the final
            policy's most probable cell among those the table says meet the target).
        ramp: share of the steps over which the hinge weight grows linearly from 0 (the release ramps
            its latency weight too); the policy first moves towards accurate cells, then is pulled back
            to the target from above, and ends closer to it than a policy held under it from the start.
    """

    def __init__(self, latencies, target_ms, weight, surrogate, final_rule="argmax", ramp=0.0):
        if final_rule not in FINAL_RULES:
            raise ValueError(f"final rule must be one of {list(FINAL_RULES)}, got {final_rule!r}.")
        self.latencies = np.asarray(latencies, dtype=np.float64)
        self.target = float(target_ms)
        self.weight = float(weight)
        self.surrogate_bias = float(surrogate.bias)
        self.surrogate_weights = np.asarray(surrogate.weights["edges"], dtype=np.float64)
        self.final_rule = final_rule
        if not 0.0 <= float(ramp) <= 1.0:
            raise ValueError(f"ramp must be in [0, 1], got {ramp!r}.")
        self.ramp = float(ramp)
        self.feasible = self.latencies <= self.target
        choices = np.stack([(np.arange(NUM_ARCHITECTURES) // NUM_OPS ** (NUM_EDGES - 1 - e)) % NUM_OPS
                            for e in range(NUM_EDGES)], axis=-1)
        self._edge_index = np.arange(NUM_EDGES)[None, :]
        self._choices = choices

    def penalty(self, latency_ms, form, multiplier, ops=np, margin=0.0):
        """`multiplier * max(0, latency / bound - 1)` ("hinge") or `multiplier * (latency / bound - 1)`
        ("linear", the Lagrangian term of the constraint `latency <= bound`), `bound = target * (1 -
        margin)`."""
        excess = latency_ms / (self.target * (1.0 - margin)) - 1.0
        return multiplier * (ops.maximum(0.0, excess) if form == "hinge" else excess)

    def ramp_scale(self, step, steps):
        """The hinge weight's share at `step` of `steps` (1 without a ramp)."""
        if self.ramp <= 0.0:
            return 1.0
        return min(1.0, (step + 1) / max(1.0, self.ramp * steps))

    def most_probable(self, logits, count=1):
        """The `count` most probable cells of a policy with logits `[6, 5]`, best first (feasible ones
        only under `"feasible_argmax"`)."""
        if self.final_rule == "argmax" and count == 1:
            return [nb201_table.architecture_index(np.argmax(logits, axis=-1))]
        shifted = logits - logits.max(-1, keepdims=True)
        log_p = shifted - np.log(np.sum(np.exp(shifted), -1, keepdims=True))
        scores = log_p[self._edge_index, self._choices].sum(axis=1)
        if self.final_rule == "feasible_argmax" and self.feasible.any():
            scores = np.where(self.feasible, scores, -np.inf)
        return [int(i) for i in np.argsort(-scores, kind="stable")[:count]]

    def final_index(self, logits):
        """The final architecture of a policy with logits `[6, 5]` under `final_rule`."""
        return self.most_probable(logits)[0]


def _features(indices, pairwise):
    """Ridge features of architectures given by index: one-hot edges (+ pairs)."""
    choices = np.stack([(indices // NUM_OPS ** (NUM_EDGES - 1 - e)) % NUM_OPS for e in range(NUM_EDGES)], axis=-1)
    onehot = np.eye(NUM_OPS)[choices]  # [n, 6, 5]
    parts = [onehot.reshape(len(indices), -1)]
    if pairwise:
        for a, b in PAIRS:
            parts.append(np.einsum("ni,nj->nij", onehot[:, a], onehot[:, b]).reshape(len(indices), -1))
    return np.concatenate(parts, axis=1)


def fit_ridge(indices, losses, lam, pairwise):
    """Ridge regression of the loss on architecture features (unpenalised intercept).

    Returns:
        (bias, w1 [6, 5], w2 [15, 5, 5]) with `g(x) = bias + sum(w1 * x) +
        sum_pairs x_a^T w2_p x_b` for one-hot (or relaxed) x `[6, 5]`.
    """
    stats = RidgeStatistics(1, pairwise)
    stats.add(np.asarray(indices)[None], np.asarray(losses, dtype=np.float64)[None])
    bias, w1, w2 = stats.solve(lam)
    return bias[0], w1[0], w2[0]


class RidgeStatistics:
    """Running sufficient statistics of one ridge regression per seed.

    Keeps `X^T X`, `X^T y`, `sum x`, `sum y` and `n`, so a refit on all the
    (z, L) pairs seen so far costs one `[p, p]` solve per seed, whatever the
    number of pairs.

    Args:
        num_seeds: number of independent regressions.
        pairwise: whether the features include pairwise edge interactions.
    """

    def __init__(self, num_seeds, pairwise):
        self.pairwise = pairwise
        p = NUM_EDGES * NUM_OPS + (len(PAIRS) * NUM_OPS ** 2 if pairwise else 0)
        self.xtx = np.zeros((num_seeds, p, p))
        self.xty = np.zeros((num_seeds, p))
        self.sum_x = np.zeros((num_seeds, p))
        self.sum_y = np.zeros((num_seeds,))
        self.count = 0

    def add(self, indices, losses):
        """Adds one batch per seed: indices and losses `[num_seeds, m]`."""
        for s in range(len(indices)):
            x = _features(indices[s], self.pairwise)
            self.xtx[s] += x.T @ x
            self.xty[s] += x.T @ losses[s]
            self.sum_x[s] += x.sum(axis=0)
            self.sum_y[s] += losses[s].sum()
        self.count += indices.shape[1]

    def solve(self, lam):
        """Returns (bias [S], w1 [S, 6, 5], w2 [S, 15, 5, 5])."""
        n = self.count
        x_mean = self.sum_x / n
        y_mean = self.sum_y / n
        sxx = self.xtx - n * np.einsum("si,sj->sij", x_mean, x_mean)
        sxy = self.xty - n * x_mean * y_mean[:, None]
        eye = np.eye(sxx.shape[-1])
        w = np.linalg.solve(sxx + lam * eye, sxy[..., None])[..., 0]
        bias = y_mean - np.einsum("si,si->s", x_mean, w)
        num = len(w)
        w1 = w[:, : NUM_EDGES * NUM_OPS].reshape(num, NUM_EDGES, NUM_OPS)
        w2 = np.zeros((num, len(PAIRS), NUM_OPS, NUM_OPS))
        if self.pairwise:
            w2 = w[:, NUM_EDGES * NUM_OPS:].reshape(num, len(PAIRS), NUM_OPS, NUM_OPS)
        return bias, w1, w2


class GradientSearch:
    """REINFORCE or UNAS (relax) on the table, several seeds in one tf.function.

    Args:
        method: "reinforce" or "unas".
        accuracies: numpy `[5**6]` accuracies (%) indexed by
            `nb201_table.architecture_index`.
        seeds: list of int seeds (one independent run each).
        budget: queries per seed; a multiple of `samples`.
        lr: Adam learning rate.
        samples: architectures per step.
        baseline_decay: REINFORCE baseline decay.
        temperature: UNAS relaxation temperature.
        ridge_lambda, pairwise, refit_every: UNAS control variate.
        constraint: optional `LatencyConstraint`: the loss gains a latency
            term of the measured latency (its weight ramped as the constraint says).
        penalty: the latency term, "hinge" `max(0, latency / bound - 1)` or
            "linear" `latency / bound - 1`, with `bound = target * (1 - margin)`.
        dual_lr: step of dual ascent on an extra multiplier driven by the
            latency of the policy's argmax (0: off).
        margin: the latency term (and the dual ascent) aim at `target * (1 - margin)`.
        latency_gradient: "sampled" (the term on the queried samples; UNAS's
            control variate adds it at the device surrogate of the relaxed
            sample) or "exact" (its expectation over all cells of the device
            table, which costs no query, under `softmax(sharpness * logits)`).
        sharpness: see `latency_gradient` (1: the policy itself; larger: closer
            to the latency term of the policy's argmax).
        latency_weight: the latency term's weight (default: the constraint's).
    """

    def __init__(self, method, accuracies, seeds, budget, lr, samples, baseline_decay=0.9, temperature=0.4,
                 ridge_lambda=1.0, pairwise=True, refit_every=1, constraint=None, penalty="hinge", dual_lr=0.0,
                 margin=0.0, latency_gradient="sampled", sharpness=1.0, latency_weight=None, surrogate_weight=0.0,
                 surrogate_ramp=True, final_steps=0, final_lr=0.1, final_sharpness=1.0):
        import keras
        import tensorflow as tf

        from unas_keras import estimators

        if method not in ("reinforce", "unas"):
            raise ValueError(f"method must be 'reinforce' or 'unas', got {method!r}.")
        if budget % samples:
            raise ValueError(f"--budget ({budget}) must be a multiple of the samples per step ({samples}).")
        if np.isnan(accuracies).any():
            raise ValueError("The NB201 table must hold all 15,625 architectures for this benchmark.")
        self.tf = tf
        self.method = method
        self.seeds = list(seeds)
        self.steps = budget // samples
        self.samples = samples
        self.baseline_decay = baseline_decay
        self.ridge_lambda = ridge_lambda
        self.pairwise = pairwise
        self.refit_every = refit_every
        self.accuracies = accuracies
        self.table = tf.constant(accuracies, dtype=tf.float32)
        self.constraint = constraint
        if penalty not in PENALTIES:
            raise ValueError(f"penalty must be one of {list(PENALTIES)}, got {penalty!r}.")
        if latency_gradient not in LATENCY_GRADIENTS:
            raise ValueError(f"latency_gradient must be one of {list(LATENCY_GRADIENTS)}, got {latency_gradient!r}.")
        self.latency_gradient = latency_gradient
        self.sharpness = float(sharpness)
        self.penalty = penalty
        self.dual_lr = float(dual_lr)
        self.margin = float(margin)
        self.latency_weight = None if constraint is None else (
            constraint.weight if latency_weight is None else float(latency_weight))
        self.multiplier_history = []
        self.surrogate_weight = float(surrogate_weight)
        self.surrogate_ramp = bool(surrogate_ramp)
        self.final_steps = int(final_steps)
        self.final_sharpness = float(final_sharpness)
        if self.final_steps and (method != "unas" or constraint is None or latency_gradient != "exact"):
            raise ValueError("final_steps needs the UNAS method with a constraint and the exact latency gradient.")
        if constraint is not None:
            self.latency = tf.constant(constraint.latencies, dtype=tf.float32)
            self.lat_bias = tf.constant(constraint.surrogate_bias, dtype=tf.float32)
            self.lat_w = tf.constant(constraint.surrogate_weights, dtype=tf.float32)
            # Flat positions of every cell's choices in a [6 * 5] logit table, and every cell's penalty
            # per unit multiplier (for the exact expectation of the latency term).
            self.cell_positions = tf.constant(constraint._choices + NUM_OPS * np.arange(NUM_EDGES), tf.int32)
            self.cell_penalty = tf.constant(constraint.penalty(constraint.latencies, penalty, 1.0, np, margin),
                                            tf.float32)
        if method == "reinforce":
            self.estimator = estimators.get("reinforce", baseline_decay=baseline_decay)
        else:
            self.estimator = estimators.get("relax", temperature=temperature)
        num = len(self.seeds)
        self.logits = keras.Variable(np.zeros((num, NUM_EDGES, NUM_OPS), "float32"), name="logits")
        self.optimizer = keras.optimizers.Adam(learning_rate=lr)
        self.optimizer.build([self.logits])
        self.baseline = keras.Variable(np.zeros((num,), "float32"), trainable=False, name="baseline")
        self.powers = tf.constant([NUM_OPS ** (NUM_EDGES - 1 - e) for e in range(NUM_EDGES)], dtype=tf.int64)
        self.pair_a = tf.constant([a for a, _ in PAIRS])
        self.pair_b = tf.constant([b for _, b in PAIRS])
        self._step = tf.function(self._step_fn)
        if self.final_steps:
            self.final_optimizer = keras.optimizers.Adam(learning_rate=final_lr)
            self.final_optimizer.build([self.logits])
            self._final_step = tf.function(self._final_step_fn)

    def _control_variate(self, x, bias, w1, w2):
        tf = self.tf
        linear = tf.reduce_sum(x * w1, axis=[1, 2])
        xa = tf.gather(x, self.pair_a, axis=1)
        xb = tf.gather(x, self.pair_b, axis=1)
        pair = tf.einsum("mpi,pij,mpj->m", xa, w2, xb)
        return bias + linear + pair

    def _expected_penalty(self, scaled_logits):
        """`E_p[latency term per unit multiplier]` over all cells of the device table, exactly, for
        `p = softmax(scaled_logits)` (`[..., 6, 5]` -> `[...]`)."""
        tf = self.tf
        log_p = tf.nn.log_softmax(scaled_logits, axis=-1)
        log_p = tf.reshape(log_p, log_p.shape[:-2].as_list() + [-1])
        p_cells = tf.exp(tf.reduce_sum(tf.gather(log_p, self.cell_positions, axis=-1), axis=-1))
        return tf.reduce_sum(p_cells * self.cell_penalty, axis=-1)

    def _step_fn(self, step, has_model, bias, w1, w2, multipliers, surrogate_scale):
        """One step for every seed; returns queried indices and losses [S, M]."""
        tf = self.tf
        from unas_keras.estimators import next_baseline

        all_idx, all_loss, new_baselines = [], [], []
        with tf.GradientTape() as tape:
            total = 0.0
            for s, seed in enumerate(self.seeds):
                logits = tf.broadcast_to(self.logits[s], (self.samples, NUM_EDGES, NUM_OPS))
                sample = self.estimator.sample(logits, tf.stack([tf.constant(seed, tf.int32), step]))
                log_prob = tf.reduce_sum(sample.log_prob, axis=-1)
                idx = tf.reduce_sum(tf.argmax(sample.hard, axis=-1) * self.powers, axis=-1)
                acc_loss = (100.0 - tf.gather(self.table, idx)) / 100.0
                loss = acc_loss
                exact = self.constraint is not None and self.latency_gradient == "exact"
                if exact:
                    # The device table is known: E_p[penalty] over all 5**6 cells, exactly, no query.
                    total += multipliers[s] * self._expected_penalty(self.sharpness * self.logits[s])
                    if self.method == "unas" and self.surrogate_weight > 0:
                        # g is multilinear in the one-hot edges, so under a factorised policy its expectation
                        # is g at the policy's probabilities: the accuracy side of the same sharpened trade.
                        sharp = tf.nn.softmax(self.sharpness * self.logits[s], axis=-1)[None]
                        expected_g = self._control_variate(sharp, bias[s], w1[s], w2[s])[0]
                        total += tf.where(has_model[s], surrogate_scale * expected_g, 0.0)
                elif self.constraint is not None:
                    loss = loss + self.constraint.penalty(tf.gather(self.latency, idx), self.penalty,
                                                          multipliers[s], tf, self.margin)
                batch_mean = tf.reduce_mean(loss)
                if self.method == "reinforce":
                    used = tf.where(step > 0, self.baseline[s], batch_mean)
                    total += self.estimator.surrogate_from_losses(log_prob, loss, None, baseline=used)
                    new_baselines.append(next_baseline(used, batch_mean, self.baseline_decay))
                else:
                    g = self._control_variate(sample.relaxed, bias[s], w1[s], w2[s])
                    if self.constraint is not None and not exact:
                        lat_g = self.lat_bias + tf.reduce_sum(sample.relaxed * self.lat_w, axis=[1, 2])
                        g = g + self.constraint.penalty(lat_g, self.penalty, multipliers[s], tf, self.margin)
                    g = tf.where(has_model[s], g, tf.fill(tf.shape(loss), batch_mean))
                    total += self.estimator.surrogate_from_losses(log_prob, loss, g)
                all_idx.append(idx)
                all_loss.append(acc_loss)  # g's ridge part models the accuracy loss; the hinge is known
        grads = tape.gradient(total, [self.logits])
        self.optimizer.apply(grads, [self.logits])
        if new_baselines:
            self.baseline.assign(tf.stack(new_baselines))
        return tf.stack(all_idx), tf.stack(all_loss)

    def _final_step_fn(self, bias, w1, w2, multipliers):
        """One zero-query step for every seed: Adam on E_p[g] + multiplier * E_p[latency term], both exact
        under `p = softmax(final_sharpness * logits)` (g is multilinear in the one-hot edges, so E_p[g] is g
        at p; the latency term sums over all cells of the free device table)."""
        tf = self.tf
        with tf.GradientTape() as tape:
            scaled = self.final_sharpness * self.logits
            probs = tf.nn.softmax(scaled, axis=-1)
            expected_g = tf.stack([self._control_variate(probs[s:s + 1], bias[s], w1[s], w2[s])[0]
                                   for s in range(len(self.seeds))])
            total = tf.reduce_sum(expected_g + multipliers * self._expected_penalty(scaled))
        grads = tape.gradient(total, [self.logits])
        self.final_optimizer.apply(grads, [self.logits])

    def _dual_step(self, dual):
        """Dual ascent on the extra latency multiplier of each seed: it grows while the policy's argmax
        (whose latency the device table gives without a query) is over `target * (1 - margin)`, and
        shrinks towards 0 while under it."""
        bound = self.constraint.target * (1.0 - self.margin)
        argmax = [nb201_table.architecture_index(c) for c in np.argmax(self.logits.numpy(), axis=-1)]
        return np.maximum(0.0, dual + self.dual_lr * (self.constraint.latencies[argmax] / bound - 1.0))

    def run(self):
        """Runs every seed; returns (final accs, best-seen accs, final indices)."""
        tf = self.tf
        num = len(self.seeds)
        bias = np.zeros((num,), "float32")
        w1 = np.zeros((num, NUM_EDGES, NUM_OPS), "float32")
        w2 = np.zeros((num, len(PAIRS), NUM_OPS, NUM_OPS), "float32")
        has_model = np.zeros((num,), bool)
        stats = RidgeStatistics(num, self.pairwise) if self.method == "unas" else None
        history_idx = []
        dual = np.zeros((num,))
        for step in range(self.steps):
            multipliers = dual.copy()
            if self.constraint is not None:
                multipliers += self.latency_weight * self.constraint.ramp_scale(step, self.steps)
            self.multiplier_history.append(multipliers.copy())
            surrogate_scale = self.surrogate_weight
            if self.constraint is not None and self.surrogate_ramp:
                surrogate_scale *= self.constraint.ramp_scale(step, self.steps)
            idx, loss = self._step(tf.constant(step, tf.int32), tf.constant(has_model), tf.constant(bias),
                                   tf.constant(w1), tf.constant(w2), tf.constant(multipliers, tf.float32),
                                   tf.constant(surrogate_scale, tf.float32))
            if self.constraint is not None and self.dual_lr > 0:
                dual = self._dual_step(dual)
            idx = idx.numpy()
            history_idx.append(idx)
            if stats is not None:
                stats.add(idx, loss.numpy().astype(np.float64))
                if (step + 1) % self.refit_every == 0:
                    b, a1, a2 = stats.solve(self.ridge_lambda)
                    bias, w1, w2 = b.astype("float32"), a1.astype("float32"), a2.astype("float32")
                    has_model[:] = True
        if self.final_steps:
            # The budget is spent: no accuracy look-up is left, so of UNAS's estimator only its control
            # variate g (fitted on every queried pair) remains; the latency table is free.
            if (self.steps % self.refit_every) or not has_model.all():
                b, a1, a2 = stats.solve(self.ridge_lambda)
                bias, w1, w2 = b.astype("float32"), a1.astype("float32"), a2.astype("float32")
            args = [tf.constant(bias), tf.constant(w1), tf.constant(w2), tf.constant(multipliers, tf.float32)]
            for _ in range(self.final_steps):
                self._final_step(*args)
        queried = np.concatenate(history_idx, axis=1)
        self.queried = queried
        best = self.accuracies[queried].max(axis=1)
        if self.constraint is not None:
            final_idx = [self.constraint.final_index(logits) for logits in self.logits.numpy()]
        else:
            final_idx = [nb201_table.architecture_index(c) for c in np.argmax(self.logits.numpy(), axis=-1)]
        finals = [float(self.accuracies[i]) for i in final_idx]
        return finals, [float(b) for b in best], final_idx


def gradient_diagnostic(accuracies, samples, repeats, temperature, ridge_lambda, pairwise, seed=0):
    """Error of one step's gradient estimate against the exact gradient.

    At two distributions (uniform logits; random logits of scale 1), the
    exact gradient of `E[L]` is computed by enumerating the 15,625 cells.
    REINFORCE gets an oracle baseline (the exact `E[L]`); UNAS gets `g`
    fitted on 300 samples of that distribution. Both use `samples` queries.
    These extra queries are a diagnostic, outside every run's budget.

    Returns:
        dict distribution -> {"squared_norm_of_exact_gradient",
        "reinforce_mse", "unas_mse", "unas_over_reinforce"}.
    """
    import tensorflow as tf

    from unas_keras import estimators

    losses = (100.0 - accuracies) / 100.0
    all_idx = np.arange(len(losses))
    onehot = np.eye(NUM_OPS)[np.stack([(all_idx // NUM_OPS ** (NUM_EDGES - 1 - e)) % NUM_OPS
                                       for e in range(NUM_EDGES)], axis=-1)]
    table = tf.constant(losses, tf.float32)
    powers = tf.constant([NUM_OPS ** (NUM_EDGES - 1 - e) for e in range(NUM_EDGES)], dtype=tf.int64)
    pair_a = tf.constant([a for a, _ in PAIRS])
    pair_b = tf.constant([b for _, b in PAIRS])
    rng = np.random.default_rng(seed)
    out = {}
    for name, logits in (("uniform", np.zeros((NUM_EDGES, NUM_OPS))), ("random_logits", rng.normal(size=(6, 5)))):
        probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
        p_arch = np.prod(np.einsum("nec,ec->ne", onehot, probs), axis=1)
        expected = float(np.sum(p_arch * losses))
        exact = np.einsum("n,n,nec->ec", p_arch, losses, onehot - probs[None])
        fit_idx = np.array([nb201_table.architecture_index([rng.choice(NUM_OPS, p=probs[e]) for e in range(NUM_EDGES)])
                            for _ in range(300)])
        bias, w1, w2 = (tf.constant(np.asarray(a, "float32")) for a in
                        fit_ridge(fit_idx, losses[fit_idx], ridge_lambda, pairwise))
        variable = tf.Variable(logits.astype("float32"))
        entry = {"squared_norm_of_exact_gradient": float(np.sum(exact ** 2))}
        for method in ("reinforce", "unas"):
            est = (estimators.get("reinforce") if method == "reinforce"
                   else estimators.get("relax", temperature=temperature))

            @tf.function
            def one(step_seed, est=est, method=method):
                with tf.GradientTape() as tape:
                    sample = est.sample(tf.broadcast_to(variable, (samples, NUM_EDGES, NUM_OPS)), step_seed)
                    log_prob = tf.reduce_sum(sample.log_prob, axis=-1)
                    loss = tf.gather(table, tf.reduce_sum(tf.argmax(sample.hard, axis=-1) * powers, axis=-1))
                    if method == "reinforce":
                        surrogate = est.surrogate_from_losses(log_prob, loss, None, baseline=tf.constant(expected))
                    else:
                        x = sample.relaxed
                        g = (bias + tf.reduce_sum(x * w1, axis=[1, 2])
                             + tf.einsum("mpi,pij,mpj->m", tf.gather(x, pair_a, axis=1), w2,
                                         tf.gather(x, pair_b, axis=1)))
                        surrogate = est.surrogate_from_losses(log_prob, loss, g)
                return tape.gradient(surrogate, variable)

            grads = np.stack([one(tf.constant([seed, k], tf.int32)).numpy() for k in range(repeats)])
            entry[f"{method}_mse"] = float(np.mean(np.sum((grads - exact) ** 2, axis=(1, 2))))
        entry["unas_over_reinforce"] = entry["unas_mse"] / entry["reinforce_mse"]
        out[name] = {k: round(v, 6) for k, v in entry.items()}
    return out


def _method_config(method, options):
    if method == "reinforce":
        keys = ("lr", "samples", "baseline_decay")
    else:
        keys = ("lr", "samples", "temperature", "ridge_lambda", "pairwise", "refit_every", "latency_weight",
                "latency_gradient", "sharpness", "margin", "penalty", "dual_lr", "surrogate_weight", "final_steps",
                "final_lr", "final_sharpness")
    return {k: options[k] for k in keys if k in options}


def run_method(method, accuracies, budget, seeds, config):
    """Runs one method over seeds; returns (finals, bests, final indices)."""
    if method == "random_search":
        return run_random_search(accuracies, budget, seeds)
    return GradientSearch(method, accuracies, seeds, budget, **config).run()


def tune(method, accuracies, budget, base_config, tune_seeds):
    """Equal-effort grid search on tuning seeds; picks the best mean final accuracy."""
    knob, values = TUNE_REINFORCE_KNOB if method == "reinforce" else TUNE_UNAS_KNOB
    trials = []
    for lr, samples, value in itertools.product(TUNE_LRS, TUNE_SAMPLES, values):
        if budget % samples:
            continue
        config = dict(base_config, lr=lr, samples=samples, **{knob: value})
        finals, bests, _ = run_method(method, accuracies, budget, tune_seeds, config)
        _progress(f"tune {method} {config}: final {np.mean(finals):.3f} +- {np.std(finals):.3f}")
        trials.append({"config": config, "final_mean": round(float(np.mean(finals)), 4),
                       "final_std": round(float(np.std(finals)), 4), "best_seen_mean": round(float(np.mean(bests)), 4)})
    best = max(trials, key=lambda t: (t["final_mean"], -t["final_std"]))
    return best["config"], trials


def load_constraint(table_path, column, target_ms, weight, final_rule, ramp=0.0):
    """The `LatencyConstraint` of one column of a device table (whole NAS-Bench-201 space).

    Returns:
        (constraint, surrogate report): target None means the column's median.
    """
    from unas_keras.latency.device_table import DeviceTable
    from unas_keras.space.nb201 import NB201SearchSpace

    table = DeviceTable.from_csv(table_path, space="nb201", column=column)
    space = NB201SearchSpace()
    latencies = np.full(NUM_ARCHITECTURES, np.nan)
    for arch, ms in zip(table.architectures(), table.latencies()):
        latencies[nb201_table.architecture_index(space.encode(arch)["edges"])] = ms
    if np.isnan(latencies).any():
        raise cli.UsageError(f"the device table {table_path} does not hold all {NUM_ARCHITECTURES} cells "
                             f"({len(table)} rows).")
    surrogate = table.fit_surrogate(space)
    target = table.median_ms() if target_ms is None else float(target_ms)
    return LatencyConstraint(latencies, target, weight, surrogate, final_rule, ramp), surrogate.report


def constrained_summary(accuracies, constraint, final_idx, queried):
    """The figures of one method over seeds (the four of the contract, plus per-seed details)."""
    final_idx = np.asarray(final_idx)
    best_feasible = []
    for q in queried:
        feasible = q[constraint.feasible[q]]
        best_feasible.append(float(accuracies[feasible].max()) if feasible.size else float("nan"))
    best_feasible = np.asarray(best_feasible)
    main = {
        "final_accuracy": round(float(accuracies[final_idx].mean()), 4),
        "final_latency_ms": round(float(constraint.latencies[final_idx].mean()), 4),
        "feasible_fraction": round(float(constraint.feasible[final_idx].mean()), 4),
        "best_feasible_queried": (round(float(np.nanmean(best_feasible)), 4) if np.isfinite(best_feasible).any()
                                  else None),
    }
    details = {
        "final_accuracy_per_seed": [round(float(a), 4) for a in accuracies[final_idx]],
        "final_latency_ms_per_seed": [round(float(a), 4) for a in constraint.latencies[final_idx]],
        "final_accuracy_std": round(float(accuracies[final_idx].std()), 4),
        "seeds_without_a_feasible_query": int(np.sum(~np.isfinite(best_feasible))),
    }
    return main, details


def run_constrained_method(method, accuracies, constraint, budget, seeds, config, final_queries=0):
    """One method over seeds under a latency constraint: (final indices, queried [S, budget], argmax indices).

    With `final_queries` K > 0 a gradient method searches with `budget - K` queries, then queries the K
    most probable cells of its final policy (under the final rule) and answers the best of them.
    """
    if method == "random":
        queried = np.stack([_random_queries(seed, budget) for seed in seeds])
        final = []
        for q in queried:
            feasible = q[constraint.feasible[q]]
            final.append(int(feasible[np.argmax(accuracies[feasible])]) if feasible.size
                         else int(q[np.argmin(constraint.latencies[q])]))
        return final, queried, final
    search = GradientSearch(method, accuracies, seeds, budget - final_queries, constraint=constraint, **config)
    _, _, final = search.run()
    logits = search.logits.numpy()
    argmax = [nb201_table.architecture_index(c) for c in np.argmax(logits, axis=-1)]
    queried = search.queried
    if final_queries:
        tops = np.array([constraint.most_probable(lg, final_queries) for lg in logits])
        final = [int(top[np.argmax(accuracies[top])]) for top in tops]
        queried = np.concatenate([queried, tops], axis=1)
    return final, queried, argmax


def run_constrained(accuracies, constraint, budget, seeds, configs, methods=("random", "reinforce", "unas"),
                    final_queries=0):
    """The methods (all three by default); returns (the contract's JSON object, details)."""
    out = {"target_ms": constraint.target,
           "constrained_optimum": round(float(accuracies[constraint.feasible].max()), 4), "methods": {}}
    details = {}
    for method in methods:
        final, queried, argmax = run_constrained_method(method, accuracies, constraint, budget, seeds,
                                                        configs.get(method), final_queries)
        out["methods"][method], details[method] = constrained_summary(accuracies, constraint, final, queried)
        if method != "random":
            details[method]["config"] = _method_config(method, configs[method])
            details[method]["plain_argmax"] = constrained_summary(accuracies, constraint, argmax, queried)[0]
        _progress(f"{method}: {out['methods'][method]}")
    return out, details


def _unas_loss_text(config):
    bound = f"target * (1 - {config['margin']})"
    term = (f"max(0, latency / ({bound}) - 1)" if config["penalty"] == "hinge"
            else f"(latency / ({bound}) - 1)")
    weight = f"{config['latency_weight']} (ramped)" + (f" + dual multiplier (step {config['dual_lr']}, "
                                                       "argmax latency)" if config["dual_lr"] else "")
    how = (f"latency term: exact expectation over the device table under softmax({config['sharpness']} * "
           "logits)" if config["latency_gradient"] == "exact" else
           "latency term: sampled, its control variate the device's linear surrogate at the relaxed sample")
    text = f"accuracy: (100 - accuracy) / 100, sampled, ridge control variate; + {weight} * {term}; {how}"
    if config.get("surrogate_weight"):
        text += (f"; + {config['surrogate_weight']} (ramped) * E[g] under the same sharpened policy")
    if config.get("final_steps"):
        text += (f"; then {config['final_steps']} zero-query Adam steps (lr {config['final_lr']}) on E[g] + "
                 f"{config['latency_weight']} * E[{term}] under softmax({config['final_sharpness']} * logits), "
                 "g refitted on all queries")
    return text


def main_constrained(table, seeds, base):
    """`--latency_table` mode: one dataset, one device column, the contract's JSON last line."""
    if FLAGS.dataset == "all":
        raise cli.UsageError("--latency_table needs one --dataset (not 'all').")
    if FLAGS.target_ms is not None and not FLAGS.target_ms > 0:
        raise cli.UsageError(f"--target_ms must be > 0, got {FLAGS.target_ms}.")
    accuracies = np.asarray(table.accuracy_array(FLAGS.dataset), dtype=np.float64)
    if np.isnan(accuracies).any():
        raise cli.UsageError(f"the table {table.path} does not hold all {NUM_ARCHITECTURES} architectures.")
    if not 0 <= FLAGS.final_queries < FLAGS.budget:
        raise cli.UsageError(f"--final_queries must be in [0, --budget), got {FLAGS.final_queries}.")
    for method, config in base.items():
        if (FLAGS.budget - FLAGS.final_queries) % config["samples"]:
            raise cli.UsageError(f"--budget - --final_queries ({FLAGS.budget - FLAGS.final_queries}) must be a "
                                 f"multiple of --{method}_samples ({config['samples']}).")
    if not 0.0 <= FLAGS.latency_ramp <= 1.0 or FLAGS.latency_weight < 0 or FLAGS.unas_latency_weight < 0:
        raise cli.UsageError("--latency_ramp must be in [0, 1], --latency_weight and --unas_latency_weight >= 0.")
    if not 0.0 <= FLAGS.unas_margin < 1.0 or not FLAGS.unas_sharpness > 0 or FLAGS.unas_dual_lr < 0:
        raise cli.UsageError("--unas_margin must be in [0, 1), --unas_sharpness > 0 and --unas_dual_lr >= 0.")
    constraint, report = load_constraint(FLAGS.latency_table, FLAGS.latency_column, FLAGS.target_ms,
                                         FLAGS.latency_weight, FLAGS.final_rule, FLAGS.latency_ramp)
    start = time.time()
    out, details = run_constrained(accuracies, constraint, FLAGS.budget, seeds, base,
                                   final_queries=FLAGS.final_queries)
    details.update(
        benchmark="nb201_tabular_constrained", dataset=FLAGS.dataset,
        latency_table=os.path.abspath(FLAGS.latency_table),
        latency_column=FLAGS.latency_column, budget=FLAGS.budget, seeds=len(seeds), seed_offset=FLAGS.seed_offset,
        loss={
            "reinforce": f"(100 - accuracy) / 100 + {FLAGS.latency_weight} * max(0, latency / target - 1), "
                         "all sampled",
            "unas": _unas_loss_text(base["unas"]),
        },
        final_rule=FLAGS.final_rule, final_queries=FLAGS.final_queries, latency_ramp=FLAGS.latency_ramp,
        final_architecture=(
            "random: best feasible query; reinforce/unas: "
            + (f"the best of the final policy's {FLAGS.final_queries} most probable "
               + ("feasible cells" if FLAGS.final_rule == "feasible_argmax" else "cells")
               + f" ({FLAGS.final_queries} queries taken from the budget)" if FLAGS.final_queries else
               ("the final policy's most probable feasible cell" if FLAGS.final_rule == "feasible_argmax"
                else "the final policy's argmax"))
            + "; plain_argmax gives the per-edge argmax of the final policy"),
        surrogate_report=report, query_rule=QUERY_RULE + "; " + LATENCY_RULE,
        wall_time_s=round(time.time() - start, 1))
    print(json.dumps({"details": details}))
    print(json.dumps(out))


def main(argv):
    del argv
    if FLAGS.budget < 1 or FLAGS.seeds < 1:
        raise cli.UsageError("--budget and --seeds must be positive.")
    for name in ("reinforce_samples", "unas_samples", "refit_every", "tune_seeds"):
        if FLAGS[name].value < 1:
            raise cli.UsageError(f"--{name} must be positive.")
    table = nb201_table.load_nb201_table(FLAGS.table)
    datasets = DATASETS if FLAGS.dataset == "all" else (FLAGS.dataset,)
    seeds = list(range(FLAGS.seed_offset, FLAGS.seed_offset + FLAGS.seeds))
    base = {
        "reinforce": {"lr": _default(FLAGS.reinforce_lr, CONSTRAINED_LR if FLAGS.latency_table else 0.3), "samples": FLAGS.reinforce_samples,
                      "baseline_decay": FLAGS.baseline_decay},
        "unas": {"lr": _default(FLAGS.unas_lr, CONSTRAINED_LR if FLAGS.latency_table else 0.3), "samples": FLAGS.unas_samples, "temperature": FLAGS.temperature,
                 "ridge_lambda": FLAGS.ridge_lambda, "pairwise": FLAGS.pairwise, "refit_every": FLAGS.refit_every},
    }
    if FLAGS.latency_table:
        final_steps = FLAGS.unas_final_steps
        if final_steps < 0 or not FLAGS.unas_final_lr > 0 or not FLAGS.unas_final_sharpness > 0:
            raise cli.UsageError("--unas_final_steps must be >= 0, --unas_final_lr and --unas_final_sharpness > 0.")
        if FLAGS.unas_latency_gradient != "exact":
            if FLAGS["unas_final_steps"].present and final_steps:
                raise cli.UsageError("--unas_final_steps needs --unas_latency_gradient=exact.")
            final_steps = 0  # the zero-query phase is part of the exact latency term's method
        base["unas"].update(latency_weight=FLAGS.unas_latency_weight, latency_gradient=FLAGS.unas_latency_gradient,
                            sharpness=FLAGS.unas_sharpness, margin=FLAGS.unas_margin, penalty=FLAGS.unas_penalty,
                            dual_lr=FLAGS.unas_dual_lr, surrogate_weight=FLAGS.unas_surrogate_weight,
                            final_steps=final_steps, final_lr=FLAGS.unas_final_lr,
                            final_sharpness=FLAGS.unas_final_sharpness)
    for method, config in base.items():
        if FLAGS.budget % config["samples"]:
            raise cli.UsageError(f"--budget ({FLAGS.budget}) must be a multiple of --{method}_samples "
                                 f"({config['samples']}).")
    if FLAGS.latency_table:
        return main_constrained(table, seeds, base)
    start = time.time()
    results, tuning = {}, {}
    for dataset in datasets:
        accuracies = np.asarray(table.accuracy_array(dataset), dtype=np.float64)
        if np.isnan(accuracies).any():
            raise cli.UsageError(f"the table {table.path} does not hold all 15,625 architectures.")
        configs = {m: dict(c) for m, c in base.items()}
        if FLAGS.tune:
            tune_seeds = list(range(FLAGS.tune_seed_offset, FLAGS.tune_seed_offset + FLAGS.tune_seeds))
            tuning[dataset] = {}
            for method in ("reinforce", "unas"):
                configs[method], trials = tune(method, accuracies, FLAGS.budget, configs[method], tune_seeds)
                tuning[dataset][method] = {"chosen": configs[method], "trials": trials}
        best_string, optimum = table.best(dataset)
        entry = {"optimum": round(optimum, 4), "optimal_architecture": best_string,
                 "mean_of_all_architectures": round(float(accuracies.mean()), 4), "methods": {}}
        per_seed = {}
        for method in ("random_search", "reinforce", "unas"):
            config = configs.get(method, {})
            finals, bests, final_idx = run_method(method, accuracies, FLAGS.budget, seeds, config)
            _progress(f"{dataset} {method}: final {np.mean(finals):.3f} +- {np.std(finals):.3f}")
            summary = _summary(finals, bests, final_idx)
            if method != "random_search":
                summary["config"] = _method_config(method, config)
            entry["methods"][method] = summary
            per_seed[method] = finals
        entry["paired_final_differences"] = {
            "unas_minus_reinforce": _paired(per_seed["unas"], per_seed["reinforce"]),
            "unas_minus_random_search": _paired(per_seed["unas"], per_seed["random_search"]),
            "reinforce_minus_random_search": _paired(per_seed["reinforce"], per_seed["random_search"]),
        }
        if FLAGS.variance_repeats > 0:
            entry["gradient_mse_diagnostic"] = gradient_diagnostic(
                accuracies, configs["unas"]["samples"], FLAGS.variance_repeats, configs["unas"]["temperature"],
                configs["unas"]["ridge_lambda"], configs["unas"]["pairwise"])
        results[dataset] = entry
    output = {
        "benchmark": "nb201_tabular",
        "table": os.path.abspath(table.path),
        "budget": FLAGS.budget,
        "seeds": FLAGS.seeds,
        "seed_offset": FLAGS.seed_offset,
        "loss": "(100 - test_accuracy_200_epochs) / 100",
        "query_rule": QUERY_RULE,
        "final_architecture": "argmax of the learned logits per edge (random search: the best architecture seen)",
        "optimizer": "Adam on zero-initialised 6x5 logits",
        "note": NOTE,
        "paper_anchors_cifar10": PAPER_ANCHORS_CIFAR10,
        "results": results,
        "wall_time_s": round(time.time() - start, 1),
    }
    if FLAGS.tune:
        output["tuning"] = {
            "protocol": (f"equal grids for both methods: lr {list(TUNE_LRS)} x samples/step {list(TUNE_SAMPLES)} x "
                         f"{TUNE_REINFORCE_KNOB[0]} {list(TUNE_REINFORCE_KNOB[1])} (REINFORCE) or "
                         f"{TUNE_UNAS_KNOB[0]} {list(TUNE_UNAS_KNOB[1])} (UNAS); {FLAGS.tune_seeds} tuning seeds "
                         f"from {FLAGS.tune_seed_offset}, disjoint from the evaluation seeds; "
                         "chosen by mean final accuracy"),
            "per_dataset": tuning,
        }
    print(json.dumps(output))


if __name__ == "__main__":
    _define_flags()
    cli.run_app(main)
