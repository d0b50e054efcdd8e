"""`unas_keras.search()`: one call that runs a whole UNAS search and leaves its results in a folder.

The output folder holds

* ``architecture.json``: the derived architecture (argmax of the learned distribution);
* ``distribution.json``: the final probabilities of every decision;
* ``history.json``: per-epoch lists of the logged metrics;
* ``run.json``: the effective configuration, the seed, the versions of unas_keras / TensorFlow / Keras,
  the number of replicas and the run's status;
* ``checkpoints/``: crash-safe checkpoints (see `checkpoint.py`); rerunning the same call with the same
  `output_dir` resumes from the newest one and ends with the same results as an uninterrupted run;
* ``logs/``: TensorBoard event files.
"""

import dataclasses
import datetime
import inspect
import os
import random
import shutil
import tempfile
import textwrap
import time

import keras
import tensorflow as tf

import unas_keras
from unas_keras import _compat
from unas_keras import latency as latency_lib
from unas_keras.config import SearchConfig, config_differences
from unas_keras.data import search_data
from unas_keras.data import sources
from unas_keras.networks import build_supernet
from unas_keras.search import callbacks as callbacks_lib
from unas_keras.search import checkpoint as checkpoint_lib
from unas_keras.search import distributed
from unas_keras.search import model_cache as model_cache_lib
from unas_keras.search import objectives
from unas_keras.search import pictures
from unas_keras.search import schedules
from unas_keras.search.search_model import SearchModel
from unas_keras.space import Architecture
from unas_keras.space import registry

_OUTPUT_FILES = ("architecture.json", "distribution.json", "history.json", "run.json")
_KNOWN_ENTRIES = set(_OUTPUT_FILES) | {"checkpoints", "logs", "probabilities_history.json", "probabilities.png",
                                       "architecture.png"}
# Checkpoint every this many steps inside an epoch when the caller does not say.
DEFAULT_CHECKPOINT_EVERY_STEPS = 1000


@dataclasses.dataclass
class SearchResult:
    """What `search()` returns.

    Attributes:
        architecture: the derived `unas_keras.Architecture`.
        history: dict of per-epoch lists (losses, accuracies, entropy, ...).
        output_dir: the folder with the run's files.
        probabilities: dict decision name -> nested lists of final probabilities.
        config: the effective configuration (as in run.json).
        model: the trained `SearchModel` (None when the run had already finished before this call).
        latency: with a latency model, a dict: `target_ms`, `ramp_steps` (architecture steps of the
            latency weight's ramp), `argmax_latency_ms` (latency of `architecture`), `expected_latency_ms`
            (under the final distribution) and `target_met` (`argmax_latency_ms <= target_ms`; None
            without a target); None for a search without a latency model. Also in run.json.
    """

    architecture: object
    history: dict
    output_dir: str
    probabilities: dict = None
    config: dict = None
    model: object = None
    latency: dict = None


def _versions():
    version = getattr(unas_keras, "__version__", None)
    if version is None:
        try:
            from importlib import metadata

            version = metadata.version("unas_keras")
        except Exception:  # not installed: running from a source checkout
            version = "source"
    return {"unas_keras": version, "tensorflow": tf.__version__, "keras": keras.__version__}


def _default_output_dir(cfg):
    dataset = cfg.dataset
    name = dataset if isinstance(dataset, str) else next(iter(dataset))
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = os.path.join("runs", f"{cfg.space}_{name.replace('/', '_')}_{stamp}")
    path, n = base, 1
    while os.path.exists(path):
        n += 1
        path = f"{base}-{n}"
    return path


