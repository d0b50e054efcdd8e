"""The results table of `UNASTuner`: one row per trial and its printout.

`trial_row` turns a keras-tuner trial and its `result.json` record into a plain dict (what
`UNASTuner.get_trial_results` returns); `summary_lines` formats rows as the table `results_summary` prints.
"""

from unas_keras.scoring import METRIC_NAMES

# Columns after the hyper-parameters: (header, row key, format kind).
_METRIC_COLUMNS = (("val_accuracy", "val_accuracy", "acc"), ("params", "params", "count"),
                   ("MACs", "macs", "count"), ("latency_ms", "latency_ms", "ms"))
_COMPLETED = "COMPLETED"  # keras-tuner's TrialStatus.COMPLETED


def trial_row(trial, record, trial_dir):
    """One trial as a plain dict.

    Args:
        trial: a keras-tuner `Trial`.
        record: the trial's `result.json` content (None or {} when it was not scored).
        trial_dir: the trial's folder.

    Returns:
        dict with trial_id, status, seed, hyperparameters (the values other than the seed), score, the
        metrics of `METRIC_NAMES` (None when missing), architecture (compact string or None) and trial_dir.
    """
    record = record or {}
    metrics = record.get("metrics", {})
    values = dict(trial.hyperparameters.values)
    return {"trial_id": trial.trial_id, "status": str(trial.status), "seed": values.pop("seed", None),
            "hyperparameters": values, "score": trial.score,
            **{name: metrics.get(name) for name in METRIC_NAMES},
            "architecture": record.get("architecture"), "trial_dir": trial_dir}


def summary_lines(rows, project_dir, settings, objective, num_trials):
    """The lines `UNASTuner.results_summary` prints.

    Args:
        rows: `trial_row` dicts, best first.
        project_dir: the tuner's project folder.
        settings: "Space ..., estimator ..., search objective ..." text.
        objective: the oracle's objective (printed as is).
        num_trials: how many trials the project has.

    Returns:
        list of str: a header, the table (trial, status, seed, hyper-parameters, val_accuracy, params,
        MACs, latency_ms; "-" where a value is missing) and each shown trial's architecture.
    """
    completed = sum(row["status"] == _COMPLETED for row in rows)
    lines = ["Results summary", f"Results in {project_dir}", f"{settings}; trials ranked by {objective}",
             f"Showing {len(rows)} of {num_trials} trials ({completed} completed shown)"]
    lines += _table(rows)
    lines += [f"trial {row['trial_id']}: {row['architecture']}" for row in rows if row["architecture"]]
    return lines


def _table(rows):
    hp_names = []
    for row in rows:
        hp_names.extend(name for name in row["hyperparameters"] if name not in hp_names)
    table = [["trial", "status", "seed"] + hp_names + [header for header, _, _ in _METRIC_COLUMNS]]
    for row in rows:
        table.append([row["trial_id"], row["status"], _format(row["seed"])]
                     + [_format(row["hyperparameters"].get(name)) for name in hp_names]
                     + [_format(row[key], kind) for _, key, kind in _METRIC_COLUMNS])
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    # The header and the first two columns (trial, status) are left-aligned, numbers right-aligned.
    return ["  ".join(cell.rjust(width) if i and j >= 2 else cell.ljust(width)
                      for j, (cell, width) in enumerate(zip(line, widths))).rstrip()
            for i, line in enumerate(table)]


def _format(value, kind=None):
    if value is None:
        return "-"
    if kind == "acc":
        return f"{value:.4f}"
    if kind == "count":
        value = float(value)
        if value >= 1e6:
            return f"{value / 1e6:.2f}M"
        return f"{value / 1e3:.1f}K" if value >= 1e3 else f"{value:.0f}"
    if kind == "ms":
        return f"{value:.3f}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
