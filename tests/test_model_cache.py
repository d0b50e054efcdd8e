"""Tests of unas_keras.search.model_cache: a second search of the same graph reuses the traced model.

The must-hold property is exactness: a search run on a reused model (traced by a search with another
seed) ends exactly like the same search run on a new model, and it does not trace its step again.
"""

import os

import keras
import numpy as np
import pytest

from unas_keras.config import SearchConfig
from unas_keras.networks import build_supernet
from unas_keras.search import model_cache as model_cache_lib
from unas_keras.search import runner, schedules
from unas_keras.search.search_model import SearchModel

# The smallest search there is (as in test_search_runner): NB201 space, 8x8 digits, 4 channels, one cell
# per stage; one warm-up epoch, so both phases' functions are traced. A checkpoint every 2 steps for the
# resume test (the same for every run here, so all of them have one graph key).
TINY = dict(space="nb201", dataset="digits", epochs=2, warmup_epochs=1, batch_size=8, steps_per_epoch=3,
            resolution=8, channels=4, cells_per_stage=1, checkpoint_every_steps=2, verbose=0)


class _Interrupted(BaseException):
    """Stands for a kill in the middle of a search."""


class _InterruptAfter(keras.callbacks.Callback):
    def __init__(self, batches):
        super().__init__()
        self.left = batches

    def on_train_batch_end(self, batch, logs=None):
        self.left -= 1
        if self.left == 0:
            raise _Interrupted()


@pytest.fixture
def trace_counter(monkeypatch):
    """Counts traces of the search step (its Python body runs once per trace, never when a traced
    function runs)."""
    count = {"n": 0}
    original = SearchModel.replica_step

    def counted(self, *args, **kwargs):
        count["n"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SearchModel, "replica_step", counted)
    return count


def _search(out, cache, seed, **overrides):
    if cache is None:
        keras.backend.clear_session()  # as the tuner does before each trial when it does not reuse
    return runner.search(output_dir=str(out), seed=seed, model_cache=cache, **dict(TINY, **overrides))


def _assert_same_search(a, b):
    assert a.architecture == b.architecture
    assert set(a.probabilities) == set(b.probabilities)
    for name in a.probabilities:
        np.testing.assert_allclose(a.probabilities[name], b.probabilities[name], rtol=0, atol=1e-6)
    strip = lambda history: {k: v for k, v in history.items() if k != "epoch_time_s"}  # noqa: E731
    assert strip(a.history) == strip(b.history)


@pytest.mark.slow
def test_reused_model_gives_the_same_search_as_a_new_one_without_tracing_again(tmp_path, trace_counter):
    cache = model_cache_lib.ModelCache()
    first = _search(tmp_path / "seed0", cache, seed=0)
    assert trace_counter["n"] == 2  # the warm-up and the search step
    assert (cache.hits, cache.misses) == (0, 1)

    reused = _search(tmp_path / "seed1_reused", cache, seed=1)
    assert trace_counter["n"] == 2, "the second search of the same graph traced its step again"
    assert (cache.hits, cache.misses) == (1, 1)
    assert reused.model is first.model

    alone = _search(tmp_path / "seed1_alone", None, seed=1)
    assert trace_counter["n"] == 4
    assert alone.model is not reused.model
    _assert_same_search(reused, alone)
    # The seed reached the reused graph: another seed gives another search.
    assert any(not np.allclose(first.probabilities[k], reused.probabilities[k]) for k in first.probabilities)

    # A search of another shape does not reuse it (and traces its own step).
    other = _search(tmp_path / "wider", cache, seed=1, channels=6)
    assert trace_counter["n"] == 6
    assert (cache.hits, cache.misses) == (1, 2)
    assert other.model is not reused.model