def _inspect_output_dir(output_dir, cfg):
    """Reads an existing output folder. Returns (run_json or None, finished).

    Raises:
        ValueError: the folder belongs to something else, or to a run with a different configuration.
    """

    if not os.path.exists(output_dir):
        return None, False
    if not os.path.isdir(output_dir):
        raise ValueError(f"output_dir {output_dir} exists and is not a folder.")
    run_path = os.path.join(output_dir, "run.json")
    if not os.path.exists(run_path):
        foreign = sorted(set(os.listdir(output_dir)) - _KNOWN_ENTRIES)
        foreign = [f for f in foreign if not f.startswith(".")]
        if foreign:
            raise ValueError(
                f"output_dir {output_dir} is not empty and holds no search run (no run.json; found "
                f"{', '.join(foreign[:5])}); choose a new folder.")
        return None, False
    previous = checkpoint_lib.read_json(run_path)
    if not isinstance(previous, dict) or "config" not in previous:
        raise ValueError(f"{run_path} is not a unas_keras run description.")
    differences = config_differences(previous["config"], cfg.to_dict())
    finished = previous.get("status") == "finished"
    if differences:
        what = "a finished" if finished else "an unfinished"
        raise ValueError(
            f"output_dir {output_dir} holds {what} search with a different configuration "
            f"({'; '.join(differences[:6])}{'; ...' if len(differences) > 6 else ''}). Use a new output_dir, "
            f"or repeat the original settings to {'read' if finished else 'resume'} it.")
    return previous, finished


def _load_finished(output_dir, cfg, verbose):
    arch = Architecture.load(os.path.join(output_dir, "architecture.json"))
    history = checkpoint_lib.read_json(os.path.join(output_dir, "history.json"))
    distribution = checkpoint_lib.read_json(os.path.join(output_dir, "distribution.json"))
    if verbose:
        print(f"The search in {output_dir} has already finished with this configuration; nothing to do. "
              f"Architecture: {arch}", flush=True)
    latency = checkpoint_lib.read_json(os.path.join(output_dir, "run.json")).get("latency")
    return SearchResult(architecture=arch, history=history, output_dir=output_dir,
                        probabilities=distribution.get("probabilities"), config=cfg.to_dict(), model=None, latency=latency)


def _resolve_strategy(strategy):
    if strategy is None:
        return tf.distribute.get_strategy()
    if isinstance(strategy, str):
        return distributed.make_strategy(strategy)
    if not isinstance(strategy, tf.distribute.Strategy):
        raise ValueError(f"strategy must be a tf.distribute.Strategy, one of 'default', 'mirrored', "
                         f"'multi_worker', or None; got {type(strategy).__name__}.")
    return strategy


def _latency_summary(cfg, latency, model, architecture, ramp_steps):
    """The run's final latency figures (see `SearchResult.latency`), or None without a latency model."""
    if latency is None:
        return None

    argmax_ms = float(latency.predict_ms(architecture))
    probabilities = {k: v[None] for k, v in model.distribution.probabilities().items()}
    bias, coefficients = latency.surrogate_weights(model.supernet.search_space)
    expected_ms = float(objectives.linear_latency(bias, coefficients, probabilities)[0])
    target = cfg.target_latency_ms
    return {"target_ms": target, "ramp_steps": ramp_steps, "argmax_latency_ms": argmax_ms,
            "expected_latency_ms": expected_ms, "target_met": None if target is None else argmax_ms <= target}


def _log_callback(log_dir):
    """TensorBoard event files when the `tensorboard` package is installed, else a CSV of epoch logs."""
    try:
        import tensorboard  # noqa: F401  (tf.summary needs it)
    except ImportError:
        os.makedirs(log_dir, exist_ok=True)
        return keras.callbacks.CSVLogger(os.path.join(log_dir, "epochs.csv"), append=True)
    return keras.callbacks.TensorBoard(log_dir=log_dir, write_graph=False, update_freq="epoch")


_D = SearchConfig.default


