"""Every private TensorFlow / Keras API unas_keras uses, each behind one function with its reason.

Nothing else in the package (apps, benchmarks and tests included) touches `keras.src`,
`tensorflow.python` or an underscore attribute of a TensorFlow / Keras object. `tests/test_compat.py`
exercises each function against the installed versions, so a release that moves one fails there,
loudly and by name, instead of somewhere deep in a search.

Public replacements were looked for first (TensorFlow 2.21, Keras 3.15) and are used where they exist;
the reason given with each function is why none does the job here. TensorFlow and the private
modules are imported inside the functions that need them: the Keras-only layers import this module too,
and a moved private module must break only the feature that uses it.
"""

import contextlib


def in_xla_compilation():
    """Whether the function being traced will be compiled by XLA (`tf.function(jit_compile=True)`).

    Why private (`control_flow_util.GraphOrParentsInXlaContext`): TensorFlow marks the trace of a
    `jit_compile` function only by an XLA control-flow context on the graph; no public call reports it.
    `MBConvChoice` needs to know while tracing: its fast path for one-hot samples gathers variable
    handles, which XLA cannot compile (the failure would come only when the step first runs).
    """
    import tensorflow as tf
    from tensorflow.python.ops import control_flow_util

    return bool(control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()))


def flatten_layers(layer, include_self=True, recursive=True):
    """Every layer nested in `layer`, each once, depth first (`layer` itself first if `include_self`).

    Why private (`Layer._flatten_layers`): Keras 3 has no public walk over nested layers. `Model.layers`
    lists only a model's direct children (it is `_flatten_layers(include_self=False, recursive=False)`),
    and a plain `keras.layers.Layer` holding sub-layers (our cells, `MBConvChoice`) has no `layers` at
    all, so a recursion over `.layers` would miss everything inside them.
    """
    return list(layer._flatten_layers(include_self=include_self, recursive=recursive))  # noqa: SLF001


def build_training_state(model):
    """Creates a compiled, built model's optimizer, loss and metric variables before its first `fit`.

    Targets are taken to have the shapes of the model's outputs (one-hot labels of logits); a model with
    several outputs gets a tuple of targets.

    Why private (`Trainer._symbolic_build`): Keras runs it itself only when a model is used under a
    `tf.distribute` strategy; otherwise those variables are created inside the first trace of the train
    function, and TensorFlow traces a function that creates variables twice. Building them first took
    the first step of a derived DARTS network (8 cells, 16x16, batch 64, one CPU thread busy) from
    10.8-12.2 s to 7.2-7.7 s. `optimizer.build` alone does not: the metrics still force the second trace.
    """
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    targets = model.outputs[0] if len(model.outputs) == 1 else tuple(model.outputs)
    model._symbolic_build(data_batch=(inputs, targets))  # noqa: SLF001


def make_train_function(model, step_function):
    """Keras' own train function around `step_function` (for `Model.make_train_function`).

    It runs `step_function` on every replica of `model.distribute_strategy`, reduces the outputs,
    loops `steps_per_execution` times and wraps it all in `tf.function` (honouring `run_eagerly` and
    `jit_compile`), exactly as for `train_step`.

    Why private (`TensorFlowTrainer._make_function`): the public `make_train_function` builds that
    function only around `self.train_step`. `SearchModel` needs two of them (warm-up and search steps),
    because a synchronisation point (all-reduce, optimizer update) cannot sit inside a `tf.cond`.
    """
    return model._make_function(step_function)  # noqa: SLF001


def is_op_determinism_enabled():
    """Whether `tf.config.experimental.enable_op_determinism()` is in force (False if unknown).

    Why private (`tensorflow.python.framework.config`): TensorFlow exports `enable_op_determinism`
    but neither the query nor the way back; a seeded search turns determinism on for its run and must
    restore the caller's setting afterwards.
    """
    from tensorflow.python.framework import config

    check = getattr(config, "is_op_determinism_enabled", None)
    return bool(check()) if check is not None else False


def disable_op_determinism():
    """Undoes `tf.config.experimental.enable_op_determinism()` (a no-op if TensorFlow cannot).

    Why private: see `is_op_determinism_enabled`.
    """
    from tensorflow.python.framework import config

    disable = getattr(config, "disable_op_determinism", None)
    if disable is not None:
        disable()


