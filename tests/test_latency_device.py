"""Device latency tables: measured whole-network latencies keyed by architecture, in any space."""

import csv
import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import unas_keras as uk
from unas_keras.latency import DeviceTable, LatencyModel
from unas_keras.config import SearchConfig, classify, config_differences
from unas_keras.space import nb201 as nb201_space

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL_LATENCY = os.path.normpath(os.path.join(REPO, "..", "shared", "data", "nb201_latency.csv"))
needs_real_table = pytest.mark.skipif(not os.path.isfile(REAL_LATENCY),
                                      reason=f"device latency table absent at {REAL_LATENCY}")
ALL_SKIP = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"
# An additive "device": each op on each edge costs a fixed time, plus a constant.
OP_MS = np.array([0.0, 0.1, 1.0, 3.0, 0.5])
EDGE_SCALE = np.array([1.0, 1.5, 2.0, 1.0, 1.5, 2.0])


def _additive_ms(choices):
    return 2.0 + float(np.sum(OP_MS[list(choices)] * EDGE_SCALE))


def _write(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def _cell(choices):
    return nb201_space.format_string([nb201_space.OPS[c] for c in choices])


@pytest.fixture(scope="module")
def full_table(tmp_path_factory):
    """All 15,625 nb201 cells with two columns: the additive device and a slower copy."""
    rows = [[_cell(c), _additive_ms(c), 2 * _additive_ms(c)]
            for c in itertools.product(range(5), repeat=6)]
    return _write(tmp_path_factory.mktemp("dev") / "lat.csv", ["ArchitectureString", "phone_ms", "board_ms"], rows)


def test_lookup_by_string_genotype_and_architecture(tmp_path):
    path = _write(tmp_path / "t.csv", ["ArchitectureString", "phone_ms"], [[ALL_SKIP, 3.5]])
    table = DeviceTable.from_csv(path, space="nb201")  # the only latency column is picked
    arch = uk.Architecture("nb201", nb201_space.NB201Genotype.from_string(ALL_SKIP), name="labelled")
    assert table.column == "phone_ms" and len(table) == 1
    assert table.predict(ALL_SKIP) == table.predict(arch) == table.predict_ms(arch) == 3.5
    assert arch in table and ALL_SKIP in table and "garbage" not in table
    missing = uk.sample_architecture("nb201", seed=3)
    with pytest.raises(ValueError, match="has no entry for the architecture"):
        table.predict(missing)
    with pytest.raises(ValueError, match="holds 'nb201' architectures"):
        table.predict(uk.presets.get("darts_v2"))


def test_columns_must_be_named_and_exist(full_table, tmp_path):
    with pytest.raises(ValueError, match=r"choose the latency column .*phone_ms.*board_ms"):
        DeviceTable.from_csv(full_table, space="nb201")
    with pytest.raises(ValueError, match=r"no latency column 'gpu_ms'; choose among \['phone_ms', 'board_ms'\]"):
        DeviceTable.from_csv(full_table, space="nb201", column="gpu_ms")
    with pytest.raises(ValueError, match="no architecture column 'architecture'"):
        DeviceTable.from_csv(full_table, space="darts", column="phone_ms")
    with pytest.raises(ValueError, match="not found"):
        DeviceTable.from_csv(tmp_path / "missing.csv", space="nb201")


@pytest.mark.parametrize("rows, pattern", [
    ([[ALL_SKIP, "fast"]], r"line 2: phone_ms = 'fast' is not a latency"),
    ([[ALL_SKIP, "-1"]], r"line 2: .* is not a latency"),
    ([[ALL_SKIP, "1"], [ALL_SKIP, "2"]], r"line 3: duplicate architecture"),
    ([["|conv~0|+|a~0|b~1|+|a~0|b~1|c~2|", "1"]], r"line 2: .*unknown operation"),
    ([], r"has no rows"),
])
def test_malformed_tables(tmp_path, rows, pattern):
    path = _write(tmp_path / "t.csv", ["ArchitectureString", "phone_ms"], rows)
    with pytest.raises(ValueError, match=pattern):
        DeviceTable.from_csv(path, space="nb201", column="phone_ms")


def test_any_space_through_architecture_json(tmp_path):
    archs = [uk.sample_architecture("darts", seed=s) for s in range(6)] + [uk.presets.get("darts_v2")]
    rows = [[a.to_json(indent=None), 10.0 + i] for i, a in enumerate(archs)]
    path = _write(tmp_path / "darts.csv", ["architecture", "pixel_ms"], rows)
    table = DeviceTable.from_csv(path, space="darts", column="pixel_ms")
    assert [table.predict(a) for a in archs] == [10.0 + i for i in range(len(archs))]
    model = table.latency_model()
    assert isinstance(model, LatencyModel) and model.table is table
    assert model.predict_ms(archs[2]) == 12.0
    bias, weights = model.surrogate_weights()
    assert set(weights) == set(uk.latency.LatencySurrogate(
        "darts", 0.0, {k: np.zeros(v) for k, v in model.surrogate.search_space.decisions().items()}).weights)
    # A darts table cannot serve an nb201 search, and an nb201 row cannot sit in a darts table.
    with pytest.raises(ValueError, match="'darts' architectures; the search is in the 'nb201' space"):
        SearchConfig.resolve(space="nb201", dataset="digits", latency=table, target_latency_ms=5.0)
    bad = _write(tmp_path / "bad.csv", ["architecture", "pixel_ms"],
                 [[uk.sample_architecture("nb201", seed=0).to_json(indent=None), 1.0]])
    with pytest.raises(ValueError, match="line 2: a 'nb201' architecture in a 'darts' table"):
        DeviceTable.from_csv(bad, space="darts")


def test_surrogate_is_fitted_on_the_table_with_a_held_out_report(full_table):
    table = DeviceTable.from_csv(full_table, space="nb201", column="board_ms")
    assert len(table) == 15625
    model = LatencyModel.from_device_table(table)
    report = model.surrogate.report
    assert report["num_held_out"] == 3125 and report["num_fit"] == 12500 and report["column"] == "board_ms"
    assert report["held_out"]["spearman"] > 0.999 and report["held_out"]["mape_pct"] < 0.1
    arch = uk.sample_architecture("nb201", seed=11)
    choices = nb201_space.NB201SearchSpace().encode(arch)["edges"]
    assert model.predict_ms(arch) == pytest.approx(2 * _additive_ms(choices))
    assert model.surrogate_ms(arch) == pytest.approx(2 * _additive_ms(choices), abs=0.02)  # ridge l2 = 1
    # The same model straight from the path.
    again = LatencyModel.from_device_table(full_table, space="nb201", column="board_ms")
    assert again.predict_ms(arch) == model.predict_ms(arch)
    assert table.fingerprint() == again.table.fingerprint()
    assert table.fingerprint() != DeviceTable.from_csv(full_table, space="nb201", column="phone_ms").fingerprint()


def test_one_rule_for_latency_targets(full_table):
    table = DeviceTable.from_csv(full_table, space="nb201", column="phone_ms")
    for space in ("nb201", "darts"):
        with pytest.raises(ValueError, match="needs measured latencies: pass latency= a unas_keras.latency.Device"):
            SearchConfig.resolve(space=space, dataset="digits", target_latency_ms=5.0)
    cfg = SearchConfig.resolve(space="nb201", dataset="digits", latency=table, target_latency_ms=5.0)
    assert cfg.latency == {"kind": "device_table", "path": os.path.abspath(full_table), "column": "phone_ms",
                              "sha256": table.fingerprint()}
    assert cfg.target_latency_ms == 5.0
    assert SearchConfig.resolve(space="proxyless", dataset="digits", target_latency_ms=5.0).latency["kind"] == "lookup_table"
    assert SearchConfig.resolve(space="nb201", dataset="digits").latency is None
    # A LatencyModel built from a device table is recorded with the table it reads.
    from_model = SearchConfig.resolve(space="nb201", dataset="digits", latency=table.latency_model(),
                                           target_latency_ms=5.0).latency
    assert from_model == dict(cfg.latency, kind="latency_model")
    # A run.json written before the key existed compares equal to a run without a latency source.
    old = SearchConfig.resolve(space="nb201", dataset="digits").to_dict()
    del old["latency"]
    assert config_differences(old, SearchConfig.resolve(space="nb201", dataset="digits").to_dict()) == []
    with pytest.raises(ValueError, match="latency must be a unas_keras.latency.DeviceTable or LatencyModel"):
        SearchConfig.resolve(space="nb201", dataset="digits", latency="table.csv")


def test_search_model_reads_the_device_table_in_the_nb201_space(full_table):
    """Hard samples are scored by the table; the relaxed path by the fitted surrogate."""
    import keras

    from unas_keras.networks import build_supernet
    from unas_keras.search import objectives

    table = DeviceTable.from_csv(full_table, space="nb201", column="phone_ms")
    supernet = build_supernet("nb201", 10, (8, 8, 1), channels=2, cells_per_stage=1)
    model = uk.SearchModel(supernet, latency=table.latency_model(supernet.search_space), target_latency_ms=4.0)
    arrays = [np.eye(5, dtype="float32")[[[0, 1, 2, 3, 4, 1], [3, 3, 3, 3, 3, 3]]]]
    got = model._predict_latency_np(*arrays)
    np.testing.assert_allclose(got, [_additive_ms([0, 1, 2, 3, 4, 1]), _additive_ms([3] * 6)], rtol=1e-6)
    relaxed = {"edges": keras.ops.convert_to_tensor(arrays[0])}
    surrogate = objectives.linear_latency(model._latency_bias, model._latency_coefficients, relaxed)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(surrogate), got, atol=0.02)


