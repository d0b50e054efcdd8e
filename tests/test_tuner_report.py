"""Tests for `unas_keras.tuner_report`: the tuner's results rows and table (no trials run)."""

import types

from unas_keras import tuner_report


def _trial(trial_id, status, values, score=None):
    return types.SimpleNamespace(trial_id=trial_id, status=status, score=score,
                                 hyperparameters=types.SimpleNamespace(values=dict(values)))


def test_trial_row_takes_metrics_from_the_record():
    record = {"metrics": {"val_accuracy": 0.75, "params": 1234.0}, "architecture": "nb201:|conv|"}
    row = tuner_report.trial_row(_trial("01", "COMPLETED", {"seed": 7, "temperature": 0.3}, 0.75), record, "/p/t")
    assert row["seed"] == 7 and row["hyperparameters"] == {"temperature": 0.3}
    assert row["val_accuracy"] == 0.75 and row["params"] == 1234.0
    assert row["macs"] is None and row["latency_ms"] is None and row["val_loss"] is None
    assert row["architecture"] == "nb201:|conv|" and row["trial_dir"] == "/p/t" and row["score"] == 0.75
    missing = tuner_report.trial_row(_trial("02", "RUNNING", {"seed": 1}), None, "/p/u")
    assert missing["val_accuracy"] is None and missing["architecture"] is None


def test_summary_table_columns_formats_and_alignment():
    rows = [
        tuner_report.trial_row(_trial("0", "COMPLETED", {"seed": 11, "temperature": 0.3}, 0.9),
                               {"metrics": {"val_accuracy": 0.91234, "params": 1.5e6, "macs": 2048.0,
                                            "latency_ms": 1.23456}, "architecture": "A"}, "d0"),
        tuner_report.trial_row(_trial("1", "FAILED", {"seed": 12, "arch_learning_rate": 0.003}), None, "d1"),
    ]
    lines = tuner_report.summary_lines(rows, "/proj", "Space nb201, estimator rebar, search objective gen_gap",
                                       "Objective(name='val_accuracy', direction='max')", 5)
    assert lines[:4] == ["Results summary", "Results in /proj",
                         "Space nb201, estimator rebar, search objective gen_gap; trials ranked by "
                         "Objective(name='val_accuracy', direction='max')",
                         "Showing 2 of 5 trials (1 completed shown)"]
    header, first, second = lines[4:7]
    assert header.split() == ["trial", "status", "seed", "temperature", "arch_learning_rate", "val_accuracy",
                              "params", "MACs", "latency_ms"]
    assert first.split() == ["0", "COMPLETED", "11", "0.3", "-", "0.9123", "1.50M", "2.0K", "1.235"]
    assert second.split() == ["1", "FAILED", "12", "-", "0.003", "-", "-", "-", "-"]
    # Numbers are right-aligned under their headers.
    assert len(first) == len(header) and first.endswith("1.235")
    assert lines[7:] == ["trial 0: A"]