def search(space=_D("space"), dataset=_D("dataset"), estimator=_D("estimator"), objective=_D("objective"),
           epochs=None, warmup_epochs=None, batch_size=None, seed=_D("seed"), output_dir=None,
           target_latency_ms=None, strategy=None, steps_per_epoch=None, verbose=1, *, latency=None,
           callbacks=None, deterministic=None, use_custom_loop=False, model_cache=None, **options):
    """Runs a UNAS architecture search and writes its results to a folder.

    Defaults depend on the space and the dataset (`unas_keras.config.SearchConfig`). On the embedded
    digits set they make a search that finishes in a few minutes on 2 CPU cores: DARTS space at 16x16x1
    with the 7 UNAS ops, C = 8, 3 cells, batch 32, 1 warm-up + 5 search epochs of 28 steps, learning
    rates raised for the short run; ProxylessNAS space at 32x32x1, width 0.25; NB201 space at 16x16x1,
    8 channels, 1 cell per stage. On CIFAR and ImageNet they are the paper's settings (e.g.
    `search(space="proxyless", dataset="imagenet")`: 224x224, batch 192, 20 warm-up + 15 search epochs,
    one architecture per minibatch, logits softened with eps 0.08).

    Args:
        output_dir: the results folder (default: a new folder under ./runs/). An unfinished run there is
            resumed; a finished one with the same configuration is returned without work; a different
            configuration is refused.
        strategy: a `tf.distribute.Strategy` ("default", "mirrored" or "multi_worker" are accepted as
            names), or None for the default strategy.
        verbose: 0 silent, 1 Keras' progress bar (with the ETA of the epoch), 2 one line per epoch
            (and a line every 5 s inside long epochs; suited to log files).
        latency: where latencies come from: a `unas_keras.latency.DeviceTable` of measured whole networks
            (any space; its surrogate is fitted on the table), a `LatencyModel`, or None (the spaces that
            have one: a TFLite CPU per-block lookup table timed on this machine). Every sampled
            architecture must be in a device table.
        callbacks: Keras callbacks run with the search's own (after them): they see every epoch and
            batch, and the epoch logs (losses, accuracies, entropy, latency). A resumed run calls them
            from the resume point on.
        deterministic: TensorFlow op determinism during the run (switched back off afterwards). None
            (default): on when a seed is given and the strategy runs on CPUs only: there it costs
            little, and it makes a seeded run, and its resume after an interruption, end with exactly
            the same results. Off on GPUs, where deterministic kernels are slow and some ops have none
            (a GPU run is seeded and resumes from its checkpoints, but is not bitwise reproducible).
            True forces it on (may fail on a GPU for an op without a deterministic kernel); False off.
        use_custom_loop: run the custom distributed loop even where `model.fit` would do (it is always
            used under MultiWorkerMirroredStrategy).
        model_cache: a `unas_keras.search.model_cache.ModelCache` shared by several searches in this
            process (`UNASTuner` passes one): a search whose traced step would be the same as the cached
            model's (same settings and data shapes; the seed may differ) runs on that model, with this
            search's fresh initial state, and skips the trace. Not used with a latency model or the
            custom distributed loop. The results are those of a search on a new model; the returned
            `SearchResult.model` is then the cached model, which the next search of the cache overwrites.
{options}
        **options: also the supernet options of the space ({space_options}).

    Returns:
        A `SearchResult` (architecture, history, output_dir, probabilities, config, model, latency).

    Raises:
        ValueError: a bad argument, an unusable dataset (e.g. a tensorflow-datasets set that is not
            downloaded), or an output_dir holding a different run.
    """
    started = time.time()
    dataset = _dataset_arrays(dataset)
    user_callbacks = _check_callbacks(callbacks)
    if deterministic not in (None, True, False):
        raise ValueError(f"deterministic must be None, True or False, got {deterministic!r}.")
    explicit = dict(estimator=estimator, objective=objective, epochs=epochs, warmup_epochs=warmup_epochs,
                    batch_size=batch_size, target_latency_ms=target_latency_ms, steps_per_epoch=steps_per_epoch)
    cfg = SearchConfig.resolve(space=space, dataset=dataset, seed=seed, latency=latency, **explicit, **options)
    if verbose not in (0, 1, 2) or isinstance(verbose, bool):
        raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}.")
    if model_cache is not None and not isinstance(model_cache, model_cache_lib.ModelCache):
        raise ValueError(f"model_cache must be a unas_keras.search.model_cache.ModelCache or None, got "
                         f"{type(model_cache).__name__}.")



    strategy = _resolve_strategy(strategy)
    multi_worker, is_chief, _, task_id = distributed.cluster_info(strategy)
    num_replicas = strategy.num_replicas_in_sync
    if cfg.batch_size % num_replicas:
        raise ValueError(f"batch_size {cfg.batch_size} must be divisible by the number of replicas "
                         f"({num_replicas}).")
    if multi_worker and output_dir is None:
        raise ValueError("A multi-worker search needs an explicit output_dir (the same path on every worker, "
                         "on a file system they share) so that all workers resume from the chief's "
                         "checkpoints.")

    output_dir = os.fspath(output_dir) if output_dir is not None else _default_output_dir(cfg)
    previous, finished = _inspect_output_dir(output_dir, cfg)
    if finished:
        return _load_finished(output_dir, cfg, verbose if is_chief else 0)

    # Seed and determinism (op determinism is switched back off afterwards if it was off before).
    effective_seed = cfg.seed
    determinism_was_on = _compat.is_op_determinism_enabled()
    if effective_seed is None:
        effective_seed = (previous or {}).get("effective_seed")
        if effective_seed is None:
            effective_seed = random.SystemRandom().randrange(2**31 - 1)
    elif model_cache is None:
        keras.utils.set_random_seed(effective_seed)
    else:  # the same seeding, without dropping the cached model's instantiated step functions
        _compat.set_random_seed_keeping_functions(effective_seed)
    if deterministic is None:
        deterministic = cfg.seed is not None and not _uses_gpu(strategy)
    if deterministic:
        tf.config.experimental.enable_op_determinism()

    # Where this process writes: the chief writes the results, other workers a private temporary folder.
    work_dir = output_dir if is_chief else tempfile.mkdtemp(prefix=f"unas_worker{task_id}_")
    process = _Process(cfg=cfg, dataset=dataset, strategy=strategy, output_dir=output_dir, work_dir=work_dir,
                       seed=effective_seed, verbose=verbose, is_chief=is_chief, multi_worker=multi_worker,
                       deterministic=bool(deterministic or determinism_was_on), use_custom_loop=use_custom_loop,
                       started=started, model_cache=model_cache)
    try:
        return _run(process, user_callbacks, latency)
    finally:
        if not is_chief:
            shutil.rmtree(work_dir, ignore_errors=True)
        if not determinism_was_on:
            _compat.disable_op_determinism()