@needs_real_table
def test_shipped_tables_read_in_place():
    raspi = DeviceTable.from_csv(REAL_LATENCY, space="nb201", column="raspi4_ms")
    first = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"
    assert len(raspi) == 15625 and raspi.predict(first) == pytest.approx(10.481977)
    assert raspi.median_ms() == pytest.approx(25.68, abs=0.01)
    report = raspi.fit_surrogate().report["held_out"]
    assert report["spearman"] > 0.9
    gold = DeviceTable.from_csv(REAL_LATENCY, space="nb201", column="gold_6226_ms")
    assert gold.predict(first) == pytest.approx(10.524626)
    held = gold.fit_surrogate().report["held_out"]
    assert held["spearman"] > 0.95 and held["mape_pct"] < 10


def _run_app(*args):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, os.path.join(REPO, "apps", "search.py"), *args], capture_output=True,
                          text=True, timeout=300, env=env)


def test_app_latency_flags_bad_input(full_table, tmp_path):
    result = _run_app("--space=nb201", "--latency_column=phone_ms", "--target_latency_ms=5")
    assert result.returncode == 2 and "--latency_column needs --latency_table" in result.stderr
    result = _run_app("--space=nb201", f"--latency_table={tmp_path / 'none.csv'}", "--target_latency_ms=5")
    assert result.returncode == 2 and "not found" in result.stderr and "Traceback" not in result.stderr
    result = _run_app("--space=nb201", f"--latency_table={full_table}", "--target_latency_ms=5")
    assert result.returncode == 2 and "choose the latency column" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = _run_app("--space=nb201", "--target_latency_ms=5", f"--output_dir={tmp_path / 'run'}")
    assert result.returncode == 2 and "--latency_table" in result.stderr
    assert not os.path.exists(tmp_path / "run")


