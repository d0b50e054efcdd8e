"""Latency-constrained search: a tight target leads to a faster network than no target (same seed).

Test-sized: a 4-layer MBConv backbone at 32x32, its lookup table timed with LiteRT on this CPU, two short
searches from the same seed (one with `target_latency_ms`, one without), then both derived networks are
converted to TFLite and timed as whole networks.
"""

import json

import keras
import pytest

from unas_keras import build_model
from unas_keras.data import search_data
from unas_keras.latency import LatencyModel, measure_tflite
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