def _uses_gpu(strategy):
    """Whether the strategy's replicas run on GPUs (its devices, else the machine's visible GPUs)."""
    try:
        devices = list(strategy.extended.worker_devices)
    except (RuntimeError, AttributeError):  # the default strategy: TensorFlow's own placement
        devices = []
    if any("GPU" in str(d).upper() for d in devices):
        return True
    if devices and all("CPU" in str(d).upper() for d in devices):
        return False
    return bool(tf.config.list_physical_devices("GPU"))


def _dataset_arrays(dataset):
    """A `tf.data.Dataset` read into (x, y) arrays (see `sources.tf_data_arrays`); anything else unchanged."""
    if not isinstance(dataset, tf.data.Dataset):
        return dataset
    return sources.tf_data_arrays(dataset)


def _check_callbacks(callbacks):
    callbacks = list(callbacks or [])
    for callback in callbacks:
        if not isinstance(callback, keras.callbacks.Callback):
            raise ValueError(f"callbacks must be keras.callbacks.Callback objects, got {type(callback).__name__}.")
    return callbacks


@dataclasses.dataclass
class _Process:
    """What this process of a search works with (set up by `search`, read by the steps of `_run`)."""

    cfg: SearchConfig
    dataset: object
    strategy: object
    output_dir: str
    work_dir: str        # the chief writes into output_dir, other workers into a private folder
    seed: int
    verbose: int
    is_chief: bool
    multi_worker: bool
    deterministic: bool
    use_custom_loop: bool
    started: float
    model_cache: object = None  # a model_cache.ModelCache, or None

    @property
    def num_replicas(self):
        return self.strategy.num_replicas_in_sync

    def say(self, text):
        if self.verbose and self.is_chief:
            print(text, flush=True)


@dataclasses.dataclass
class _Resume:
    """Where a restored run continues."""

    epoch: int = 0
    step: int = 0
    metric_values: object = None


