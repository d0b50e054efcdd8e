"""Tests of unas_keras.latency: conversion, timing, lookup tables, surrogates."""

import json
import os

import keras
import numpy as np
import pytest

from unas_keras import latency as lat
from unas_keras.latency import blocks as blocks_lib
from unas_keras.latency import timing
from unas_keras.networks.proxyless import build_proxyless_model
from unas_keras.space.proxyless import MBConvBackbone, ProxylessGenotype, ProxylessSearchSpace

TINY = MBConvBackbone(stem_channels=8, first_block_channels=8, stage_channels=(8, 16),
                      stage_strides=(2, 2), stage_depths=(2, 1), head_channels=32)
SHAPE = (32, 32, 3)


def _tiny_model(seed=0):
    keras.utils.set_random_seed(seed)
    arch = ProxylessSearchSpace(TINY).sample(seed)
    model = build_proxyless_model(arch.genotype, 10, SHAPE)
    # Non-trivial BatchNorm statistics so the outputs are not ~0.
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        for sub in [layer] + list(getattr(layer, "_layers", [])):
            if isinstance(sub, keras.layers.BatchNormalization):
                n = sub.moving_variance.shape[0]
                sub.moving_variance.assign(rng.uniform(0.5, 2.0, n).astype("float32"))
                sub.moving_mean.assign(rng.normal(0, 0.1, n).astype("float32"))
    return model


@pytest.fixture(scope="module")
def tiny_model():
    return _tiny_model(0)


@pytest.fixture(scope="module")
def inputs():
    return np.random.default_rng(1).random((8,) + SHAPE, dtype=np.float32)


@pytest.fixture(scope="module")
def tiny_latency(tmp_path_factory):
    """A LatencyModel (and its table) for the tiny backbone, built once through the cache dir."""
    cache_dir = tmp_path_factory.mktemp("lut")
    calls = []
    model = lat.LatencyModel.for_space(
        ProxylessSearchSpace(TINY), input_shape=SHAPE, num_classes=10, runs=2, cache_dir=cache_dir,
        progress=lambda *args: calls.append(args))
    return model, cache_dir, calls


# ---------------------------------------------------------------------------------------- conversion

@pytest.mark.parametrize("quantize", ["none", "float16", "int8"])
def test_convert_and_verify_within_tolerance(tiny_model, inputs, quantize):
    data = lat.convert_to_tflite(tiny_model, quantize=quantize,
                                 representative_data=inputs if quantize == "int8" else None)
    assert isinstance(data, bytes) and data[4:8] == b"TFL3"
    report = lat.verify_tflite(tiny_model, data, inputs, quantize=quantize)
    assert report.passed, report.summary()
    assert report.num_samples == len(inputs)
    assert report.output_scale > 1e-3  # the comparison is not between two zero vectors
    if quantize == "none":
        assert report.max_abs_diff < 1e-4 * max(1.0, report.output_scale)
        assert report.top1_agreement == 1.0


def test_int8_is_integer_inside(tiny_model, inputs):
    from ai_edge_litert.interpreter import Interpreter

    data = lat.convert_to_tflite(tiny_model, quantize="int8", representative_data=inputs, integer_io=True)
    interpreter = Interpreter(model_content=data)
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    out = lat.run_tflite(data, inputs)  # quantizes inputs and dequantizes outputs
    assert out.shape == (len(inputs), 10)


def test_conversion_methods_agree(tiny_model, inputs):
    a = lat.run_tflite(lat.convert_to_tflite(tiny_model, method="concrete"), inputs)
    b = lat.run_tflite(lat.convert_to_tflite(tiny_model, method="frozen_graph"), inputs)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a, tiny_model(inputs).numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("limit, expected", [(lat.tflite.FREEZE_LIMIT_BYTES, "frozen"), (0, "tracked")])
def test_auto_conversion_freezes_models_under_the_limit(tiny_model, inputs, monkeypatch, limit, expected):
    from unas_keras import _compat

    frozen = []
    freeze = _compat.convert_variables_to_constants
    monkeypatch.setattr(_compat, "convert_variables_to_constants", lambda f: frozen.append(f) or freeze(f))
    monkeypatch.setattr(lat.tflite, "FREEZE_LIMIT_BYTES", limit)
    out = lat.run_tflite(lat.convert_to_tflite(tiny_model), inputs)
    assert ("frozen" if frozen else "tracked") == expected
    np.testing.assert_allclose(out, tiny_model(inputs).numpy(), rtol=1e-4, atol=1e-5)


