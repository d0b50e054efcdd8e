"""The Grappler settings of the search step: lean on CPU-only hosts, TensorFlow's own elsewhere."""

import pytest
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2, rewriter_config_pb2

from unas_keras.search import SearchModel
from unas_keras.search import graph_optimization
from tests.test_search_model import FakeSupernet, _dataset, _model


def test_lean_full_and_auto():
    lean = graph_optimization.rewrite_options("lean")
    assert lean["meta_optimizer_iterations"] == "ONE" and lean["memory_optimization"] == "NO_MEM_OPT"
    assert graph_optimization.rewrite_options("full") is None
    expected = None if graph_optimization.has_accelerator() else lean
    assert graph_optimization.rewrite_options("auto") == expected


def test_auto_keeps_tensorflows_settings_where_an_accelerator_is_visible(monkeypatch):
    monkeypatch.setattr(graph_optimization, "has_accelerator", lambda: True)
    assert graph_optimization.rewrite_options("auto") is None
    monkeypatch.setattr(graph_optimization, "has_accelerator", lambda: False)
    assert graph_optimization.rewrite_options("auto") == graph_optimization.rewrite_options("lean")


def test_unknown_setting_is_refused():
    with pytest.raises(ValueError, match="graph_optimization"):
        graph_optimization.rewrite_options("fast")
    with pytest.raises(ValueError, match="graph_optimization"):
        SearchModel(FakeSupernet(), graph_optimization="none")


def _memory_optimization_of_calls():
    """The memory-optimiser setting a `tf.function` called here gets (read from its call op)."""
    caller = tf.function(lambda: _INNER()).get_concrete_function()
    (call,) = [op for op in caller.graph.get_operations() if "PartitionedCall" in op.type]
    return config_pb2.ConfigProto.FromString(call.get_attr("config_proto")).graph_options.rewrite_options


_INNER = tf.function(lambda: tf.constant(1.0))


@pytest.mark.parametrize("setting", ["lean", "full"])
def test_both_phases_run_with_the_models_setting(setting):
    model = _model(warmup_steps=1, graph_optimization=setting)
    seen = []

    def make_function(warmup):
        def function(iterator):
            seen.append((warmup, _memory_optimization_of_calls().memory_optimization))
            model.search_step.assign_add(1)
        return function

    train = model.phase_switch(make_function)
    train(None)
    train(None)
    wanted = rewriter_config_pb2.RewriterConfig.NO_MEM_OPT if setting == "lean" else \
        rewriter_config_pb2.RewriterConfig.DEFAULT_MEM_OPT
    assert seen == [(True, wanted), (False, wanted)]
    assert _memory_optimization_of_calls().memory_optimization == rewriter_config_pb2.RewriterConfig.DEFAULT_MEM_OPT


def test_setting_is_in_the_config_and_fit_runs():
    model = _model(graph_optimization="lean")
    assert model.get_config()["graph_optimization"] == "lean"
    history = model.fit(_dataset(), epochs=1, steps_per_epoch=2, verbose=0)
    assert len(history.history["loss"]) == 1
