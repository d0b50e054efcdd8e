"""Per-sample gradient variance and bias of the estimators on small categorical problems.

For each problem the exact gradient d/d logits E_z[L(z)] is computed by
enumerating every outcome; each estimator's per-sample gradients are obtained
in one pass (every sample gets its own copy of the logits), and we report

* variance: trace of the per-sample gradient covariance (sum over logits),
* bias_l2: || mean gradient - exact ||_2, and max_abs_z: the largest
  |mean - exact| / standard error over the logits (about <= 4 for an
  unbiased estimator at these sample sizes).

Problems: "small" (G=2, K=3, smooth loss sum(c z) + (sum(w z))^2),
"nas_like" (G=8, K=3, same form), "table" (G=2, K=3, non-differentiable
lookup table; reinforce vs relax with a poor and a good control variate).

Usage: python benchmarks/estimator_variance.py --num_samples=20000 --seed=0
Prints one JSON object as the last line.
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import ops  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from unas_keras import estimators  # noqa: E402


def per_sample_gradients(est, logits, loss_fn, num, seed, control_variate=None, baseline=None):
    """`[num, G, K]` gradient of each sample's surrogate term."""
    copies = tf.broadcast_to(logits[None], (num,) + tuple(logits.shape))
    with tf.GradientTape() as tape:
        tape.watch(copies)
        sample = est.sample(copies, seed)
        log_prob = ops.sum(sample.log_prob, axis=-1)
        hard = ops.stop_gradient(loss_fn(sample.hard)) if est.needs_hard_loss else None
        relaxed = (control_variate or loss_fn)(sample.relaxed) if est.needs_relaxed_loss else None
        surrogate = est.surrogate_from_losses(log_prob, hard, relaxed, baseline=baseline)
    return tape.gradient(surrogate, copies).numpy() * num


def summarise(grads, exact):
    mean = grads.mean(axis=0)
    se = grads.std(axis=0, ddof=1) / np.sqrt(grads.shape[0])
    return {
        "variance": float(grads.var(axis=0, ddof=1).sum()),
        "bias_l2": float(np.linalg.norm(mean - exact)),
        "max_abs_z": float(np.max(np.abs(mean - exact) / np.maximum(se, 1e-12))),
    }


def make_problem(num_groups, rng):
    logits = tf.constant((rng.normal(size=(num_groups, 3)) * 0.5).astype("float32"))
    c = tf.constant(rng.normal(size=(num_groups, 3)).astype("float32"))
    w = tf.constant((rng.normal(size=(num_groups, 3)) / np.sqrt(num_groups)).astype("float32"))

    def loss_fn(z):
        return ops.sum(z * c, axis=(1, 2)) + ops.sum(z * w, axis=(1, 2)) ** 2

    return logits, loss_fn, c, w


def run(num_samples, seed, temperature):
    rng = np.random.default_rng(seed)
    results = {}
    for problem, groups in (("small", 2), ("nas_like", 8)):
        logits, loss_fn, _, _ = make_problem(groups, rng)
        exact = estimators.exact_gradient(logits, loss_fn).numpy()
        # A converged moving-average baseline: the mean loss of an independent batch.
        warm = estimators.get("reinforce").sample(
            tf.broadcast_to(logits[None], (2000,) + tuple(logits.shape)), seed + 1000
        )
        baseline = float(ops.mean(loss_fn(warm.hard)))
        entry = {"exact_grad_l2": float(np.linalg.norm(exact))}
        configs = [
            ("reinforce_no_baseline", "reinforce", 0.0),
            ("reinforce", "reinforce", baseline),
            ("gumbel_softmax", "gumbel_softmax", None),
            ("rebar", "rebar", None),
        ]
        for label, name, b in configs:
            est = estimators.get(name, temperature=temperature)
            grads = per_sample_gradients(est, logits, loss_fn, num_samples, seed, baseline=b)
            entry[label] = summarise(grads, exact)
        results[problem] = entry

    table = tf.constant(rng.normal(size=(3, 3)).astype("float32") * 2.0)
    logits = tf.constant((rng.normal(size=(2, 3)) * 0.5).astype("float32"))

    def table_loss(z):
        a = ops.argmax(z[:, 0], axis=-1)
        b = ops.argmax(z[:, 1], axis=-1)
        return ops.take(ops.reshape(table, (-1,)), a * 3 + b)

    def good_cv(z):
        return ops.einsum("na,ab,nb->n", z[:, 0], table, z[:, 1])

    def poor_cv(z):
        return 3.0 * ops.sum(z, axis=(1, 2)) - 5.0 * z[:, 0, 0] * z[:, 1, 2]

    exact = estimators.exact_gradient(logits, table_loss).numpy()
    warm = estimators.get("reinforce").sample(tf.broadcast_to(logits[None], (2000, 2, 3)), seed + 1000)
    baseline = float(ops.mean(table_loss(warm.hard)))
    entry = {"exact_grad_l2": float(np.linalg.norm(exact))}
    entry["reinforce"] = summarise(
        per_sample_gradients(estimators.get("reinforce"), logits, table_loss, num_samples, seed, baseline=baseline),
        exact,
    )
    for label, cv in (("relax_poor_cv", poor_cv), ("relax_good_cv", good_cv)):
        est = estimators.get("relax", temperature=temperature)
        entry[label] = summarise(
            per_sample_gradients(est, logits, table_loss, num_samples, seed, control_variate=cv), exact
        )
    results["table"] = entry
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_samples", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--temperature", type=float, default=0.4)
    args = parser.parse_args(argv)
    if args.num_samples < 2:
        print(f"--num_samples must be >= 2, got {args.num_samples}", file=sys.stderr)
        return 2
    if not args.temperature > 0:
        print(f"--temperature must be > 0, got {args.temperature}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    results = run(args.num_samples, args.seed, args.temperature)
    for problem, entry in results.items():
        for label, stats in entry.items():
            if isinstance(stats, dict):
                print(
                    f"{problem:9s} {label:22s} variance={stats['variance']:9.4f} "
                    f"bias_l2={stats['bias_l2']:.4f} max|z|={stats['max_abs_z']:6.2f}"
                )
    payload = {
        "benchmark": "estimator_variance",
        "num_samples": args.num_samples,
        "seed": args.seed,
        "temperature": args.temperature,
        "results": results,
        "seconds": round(time.perf_counter() - start, 3),
    }
    print(json.dumps(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
