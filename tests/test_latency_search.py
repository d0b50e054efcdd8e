"""Latency-constrained search: a tight target leads to a faster network than no target (same seed).

Test-sized: a 4-layer MBConv backbone at 32x32, its lookup table timed with LiteRT on this CPU, two short
searches from the same seed (one with `target_latency_ms`, one without), then both derived networks are
converted to TFLite and timed as whole networks. The same comparison also runs through `uk.search`, whose
history and result report whether the target was met.
"""

import glob
import json
import os

import keras
import pytest

import unas_keras as uk
from unas_keras import build_model
from unas_keras.data import search_data
from unas_keras.latency import LatencyModel, LookupTable, measure_tflite
from unas_keras.networks.proxyless import build_proxyless_supernet
from unas_keras.search import SearchModel
from unas_keras.space.proxyless import MBConvBackbone

pytestmark = pytest.mark.slow

BACKBONE = MBConvBackbone(stem_channels=16, first_block_channels=16, stage_channels=(32, 64),
                          stage_strides=(2, 2), stage_depths=(2, 2), head_channels=128)
INPUT_SHAPE = (32, 32, 3)
STEPS = 12
# This tiny network runs in about 0.1 ms, so lambda * (latency - target) must be scaled up to weigh as
# much as a cross-entropy of ~2 (a full-size network at tens of ms uses lambda ~ 1 / target).
LATENCY_LAMBDA = 100.0


@pytest.fixture(scope="module")
def latency_model(tmp_path_factory):
    return LatencyModel.for_space("proxyless", input_shape=INPUT_SHAPE, num_classes=10, threads=1, runs=10,
                                  backbone=BACKBONE, cache_dir=str(tmp_path_factory.mktemp("lut")),
                                  progress=False)


def _search(latency_model, target_latency_ms):
    keras.utils.set_random_seed(0)
    data = search_data("digits", image_size=INPUT_SHAPE[0], batch_size=16, seed=0)
    supernet = build_proxyless_supernet(data.num_classes, INPUT_SHAPE, backbone=BACKBONE)
    model = SearchModel(supernet, estimator="rebar", objective="gen_gap", sampling="per_minibatch",
                        warmup_steps=0, latency=latency_model, target_latency_ms=target_latency_ms,
                        latency_lambda=LATENCY_LAMBDA, latency_ramp_steps=1, seed=0)
    model.compile(weight_optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                  arch_optimizer=keras.optimizers.Adam(0.1))
    history = model.fit(data.dataset, epochs=1, steps_per_epoch=STEPS, verbose=0)
    return model.derive_architecture(), history.history


def test_tight_target_finds_a_faster_network(latency_model):
    free_arch, free_history = _search(latency_model, None)
    tight_arch, tight_history = _search(latency_model, 0.5 * latency_model.predict_ms(free_arch))
    # Both runs record the expected (surrogate) and the sampled architectures' latency.
    for history in (free_history, tight_history):
        assert {"latency_ms", "sampled_latency_ms"} <= set(history)
    assert tight_history["latency_ms"][-1] < free_history["latency_ms"][-1]

    predicted = {name: latency_model.predict_ms(arch) for name, arch in
                 (("unconstrained", free_arch), ("constrained", tight_arch))}
    measured = {name: measure_tflite(build_model(arch, num_classes=10, input_shape=INPUT_SHAPE), threads=1,
                                     runs=100, warmup=10)
                for name, arch in (("unconstrained", free_arch), ("constrained", tight_arch))}
    print(json.dumps({"predicted_ms": predicted, "measured_ms": measured,
                      "unconstrained": free_arch.to_dict(), "constrained": tight_arch.to_dict()}))
    assert predicted["constrained"] < predicted["unconstrained"]
    assert measured["constrained"] < measured["unconstrained"]


def test_uk_search_with_a_target_ends_under_it_where_the_free_search_does_not(tmp_path, latency_model):
    """Through `uk.search`: the latency weight ramps over the run's own length (a third of its 16
    architecture steps), so a 16-step search meets a target that the unconstrained search misses."""
    common = dict(space="proxyless", dataset="digits", backbone=BACKBONE, resolution=INPUT_SHAPE[0],
                  image_channels=INPUT_SHAPE[2], width_multiplier=1.0, batch_size=16, epochs=2, warmup_epochs=0,
                  steps_per_epoch=8, latency_lambda=LATENCY_LAMBDA, arch_lr=0.4, seed=0, verbose=0)
    free = uk.search(output_dir=str(tmp_path / "free"), **common)
    assert free.latency is None and "target_met" not in free.history
    free_ms = latency_model.predict_ms(free.architecture)
    target = 0.75 * free_ms
    tight = uk.search(output_dir=str(tmp_path / "tight"), target_latency_ms=target, **common)

    # The run's own table (timed by the run) agrees: the free architecture misses the target, the
    # constrained one meets it.
    (table_path,) = glob.glob(os.path.join(tight.output_dir, "latency", "*.json"))
    run_table = LatencyModel.from_lookup_table(LookupTable.load(table_path))
    report = tight.latency
    print(json.dumps({"target_ms": target, "unconstrained_ms": run_table.predict_ms(free.architecture),
                      "constrained_ms": report["argmax_latency_ms"], "unconstrained": str(free.architecture),
                      "constrained": str(tight.architecture), "ramp_steps": report["ramp_steps"]}))
    assert run_table.predict_ms(free.architecture) > target
    assert report["target_met"] is True and report["argmax_latency_ms"] <= target
    assert report["ramp_steps"] == 5 and report["target_ms"] == target
    assert report["argmax_latency_ms"] == run_table.predict_ms(tight.architecture)
    # The history shows it epoch by epoch; run.json holds the final figures.
    history = tight.history
    for key in ("latency_ms", "sampled_latency_ms", "argmax_latency_ms", "target_met"):
        assert len(history[key]) == 2, key
    assert history["target_met"][-1] == 1.0 and history["argmax_latency_ms"][-1] == report["argmax_latency_ms"]
    with open(os.path.join(tight.output_dir, "run.json")) as f:
        assert json.load(f)["latency"] == report