def _run(process, user_callbacks, latency_source):
    """Runs (or resumes) the search of a configuration and writes its results."""
    cfg = process.cfg
    # Data first: a dataset that cannot be loaded fails before anything is written.
    probe = _search_data(cfg, process.dataset, process.seed, start_epoch=0)
    data_steps = probe.steps_per_epoch
    steps = min(cfg.steps_per_epoch or data_steps, data_steps)
    ramp_steps = cfg.latency_ramp(steps)
    run_info = _run_description(process, probe, steps, data_steps, ramp_steps)
    if process.is_chief:
        checkpoint_lib.write_json_atomic(os.path.join(process.output_dir, "run.json"), run_info)

    with process.strategy.scope():
        supernet = build_supernet(cfg.space, probe.num_classes, probe.input_shape, **cfg.supernet_options())
        latency = _latency_model(process, latency_source, supernet.search_space, probe, run_info)
        model = _search_model(cfg, supernet, steps, ramp_steps, process.seed, latency)
        weight_optimizer, arch_optimizer = schedules.search_optimizers(cfg, steps)
        model.compile(weight_optimizer=weight_optimizer, arch_optimizer=arch_optimizer)
    model, optimizers = _reuse_cached_model(process, probe, steps, latency, model,
                                            (weight_optimizer, arch_optimizer))

    checkpointer = checkpoint_lib.Checkpointer(
        os.path.join(process.work_dir, "checkpoints"), model_cache_lib.state_variables(model, optimizers),
        restore_directory=os.path.join(process.output_dir, "checkpoints"))
    history = callbacks_lib.HistoryRecorder()
    resume = _restore(process, checkpointer, history, model)
    process.say(
        f"UNAS search: {cfg.space} space, dataset {probe.name} ({probe.num_train} train / {probe.num_val} "
        f"held-out, {probe.num_classes} classes, input {'x'.join(map(str, probe.input_shape))}), "
        f"{cfg.estimator} estimator, {cfg.objective} objective; {cfg.epochs} epochs "
        f"({cfg.warmup_epochs} warm-up) x {steps} steps, batch {cfg.batch_size} on {process.num_replicas} "
        f"replica(s); output {process.output_dir}")
    if process.verbose == 1 and model.train_function is None:
        process.say("(the first step of the warm-up and of the search phase each trace and compile the "
                    "supernet's step once; that can take minutes)")
    callbacks = _callbacks(process, model, latency, history, checkpointer, steps, resume, user_callbacks)
    if resume.epoch < cfg.epochs:
        _fit(process, model, steps, data_steps, callbacks, resume)
    return _finish(process, model, latency, history, ramp_steps, run_info)


def _reuse_cached_model(process, probe, steps, latency, model, optimizers):
    """The model the search runs on: the process's cached model of the same graph (loaded with this
    search's fresh state, see `model_cache`), else `model` (cached for the next search)."""
    cache = process.model_cache
    if cache is None or latency is not None or process.multi_worker or process.use_custom_loop:
        return model, optimizers
    key = model_cache_lib.graph_key(process.cfg.to_dict(), probe.input_shape, probe.num_classes, steps,
                                    process.deterministic)
    return cache.reuse(key, process.strategy, model, optimizers)


def _search_data(cfg, dataset, seed, start_epoch):
    """The search's `unas_keras.data.SearchData` from epoch `start_epoch` on."""
    return search_data(dataset, image_size=cfg.resolution, batch_size=cfg.batch_size,
                       val_fraction=cfg.val_fraction, seed=seed, augment=cfg.augment, start_epoch=start_epoch,
                       channels=cfg.image_channels, data_dir=cfg.data_dir)


def _run_description(process, probe, steps, data_steps, ramp_steps):
    """run.json while the search runs: configuration, seed, versions, data and learning rates."""
    cfg = process.cfg
    run_info = {
        "status": "running",
        "config": cfg.to_dict(),
        "effective_seed": process.seed,
        "num_replicas": process.num_replicas,
        "op_determinism": process.deterministic,
        "num_workers": distributed.num_workers(process.strategy),
        "strategy": type(process.strategy).__name__,
        "versions": _versions(),
        "data": {"name": probe.name, "num_train": int(probe.num_train), "num_val": int(probe.num_val),
                 "num_classes": int(probe.num_classes), "input_shape": list(probe.input_shape),
                 "steps_per_epoch": steps, "data_steps_per_epoch": data_steps, "augment": probe.augment,
                 "val_fraction": probe.val_fraction},
        "learning_rates": dict(zip(("weight_lr", "weight_lr_min", "arch_lr", "arch_lr_min"),
                                   cfg.scaled_learning_rates())),
    }
    if cfg.target_latency_ms is not None:
        run_info["latency"] = {"target_ms": cfg.target_latency_ms, "ramp_steps": ramp_steps}
    return run_info


