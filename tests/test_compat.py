"""Each private TensorFlow / Keras API of `unas_keras._compat` still does its job with the installed
versions: a release that moves or changes one fails here, by name."""

import os
import pathlib
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from unas_keras import _compat

ROOT = pathlib.Path(__file__).resolve().parent.parent
_PRIVATE = re.compile(r"\._make_function\b|\._flatten_layers\b|\._collective_key_base\b|\._symbolic_build\b"
                      r"|tensorflow\.python"
                      r"|keras\.src\b")


def test_no_private_api_outside_compat():
    offenders = []
    for folder in ("unas_keras", "apps", "benchmarks", "tests"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.name in ("_compat.py", "test_compat.py"):
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if _PRIVATE.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "private TensorFlow/Keras API outside unas_keras/_compat.py:\n" + "\n".join(offenders)


class _Block(keras.layers.Layer):
    """A plain Layer with sub-layers (no `.layers` attribute), like our cells."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.inner = keras.layers.Dense(3, name="inner")
        self.pair = [keras.layers.Dense(3, name="left"), keras.layers.Dense(3, name="right")]

    def call(self, x):
        return self.inner(x) + self.pair[0](x) + self.pair[1](x)


def test_in_xla_compilation_tells_jit_compiled_traces_apart():
    seen = []

    def probe(kind):
        seen.append((kind, _compat.in_xla_compilation()))
        return tf.constant(1.0)

    seen.append(("eager", _compat.in_xla_compilation()))
    tf.function(lambda: probe("plain"))()
    tf.function(lambda: probe("xla"), jit_compile=True)()
    tf.function(lambda: tf.function(lambda: probe("nested"))(), jit_compile=True)()
    assert seen == [("eager", False), ("plain", False), ("xla", True), ("nested", True)]


def test_flatten_layers_walks_nested_layers():
    block = _Block(name="block")
    inputs = keras.Input((4,), name="images")  # named: Keras numbers unnamed inputs per process
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(block(inputs)))
    everything = [layer.name for layer in _compat.flatten_layers(model, include_self=False)]
    assert sorted(everything) == ["block", "head", "images", "inner", "left", "right"]
    assert [layer.name for layer in model.layers] == ["images", "block", "head"]  # children only
    assert not hasattr(block, "layers")  # why the public route cannot do it
    children = _compat.flatten_layers(model, include_self=False, recursive=False)
    assert children == model.layers
    with_self = _compat.flatten_layers(block)
    assert with_self[0] is block and {layer.name for layer in with_self[1:]} == {"inner", "left", "right"}
    assert _compat.flatten_layers(block.inner, include_self=False) == []


def test_make_train_function_runs_a_step_function_like_fit():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    x, y = np.ones((4, 3), "float32"), np.zeros((4, 1), "float32")
    calls = []

    def step(data):
        calls.append(1)  # traced once (tf.function), not once per step
        return model.train_step(data)

    function = _compat.make_train_function(model, step)
    iterator = iter(tf.data.Dataset.from_tensor_slices((x, y)).batch(4).repeat())
    before = model.predict(x, verbose=0)
    logs = function(iterator)
    logs = logs.get_value() if hasattr(logs, "get_value") else logs
    assert "loss" in logs and float(logs["loss"]) > 0
    function(iterator)
    assert len(calls) == 1
    after = model.predict(x, verbose=0)
    assert np.abs(after).mean() < np.abs(before).mean()  # the optimizer stepped towards y = 0


@pytest.mark.parametrize("outputs", [1, 2])
def test_build_training_state_creates_the_variables_so_fit_traces_once(outputs):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,))
    heads = [keras.layers.Dense(2, name=f"head{i}")(inputs) for i in range(outputs)]
    model = keras.Model(inputs, heads if outputs == 2 else heads[0])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=["mse"] * outputs if outputs == 2 else "mse",
                  metrics=[["mae"], []] if outputs == 2 else ["mae"])
    _compat.build_training_state(model)
    assert model.optimizer.built
    variables = len(model.optimizer.variables) + len(model.metrics_variables)
    traces = []
    train_step = model.train_step
    model.train_step = lambda data: traces.append(1) or train_step(data)
    x, y = np.ones((4, 3), "float32"), np.zeros((4, 2), "float32")
    model.fit(x, (y, y) if outputs == 2 else y, batch_size=4, epochs=2, verbose=0)
    assert len(traces) == 1  # without the build: 2 (the first trace creates variables)
    assert len(model.optimizer.variables) + len(model.metrics_variables) == variables


def _call_config(function):
    """The Grappler settings a call of `function` gets: those of its call op in a traced caller."""
    from tensorflow.core.protobuf import config_pb2

    caller = tf.function(lambda: function()).get_concrete_function()
    (call,) = [op for op in caller.graph.get_operations() if "PartitionedCall" in op.type]
    return config_pb2.ConfigProto.FromString(call.get_attr("config_proto")).graph_options.rewrite_options


def test_function_rewrite_options_apply_to_calls_inside_the_block_only():
    function = tf.function(lambda: tf.constant(2.0) * 3.0)
    with _compat.function_rewrite_options({"memory_optimization": "NO_MEM_OPT", "remapping": "OFF"}):
        inside = _call_config(function)
        assert float(function()) == 6.0
    outside = _call_config(function)
    assert inside.memory_optimization == inside.NO_MEM_OPT and inside.remapping == inside.OFF
    assert outside.memory_optimization == outside.DEFAULT_MEM_OPT and outside.remapping == outside.DEFAULT
    with _compat.function_rewrite_options(None):
        assert _call_config(function) == outside


def test_op_determinism_query_and_disable():
    was_on = _compat.is_op_determinism_enabled()
    try:
        tf.config.experimental.enable_op_determinism()
        assert _compat.is_op_determinism_enabled() is True
        _compat.disable_op_determinism()
        assert _compat.is_op_determinism_enabled() is False
    finally:
        if was_on:
            tf.config.experimental.enable_op_determinism()
        else:
            _compat.disable_op_determinism()


def test_convert_variables_to_constants_freezes_variables():
    variable = tf.Variable([[2.0], [3.0]])
    function = tf.function(lambda x: tf.matmul(x, variable), input_signature=[tf.TensorSpec((1, 2))])
    frozen = _compat.convert_variables_to_constants(function.get_concrete_function())
    op_types = {op.type for op in frozen.graph.get_operations()}
    assert not op_types & {"VarHandleOp", "ReadVariableOp", "ResourceGather"}, op_types
    assert frozen.variables == () or len(frozen.variables) == 0
    np.testing.assert_allclose(frozen(tf.constant([[1.0, 1.0]]))[0].numpy(), [[5.0]])


@pytest.mark.parametrize("side,expected", [(8, ((0, 1), (0, 1))), (9, ((1, 1), (1, 1)))])
def test_keras_correct_pad(side, expected):
    assert _compat.keras_correct_pad(keras.KerasTensor((1, side, side, 4)), 3) == expected


_TWO_STRATEGIES = """
import os, sys
import tensorflow as tf
from unas_keras import _compat
cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)