@pytest.mark.slow
def test_constrained_nb201_search_on_digits_meets_the_median_target(full_table, tmp_path):
    """uk.search with a device table column, target at the table's median (the shipped raspi4 column when
    the data is present, else the additive table this module writes): the derived cell meets the target;
    the same search without a target derives a slower one."""
    if os.path.isfile(REAL_LATENCY):
        table = DeviceTable.from_csv(REAL_LATENCY, space="nb201", column="raspi4_ms")
    else:
        table = DeviceTable.from_csv(full_table, space="nb201", column="phone_ms")
    target = table.median_ms()
    tiny = dict(space="nb201", dataset="digits", epochs=2, warmup_epochs=1, batch_size=32, steps_per_epoch=6,
                resolution=8, channels=4, cells_per_stage=1, seed=0, verbose=0, arch_lr=0.5, latency=table,
                latency_lambda=0.2, latency_ramp_steps=1)
    free = uk.search(output_dir=tmp_path / "free", **tiny)
    held = uk.search(output_dir=tmp_path / "held", target_latency_ms=target, **tiny)
    free_ms, held_ms = table.predict(free.architecture), table.predict(held.architecture)
    print(json.dumps({"column": table.column, "target_ms": target, "unconstrained_ms": free_ms,
                      "constrained_ms": held_ms, "unconstrained": str(free.architecture),
                      "constrained": str(held.architecture)}))
    assert held_ms <= target and held_ms < free_ms
    # The expected latency of the learned distribution (surrogate) moved below the unconstrained one's.
    assert held.history["latency_ms"][-1] < free.history["latency_ms"][-1]
    run = json.load(open(tmp_path / "held" / "run.json"))
    assert run["config"]["latency"]["kind"] == "device_table" and run["config"]["target_latency_ms"] == target
    assert run["latency_surrogate_held_out"]["spearman"] > 0.9