def _latency_model(process, source, search_space, probe, run_info):
    """The latency model of a search (None without one): the given source (a device table's surrogate is
    fitted for the space), else the space's default (a TFLite CPU per-block lookup table)."""
    cfg = process.cfg
    if cfg.latency is None:
        return None
    if isinstance(source, latency_lib.DeviceTable):
        model = source.latency_model(search_space)
    elif source is not None:
        model = source
    else:
        model = latency_lib.LatencyModel.for_space(
            cfg.space, input_shape=tuple(probe.input_shape), num_classes=probe.num_classes,
            cache_dir=os.path.join(process.work_dir, "latency"), progress=bool(process.verbose and process.is_chief),
            **cfg.supernet_options())
    held_out = (getattr(getattr(model, "surrogate", None), "report", None) or {}).get("held_out")
    if held_out:  # a surrogate fitted on measured latencies: how well it ranks held-out networks
        run_info["latency_surrogate_held_out"] = held_out
        process.say(f"Latency surrogate on {held_out['n']} held-out networks: Spearman "
                    f"{held_out['spearman']:.3f}, MAPE {held_out['mape_pct']:.1f}%, MAE {held_out['mae_ms']:.3f} ms.")
    return model


def _search_model(cfg, supernet, steps, ramp_steps, seed, latency):
    """The `SearchModel` of a configuration (not compiled)."""
    kwargs = dict(
        estimator=cfg.estimator, objective=cfg.objective, gen_gap_lambda=cfg.gen_gap_lambda,
        temperature=cfg.temperature, soften_eps=cfg.soften_eps, sampling=cfg.sampling,
        warmup_steps=cfg.warmup_epochs * steps, latency=latency, target_latency_ms=cfg.target_latency_ms,
        latency_lambda=cfg.latency_lambda, latency_ramp_steps=ramp_steps, weight_clipnorm=cfg.weight_clipnorm,
        seed=seed)
    if cfg.pair_penalty is not None:
        kwargs["pair_penalty"] = cfg.pair_penalty
    return SearchModel(supernet, **kwargs)


def _restore(process, checkpointer, history, model):
    """Restores the newest checkpoint, if any; returns where the run continues."""
    state = checkpointer.restore()
    if state is None:
        return _Resume()
    resume = _Resume(int(state["epoch"]), int(state["step_in_epoch"]),
                     checkpoint_lib.snapshot(model.metrics_variables))
    history.set_state(state.get("history"))
    process.say(f"Resuming {process.output_dir} at epoch {resume.epoch + 1}, step {resume.step} "
                f"(iteration {state['global_step']}).")
    return resume


def _callbacks(process, model, latency, history, checkpointer, steps, resume, user_callbacks):
    """The search's callbacks and the user's, in order (the latency report adds to the epoch logs that the
    others read; the user's see the search's logs)."""
    cfg = process.cfg
    out = [callbacks_lib.LatencyReport(latency, cfg.target_latency_ms)] if latency is not None else []
    out += [
        history,
        callbacks_lib.SearchCheckpoint(
            checkpointer, steps, model.search_step, history,
            every_steps=cfg.checkpoint_every_steps or DEFAULT_CHECKPOINT_EVERY_STEPS,
            metric_variables=model.metrics_variables, resume_epoch=resume.epoch, resume_step=resume.step,
            resume_metric_values=resume.metric_values),
    ]
    if process.is_chief:
        out.append(_log_callback(os.path.join(process.output_dir, "logs")))
        out.append(pictures.ArchitectureSnapshots(process.output_dir,
                                                  log_dir=os.path.join(process.output_dir, "logs")))
    out += user_callbacks
    if process.is_chief:
        # verbose=1: Keras' own progress bar (with ETA); verbose=2: one compact line per epoch (log files).
        if process.verbose == 2:
            out.append(callbacks_lib.ProgressLogger(cfg.epochs, steps, warmup_epochs=cfg.warmup_epochs,
                                                    verbose=process.verbose, resume_epoch=resume.epoch,
                                                    resume_step=resume.step))
    return out