@pytest.mark.slow
def test_interrupted_search_resumes_on_a_reused_model(tmp_path, trace_counter):
    alone = _search(tmp_path / "alone", None, seed=4)
    cache = model_cache_lib.ModelCache()
    _search(tmp_path / "other_seed", cache, seed=5)
    out = tmp_path / "resumed"
    with pytest.raises(_Interrupted):  # stopped in the second epoch, after the checkpoint of step 4
        _search(out, cache, seed=4, callbacks=[_InterruptAfter(5)])
    assert os.path.exists(out / "checkpoints" / "latest.json")
    traces = trace_counter["n"]
    resumed = _search(out, cache, seed=4)
    assert trace_counter["n"] == traces
    assert cache.hits == 2
    _assert_same_search(resumed, alone)


# Hyper-parameters the traced step reads from variables: a trial with other values reuses the model.
OTHER_SETTINGS = dict(weight_lr=2e-2, weight_lr_min=1e-3, arch_lr=0.3, arch_lr_min=0.05, lr_reference_batch=32,
                      weight_decay=0.0, arch_weight_decay=1e-3, gen_gap_lambda=2.0, temperature=1.0)


@pytest.mark.slow
def test_reused_model_takes_other_learning_rates_weight_decays_gen_gap_lambda_and_temperature(tmp_path, trace_counter):
    cache = model_cache_lib.ModelCache()
    first = _search(tmp_path / "defaults", cache, seed=0)
    reused = _search(tmp_path / "other_reused", cache, seed=0, **OTHER_SETTINGS)
    assert trace_counter["n"] == 2, "a trial differing only in variable hyper-parameters traced again"
    assert (cache.hits, cache.misses) == (1, 1) and reused.model is first.model
    model = reused.model
    assert model.gen_gap_lambda == 2.0 and model.weight_optimizer.coupled_weight_decay is None
    assert model.temperature == model.estimator.temperature == 1.0
    assert model.arch_optimizer.coupled_weight_decay == 1e-3
    assert model.arch_optimizer._learning_rate.initial_learning_rate == 0.3 * TINY["batch_size"] / 32
    assert model.get_config()["gen_gap_lambda"] == 2.0

    alone = _search(tmp_path / "other_alone", None, seed=0, **OTHER_SETTINGS)
    _assert_same_search(reused, alone)
    # The values reached the reused graph: the same seed with the first trial's values searches otherwise.
    assert any(not np.allclose(first.probabilities[k], reused.probabilities[k]) for k in first.probabilities)
    # And the cached model takes the first trial's values back (the settings are copied, not left over).
    again = _search(tmp_path / "defaults_again", cache, seed=0)
    assert cache.hits == 2
    _assert_same_search(again, first)


def test_graph_key_ignores_the_seed_and_the_variable_settings_only():
    config = SearchConfig.resolve(seed=0, **{k: v for k, v in TINY.items() if k != "verbose"}).to_dict()
    key = model_cache_lib.graph_key(config, (8, 8, 1), 10, 3, True)
    assert key == model_cache_lib.graph_key(dict(config, seed=7), (8, 8, 1), 10, 3, True)
    assert set(OTHER_SETTINGS) == set(model_cache_lib.VARIABLE_SETTINGS)
    assert key == model_cache_lib.graph_key(dict(config, **OTHER_SETTINGS), (8, 8, 1), 10, 3, True)
    assert key != model_cache_lib.graph_key(dict(config, epochs=3), (8, 8, 1), 10, 3, True)
    assert key != model_cache_lib.graph_key(dict(config, latency_lambda=1.0), (8, 8, 1), 10, 3, True)
    assert key != model_cache_lib.graph_key(dict(config, soften_eps=0.1), (8, 8, 1), 10, 3, True)
    assert key != model_cache_lib.graph_key(config, (16, 16, 1), 10, 3, True)
    assert key != model_cache_lib.graph_key(config, (8, 8, 1), 10, 4, True)
    assert key != model_cache_lib.graph_key(config, (8, 8, 1), 10, 3, False)


