"""Block tables timed on a device: export the lookup table's blocks, time them, import the timings."""

import json
import os

import numpy as np
import pytest

from unas_keras import latency as lat
from unas_keras.latency import blocks as blocks_lib
from unas_keras.latency.lookup_table import block_tflite
from unas_keras.space.proxyless import MBConvBackbone, ProxylessSearchSpace

TINY = MBConvBackbone(stem_channels=8, first_block_channels=8, stage_channels=(8, 16),
                      stage_strides=(2, 2), stage_depths=(2, 1), head_channels=32)
SHAPE = (16, 16, 3)

NEW_FORMAT = """INFO: STARTING!
INFO: Num threads: [1]
INFO: Graph: [/data/local/tmp/blocks/{name}]
INFO: Loaded model /data/local/tmp/blocks/{name}
INFO: Initialized session in 3.4ms.
INFO: count=18 first=360 curr=276 min=275 max=360 avg=281.5 std=19
INFO: count=50 first=276 curr=276 min={min_us} max=282 avg={avg_us} std=1
INFO: Inference timings in us: Init: 3422, First inference: 360, Warmup (avg): 281.5, Inference (avg): {avg_us}
INFO: Memory footprint delta from the start of the tool (MB): init=2.1 overall=2.3
"""
OLD_FORMAT = """Graph: [{name}]
count=50 first=276 curr=276 min={min_us} max=282 avg={avg_us} std=1
Average inference timings in us: Warmup: 281.5, Init: 3422, Inference: {avg_us}
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("blocks")
    return lat.export_block_models(folder, input_shape=SHAPE, num_classes=10, backbone=TINY), folder


def test_export_writes_every_block_a_manifest_and_a_script(exported):
    manifest_path, folder = exported
    manifest = json.load(open(manifest_path))
    expected = {b.key for b in blocks_lib.space_blocks(TINY, SHAPE, 10)}
    assert set(manifest["blocks"]) == expected
    assert manifest["metadata"]["input_shape"] == list(SHAPE) and manifest["metadata"]["num_classes"] == 10
    files = sorted(f for f in os.listdir(folder) if f.endswith(".tflite"))
    assert files == sorted(list(manifest["blocks"].values()) + [manifest["overhead_model"]])
    script = open(os.path.join(folder, "run_benchmarks.sh")).read()
    assert "benchmark_model" in script and "--graph=" in script and "*.tflite" in script
    # Each file is the very model the table times here.
    block = blocks_lib.space_blocks(TINY, SHAPE, 10)[3]
    interpreter = lat.tflite.make_interpreter(os.path.join(folder, manifest["blocks"][block.key]), 1)
    assert tuple(interpreter.get_input_details()[0]["shape"][1:]) == block.input_shape
    assert os.path.getsize(os.path.join(folder, manifest["blocks"][block.key])) == len(block_tflite(block, TINY))


def test_round_trip_equals_build_lookup_table_within_noise(exported, tmp_path):
    """Export -> time each file here with LiteRT -> import == build_lookup_table (same statistic)."""
    manifest_path, folder = exported
    manifest = json.load(open(manifest_path))
    names = list(manifest["blocks"].values()) + [manifest["overhead_model"]]
    timed = {name: lat.measure_tflite_stats(os.path.join(folder, name), runs=40)["min_ms"] for name in names}
    results = tmp_path / "timings.csv"
    results.write_text("\n".join(["model,ms"] + [f"{name},{ms!r}" for name, ms in timed.items()]) + "\n")
    device = lat.LookupTable.from_device_results(manifest_path, results, device="this-cpu", threads=1)
    assert device.metadata["device"] == "this-cpu" and device.metadata["timed_with"] == "csv"
    # The import is exact: every entry is the timing of its own file.
    assert device.entries == {key: timed[name] for key, name in manifest["blocks"].items()}
    assert device.invoke_overhead_ms == timed[manifest["overhead_model"]]

    here = lat.build_lookup_table("proxyless", input_shape=SHAPE, num_classes=10, backbone=TINY, runs=40,
                                  progress=False, statistic="min")
    assert set(device.entries) == set(here.entries)
    # Same models timed twice on a CPU that other work may share. Each raw entry is a min of 40 runs of
    # about 10-30 us, so compare the raw entries (not predictions, which subtract the invocation overhead
    # once per block and so magnify a microsecond of noise many times): typical agreement within a third,
    # none off by more than a factor of three.
    keys = sorted(device.entries)
    ratio = np.array([device.entries[k] / here.entries[k] for k in keys])
    assert abs(np.log(np.median(ratio))) < np.log(1.35), ratio
    assert np.all(np.abs(np.log(ratio)) < np.log(3.0)), ratio
    # The device table is a full LookupTable: it saves, loads and drives a LatencyModel.
    space = ProxylessSearchSpace(TINY)
    archs = [space.sample(s) for s in range(8)]
    device.save(tmp_path / "device_lut.json")
    again = lat.LookupTable.load(tmp_path / "device_lut.json")
    assert again.predict(archs[0]) == pytest.approx(device.predict(archs[0]))
    model = lat.LatencyModel.from_lookup_table(again, space)
    assert model.surrogate_ms(archs[1]) == pytest.approx(again.predict(archs[1]), rel=1e-6)


def test_benchmark_model_output_is_read_back(exported, tmp_path):
    manifest_path, _ = exported
    manifest = json.load(open(manifest_path))
    names = list(manifest["blocks"].values()) + [manifest["overhead_model"]]
    chunks, expected = [], {}
    for i, name in enumerate(names):
        template = NEW_FORMAT if i % 2 else OLD_FORMAT
        chunks.append(template.format(name=name, avg_us=100.0 + 10 * i, min_us=90 + 10 * i))
        expected[name] = ((100.0 + 10 * i) / 1000.0, (90.0 + 10 * i) / 1000.0)
    results = tmp_path / "results.txt"
    results.write_text("".join(chunks))
    parsed = lat.parse_benchmark_output(results.read_text())
    assert parsed == pytest.approx({name: avg for name, (avg, _) in expected.items()})
    table = lat.LookupTable.from_device_results(manifest_path, results, device="pixel")
    lows = lat.LookupTable.from_device_results(os.path.dirname(manifest_path), results, statistic="min")
    assert table.metadata["timed_with"] == "benchmark_model"
    for key, name in manifest["blocks"].items():
        assert table.entries[key] == pytest.approx(expected[name][0])
        assert lows.entries[key] == pytest.approx(expected[name][1])
    assert table.invoke_overhead_ms == pytest.approx(expected[manifest["overhead_model"]][0])


def test_missing_or_malformed_results_are_clear_errors(exported, tmp_path):
    manifest_path, _ = exported
    manifest = json.load(open(manifest_path))
    first = next(iter(manifest["blocks"].values()))
    partial = tmp_path / "partial.csv"
    partial.write_text(f"model,ms\n{first},0.5\n")
    with pytest.raises(ValueError, match=r"has no timing for \d+ model\(s\)"):
        lat.LookupTable.from_device_results(manifest_path, partial)
    bad = tmp_path / "bad.csv"
    bad.write_text("file,seconds\nx,1\n")
    with pytest.raises(ValueError, match="needs a 'model' column and an 'ms'"):
        lat.LookupTable.from_device_results(manifest_path, bad)
    nonnumeric = tmp_path / "nan.csv"
    nonnumeric.write_text(f"model,us\n{first},fast\n")
    with pytest.raises(ValueError, match="line 2: us = 'fast' is not a number"):
        lat.LookupTable.from_device_results(manifest_path, nonnumeric)
    with pytest.raises(ValueError, match="Cannot read block manifest"):
        lat.LookupTable.from_device_results(tmp_path / "nope.json", partial)
    with pytest.raises(ValueError, match="malformed block manifest JSON"):
        lat.LookupTable.from_device_results(partial, partial)
    other = tmp_path / "other.json"
    other.write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="not a unas_keras block manifest"):
        lat.LookupTable.from_device_results(other, partial)
    with pytest.raises(ValueError, match="statistic must be one of"):
        lat.parse_benchmark_output("Graph: [a.tflite]", statistic="median")