def _fit(process, model, steps, data_steps, callbacks, resume):
    """Trains from the resume point to the last epoch: `model.fit`, or the custom distributed loop."""
    cfg = process.cfg
    progbar = process.verbose == 1 and process.is_chief

    def stream(position):
        """Global batches from global step `position` on."""
        epoch, skip = divmod(int(position), data_steps)
        dataset = _search_data(cfg, process.dataset, process.seed, start_epoch=epoch).dataset
        return dataset.skip(skip) if skip else dataset

    start = resume.epoch * steps + resume.step
    if process.multi_worker or process.use_custom_loop:
        distributed.run_custom_loop(model, process.strategy, lambda: stream(start), cfg.batch_size, cfg.epochs,
                                    steps, callbacks, initial_epoch=resume.epoch, initial_step=resume.step,
                                    progbar=progbar)
        return
    epoch = resume.epoch
    if resume.step:  # finish the interrupted epoch first
        model.fit(stream(start), initial_epoch=epoch, epochs=epoch + 1, steps_per_epoch=steps - resume.step,
                  callbacks=callbacks, verbose=int(progbar), shuffle=False)
        epoch += 1
    if epoch < cfg.epochs and not model.stop_training:
        model.fit(stream(epoch * steps), initial_epoch=epoch, epochs=cfg.epochs, steps_per_epoch=steps,
                  callbacks=callbacks, verbose=int(progbar), shuffle=False)


def _finish(process, model, latency, history, ramp_steps, run_info):
    """The `SearchResult`; the chief writes the result files and the finished run.json."""
    cfg, output_dir = process.cfg, process.output_dir
    architecture = model.derive_architecture()
    probabilities = model.arch_probabilities()
    result = SearchResult(architecture=architecture, history=history.get_state(), output_dir=output_dir,
                          probabilities=probabilities, config=cfg.to_dict(), model=model,
                          latency=_latency_summary(cfg, latency, model, architecture, ramp_steps))
    if not process.is_chief:
        return result
    architecture.save(os.path.join(output_dir, "architecture.json"))
    checkpoint_lib.write_json_atomic(os.path.join(output_dir, "distribution.json"),
                                     {"space": cfg.space, "probabilities": probabilities})
    checkpoint_lib.write_json_atomic(os.path.join(output_dir, "history.json"), result.history)
    if result.latency is not None:
        run_info["latency"] = result.latency
    elapsed = time.time() - process.started
    run_info.update(status="finished", wall_time_s=round(elapsed, 2),
                    finished_at=datetime.datetime.now().isoformat(timespec="seconds"))
    checkpoint_lib.write_json_atomic(os.path.join(output_dir, "run.json"), run_info)
    process.say(f"Search finished in {elapsed:.0f} s. Architecture: {architecture}")
    if result.latency is not None and result.latency["target_met"] is not None:
        process.say(f"Latency {result.latency['argmax_latency_ms']:.3f} ms, target {cfg.target_latency_ms} ms: "
                    f"{'met' if result.latency['target_met'] else 'NOT met'}.")
    process.say(f"Results in {os.path.abspath(output_dir)}")
    return result


def _document_search():
    """Completes `search`'s docstring and signature from the `SearchConfig` fields (written once there)."""
    run_args = ("output_dir", "strategy", "verbose", "latency", "callbacks", "deterministic", "use_custom_loop")
    signature = inspect.signature(search)
    params = [p for p in signature.parameters.values() if p.kind != p.VAR_KEYWORD]
    named = {p.name for p in params}
    params += [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=None)
               for f in SearchConfig.fields(derived=False) if f.name not in named]
    params.append(inspect.Parameter("space_options", inspect.Parameter.VAR_KEYWORD))
    search.__signature__ = signature.replace(parameters=params)
    lines = []
    for f in SearchConfig.fields(derived=False):
        if f.name in run_args:
            continue
        lines.append(textwrap.fill(f"{f.name}: {f.metadata['help']}", width=108, initial_indent=" " * 8,
                                   subsequent_indent=" " * 12))
    space_options = "; ".join(f"{name}: {', '.join(registry.get(name).supernet_options)}"
                              for name in registry.names())
    search.__doc__ = search.__doc__.replace("{options}", "\n".join(lines)).replace("{space_options}", space_options)


_document_search()
