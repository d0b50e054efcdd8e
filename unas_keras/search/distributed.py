"""Strategies and the custom training loop used where `model.fit` cannot run (multi-worker).

Keras 3's `model.fit` fails under `tf.distribute.MultiWorkerMirroredStrategy` (PerReplica conversion
error, keras-team/keras#20585), but Keras 3 models and optimizers work inside a plain custom loop:
`strategy.run(model.replica_step)` inside a `tf.function`, fed by a distributed dataset. This module has
that loop, written to call the same Keras callbacks `fit` calls, so history, progress, TensorBoard and
checkpoints behave the same on both paths.

Input: every worker builds the same deterministic stream of *global* batches and keeps only its replicas'
slices (`global batch = num_replicas x per-replica batch`, replica r takes rows
`[r * per_replica, (r + 1) * per_replica)`). A step therefore sees exactly the same global batch whatever
the number of workers and local devices; the price is that each worker preprocesses the whole global
batch.
"""

import json
import os

import tensorflow as tf

from unas_keras import _compat


def cluster_info(strategy):
    """Returns (is_multi_worker, is_chief, task_type, task_id) of a strategy."""
    resolver = getattr(strategy, "cluster_resolver", None)
    multi = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    if not multi or resolver is None:
        return multi, True, None, 0
    task_type, task_id = resolver.task_type, resolver.task_id
    cluster = resolver.cluster_spec().as_dict()
    if task_type is None:
        is_chief = True
    elif task_type == "chief":
        is_chief = True
    else:
        is_chief = task_type == "worker" and task_id == 0 and "chief" not in cluster
    return True, is_chief, task_type, int(task_id or 0)