def test_verify_detects_a_different_model(tiny_model, inputs):
    other = lat.convert_to_tflite(_tiny_model(seed=5))
    report = lat.verify_tflite(tiny_model, other, inputs)
    assert not report.passed
    assert "FAILED" in report.summary()


def test_conversion_bad_arguments(tiny_model):
    with pytest.raises(ValueError, match="representative_data"):
        lat.convert_to_tflite(tiny_model, quantize="int8")
    with pytest.raises(ValueError, match="quantize"):
        lat.convert_to_tflite(tiny_model, quantize="int4")
    with pytest.raises(ValueError, match="sample shape"):
        lat.convert_to_tflite(tiny_model, quantize="int8", representative_data=np.zeros((2, 8, 8, 3)))
    with pytest.raises(ValueError, match="method"):
        lat.convert_to_tflite(tiny_model, method="magic")


# ---------------------------------------------------------------------------------------- timing

def test_measure_tflite(tiny_model, tmp_path):
    data = lat.convert_to_tflite(tiny_model)
    path = tmp_path / "m.tflite"
    path.write_bytes(data)
    ms = lat.measure_tflite(str(path), threads=1, runs=5, warmup=1)
    assert isinstance(ms, float) and ms > 0
    stats = lat.measure_tflite_stats(data, runs=7, warmup=0)
    assert stats["runs"] == 7 and stats["threads"] == 1
    assert 0 < stats["min_ms"] <= stats["p10_ms"] <= stats["median_ms"] <= stats["p90_ms"]
    assert lat.measure_tflite(tiny_model, runs=2, warmup=0) > 0  # a keras model is converted first