def _compiled_model(channels, seed):
    supernet = build_supernet("nb201", 10, (8, 8, 1), channels=channels, cells_per_stage=1)
    model = SearchModel(supernet, seed=seed)
    model.compile(weight_optimizer=keras.optimizers.Adam(), arch_optimizer=keras.optimizers.Adam())
    return model, (model.weight_optimizer, model.arch_optimizer)


def test_load_fresh_state_copies_every_variable_and_refuses_other_shapes():
    target, source = _compiled_model(4, seed=1), _compiled_model(4, seed=2)
    source[0].search_step.assign(5)
    source[1][0].iterations.assign(3)
    model_cache_lib.load_fresh_state(target, source)
    for t, s in zip(model_cache_lib.state_variables(*target), model_cache_lib.state_variables(*source)):
        assert t is not s
        np.testing.assert_array_equal(np.asarray(t.numpy()), np.asarray(s.numpy()))
    assert int(target[0].seed_variable.numpy()) == 2 and int(target[0].search_step.numpy()) == 5
    with pytest.raises(ValueError, match="Cannot reuse the cached search model"):
        model_cache_lib.load_fresh_state(target, _compiled_model(6, seed=2))


def _search_optimizers(**overrides):
    config = SearchConfig.resolve(seed=0, **dict({k: v for k, v in TINY.items() if k != "verbose"}, **overrides))
    return schedules.search_optimizers(config, steps_per_epoch=3)


def test_load_fresh_state_copies_the_settings_and_refuses_other_ones():
    target, source = _compiled_model(4, seed=1), _compiled_model(4, seed=1)
    target = (target[0], _search_optimizers())
    source = (source[0], _search_optimizers(**OTHER_SETTINGS))
    for model, optimizers in (target, source):
        model.compile(weight_optimizer=optimizers[0], arch_optimizer=optimizers[1])
    source[0]._gen_gap_lambda.assign(2.0)
    source[0]._temperature.assign(1.5)
    model_cache_lib.load_fresh_state(target, source)
    names = [s.name for s in model_cache_lib.settings(*target)]
    assert names[:2] == ["gen_gap_lambda", "temperature"]
    assert len(names) == 2 + 2 * 4  # the model's, then 2 x (decay + 3 rates)
    for t, s in zip(model_cache_lib.settings(*target), model_cache_lib.settings(*source)):
        assert t is not s and t.value == s.value and float(t.variable.numpy()) == float(s.variable.numpy())
    assert target[0].gen_gap_lambda == 2.0 and target[1][1].coupled_weight_decay == 1e-3
    assert target[0].temperature == target[0].estimator.temperature == 1.5
    # Settings are not checkpointed state.
    listed = {id(v) for v in model_cache_lib.state_variables(*target)}
    assert not listed & {id(s.variable) for s in model_cache_lib.settings(*target)}

    plain = _compiled_model(4, seed=1)  # Keras optimizers: no settings
    with pytest.raises(ValueError, match="Cannot reuse the cached search model"):
        model_cache_lib.load_fresh_state(plain, source)


def test_search_refuses_a_model_cache_of_the_wrong_type(tmp_path):
    with pytest.raises(ValueError, match="model_cache"):
        runner.search(output_dir=str(tmp_path / "out"), seed=0, model_cache={}, **TINY)


def test_checkpoints_hold_the_state_of_before_the_seed_variable():
    # The seed is a setting of the run, not checkpointed state: a checkpoint of a search written before
    # the seed became a variable holds exactly the variables `state_variables` lists.
    model, optimizers = _compiled_model(4, seed=3)
    listed = {id(v) for v in model_cache_lib.state_variables(model, optimizers)}
    assert id(model.seed_variable) not in listed
    everything = list(model.variables) + list(model.metrics_variables) + [v for o in optimizers for v in o.variables]
    assert listed == {id(v) for v in everything} - {id(model.seed_variable)}