def advance_mirrored_collective_keys(step=100_000):
    """Moves the collective keys the next `tf.distribute.MirroredStrategy` numbers its all-reduces from.

    Why private (`MirroredStrategy._collective_key_base`, read once by the constructor): every
    strategy in a process numbers its collectives from the same keys, and the collective runtime
    remembers each key's tensor shape, so a second strategy (a second search, a tuner trial) aborts
    with "Shape mismatch in the collective instance" (tensorflow/tensorflow#62790). No public API
    moves the keys; TensorFlow's own test utilities do the same.
    """
    import tensorflow as tf

    tf.distribute.MirroredStrategy._collective_key_base += step  # noqa: SLF001


def convert_variables_to_constants(concrete_function):
    """A copy of `concrete_function` with its variables frozen into constants (the "frozen_graph"
    TFLite conversion method).

    Why private (`tensorflow.python.framework.convert_to_constants.convert_variables_to_constants_v2`):
    its only public spelling is the TF1 graph API (`tf.compat.v1.graph_util`), which takes a session.
    """
    from tensorflow.python.framework import convert_to_constants

    return convert_to_constants.convert_variables_to_constants_v2(concrete_function)


@contextlib.contextmanager
def function_rewrite_options(rewrite_options):
    """Calls of `tf.function`s inside the block are optimised with these Grappler settings.

    `rewrite_options` maps fields of TensorFlow's `RewriterConfig` proto to values, enum values by
    name (e.g. `{"memory_optimization": "NO_MEM_OPT", "disable_tfg_optimizer": True}`); None or empty
    changes nothing. A function
    is optimised once per distinct setting, at its first call with it, so a caller uses the same
    settings at every call. Other threads and calls outside the block keep theirs.

    Why private (`tensorflow.python.eager.context.FunctionCallOptions`): the public
    `tf.config.optimizer.set_experimental_options` changes the settings of every function in the
    process, for the rest of the process; the per-call options are what `tf.function` itself reads.
    """
    if not rewrite_options:
        yield
        return
    from tensorflow.core.protobuf import config_pb2
    from tensorflow.python.eager import context

    ctx = context.context()
    saved = ctx.function_call_options
    config = config_pb2.ConfigProto.FromString(saved.config_proto_serialized)
    rewriter = config.graph_options.rewrite_options
    for name, value in rewrite_options.items():
        enum = rewriter.DESCRIPTOR.fields_by_name[name].enum_type
        setattr(rewriter, name, enum.values_by_name[value].number if enum is not None else value)
    ctx.function_call_options = context.FunctionCallOptions(executor_type=saved.executor_type,
                                                            config_proto=config)
    try:
        yield
    finally:
        ctx.function_call_options = saved


def keras_correct_pad(inputs, kernel_size):
    """Keras' padding for a strided "valid" convolution in its MobileNet applications (tests only).

    Why private (`keras.src.applications.imagenet_utils.correct_pad`): the reference our
    `unas_keras.layers.mbconv.correct_pad` must match, so that `mobilenet_v2` reproduces
    `keras.applications.MobileNetV2`; Keras does not export it.
    """
    from keras.src.applications import imagenet_utils

    return imagenet_utils.correct_pad(inputs, kernel_size)


def set_random_seed_keeping_functions(seed):
    """`keras.utils.set_random_seed(seed)` without clearing TensorFlow's kernel cache.

    It seeds the same things (Python's `random`, NumPy, Keras' global seed and seed generator,
    TensorFlow's global seed) with the same values.

    Why private (`keras.src` global state, `context.Context._seed` / `_rng`): `tf.random.set_seed`, which
    `keras.utils.set_random_seed` calls, also clears the eager kernel cache, and that cache holds every
    instantiated `tf.function`. A search that reuses a traced step (`search/model_cache.py`) would then
    optimise and instantiate the step again: 3 s (warm-up) + 10 s (search phase) of a 25 s digits DARTS
    search, measured. The clearing resets stateful random kernels only; the search step draws its noise
    from stateless seeds and Keras seed-generator variables, which the reuse assigns per search.
    """
    import random

    import numpy as np
    from keras.src.backend.common import global_state
    from keras.src.random import seed_generator
    from keras.src.utils import rng_utils
    from tensorflow.python.eager import context

    global_state.set_global_attribute(rng_utils.GLOBAL_RANDOM_SEED, seed)
    global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
    random.seed(seed)
    np.random.seed(seed)
    ctx = context.context()
    ctx._seed = seed  # noqa: SLF001
    ctx._rng = random.Random(seed)  # noqa: SLF001


__all__ = [
    "advance_mirrored_collective_keys",
    "build_training_state",
    "convert_variables_to_constants",
    "disable_op_determinism",
    "flatten_layers",
    "function_rewrite_options",
    "is_op_determinism_enabled",
    "keras_correct_pad",
    "make_train_function",
    "set_random_seed_keeping_functions",
]
