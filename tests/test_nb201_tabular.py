"""The NAS-Bench-201 table reader and the tabular estimator benchmark."""

import csv
import importlib.util
import itertools
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from unas_keras import nb201_table
from unas_keras.space import nb201 as nb201_space
from unas_keras.space import presets

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL_TABLE = os.path.normpath(os.path.join(REPO, "..", "shared", "data", "nas_bench_201.csv"))
BENCHMARK = os.path.join(REPO, "benchmarks", "nb201_tabular.py")
COLUMNS = list(nb201_table.DATASET_COLUMNS.values()) + ["ArchitectureString", "UniqueString"]
ALL_SKIP = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"

needs_real_table = pytest.mark.skipif(
    not os.path.isfile(REAL_TABLE), reason=f"NAS-Bench-201 table absent at {REAL_TABLE}"
)


def _write_csv(path, rows, columns=COLUMNS):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(rows)
    return str(path)


def _row(text, c10=90.0, c100=70.0, im=40.0):
    return [c10, c100, im, text, "unique"]


def _synthetic_accuracy(choices):
    """An additive-plus-interaction landscape with a unique optimum at all nor_conv_3x3 but one skip."""
    edge_values = np.array([0.0, 1.0, 2.0, 3.0, 0.5])
    score = sum(edge_values[c] for c in choices) + (2.0 if choices[3] == 1 else 0.0)
    return 50.0 + 2.0 * score


def _write_synthetic_table(path):
    rows = []
    for choices in itertools.product(range(5), repeat=6):
        acc = _synthetic_accuracy(choices)
        text = nb201_space.format_string([nb201_space.OPS[c] for c in choices])
        rows.append(_row(text, acc, acc - 20.0, acc - 40.0))
    return _write_csv(path, rows)


# ----------------------------------------------------------------------------- reader