def test_measure_tflite_bad_input(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer")
    with pytest.raises(ValueError, match="valid TFLite"):
        lat.measure_tflite(str(bad))
    with pytest.raises(ValueError, match="not found"):
        lat.measure_tflite(str(tmp_path / "missing.tflite"))
    with pytest.raises(ValueError, match="runs"):
        lat.measure_tflite(bad.read_bytes(), runs=0)


def test_measure_keras_gpu_without_gpu_raises_clearly(tiny_model, monkeypatch):
    monkeypatch.setattr(timing, "_gpu_devices", lambda: [])
    with pytest.raises(lat.GPUUnavailableError, match="measure_tflite"):
        lat.measure_keras_gpu(tiny_model)


def test_measure_keras_gpu_logic_with_mocked_device(tiny_model, monkeypatch):
    import tensorflow as tf

    fake = tf.config.PhysicalDevice(name="/physical_device:GPU:0", device_type="GPU")
    monkeypatch.setattr(timing, "_gpu_devices", lambda: [fake])
    stats = lat.measure_keras_gpu(tiny_model, batch_size=2, runs=3, warmup=1, device="/CPU:0",
                                  return_stats=True)
    assert stats["runs"] == 3 and stats["batch_size"] == 2 and stats["median_ms"] > 0
    assert "GPU:0" in stats["gpu"]
    with pytest.raises(ValueError, match="batch_size"):
        lat.measure_keras_gpu(tiny_model, batch_size=0)


def test_measure_keras_gpu_on_a_real_gpu(tiny_model):
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        pytest.skip("no GPU visible to TensorFlow: measure_keras_gpu needs one (logic tested with mocks)")
    assert lat.measure_keras_gpu(tiny_model, runs=3) > 0


# ---------------------------------------------------------------------------------------- blocks

def test_blocks_add_up_to_the_network():
    space = ProxylessSearchSpace(TINY)
    for seed in range(3):
        arch = space.sample(seed)
        model = build_proxyless_model(arch.genotype, 10, SHAPE)
        blocks = blocks_lib.architecture_blocks(arch, SHAPE, 10)
        assert sum(blocks_lib.build_block_model(b, TINY).count_params() for b in blocks) == \
            model.count_params()


def test_space_blocks_are_deduplicated():
    keys = [b.key for b in blocks_lib.space_blocks(TINY, SHAPE, 10)]
    assert len(keys) == len(set(keys))
    # stem + head + 6 (stage-1 first) + 6 (stage-1 optional) + 6 (stage-2 first)
    assert len(keys) == 2 + 18


# ---------------------------------------------------------------------------------------- lookup table

def test_lookup_table_build_predict(tiny_latency):
    model, _, calls = tiny_latency
    table = model.table
    assert len(table) == 20 and len(calls) == 20
    assert all(v > 0 for v in table.entries.values())
    for key in ("cpu", "threads", "tf_version", "litert_version", "input_shape", "num_classes", "created"):
        assert key in table.metadata
    arch = ProxylessSearchSpace(TINY).sample(3)
    keys = table.block_keys(arch)
    expected = table.invoke_overhead_ms + sum(table.block_latency(k) for k in keys)
    assert table.predict(arch) == pytest.approx(expected)
    # "zero" costs nothing: dropping the optional layer removes exactly one block.
    first = arch.genotype.layers[0]
    with_block = ProxylessGenotype((first, "k3e3", "k5e6"), TINY)
    without = ProxylessGenotype((first, "zero", "k5e6"), TINY)
    k3e3 = [b for b in blocks_lib.architecture_blocks(with_block, SHAPE, 10) if b.kernel == 3
            and b.kind == "mbconv" and b.stride == 1][0]
    diff = table.predict(with_block) - table.predict(without)
    assert diff == pytest.approx(table.block_latency(k3e3.key))


def test_lookup_table_cache_is_reused(tiny_latency):
    model, cache_dir, _ = tiny_latency
    files = [f for f in os.listdir(cache_dir) if f.endswith(".json")]
    assert len(files) == 1 and not [f for f in os.listdir(cache_dir) if f.startswith(".tmp")]
    calls = []
    again = lat.LatencyModel.for_space(ProxylessSearchSpace(TINY), input_shape=SHAPE, num_classes=10,
                                       runs=2, cache_dir=cache_dir, progress=lambda *a: calls.append(a))
    assert len(calls) == 20 and all(cached for *_, cached in calls)
    assert again.table.entries == model.table.entries


def test_lookup_table_save_load_round_trip(tiny_latency, tmp_path):
    table = tiny_latency[0].table
    path = tmp_path / "sub" / "lut.json"
    table.save(path)
    loaded = lat.LookupTable.load(path)
    arch = ProxylessSearchSpace(TINY).sample(11)
    assert loaded.predict(arch) == pytest.approx(table.predict(arch))
    assert loaded.metadata == table.metadata


def test_lookup_table_missing_block_is_an_error(tiny_latency):
    table = tiny_latency[0].table
    arch = ProxylessSearchSpace(TINY).sample(4)
    key = table.block_keys(arch)[1]
    partial = lat.LookupTable({k: v for k, v in table.entries.items() if k != key}, table.metadata)
    with pytest.raises(ValueError, match=key):
        partial.predict(arch)
    # Another backbone (or resolution) is not silently priced.
    with pytest.raises(ValueError, match="no entry"):
        table.predict(ProxylessSearchSpace().sample(0))


def test_lookup_table_rejects_other_spaces(tiny_latency):
    from unas_keras.space import sample_architecture

    with pytest.raises(ValueError, match="proxyless"):
        tiny_latency[0].table.predict(sample_architecture("nb201", seed=0))


@pytest.mark.parametrize("content", [
    "not json {", "[]", '{"format": "something else"}',
    '{"format": "unas_keras.latency_lut", "version": 1, "metadata": {}, "entries": {}}',
])
def test_corrupt_lookup_table_file(tmp_path, content):
    path = tmp_path / "lut.json"
    path.write_text(content)
    with pytest.raises(ValueError):
        lat.LookupTable.load(path)


def test_lookup_table_bad_entry_and_missing_file(tiny_latency, tmp_path):
    payload = tiny_latency[0].table.to_dict()
    payload["entries"][next(iter(payload["entries"]))] = -1.0
    path = tmp_path / "lut.json"
    path.write_text(json.dumps(payload))
    with pytest.raises(ValueError, match="non-negative"):
        lat.LookupTable.load(path)
    with pytest.raises(ValueError, match="Cannot read"):
        lat.LookupTable.load(tmp_path / "missing.json")


def test_incompatible_cache_is_refused(tiny_latency, tmp_path):
    payload = tiny_latency[0].table.to_dict()
    payload["metadata"]["threads"] = 4
    path = tmp_path / "lut.json"
    path.write_text(json.dumps(payload))
    with pytest.raises(ValueError, match="threads"):
        lat.build_lookup_table(input_shape=SHAPE, num_classes=10, backbone=TINY, runs=2, cache_path=path,
                               progress=False)


def test_build_lookup_table_bad_arguments():
    with pytest.raises(ValueError, match="proxyless"):
        lat.build_lookup_table(space="darts")
    with pytest.raises(ValueError, match="statistic"):
        lat.build_lookup_table(backbone=TINY, statistic="mode")


# ---------------------------------------------------------------------------------------- surrogate

def _additive_problem(seed=0):
    space = ProxylessSearchSpace(TINY)
    rng = np.random.default_rng(seed)
    true = {name: rng.uniform(0.1, 2.0, shape) for name, shape in space.decisions().items()}
    bias = 3.0

    def latency(arch):
        choices = space.encode(arch)
        return bias + sum(true[n][r, c] for n, row in choices.items() for r, c in enumerate(row))

    return space, latency


def test_surrogate_recovers_additive_latencies(tmp_path):
    space, latency = _additive_problem()
    train = [space.sample(i) for i in range(150)]
    test = [space.sample(1000 + i) for i in range(40)]
    g = lat.fit_latency_surrogate(space, train, [latency(a) for a in train], l2=1e-8)
    measured = [latency(a) for a in test]
    np.testing.assert_allclose([g.predict(a) for a in test], measured, rtol=1e-6)
    report = g.evaluate(test, measured)
    assert report["mape_pct"] < 1e-3 and report["within_10pct"] == 1.0 and report["spearman"] > 0.999
    # The weights the engine uses reproduce the predictions on one-hot samples.
    bias, weights = g.surrogate_weights(space)
    assert {n: w.shape for n, w in weights.items()} == dict(space.decisions())
    onehot = {n: np.eye(k)[space.encode(test[0])[n]] for n, (_, k) in space.decisions().items()}
    assert bias + sum(np.sum(w * onehot[n]) for n, w in weights.items()) == pytest.approx(measured[0])
    assert g.predict_relaxed(onehot) == pytest.approx(measured[0])
    # Save / load.
    g.save(tmp_path / "g.json")
    loaded = lat.LatencySurrogate.load(tmp_path / "g.json")
    assert loaded.predict(test[1]) == pytest.approx(g.predict(test[1]))


@pytest.mark.parametrize("name, options", [("darts", dict(ops="darts")), ("proxyless", dict(backbone=TINY)),
                                           ("nb201", {})])
def test_surrogate_file_rebuilds_the_space_of_every_registered_space(name, options, tmp_path):
    """The saved space is its registry name plus its `options()`; loading rebuilds it through the registry."""
    from unas_keras.space import registry

    space = registry.get(name).search_space_class(**options)
    archs = [space.sample(i) for i in range(12)]
    g = lat.fit_latency_surrogate(space, archs, [float(i % 5) for i in range(12)], l2=1e-3)
    g.save(tmp_path / "g.json")
    loaded = lat.LatencySurrogate.load(tmp_path / "g.json")
    assert type(loaded.search_space) is type(space) and loaded.search_space.options() == space.options()
    assert loaded.search_space.decisions() == space.decisions()
    assert loaded.predict(archs[3]) == pytest.approx(g.predict(archs[3]))


def test_per_block_tables_are_for_the_proxyless_space_only():
    from unas_keras.space import registry, sample_architecture

    assert blocks_lib.block_table_space("proxyless", TINY).backbone == TINY
    space = ProxylessSearchSpace(TINY)
    assert blocks_lib.block_table_space(space) is space
    arch = space.sample(0)
    assert blocks_lib.proxyless_genotype(arch) is arch.genotype is blocks_lib.proxyless_genotype(arch.genotype)
    for name in registry.names():
        if name == "proxyless":
            continue
        for given in (name, registry.get(name).search_space()):
            with pytest.raises(ValueError, match="proxyless space only"):
                blocks_lib.block_table_space(given)
        with pytest.raises(ValueError, match="proxyless space only"):
            blocks_lib.proxyless_genotype(sample_architecture(name, seed=0))
    with pytest.raises(ValueError, match="Unknown search space"):
        blocks_lib.block_table_space("nasnet")


def test_surrogate_ridge_shrinks_and_prior(tiny_latency):
    space, latency = _additive_problem(seed=2)
    train = [space.sample(i) for i in range(20)]
    y = [latency(a) for a in train]
    strong = lat.fit_latency_surrogate(space, train, y, l2=1e6)
    assert np.abs(np.concatenate([w.ravel() for w in strong.weights.values()])).max() < 1e-3
    # With the lookup table as prior, a strong penalty returns the table's predictions.
    prior = lat.lookup_table_surrogate(tiny_latency[0].table, space)
    table = tiny_latency[0].table
    lut_y = [table.predict(a) for a in train]
    g = lat.fit_latency_surrogate(space, train, lut_y, l2=1e6, prior=prior)
    arch = space.sample(99)
    assert g.predict(arch) == pytest.approx(table.predict(arch), rel=1e-6)


def test_surrogate_bad_input(tmp_path):
    space = ProxylessSearchSpace(TINY)
    with pytest.raises(ValueError, match="latenc"):
        lat.fit_latency_surrogate(space, [space.sample(0)], [1.0, 2.0])
    (tmp_path / "g.json").write_text("{]")
    with pytest.raises(ValueError, match="malformed"):
        lat.LatencySurrogate.load(tmp_path / "g.json")


# ---------------------------------------------------------------------------------------- LatencyModel

def test_latency_model_surrogate_is_exact_on_the_table(tiny_latency):
    model = tiny_latency[0]
    space = ProxylessSearchSpace(TINY)
    for seed in range(10):
        arch = space.sample(seed)
        assert model.surrogate_ms(arch) == pytest.approx(model.predict_ms(arch), abs=1e-9)
        assert model.predict_ms(arch) == pytest.approx(model.table.predict(arch))
    bias, weights = model.surrogate_weights(space)
    assert bias > 0 and set(weights) == {"first", "optional"}
    assert np.all(weights["optional"][:, 0] == 0)  # "zero" costs nothing
    with pytest.raises(ValueError):
        model.surrogate_weights(ProxylessSearchSpace())


def test_latency_model_ridge_option(tiny_latency):
    table = tiny_latency[0].table
    space = ProxylessSearchSpace(TINY)
    model = lat.LatencyModel.from_lookup_table(table, space)
    archs = [space.sample(i) for i in range(60)]
    ridge = lat.fit_latency_surrogate(space, archs, [model.predict_ms(a) for a in archs], l2=1e-6)
    arch = space.sample(500)
    assert ridge.predict(arch) == pytest.approx(model.predict_ms(arch), rel=1e-4)


def test_latency_model_for_other_spaces_is_refused():
    with pytest.raises(ValueError, match="proxyless"):
        lat.LatencyModel.for_space("darts")


def test_latency_report_values():
    report = lat.latency_report([1.0, 2.2, 2.7], [1.0, 2.0, 3.0])
    assert report["mae_ms"] == pytest.approx(0.5 / 3)
    assert report["mape_pct"] == pytest.approx(100 * (0 + 0.1 + 0.1) / 3)
    assert report["within_10pct"] == pytest.approx(1.0)
    assert report["spearman"] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        lat.latency_report([1.0], [1.0])


def test_weight_count_matches_the_block_models():
    for block in blocks_lib.space_blocks(TINY, SHAPE, 10)[:6]:
        model = blocks_lib.build_block_model(block, TINY)
        kernels = sum(int(np.prod(w.shape)) for w in model.weights if w.name == "kernel")
        assert blocks_lib.weight_count(block) == kernels


def test_calibrated_surrogate_recovers_a_linear_correction(tiny_latency):
    table = tiny_latency[0].table
    space = ProxylessSearchSpace(TINY)
    archs = [space.sample(i) for i in range(30)]

    def weights_m(arch):
        return sum(blocks_lib.weight_count(b) for b in blocks_lib.architecture_blocks(arch, SHAPE, 10)) / 1e6

    def truth(arch):
        return 0.3 + 1.2 * table.predict(arch) + 50.0 * weights_m(arch)

    model = lat.LatencyModel.calibrated(table, space, archs[:20], [truth(a) for a in archs[:20]])
    for arch in archs[20:]:
        assert model.predict_ms(arch) == pytest.approx(truth(arch), rel=1e-4)
        assert model.surrogate_ms(arch) == pytest.approx(truth(arch), rel=1e-4)
    calibration = model.surrogate.report["calibration"]
    assert calibration["lut_scale"] == pytest.approx(1.2, rel=1e-3)
    assert calibration["ms_per_million_weights"] == pytest.approx(50.0, rel=1e-3)
