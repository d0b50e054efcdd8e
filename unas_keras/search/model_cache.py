"""Reuse of a traced search step by the next search of the same graph (tuner trials).

Tracing and optimising a supernet's search step takes from seconds (tiny supernets) to minutes (the
default DARTS supernet), once per phase, and a new `SearchModel` traces again. A `ModelCache` passed to
`unas_keras.search.runner.search(model_cache=...)` keeps the last search's compiled `SearchModel`; the
next search whose graph is the same (`graph_key`: every setting that shapes the traced step; the seed, the
learning rates, the weight decays, `gen_gap_lambda` and `temperature` are variables, not part of it) runs
on that model instead of a new one. The search still builds its fresh model (seconds; it gives exactly the
initial weights a search of its own would start from) and `load_fresh_state` assigns every variable of
that fresh model and of its optimizers (weights, logits, optimizer moments and step counters, metrics, the
model's step counter and seed) and every hyper-parameter `Setting` (`settings`: rates, weight decays,
`gen_gap_lambda`, `temperature`) to the cached model's, so a search on a reused model gives the same
results as one on a new model. Keras' `fit` then runs the already traced `train_function`. With a cache
the search seeds without clearing TensorFlow's kernel cache (`_compat.set_random_seed_keeping_functions`;
the same seeds), which holds the step functions' instantiations: clearing it costs a graph optimisation
per phase again (3 s + 10 s of a 25 s digits DARTS search, against 5.5 s without it).

`unas_keras.UNASTuner` owns one cache: trials that differ only by seed, learning rates, weight decays,
`gen_gap_lambda` or `temperature` skip the trace from the second trial on. Searches with a latency model
(its tables are constants of the graph and may be timed anew per search) and the custom distributed loop
(multi-worker) are not reused.
"""

import json

from unas_keras import _settings
from unas_keras.search import checkpoint as checkpoint_lib

# Settings of the configuration that the traced step reads from variables (`unas_keras._settings.Setting`:
# the learning-rate schedules' rates, the optimizers' weight decays, the objective's lambda, the
# estimator's temperature), so searches that differ only in them share a graph. `lr_reference_batch`
# only scales the rates.
VARIABLE_SETTINGS = ("weight_lr", "weight_lr_min", "arch_lr", "arch_lr_min", "lr_reference_batch",
                     "weight_decay", "arch_weight_decay", "gen_gap_lambda", "temperature")


def graph_key(config, input_shape, num_classes, steps_per_epoch, deterministic):
    """The key of a search's traced step: everything that shapes it, as a string.

    The configuration is taken whole except its seed and `VARIABLE_SETTINGS` (variables of the model
    and its optimizers): settings that do not change the graph (e.g. `checkpoint_every_steps`) only
    make the key stricter.

    Args:
        config: the search's configuration dict (`SearchConfig.to_dict()`).
        input_shape: the supernet's input shape.
        num_classes: the number of classes.
        steps_per_epoch: iterations per epoch (learning-rate schedules and warm-up length derive from it).
        deterministic: whether TensorFlow op determinism is on during the search.

    Returns:
        A string (JSON).
    """
    settings = {k: v for k, v in config.items() if k != "seed" and k not in VARIABLE_SETTINGS}
    return json.dumps({"config": settings, "input_shape": [int(d) for d in input_shape],
                       "num_classes": int(num_classes), "steps_per_epoch": int(steps_per_epoch),
                       "deterministic": bool(deterministic)}, sort_keys=True, default=str)


def state_variables(model, optimizers):
    """Every variable of a search's state that a checkpoint holds, in a fixed order, without duplicates.

    The model's variables (weights, logits, step counter, estimator state, random-seed states), its
    metrics' accumulators, then each optimizer's variables (iterations, moments). Not the model's
    `seed_variable`: the seed is a setting of the run (run.json), set when the model is built, and
    checkpoints written before it was a variable still restore.
    """
    seen, out = {id(model.seed_variable)}, []
    everything = (list(model.variables) + list(model.metrics_variables)
                  + [v for opt in optimizers for v in opt.variables])
    for var in everything:
        if id(var) not in seen:
            seen.add(id(var))
            out.append(var)
    return out


def settings(model, optimizers):
    """The `unas_keras._settings.Setting`s of a search (the model's, then each optimizer's), in a fixed order.

    Hyper-parameters the traced step reads from variables; set when the objects are built, not
    checkpointed (like the model's `seed_variable`).
    """
    out = list(getattr(model, "settings", []))
    for optimizer in optimizers:
        out.extend(getattr(optimizer, "settings", []))
    return out


def load_fresh_state(target, source):
    """Assigns every state variable and setting of `source` to the same variable or setting of `target`.

    Args:
        target: `(model, optimizers)` to load into (the cached, traced model).
        source: `(model, optimizers)` freshly built for the new search.

    Raises:
        ValueError: the two states do not hold the same variables (count, shapes, dtypes).
    """
    targets = [target[0].seed_variable] + state_variables(*target)
    sources = [source[0].seed_variable] + state_variables(*source)
    if len(targets) != len(sources):
        raise ValueError(f"Cannot reuse the cached search model: it has {len(targets)} state variables, the new "
                         f"search's model {len(sources)}.")
    for t, s in zip(targets, sources):
        if tuple(t.shape) != tuple(s.shape) or str(t.dtype) != str(s.dtype):
            raise ValueError(f"Cannot reuse the cached search model: its variable {t.path or t.name} "
                             f"{tuple(t.shape)} {t.dtype} does not match the new search's "
                             f"{s.path or s.name} {tuple(s.shape)} {s.dtype}.")
    target_settings, source_settings = settings(*target), settings(*source)
    try:
        _settings.copy_settings(target_settings, source_settings, "the new search's model")
    except ValueError as error:
        raise ValueError(f"Cannot reuse the cached search model: {error}") from None
    checkpoint_lib.assign_all(targets, checkpoint_lib.snapshot(sources))


class ModelCache:
    """Holds the compiled `SearchModel` of the last search, for the next search of the same graph.

    One entry (a search of another graph replaces it): it holds the supernet, its optimizers and its
    traced step functions in memory. Not thread-safe; one search uses it at a time.

    Attributes:
        hits: how many searches ran on a reused model.
        misses: how many searches built (and traced) a model of their own while holding the cache.
    """

    def __init__(self):
        self._entry = None
        self.hits = 0
        self.misses = 0

    def reuse(self, key, strategy, model, optimizers):
        """The model a search with graph `key` runs on, given its freshly built `model` and `optimizers`.

        With a cached model of the same key and strategy object, the fresh state is loaded into it
        (`load_fresh_state`) and the cached `(model, optimizers)` are returned; otherwise the fresh ones
        are cached (replacing any other entry) and returned.

        Args:
            key: `graph_key(...)` of the search.
            strategy: the search's `tf.distribute.Strategy` (a model belongs to the strategy it was built in).
            model: the search's freshly built and compiled `SearchModel`.
            optimizers: its `(weight_optimizer, arch_optimizer)`.

        Returns:
            `(model, optimizers)` to run the search on.
        """
        entry = self._entry
        if entry is not None and entry["key"] == key and entry["strategy"] is strategy:
            load_fresh_state((entry["model"], entry["optimizers"]), (model, tuple(optimizers)))
            self.hits += 1
            return entry["model"], entry["optimizers"]
        self._entry = {"key": key, "strategy": strategy, "model": model, "optimizers": tuple(optimizers)}
        self.misses += 1
        return model, tuple(optimizers)

    def clear(self):
        """Drops the cached model (and its traced functions)."""
        self._entry = None