def test_missing_path_says_where_and_how(tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(ValueError) as info:
        nb201_table.load_nb201_table(missing)
    message = str(info.value)
    assert str(missing) in message and "UNAS_NB201_TABLE" in message and "--table" in message


def test_env_var_points_to_the_table(tmp_path, monkeypatch):
    path = _write_csv(tmp_path / "t.csv", [_row(ALL_SKIP, 54.3)])
    monkeypatch.setenv(nb201_table.ENV_VAR, path)
    assert nb201_table.default_table_path() == path
    assert nb201_table.load_nb201_table().accuracy(ALL_SKIP, "cifar10") == pytest.approx(54.3)
    monkeypatch.setenv(nb201_table.ENV_VAR, str(tmp_path / "gone.csv"))
    with pytest.raises(ValueError, match=r"\$UNAS_NB201_TABLE"):
        nb201_table.load_nb201_table()


def test_wrong_columns_are_named(tmp_path):
    columns = ["CIFAR10TestAccuracy200Epochs", "ArchitectureString"]
    path = _write_csv(tmp_path / "t.csv", [[90.0, ALL_SKIP]], columns=columns)
    with pytest.raises(ValueError) as info:
        nb201_table.load_nb201_table(path)
    message = str(info.value)
    assert "CIFAR100TestAccuracy200Epochs" in message and "ImageNetTestAccuracy200Epochs" in message


@pytest.mark.parametrize("row, pattern", [
    (_row(ALL_SKIP, "n/a"), r"line 2: column CIFAR10TestAccuracy200Epochs is not a number"),
    (_row("|conv~0|+|x~0|y~1|+|a~0|b~1|c~2|"), r"line 2: .*unknown operation"),
    (_row("not a cell"), r"line 2: .*expected 3"),
    (_row(ALL_SKIP, 140.0), r"line 2: .* not an accuracy"),
])
def test_unparsable_rows(tmp_path, row, pattern):
    path = _write_csv(tmp_path / "t.csv", [row])
    with pytest.raises(ValueError, match=pattern):
        nb201_table.load_nb201_table(path)


def test_duplicate_and_empty_tables(tmp_path):
    with pytest.raises(ValueError, match="line 3: duplicate"):
        nb201_table.load_nb201_table(_write_csv(tmp_path / "d.csv", [_row(ALL_SKIP), _row(ALL_SKIP)]))
    with pytest.raises(ValueError, match="no rows"):
        nb201_table.load_nb201_table(_write_csv(tmp_path / "e.csv", []))


def test_accuracy_lookups(tmp_path):
    best = presets.get("nb201_best_cifar10")
    path = _write_csv(tmp_path / "t.csv", [_row(ALL_SKIP, 54.3, 15.6, 16.3), _row(best.genotype.to_string(), 94.4)])
    table = nb201_table.load_nb201_table(path)
    assert len(table) == 2 and best in table and ALL_SKIP in table
    assert table.accuracy(best, "cifar10") == pytest.approx(94.4)
    assert table.accuracy(best.genotype, "cifar10") == pytest.approx(94.4)
    assert table.accuracy([1] * 6, "cifar100") == pytest.approx(15.6)
    assert table.accuracy(ALL_SKIP, "imagenet16") == pytest.approx(16.3)
    assert table.best("cifar10") == (best.genotype.to_string(), pytest.approx(94.4))
    with pytest.raises(ValueError, match="Unknown NB201 dataset"):
        table.accuracy(ALL_SKIP, "cifar")
    with pytest.raises(ValueError, match="not in the NB201 table"):
        table.accuracy([0] * 6, "cifar10")
    with pytest.raises(ValueError, match="op indices"):
        table.accuracy([7] * 6, "cifar10")
    with pytest.raises(ValueError, match="'nb201' architecture"):
        table.accuracy(presets.get("darts_v2"), "cifar10")


def test_architecture_index_is_base_5():
    assert nb201_table.architecture_index([0] * 6) == 0
    assert nb201_table.architecture_index([0, 0, 0, 0, 0, 1]) == 1
    assert nb201_table.architecture_index([1, 0, 0, 0, 0, 0]) == 5 ** 5
    assert nb201_table.architecture_index([4] * 6) == 5 ** 6 - 1


@needs_real_table
def test_real_table_sanity_figures():
    table = nb201_table.load_nb201_table(REAL_TABLE)
    assert len(table) == 15625
    assert table.best("cifar10")[1] == pytest.approx(94.37, abs=0.005)
    assert table.best("cifar100")[1] == pytest.approx(73.51, abs=0.005)
    assert table.best("imagenet16")[1] == pytest.approx(47.31, abs=0.005)
    assert table.accuracy(ALL_SKIP, "cifar10") == pytest.approx(54.30, abs=0.005)
    assert table.accuracy(presets.get("nb201_best_cifar10"), "cifar10") == pytest.approx(94.37, abs=0.005)


# -------------------------------------------------------------------------- benchmark


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("nb201_tabular_under_test", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ridge_control_variate_recovers_an_additive_landscape():
    bench = _load_benchmark()
    rng = np.random.default_rng(0)
    indices = rng.integers(0, 5 ** 6, size=200)
    choices = np.array([[(i // 5 ** (5 - e)) % 5 for e in range(6)] for i in indices])
    true_w = rng.normal(size=(6, 5))
    losses = 0.3 + true_w[np.arange(6), choices].sum(axis=1)
    bias, w1, w2 = bench.fit_ridge(indices, losses, lam=1e-6, pairwise=False)
    onehot = np.eye(5)[choices]
    predicted = bias + np.einsum("nec,ec->n", onehot, w1)
    np.testing.assert_allclose(predicted, losses, atol=1e-4)
    assert np.all(w2 == 0.0)
    bias, w1, w2 = bench.fit_ridge(indices, losses, lam=1e-3, pairwise=True)
    pair = sum(np.einsum("ni,ij,nj->n", onehot[:, a], w2[p], onehot[:, b]) for p, (a, b) in enumerate(bench.PAIRS))
    np.testing.assert_allclose(bias + np.einsum("nec,ec->n", onehot, w1) + pair, losses, atol=1e-2)


def _run_benchmark(*args):
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the benchmark's own default keeps TensorFlow's C++ logs quiet
    return subprocess.run([sys.executable, BENCHMARK, *args], capture_output=True, text=True, timeout=600, env=env)


def test_bad_input_exits_with_status_2(tmp_path):
    result = _run_benchmark(f"--table={tmp_path / 'missing.csv'}", "--budget=30", "--seeds=1")
    assert result.returncode == 2
    assert "not found" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("error:")
    result = _run_benchmark("--budget=0")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: --budget")


@pytest.mark.slow
def test_gradient_methods_learn_on_a_synthetic_table(tmp_path):
    path = _write_synthetic_table(tmp_path / "synthetic.csv")
    result = _run_benchmark(f"--table={path}", "--dataset=cifar10", "--budget=300", "--seeds=2",
                            "--reinforce_lr=0.3", "--unas_lr=0.3")
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    entry = out["results"]["cifar10"]
    mean_all = entry["mean_of_all_architectures"]
    for method in ("reinforce", "unas"):
        stats = entry["methods"][method]["final_accuracy"]
        # A sign error would drive the argmax to the worst cells, far below the mean.
        assert stats["min"] > mean_all + 10.0, (method, stats, mean_all)


@needs_real_table
def test_small_tabular_run_on_the_real_table():
    result = _run_benchmark(f"--table={REAL_TABLE}", "--dataset=cifar10", "--budget=30", "--seeds=2")
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["budget"] == 30 and out["seeds"] == 2
    assert "NOT a reproduction" in out["note"] and "query" in out["query_rule"]
    assert out["paper_anchors_cifar10"]["optimum"] == "94.37"
    entry = out["results"]["cifar10"]
    assert entry["optimum"] == pytest.approx(94.37, abs=0.005)
    for method in ("random_search", "reinforce", "unas"):
        stats = entry["methods"][method]
        assert 10.0 <= stats["final_accuracy"]["min"] <= stats["final_accuracy"]["max"] <= entry["optimum"]
        assert stats["best_seen_accuracy"]["max"] <= entry["optimum"]
    random = entry["methods"]["random_search"]
    assert random["final_accuracy"] == random["best_seen_accuracy"]


# ------------------------------------------------------------------------ latency-constrained mode

REAL_LATENCY = os.path.normpath(os.path.join(REPO, "..", "shared", "data", "nb201_latency.csv"))


def _synthetic_latency_ms(choices):
    """Convolutions are slow; the synthetic accuracy optimum (all nor_conv_3x3 but one skip) is infeasible
    at the median."""
    return 1.0 + sum([0.05, 0.1, 1.0, 3.0, 0.5][c] for c in choices)


def _write_synthetic_latency(path):
    rows = [[nb201_space.format_string([nb201_space.OPS[c] for c in choices]), _synthetic_latency_ms(choices)]
            for choices in itertools.product(range(5), repeat=6)]
    return _write_csv(path, rows, columns=["ArchitectureString", "phone_ms"])


def test_constrained_mode_json_last_line(tmp_path):
    table = _write_synthetic_table(tmp_path / "acc.csv")
    latency = _write_synthetic_latency(tmp_path / "lat.csv")
    all_choices = list(itertools.product(range(5), repeat=6))
    lat = np.array([_synthetic_latency_ms(c) for c in all_choices])
    acc = np.array([_synthetic_accuracy(c) - 20.0 for c in all_choices])  # the cifar100 column
    target = float(np.median(lat))
    result = _run_benchmark(f"--table={table}", "--dataset=cifar100", "--budget=40", "--seeds=2",
                            "--final_queries=10", "--final_rule=feasible_argmax",
                            f"--latency_table={latency}", "--latency_column=phone_ms", f"--target_ms={target}")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    out, details = json.loads(lines[-1]), json.loads(lines[-2])["details"]
    assert set(out) == {"target_ms", "constrained_optimum", "methods"}
    assert out["target_ms"] == pytest.approx(target)
    assert out["constrained_optimum"] == pytest.approx(acc[lat <= target].max(), abs=1e-4)
    assert set(out["methods"]) == {"random", "reinforce", "unas"}
    for name, m in out["methods"].items():
        assert set(m) == {"final_accuracy", "final_latency_ms", "feasible_fraction", "best_feasible_queried"}
        assert 0.0 <= m["feasible_fraction"] <= 1.0
        assert m["best_feasible_queried"] <= out["constrained_optimum"] + 1e-6
    # Random search's answer is its best feasible query: feasible, and equal to best_feasible_queried.
    random = out["methods"]["random"]
    assert random["feasible_fraction"] == 1.0 and random["final_latency_ms"] <= target
    assert random["final_accuracy"] == pytest.approx(random["best_feasible_queried"])
    assert details["surrogate_report"]["held_out"]["spearman"] > 0.99  # additive latencies
    assert details["budget"] == 40 and details["final_rule"] == "feasible_argmax"
    # The feasible_argmax final rule only ever answers feasible cells.
    for name in ("reinforce", "unas"):
        assert all(ms <= target for ms in details[name]["final_latency_ms_per_seed"])


def test_constrained_mode_bad_input(tmp_path):
    table = _write_synthetic_table(tmp_path / "acc.csv")
    latency = _write_csv(tmp_path / "lat.csv", [[ALL_SKIP, 1.0, 2.0]],
                         columns=["ArchitectureString", "a_ms", "b_ms"])
    result = _run_benchmark(f"--table={table}", "--budget=30", "--seeds=1", f"--latency_table={latency}",
                            "--final_queries=30")
    assert result.returncode == 2 and "--final_queries must be in [0, --budget)" in result.stderr
    result = _run_benchmark(f"--table={table}", "--budget=30", "--seeds=1", f"--latency_table={latency}",
                            "--latency_column=a_ms", "--unas_margin=1.0")
    assert result.returncode == 2 and "--unas_margin must be in [0, 1)" in result.stderr
    result = _run_benchmark(f"--table={table}", "--budget=60", "--seeds=1", f"--latency_table={latency}")
    assert result.returncode == 2 and "choose the latency column" in result.stderr
    result = _run_benchmark(f"--table={table}", "--budget=60", "--seeds=1", f"--latency_table={latency}",
                            "--latency_column=a_ms")
    assert result.returncode == 2 and "does not hold all 15625 cells" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@needs_real_table
@pytest.mark.skipif(not os.path.isfile(REAL_LATENCY), reason=f"device latency table absent at {REAL_LATENCY}")
def test_constrained_optimum_on_the_shipped_tables():
    bench = _load_benchmark()
    table = nb201_table.load_nb201_table(REAL_TABLE)
    constraint, report = bench.load_constraint(REAL_LATENCY, "raspi4_ms", None, 0.1, "feasible_argmax")
    assert constraint.target == pytest.approx(25.68, abs=0.01)
    acc = np.asarray(table.accuracy_array("cifar100"))
    assert acc[constraint.feasible].max() == pytest.approx(71.63, abs=0.005)
    assert report["held_out"]["spearman"] > 0.9
    # The most probable feasible cell of a policy that favours the (infeasible) optimum is feasible.
    best = int(np.argmax(acc))
    assert not constraint.feasible[best]
    logits = np.zeros((6, 5))
    logits[np.arange(6), bench._choices_of_index(best)] = 3.0
    assert constraint.feasible[constraint.final_index(logits)]
    assert constraint.final_index(logits) != best


def _synthetic_constraint(bench, weight=0.1, ramp=0.7):
    """The synthetic cifar100 accuracies and a constraint at the median of the synthetic latencies, whose
    linear surrogate is exact (the synthetic latencies are additive)."""
    all_choices = list(itertools.product(range(5), repeat=6))
    acc = np.array([_synthetic_accuracy(c) - 20.0 for c in all_choices])
    lat = np.array([_synthetic_latency_ms(c) for c in all_choices])
    per_op = np.array([0.05, 0.1, 1.0, 3.0, 0.5])
    surrogate = types.SimpleNamespace(bias=1.0, weights={"edges": np.tile(per_op, (6, 1))})
    return acc, bench.LatencyConstraint(lat, float(np.median(lat)), weight, surrogate, "argmax", ramp)


def test_latency_penalty_forms():
    bench = _load_benchmark()
    _, constraint = _synthetic_constraint(bench)
    target = constraint.target
    latency = np.array([0.5, 1.0, 1.2]) * target
    np.testing.assert_allclose(constraint.penalty(latency, "hinge", 2.0), [0.0, 0.0, 0.4], atol=1e-12)
    np.testing.assert_allclose(constraint.penalty(latency, "linear", 2.0), [-1.0, 0.0, 0.4], atol=1e-12)
    # The margin moves the bound under the target: a cell at the target is 1/0.9 - 1 over it.
    np.testing.assert_allclose(constraint.penalty(latency, "hinge", 1.0, margin=0.1),
                               [0.0, 1 / 0.9 - 1, 1.2 / 0.9 - 1], atol=1e-12)


def test_exact_latency_term_is_the_gradient_of_the_sharpened_expectation():
    """With constant accuracies the accuracy term has no gradient after the first step; one step of the
    exact latency term equals an Adam step on E_{softmax(k * logits)}[w * hinge] computed by enumeration."""
    import tensorflow as tf

    bench = _load_benchmark()
    _, constraint = _synthetic_constraint(bench, weight=0.5, ramp=0.0)
    flat = np.full(5 ** 6, 60.0)
    search = bench.GradientSearch("unas", flat, [3], 10, lr=0.1, samples=10, constraint=constraint,
                                  latency_gradient="exact", sharpness=3.0, margin=0.05, latency_weight=0.5)
    start = np.random.default_rng(0).normal(size=(1, 6, 5)).astype("float32")
    search.logits.assign(start)
    search.run()
    onehot = np.eye(5)[constraint._choices]
    penalty = constraint.penalty(constraint.latencies, "hinge", 0.5, margin=0.05)
    variable = tf.Variable(start[0].astype("float64"))
    with tf.GradientTape() as tape:
        log_p = tf.nn.log_softmax(3.0 * variable, axis=-1)
        p_cells = tf.exp(tf.einsum("nec,ec->n", onehot, log_p))
        expected = tf.reduce_sum(p_cells * penalty)
    grad = tape.gradient(expected, variable).numpy()
    # The accuracy term adds nothing (batch-mean control variate on a flat table).
    moved = start[0] - search.logits.numpy()[0]
    # keras Adam's first step: lr * g / (|g| + epsilon / sqrt(1 - beta_2)), epsilon 1e-7, beta_2 0.999.
    expected_step = 0.1 * grad / (np.abs(grad) + 1e-7 / np.sqrt(1 - 0.999))
    big = np.abs(grad) > 1e-5
    assert big.sum() >= 10, np.abs(grad)
    np.testing.assert_allclose(moved[big], expected_step[big], rtol=2e-2)


def test_constrained_unas_argmax_is_feasible_on_a_synthetic_table():
    """Regression test of the constrained UNAS path: at 60 queries its final policy's argmax meets the target
    in every seed and is within 5 points of the constrained optimum; the previous method (the sampled hinge
    at weight 0.1) never met it on these seeds."""
    bench = _load_benchmark()
    acc, constraint = _synthetic_constraint(bench)
    optimum = acc[constraint.feasible].max()
    seeds = [0, 1, 2, 3]
    config = dict(lr=bench.CONSTRAINED_LR, samples=10, **bench.UNAS_CONSTRAINED)
    final, queried, argmax = bench.run_constrained_method("unas", acc, constraint, 60, seeds, config)
    assert final == argmax and queried.shape == (4, 60)
    assert constraint.feasible[final].all(), constraint.latencies[final] / constraint.target
    assert acc[final].min() >= optimum - 5.0, (acc[final], optimum)
    old = dict(lr=0.6, samples=10, latency_gradient="sampled", latency_weight=0.1)
    final_old, _, _ = bench.run_constrained_method("unas", acc, constraint, 60, seeds, old)
    assert constraint.feasible[final_old].mean() <= 0.5


@pytest.mark.slow
@needs_real_table
@pytest.mark.skipif(not os.path.isfile(REAL_LATENCY), reason=f"device latency table absent at {REAL_LATENCY}")
def test_constrained_unas_argmax_on_the_shipped_raspi4_table():
    """The issue's setting (CIFAR-100, raspi4_ms, target at the median, 300 queries) on 12 seeds outside
    the tuning (100000-100039) and reported (0-29) ones: the final argmax meets the target in at least 11 of
    12 seeds (measured: 12; without the zero-query final phase: 12; the sampled hinge at weight 0.1: 2) and
    its mean accuracy is within 4.5 points of the constrained optimum 71.63 (measured: 68.12; without the
    final phase: 67.27). The benchmark's defaults, ridge lambda 10 included."""
    bench = _load_benchmark()
    acc = np.asarray(nb201_table.load_nb201_table(REAL_TABLE).accuracy_array("cifar100"), dtype=np.float64)
    constraint, _ = bench.load_constraint(REAL_LATENCY, "raspi4_ms", None, 0.1, "argmax", 0.7)
    config = dict(lr=bench.CONSTRAINED_LR, samples=10, ridge_lambda=10.0, **bench.UNAS_CONSTRAINED)
    final, _, _ = bench.run_constrained_method("unas", acc, constraint, 300, list(range(200000, 200012)), config)
    assert constraint.feasible[final].sum() >= 11, constraint.latencies[final]
    assert acc[final].mean() >= 71.63 - 4.5, acc[final]


def _enumerated_final_objective(bench, constraint, logits, queried, acc, weight, margin, sharpness=1.0):
    """E_p[g] + weight * E_p[hinge] by enumerating all cells, p = softmax(sharpness * logits) `[6, 5]`, g the
    ridge fit on the queried cells: the zero-query phase's objective, and its gradient (float64)."""
    import tensorflow as tf

    bias, w1, w2 = bench.fit_ridge(queried, (100.0 - acc[queried]) / 100.0, 10.0, True)
    features = bench._features(np.arange(5 ** 6), True)
    g_cells = bias + features @ np.concatenate([w1.ravel(), w2.ravel()])
    penalty = constraint.penalty(constraint.latencies, "hinge", weight, margin=margin)
    onehot = np.eye(5)[constraint._choices]
    variable = tf.Variable(np.asarray(logits, "float64"))
    with tf.GradientTape() as tape:
        p_cells = tf.exp(tf.einsum("nec,ec->n", onehot, tf.nn.log_softmax(sharpness * variable, axis=-1)))
        objective = tf.reduce_sum(p_cells * (g_cells + penalty))
    return float(objective), tape.gradient(objective, variable).numpy()


def test_zero_query_final_phase_is_an_adam_step_on_the_exact_objective():
    """The final phase queries nothing (same queries as without it) and its first step is an Adam step on
    E_p[g] + w * E_p[hinge], enumerated over every cell with g refitted on the run's queries; more steps
    lower that objective."""
    bench = _load_benchmark()
    acc, constraint = _synthetic_constraint(bench, weight=0.5, ramp=0.7)
    config = dict(lr=0.6, samples=10, ridge_lambda=10.0, **dict(bench.UNAS_CONSTRAINED, final_steps=0))
    runs = {}
    for steps in (0, 1, 40):
        search = bench.GradientSearch("unas", acc, [5], 40, constraint=constraint,
                                      **dict(config, final_steps=steps))
        search.run()
        runs[steps] = (search.logits.numpy()[0].astype("float64"), search.queried[0])
    start, queried = runs[0]
    np.testing.assert_array_equal(runs[1][1], queried)
    np.testing.assert_array_equal(runs[40][1], queried)
    before, grad = _enumerated_final_objective(bench, constraint, start, queried, acc, 0.5, 0.03)
    moved = start - runs[1][0]
    lr = config["final_lr"]
    expected_step = lr * grad / (np.abs(grad) + 1e-7 / np.sqrt(1 - 0.999))
    big = np.abs(grad) > 1e-4
    assert big.sum() >= 6, np.abs(grad)
    np.testing.assert_allclose(moved[big], expected_step[big], rtol=5e-2, atol=2e-3)
    after, _ = _enumerated_final_objective(bench, constraint, runs[40][0], queried, acc, 0.5, 0.03)
    assert after < before - 1e-4, (before, after)


def test_zero_query_final_phase_needs_unas_and_the_exact_latency_term():
    bench = _load_benchmark()
    acc, constraint = _synthetic_constraint(bench)
    with pytest.raises(ValueError, match="final_steps needs"):
        bench.GradientSearch("reinforce", acc, [0], 20, lr=0.1, samples=10, constraint=constraint, final_steps=5)
    with pytest.raises(ValueError, match="final_steps needs"):
        bench.GradientSearch("unas", acc, [0], 20, lr=0.1, samples=10, constraint=constraint,
                             latency_gradient="sampled", final_steps=5)
    with pytest.raises(ValueError, match="final_steps needs"):
        bench.GradientSearch("unas", acc, [0], 20, lr=0.1, samples=10, final_steps=5)


def test_zero_query_final_phase_flags(tmp_path):
    table = _write_synthetic_table(tmp_path / "acc.csv")
    latency = _write_synthetic_latency(tmp_path / "lat.csv")
    common = (f"--table={table}", "--dataset=cifar100", "--budget=20", "--seeds=1", f"--latency_table={latency}",
              "--latency_column=phone_ms")
    result = _run_benchmark(*common, "--unas_latency_gradient=sampled", "--unas_final_steps=5")
    assert result.returncode == 2 and "--unas_final_steps needs --unas_latency_gradient=exact" in result.stderr
    result = _run_benchmark(*common, "--unas_final_lr=0")
    assert result.returncode == 2 and "--unas_final_lr and --unas_final_sharpness > 0" in result.stderr
    # The sampled latency term runs without the final phase (its default steps are dropped, not an error).
    result = _run_benchmark(*common, "--unas_latency_gradient=sampled")
    assert result.returncode == 0, result.stderr[-2000:]
    details = json.loads(result.stdout.strip().splitlines()[-2])["details"]
    assert details["unas"]["config"]["final_steps"] == 0
    assert "zero-query" not in details["loss"]["unas"]