def all_reduce(size):
    if sys.argv[1] == "advance":
        _compat.advance_mirrored_collective_keys()
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    step = tf.function(lambda: strategy.run(
        lambda: tf.distribute.get_replica_context().all_reduce("SUM", tf.ones([size]))))
    return strategy.experimental_local_results(step())[0].numpy().tolist()

print(all_reduce(2), all_reduce(3))
"""


@pytest.mark.slow
def test_advancing_collective_keys_lets_a_second_strategy_all_reduce_another_shape():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))

    def run(mode):
        return subprocess.run([sys.executable, "-c", _TWO_STRATEGIES, mode], capture_output=True, text=True,
                              env=env, timeout=600)

    advanced = run("advance")
    assert advanced.returncode == 0, advanced.stderr
    assert advanced.stdout.split("\n")[0] == "[2.0, 2.0] [2.0, 2.0, 2.0]"
    # The control: without it the second strategy reuses the first one's collective keys.
    plain = run("plain")
    assert plain.returncode != 0 and "Shape mismatch in the collective instance" in plain.stderr, plain.stderr


def test_set_random_seed_keeping_functions_seeds_like_keras():
    import random

    import numpy as np
    import tensorflow as tf

    def draws():
        shuffled = list(tf.data.Dataset.range(20).shuffle(20).as_numpy_iterator())  # op seed from the global one
        return (random.random(), float(np.random.rand()), keras.ops.convert_to_numpy(keras.random.uniform((3,))).tolist(),
                keras.ops.convert_to_numpy(keras.initializers.GlorotUniform()((2, 2))).tolist(), shuffled)

    keras.utils.set_random_seed(11)
    expected = draws()
    _compat.set_random_seed_keeping_functions(7)
    other = draws()
    _compat.set_random_seed_keeping_functions(11)
    assert draws() == expected
    assert other != expected