def num_workers(strategy):
    """Returns the number of worker processes taking part in a strategy (1 unless multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return 1
    cluster = resolver.cluster_spec().as_dict()
    return max(len(cluster.get("worker", [])) + len(cluster.get("chief", [])), 1)


def make_strategy(name, cpu_replicas=None):
    """Creates a strategy by name.

    Args:
        name: "default" (no distribution), "mirrored" (every local GPU, or the CPU split into
            `cpu_replicas` logical devices), or "multi_worker" (MultiWorkerMirroredStrategy from
            `TF_CONFIG`).
        cpu_replicas: with "mirrored" and no GPU, split the CPU into this many logical devices. Must be
            called before TensorFlow initialises its devices.

    Returns:
        A `tf.distribute.Strategy`.

    Raises:
        ValueError: unknown name, a missing or malformed `TF_CONFIG` for "multi_worker", or
            `cpu_replicas` given after TensorFlow was initialised with a different split.
    """
    if name in (None, "default"):
        return tf.distribute.get_strategy()
    if name == "multi_worker":
        text = os.environ.get("TF_CONFIG")
        if not text:
            raise ValueError("strategy 'multi_worker' needs the TF_CONFIG environment variable.")
        try:
            tf_config = json.loads(text)
            tf_config["cluster"]["worker"]
            tf_config["task"]["type"], tf_config["task"]["index"]
        except (ValueError, KeyError, TypeError):
            raise ValueError("TF_CONFIG must be JSON with cluster.worker and task.type / task.index, got "
                             f"{text[:200]!r}.") from None
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored":
        if cpu_replicas:
            split_cpu(cpu_replicas)
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return mirrored_strategy(devices)
    raise ValueError(f"Unknown strategy {name!r}; expected one of ['default', 'mirrored', 'multi_worker'].")


def mirrored_strategy(devices=None):
    """Creates a `tf.distribute.MirroredStrategy` that can share its process with earlier ones.

    TensorFlow's collective runtime remembers every (group key, instance key) it has run, and every
    `MirroredStrategy` numbers its all-reduces from the same starting keys. A second strategy in one
    process (a second search, a tuner trial, a notebook cell run again) can therefore reuse a key for a
    tensor of another shape, and the step aborts with "Shape mismatch in the collective instance 100"
    (tensorflow/tensorflow#62790). TensorFlow's own test utilities move the key base for every new
    strategy; so does this function. Prefer it to `tf.distribute.MirroredStrategy` whenever a process
    may build more than one strategy.

    Args:
        devices: device names, as for `tf.distribute.MirroredStrategy` (None: every GPU, else the CPU).

    Returns:
        A `tf.distribute.MirroredStrategy`.
    """
    _compat.advance_mirrored_collective_keys(100_000)
    return tf.distribute.MirroredStrategy(devices=devices)


def split_cpu(num):
    """Splits the first physical CPU into `num` logical devices (before TensorFlow initialises them).

    Raises:
        ValueError: if `num` < 1, or the devices were already initialised with a different count.
    """
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise ValueError(f"cpu_replicas must be an integer >= 1, got {num!r}.")
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * num)
    except RuntimeError:
        have = len(tf.config.list_logical_devices("CPU"))
        if have != num:
            raise ValueError(f"cpu_replicas={num}: TensorFlow already runs with {have} CPU device(s); "
                             f"set cpu_replicas before anything else uses TensorFlow.") from None


def replica_slices_fn(make_dataset, global_batch_size, num_replicas):
    """Builds the `dataset_fn` for `strategy.distribute_datasets_from_function`.

    Args:
        make_dataset: callable returning the stream of global batches (a `tf.data.Dataset` whose
            elements are nested tensors with the global batch as leading dimension).
        global_batch_size: the leading dimension of every element.
        num_replicas: `strategy.num_replicas_in_sync`.

    Returns:
        A function of a `tf.distribute.InputContext` returning this worker's dataset of per-replica
        batches, in the order the strategy hands them to its local replicas.
    """
    if global_batch_size % num_replicas:
        raise ValueError(f"batch_size {global_batch_size} must be divisible by the number of replicas "
                         f"({num_replicas}).")
    per_replica = global_batch_size // num_replicas

    def dataset_fn(input_context):
        pipelines = input_context.num_input_pipelines
        local = num_replicas // pipelines
        first = input_context.input_pipeline_id * local

        def split(*element):
            element = element[0] if len(element) == 1 else element

            def mine(t):
                t = tf.reshape(t, tf.concat([[num_replicas, per_replica], tf.shape(t)[1:]], 0))
                return t[first:first + local]

            return tf.data.Dataset.from_tensor_slices(tf.nest.map_structure(mine, element))

        return make_dataset().flat_map(split)

    return dataset_fn


def run_custom_loop(model, strategy, dataset, global_batch_size, epochs, steps_per_epoch, callbacks,
                    initial_epoch=0, initial_step=0, progbar=False):
    """Runs the search with `strategy.run(model.replica_step)` instead of `model.fit`.

    Args:
        model: a compiled `SearchModel` built under `strategy.scope()`.
        strategy: the `tf.distribute.Strategy` (any; required for multi-worker).
        dataset: callable returning the `tf.data.Dataset` of global batches, positioned at the first step
            to run (an epoch is just the next `steps_per_epoch` elements of this stream).
        global_batch_size: the global batch size.
        epochs: total number of epochs.
        steps_per_epoch: steps in a full epoch.
        callbacks: a `keras.callbacks.CallbackList` (or list of callbacks) driven like `fit` does.
        initial_epoch: epoch to start from (resume).
        initial_step: step inside `initial_epoch` to start from (resume mid-epoch).
        progbar: also show Keras' progress bar (as `fit(verbose=1)` does); needs a list of callbacks.

    Returns:
        The logs of the last epoch.
    """
    import keras

    if not isinstance(callbacks, keras.callbacks.CallbackList):
        callbacks = keras.callbacks.CallbackList(list(callbacks), add_progbar=progbar, model=model, verbose=1,
                                                 epochs=epochs, steps=steps_per_epoch)
    num_replicas = strategy.num_replicas_in_sync
    distributed = strategy.distribute_datasets_from_function(
        replica_slices_fn(dataset, global_batch_size, num_replicas))
    iterator = iter(distributed)

    def make_function(warmup):
        @tf.function
        def step_function(iterator):
            data = next(iterator)
            strategy.run(model.replica_step, args=(data,), kwargs={"warmup": warmup})

        return step_function

    # One traced function per phase, chosen before each step (as `fit` does).
    train_function = model.phase_switch(make_function)

    model.stop_training = False
    callbacks.on_train_begin()
    logs = {}
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        callbacks.on_epoch_begin(epoch)
        start = initial_step if epoch == initial_epoch else 0
        for batch in range(steps_per_epoch - start):
            callbacks.on_train_batch_begin(batch)
            train_function(iterator)
            callbacks.on_train_batch_end(batch, None)
            if model.stop_training:
                break
        logs = {k: float(v) for k, v in model.get_metrics_result().items()}
        callbacks.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callbacks.on_train_end(logs)
    return logs
