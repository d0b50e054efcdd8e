"""Accuracy figures of a latency predictor against measured latencies."""

import numpy as np


def latency_report(predicted_ms, measured_ms):
    """Compares predicted and measured latencies.

    Args:
        predicted_ms: sequence of predictions (ms).
        measured_ms: sequence of measurements (ms), same length, all > 0.

    Returns:
        dict: `n`, `mae_ms`, `rmse_ms`, `mape_pct` (mean |pred - meas| / meas
        in %), `max_ape_pct`, `within_10pct` (share with |error| <= 10% of the
        measurement), `within_5pct`, `spearman`, `kendall`, `pearson`,
        `bias_ms` (mean of pred - meas).
    """
    from scipy import stats

    pred = np.asarray(predicted_ms, dtype=np.float64).ravel()
    meas = np.asarray(measured_ms, dtype=np.float64).ravel()
    if pred.shape != meas.shape or pred.size < 2:
        raise ValueError(
            f"latency_report needs two sequences of the same length >= 2, got {pred.size} and {meas.size}."
        )
    if np.any(meas <= 0):
        raise ValueError("Measured latencies must be > 0.")
    err = pred - meas
    ape = np.abs(err) / meas
    constant = np.ptp(pred) == 0 or np.ptp(meas) == 0
    return {
        "n": int(pred.size),
        "mae_ms": float(np.mean(np.abs(err))),
        "rmse_ms": float(np.sqrt(np.mean(err ** 2))),
        "bias_ms": float(np.mean(err)),
        "mape_pct": float(100 * np.mean(ape)),
        "max_ape_pct": float(100 * np.max(ape)),
        "within_10pct": float(np.mean(ape <= 0.10 + 1e-12)),
        "within_5pct": float(np.mean(ape <= 0.05 + 1e-12)),
        "spearman": float("nan") if constant else float(stats.spearmanr(pred, meas)[0]),
        "kendall": float("nan") if constant else float(stats.kendalltau(pred, meas)[0]),
        "pearson": float("nan") if constant else float(np.corrcoef(pred, meas)[0, 1]),
    }
