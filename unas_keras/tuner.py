"""`UNASTuner`: a keras-tuner-shaped facade that runs several UNAS searches and keeps the best.

A *trial* is one whole UNAS search (`unas_keras.search()`), run with a seed and, optionally, search
hyper-parameters (the generalization-gap weight, the estimator temperature, learning rates, ...) drawn
by a keras-tuner oracle. The derived network of the trial's search is then trained briefly and scored by
its validation accuracy; its parameters, multiply-adds and (optionally) TFLite latency are recorded too.
Running several seeds guards against the run-to-run variance of differentiable NAS.

It follows keras-tuner's own split: the oracle proposes hyper-parameters, `run_trial(trial, ...)` runs the
search for them (`_run_search`, the tuner's one call of `unas_keras.search`) and scores its architecture
with `unas_keras.scoring.score_architecture` (the training sequence `apps/train.py` runs too), and the
tuner's settings live in keras-tuner's `tuner0.json` through `get_state` / `set_state`. The results table is
`unas_keras.tuner_report`.

Oracles: keras-tuner's `RandomSearchOracle` (the default), `BayesianOptimizationOracle`,
`GridSearchOracle` and `HyperbandOracle`. Hyperband's budget is the search's length: a trial runs a
search of `tuner/epochs` epochs (its `epochs` argument to `search()` is then not used; the warm-up is cut
to `tuner/epochs - 1` epochs when it would be longer). A promoted trial runs a new, longer search with
the promoted hyper-parameters: a UNAS search cannot be extended, since its learning-rate schedules and
latency ramp span the whole run.

```python
import unas_keras as uk

tuner = uk.UNASTuner(space="proxyless", objective="gen_gap", estimator="rebar", max_trials=3,
                     directory="runs", project_name="tuner_demo")
tuner.search("digits", epochs=4)
tuner.results_summary()
best_arch = tuner.get_best_architectures(num=1)[0]
best_model = tuner.get_best_models(num=1)[0]
```

Trial cost. Before a search's first step TensorFlow traces and optimises the supernet's step, once for
the warm-up and once for the search phase; on a short search that is most of the time (a minute or more
for a DARTS supernet on a CPU). The tuner keeps the last trial's compiled search model in memory
(`reuse_search_model=True`, see `unas_keras.search.model_cache`): a trial whose search has the same
graph (the same settings and data shapes; the seed, learning rates, weight decays, `gen_gap_lambda` and
`temperature` are variables of the step, so trials that differ only in them always do) runs on it with
its own fresh initial state and skips the trace, with the same results as on a new model. A trial with
other values of the other hyper-parameters (`soften_eps`, `pair_penalty`, `epochs`, ...), another
Hyperband budget or a latency target builds and traces its own model.

Project folder (`directory/project_name`): keras-tuner's `oracle.json` and `tuner0.json`, and one
`trial_<id>/` folder per trial holding keras-tuner's `trial.json`, the search's output folder `search/`
(architecture.json, distribution.json, history.json, run.json, logs; checkpoints are removed once the
trial is scored unless `keep_search_checkpoints=True`), a copy of `architecture.json`, the trained
derived network's weights `model.weights.h5` and `result.json` (metrics and what is needed to rebuild
the model). With `overwrite=False` a new tuner on the same folder reloads the project and continues:
finished trials are kept, an interrupted trial is rerun and its search resumes from its checkpoint.
"""

import json
import numbers
import os
import shutil
import time

import keras_tuner

from unas_keras import scoring
from unas_keras import training
from unas_keras import tuner_report
from unas_keras._validate import check_choice
from unas_keras._validate import check_float
from unas_keras._validate import check_int
from unas_keras.config import SearchConfig, classify
from unas_keras.config.search_config import OBJECTIVES
from unas_keras.space import registry as space_registry

__all__ = ["UNASTuner", "HYPERPARAMETER_NAMES", "METRIC_NAMES"]

# ------------------------------------------------------------------------- search hyper-parameter names

# Search settings a trial may take from its hyper-parameters (also accepted as fixed tuner options): the
# SearchConfig fields marked tunable.
_SEARCH_HP = tuple(f.name for f in SearchConfig.fields(tunable=True))
# Spellings accepted for hyper-parameter names -> the search() keyword they set.
_HP_ALIASES = {"arch_learning_rate": "arch_lr", "weight_learning_rate": "weight_lr"}
# Settings of the short training of the derived network that may be hyper-parameters.
_TRAIN_HP = ("train_learning_rate",)
#: Hyper-parameter names `run_trial` understands, besides the space options of the tuner's space.
HYPERPARAMETER_NAMES = ("seed",) + _SEARCH_HP + tuple(_HP_ALIASES) + _TRAIN_HP
# Search settings the tuner itself sets (constructor arguments or the trial).
_SET_BY_TUNER = ("space", "dataset", "objective", "epochs", "seed", "steps_per_epoch", "target_latency_ms",
                 "checkpoint_every_steps", "data_dir")
# Search options that are fixed per tuner and can also be given to the constructor: the other fields.
_FIXED_SEARCH_OPTIONS = tuple(name for name in SearchConfig.option_names()
                              if name not in _SEARCH_HP and name not in _SET_BY_TUNER)

#: Metrics every trial reports to the oracle (latency_ms only when it was measured).
METRIC_NAMES = scoring.METRIC_NAMES
_METRIC_DIRECTIONS = {"val_accuracy": "max", "val_loss": "min", "params": "min", "macs": "min",
                      "latency_ms": "min"}

_DEFAULT_MAX_TRIALS = 3
_SEED_RANGE = (0, 99999)
_COMPLETED = "COMPLETED"  # keras-tuner's TrialStatus.COMPLETED
_RESULT_FILE = "result.json"
_WEIGHTS_FILE = "model.weights.h5"
_ARCH_FILE = "architecture.json"
_SEARCH_DIR = "search"


# ------------------------------------------------------------------- the tuner's use of the search modules

def _search_config(search_kwargs, data_dir):
    """The effective configuration of a search as run.json records it (raises ValueError)."""
    return SearchConfig.resolve(data_dir=data_dir, **search_kwargs).to_dict()


def _new_model_cache():
    """A `unas_keras.search.model_cache.ModelCache` for the trials' searches."""
    from unas_keras.search import model_cache

    return model_cache.ModelCache()


def _run_search(search_kwargs, output_dir, strategy, verbose, data_dir, model_cache):
    """Runs one UNAS search (`unas_keras.search`) into `output_dir`; returns its `SearchResult`."""
    from unas_keras.search import runner

    return runner.search(output_dir=output_dir, strategy=strategy, verbose=verbose, data_dir=data_dir,
                         model_cache=model_cache, **search_kwargs)


def _profile_warmup_epochs(space_spec, train_data):
    """The warm-up epochs of a search of `train_data` when none is given (its data profile's)."""
    return space_spec.defaults(classify(train_data).profile)["warmup_epochs"]


def _describe_dataset(dataset):
    """JSON description of a data set argument (raises ValueError on an unusable one)."""
    return classify(dataset).description


# ---------------------------------------------------------------------------------------------- checks

def _fatal(message):
    """A ValueError that keras-tuner does not swallow as a failed trial."""
    return keras_tuner.errors.FatalValueError(message)


def _check_search_settings(space, objective, estimator, options):
    """Validates the fixed search settings; returns the space's `SpaceSpec`."""
    from unas_keras import estimators as estimators_lib

    spec = space_registry.get(space)
    if not isinstance(objective, str) or objective not in OBJECTIVES:
        raise ValueError(f"Unknown search objective {objective!r}; expected one of "
                         f"{list(OBJECTIVES)} (the tuner ranks trials by tuner_objective).")
    if not isinstance(estimator, str) or estimator.lower() not in estimators_lib.names():
        raise ValueError(f"Unknown estimator {estimator!r}; expected one of {estimators_lib.names()}.")
    allowed = set(_SEARCH_HP) | set(_FIXED_SEARCH_OPTIONS) | set(spec.supernet_options)
    allowed -= {"estimator", "warmup_epochs", "batch_size"}  # explicit arguments
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"Unknown option(s) {unknown} for UNASTuner on the {space!r} space; search options: "
                         f"{sorted(allowed - set(spec.supernet_options))}; {space} space options: "
                         f"{list(spec.supernet_options)}.")
    return spec


def _check_seeds(seeds):
    if seeds is None:
        return None
    if (not isinstance(seeds, (list, tuple)) or not seeds
            or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 0 for s in seeds)):
        raise ValueError(f"seeds must be a non-empty list of integers >= 0, got {seeds!r}.")
    return sorted({int(s) for s in seeds})


def _make_objective(tuner_objective):
    """The keras-tuner objective over the trial metrics ("val_accuracy" -> Objective(..., "max"))."""
    items = tuner_objective if isinstance(tuner_objective, (list, tuple)) else [tuner_objective]
    if not items:
        raise ValueError("tuner_objective must not be empty.")
    objectives = []
    for item in items:
        if isinstance(item, str):
            if item not in _METRIC_DIRECTIONS:
                raise ValueError(f"Unknown tuner_objective {item!r}; expected one of {list(METRIC_NAMES)} "
                                 f"or a keras_tuner.Objective over them.")
            objectives.append(keras_tuner.Objective(item, _METRIC_DIRECTIONS[item]))
        elif isinstance(item, keras_tuner.Objective):
            if item.name not in _METRIC_DIRECTIONS:
                raise ValueError(f"tuner_objective {item.name!r} is not a trial metric; trials report "
                                 f"{list(METRIC_NAMES)}.")
            objectives.append(item)
        else:
            raise ValueError(f"tuner_objective must be a metric name or a keras_tuner.Objective, got "
                             f"{type(item).__name__}.")
    return objectives[0] if len(objectives) == 1 else objectives


def _objective_names(objective):
    if hasattr(objective, "name_to_direction"):  # keras-tuner's MultiObjective
        return list(objective.name_to_direction)
    return [objective.name]


def _add_seed(hp, seeds):
    """Makes `seed` a hyper-parameter of `hp` (the given seeds, or any in `_SEED_RANGE`)."""
    if "seed" in hp:
        return
    if seeds is None:
        hp.Int("seed", *_SEED_RANGE)
    elif len(seeds) == 1:
        hp.Fixed("seed", seeds[0])
    else:
        hp.Choice("seed", seeds)


def _make_oracle(oracle, max_trials, hyperparameters, seeds, seed, tuner_objective, max_retries_per_trial,
                 max_consecutive_failed_trials):
    """The given oracle with a `seed` hyper-parameter, or the default `RandomSearchOracle`."""
    if oracle is not None:
        if max_trials is not None or hyperparameters is not None or seed is not None:
            raise ValueError("Pass max_trials, hyperparameters and seed to the oracle when you give `oracle`.")
        if not isinstance(oracle, keras_tuner.Oracle):
            raise ValueError(f"oracle must be a keras_tuner.Oracle, got {type(oracle).__name__}.")
        missing = [n for n in _objective_names(oracle.objective) if n not in _METRIC_DIRECTIONS]
        if missing:
            raise ValueError(f"The oracle's objective {missing} is not a trial metric; trials report "
                             f"{list(METRIC_NAMES)}.")
        space_hp = oracle.get_space()
        if "seed" not in space_hp:
            _add_seed(space_hp, seeds)
            oracle.update_space(space_hp)
        return oracle
    max_trials = _DEFAULT_MAX_TRIALS if max_trials is None else check_int(max_trials, "max_trials", 1)
    if hyperparameters is not None and not isinstance(hyperparameters, keras_tuner.HyperParameters):
        raise ValueError(f"hyperparameters must be a keras_tuner.HyperParameters, got "
                         f"{type(hyperparameters).__name__}.")
    objective = _make_objective(tuner_objective)
    space_hp = hyperparameters.copy() if hyperparameters is not None else keras_tuner.HyperParameters()
    _add_seed(space_hp, seeds)
    return keras_tuner.oracles.RandomSearchOracle(
        objective=objective, max_trials=max_trials, hyperparameters=space_hp, seed=seed,
        max_retries_per_trial=max_retries_per_trial, max_consecutive_failed_trials=max_consecutive_failed_trials)


def _describe_validation(validation_data):
    """JSON description of `validation_data` (see `UNASTuner.search`)."""
    if validation_data is None:
        return None
    if isinstance(validation_data, str) and validation_data in ("test", "validation"):
        return validation_data
    if isinstance(validation_data, numbers.Real) and not isinstance(validation_data, bool):
        if not 0.0 < float(validation_data) < 1.0:
            raise ValueError(f"validation_data as a fraction must be in (0, 1), got {validation_data!r}.")
        return float(validation_data)
    if isinstance(validation_data, (tuple, list, os.PathLike)) or (
            isinstance(validation_data, str) and os.path.isdir(validation_data)):
        return _describe_dataset(validation_data)
    raise ValueError(
        "validation_data must be None (the evaluation part of train_data: its test split, or a held-out "
        "20%), a held-out fraction in (0, 1), 'test' / 'validation' (a split of train_data), (x, y) arrays "
        f"or a folder of class sub-folders; got {validation_data!r}.")


# -------------------------------------------------------------------------------------------------- data

def _scoring_data(train_data, validation_data, image_size, channels, batch_size, seed, data_dir):
    """(training batches, evaluation batches, `EvalInfo`, number of evaluation examples) of a trial."""
    from unas_keras import data

    split = validation_data if isinstance(_describe_validation(validation_data), (float, str)) else None
    train_ds, val_ds, info = data.eval_data(train_data, image_size=image_size, batch_size=batch_size, seed=seed,
                                            validation_split=split, channels=channels, start_epoch=0,
                                            data_dir=data_dir)
    if split is None and validation_data is not None:
        val_ds, num_val = _explicit_validation_dataset(validation_data, info, batch_size, data_dir)
        return train_ds, val_ds, info, num_val
    return train_ds, val_ds, info, info.num_val


def _explicit_validation_dataset(validation_data, info, batch_size, data_dir):
    """Explicit validation arrays / folder, preprocessed exactly like the evaluation part of train_data."""
    from unas_keras import data

    num_classes = data.dataset_info(validation_data, data_dir).num_classes
    if num_classes > info.num_classes:
        raise ValueError(f"validation_data has labels up to {num_classes - 1}, but train_data has only "
                         f"{info.num_classes} classes.")
    return data.eval_batches(validation_data, info.input_shape[0], batch_size, info.mean, info.std,
                             channels=info.input_shape[-1], data_dir=data_dir)


# ---------------------------------------------------------------------------------------------- JSON

def _json_roundtrip(payload):
    """`payload` as it reads back from JSON (tuples become lists, ...), so saved and live values compare."""
    return json.loads(json.dumps(payload, default=str))


def _differences(saved, current):
    """"key: saved -> current; ..." for the keys whose values differ ("" when `saved` is None or equal)."""
    if saved is None:
        return ""
    return "; ".join(f"{key}: {saved.get(key)!r} -> {current.get(key)!r}"
                     for key in sorted(set(saved) | set(current)) if saved.get(key) != current.get(key))


def _json_value(value):
    """Hyper-parameter values as plain JSON types."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return str(value)


def _split_values(values, default_seed):
    """Hyper-parameter values, aliases resolved: (search overrides, train overrides, seed).

    keras-tuner's own values (`tuner/epochs`, `tuner/initial_epoch`, `tuner/bracket`, `tuner/round`,
    `tuner/trial_id`, set by Hyperband) are not search settings: they are left out (`run_trial` reads
    `tuner/epochs` as the search's length).
    """
    values = {k: v for k, v in values.items() if not k.startswith("tuner/")}
    seed = values.pop("seed", None)
    if seed is None:
        seed = default_seed
    search_values, train_values = {}, {}
    for name, value in values.items():
        if name in _TRAIN_HP:
            train_values[name] = value
        else:
            search_values[_HP_ALIASES.get(name, name)] = value
    return search_values, train_values, int(seed)



class UNASTuner(keras_tuner.engine.base_tuner.BaseTuner):
    """Runs several UNAS searches (trials) and ranks their derived networks, keras-tuner style.

    Each trial draws a `seed` (always a hyper-parameter) and any other hyper-parameters in the oracle's
    space from `trial.hyperparameters`, runs `unas_keras.search()` into its trial folder, trains the
    derived network for `train_epochs` epochs (by default as many as the trial's search), and reports
    `val_accuracy`, `val_loss`, `params`, `macs` and `latency_ms` (with `measure_latency`). The oracle
    ranks trials by `tuner_objective` (`keras_tuner.Objective("val_accuracy", "max")` by default).

    Args:
        space: the search space, "darts", "proxyless" or "nb201".
        objective: the UNAS search objective, "gen_gap", "train" or "val" (the tuner's own ranking
            objective is `tuner_objective`).
        estimator: the gradient estimator, "rebar" (alias "unas"), "reinforce", "gumbel_softmax" or
            "relax".
        max_trials: the number of searches to run at most (default 3). Raising it on a reloaded project
            runs only the missing trials. Give it to the oracle instead when passing `oracle`.
        directory: folder of the project (default ".").
        project_name: name of the project's sub-folder (default "unas_tuner").
        overwrite: False reloads an existing project of the same name and continues it; True deletes it.
        oracle: a keras-tuner `Oracle` (default: `keras_tuner.oracles.RandomSearchOracle`;
            `BayesianOptimizationOracle`, `GridSearchOracle` and `HyperbandOracle` work too, see above).
            Its space gets a `seed` hyper-parameter unless it already has one.
        hyperparameters: a `keras_tuner.HyperParameters` with the space of the default oracle, e.g.
            `hp.Float("gen_gap_lambda", 0.1, 1.0)`, `hp.Choice("temperature", [0.2, 0.4, 1.0])`,
            `hp.Float("arch_learning_rate", 1e-4, 1e-2, sampling="log")`. Names are those of
            `HYPERPARAMETER_NAMES` or a space option of `space`; a value overrides the fixed option of
            the same name.
        seeds: the search seeds to try (`hp.Choice("seed", seeds)`); default: `hp.Int("seed", 0, 99999)`.
        seed: the seed of the default oracle (makes the drawn trials reproducible).
        tuner_objective: what ranks the trials: a metric name (one of `METRIC_NAMES`, direction
            implied), a `keras_tuner.Objective` over them, or a list of those.
        max_retries_per_trial: retries of a crashed trial (default oracle).
        max_consecutive_failed_trials: the search stops after this many failed trials in a row
            (default oracle).
        warmup_epochs: warm-up epochs of each search (None: the dataset profile's default).
        batch_size: batch size of each search (None: the profile's default).
        steps_per_epoch: cap on the steps of a search epoch (quick runs).
        target_latency_ms: the latency target of each search (adds the latency term).
        strategy: a `tf.distribute.Strategy` (or "mirrored" / "multi_worker") for the searches.
        data_dir: tensorflow-datasets data directory.
        train_epochs: epochs of the training of each derived network before it is scored. None (the
            default): as many as the trial's search has (with Hyperband, its `tuner/epochs`), so the
            ranking's cost and quality grow with the search budget; a derived network is trained from
            scratch, and one epoch is rarely enough to rank architectures.
        train_batch_size: its batch size (None: the search's batch size).
        train_steps_per_epoch: cap on its steps per epoch (None: one pass over the training data).
        train_learning_rate: its peak SGD learning rate (cosine decay; default 0.05).
        network_options: options of `unas_keras.build_model` for the derived network, completed with
            the search's size options it does not give (the space's `inherited_network_options`, e.g.
            `width_multiplier` for proxyless, `init_channels` and `num_cells` for DARTS).
        measure_latency: measure each derived network's TFLite latency (LiteRT, batch 1); a model that
            fails to convert records None.
        latency_threads: LiteRT threads for the latency measurement.
        latency_runs: timed invocations per measurement.
        keep_search_checkpoints: keep each search's `checkpoints/` folder after the trial is scored.
        search_verbose: verbosity of each search (0, 1 or 2; default: 0 when the tuner is quiet, else 1).
        reuse_search_model: keep the last trial's compiled search model, with its traced step, in memory
            and run the next trial on it when its search has the same graph (the same settings and data
            shapes; trials that differ only by seed, learning rates, weight decays, `gen_gap_lambda` or
            `temperature` always do): that trial skips the trace, which is most
            of a short search's time, and gets the same results as on a new model (see
            `unas_keras.search.model_cache`). False builds and traces every trial's model anew.
        **options: fixed search settings (`temperature`, `gen_gap_lambda`, `soften_eps`, `sampling`,
            `pair_penalty`, `weight_lr`, `arch_lr`, `latency_lambda`, `resolution`, `image_channels`,
            `val_fraction`, `augment`, ...) and space options (darts `ops`, `init_channels`, `num_cells`;
            proxyless `width_multiplier`; nb201 `channels`, `cells_per_stage`).

    Raises:
        ValueError: an unknown space, objective, estimator, option or hyper-parameter name, a bad value,
            or (with `overwrite=False`) a project folder holding a tuner with different settings.
    """

    def __init__(self, space="proxyless", objective="gen_gap", estimator="rebar", max_trials=None,
                 directory=None, project_name=None, overwrite=False, *, oracle=None, hyperparameters=None,
                 seeds=None, seed=None, tuner_objective="val_accuracy", max_retries_per_trial=0,
                 max_consecutive_failed_trials=3, warmup_epochs=None, batch_size=None, steps_per_epoch=None,
                 target_latency_ms=None, strategy=None, data_dir=None, train_epochs=None, train_batch_size=None,
                 train_steps_per_epoch=None, train_learning_rate=0.05, network_options=None,
                 measure_latency=True, latency_threads=1, latency_runs=20, keep_search_checkpoints=False,
                 search_verbose=None, reuse_search_model=True, **options):
        self._space_spec = _check_search_settings(space, objective, estimator, options)
        seeds = _check_seeds(seeds)
        if seeds is not None and hyperparameters is not None and "seed" in hyperparameters:
            raise ValueError("Give the seeds either as `seeds` or as a 'seed' hyper-parameter, not both.")
        if search_verbose is not None:
            check_choice(search_verbose, "search_verbose", (0, 1, 2))
        if network_options is not None and not isinstance(network_options, dict):
            raise ValueError(f"network_options must be a dict of build_model options, got "
                             f"{type(network_options).__name__}.")
        self.space = space
        self.search_objective = objective
        self.estimator = estimator.lower()
        self.warmup_epochs = check_int(warmup_epochs, "warmup_epochs", 0, allow_none=True)
        self.batch_size = check_int(batch_size, "batch_size", 1, allow_none=True)
        self.steps_per_epoch = check_int(steps_per_epoch, "steps_per_epoch", 1, allow_none=True)
        self.target_latency_ms = check_float(target_latency_ms, "target_latency_ms", strict=True, allow_none=True)
        self.strategy = strategy
        self.data_dir = data_dir
        self.train_epochs = check_int(train_epochs, "train_epochs", 1, allow_none=True)
        self.train_batch_size = check_int(train_batch_size, "train_batch_size", 1, allow_none=True)
        self.train_steps_per_epoch = check_int(train_steps_per_epoch, "train_steps_per_epoch", 1, allow_none=True)
        self.train_learning_rate = check_float(train_learning_rate, "train_learning_rate", strict=True)
        self.network_options = None if network_options is None else dict(network_options)
        self.measure_latency = bool(measure_latency)
        self.latency_threads = check_int(latency_threads, "latency_threads", 1)
        self.latency_runs = check_int(latency_runs, "latency_runs", 1)
        self.keep_search_checkpoints = bool(keep_search_checkpoints)
        self.search_verbose = search_verbose
        if not isinstance(reuse_search_model, bool):
            raise ValueError(f"reuse_search_model must be True or False, got {reuse_search_model!r}.")
        self.reuse_search_model = reuse_search_model
        self._model_cache = None  # created by the first trial that runs a search
        self.options = dict(options)
        self._data_settings = None  # recorded by the first search() of the project

        oracle = _make_oracle(oracle, max_trials, hyperparameters, seeds, seed, tuner_objective,
                              max_retries_per_trial, max_consecutive_failed_trials)
        if "latency_ms" in _objective_names(oracle.objective) and not self.measure_latency:
            raise ValueError("Ranking trials by latency_ms needs measure_latency=True.")
        self._check_hyperparameter_names(oracle.get_space())
        super().__init__(oracle=oracle, directory=directory, project_name=project_name or "unas_tuner",
                         overwrite=overwrite)

    # ------------------------------------------------------------------------------ settings and state

    def _check_hyperparameter_names(self, hp):
        allowed = set(HYPERPARAMETER_NAMES) | set(self._space_spec.supernet_options)
        unknown = sorted({p.name for p in hp.space} - allowed)
        if unknown:
            raise ValueError(f"Unknown hyper-parameter name(s) {unknown} for a {self.space!r} UNASTuner; "
                             f"allowed: {sorted(allowed)}.")

    def _settings(self):
        """The settings that must match for a reloaded project to be continued (JSON-normalised)."""
        return _json_roundtrip({
            "space": self.space, "objective": self.search_objective, "estimator": self.estimator,
            "warmup_epochs": self.warmup_epochs, "batch_size": self.batch_size,
            "steps_per_epoch": self.steps_per_epoch, "target_latency_ms": self.target_latency_ms,
            "train_epochs": self.train_epochs, "train_batch_size": self.train_batch_size,
            "train_steps_per_epoch": self.train_steps_per_epoch, "train_learning_rate": self.train_learning_rate,
            "network_options": self.network_options,
            "options": dict(sorted(self.options.items())),
        })

    def get_state(self):
        """keras-tuner's tuner state plus the tuner's settings and the data it searched (`tuner0.json`)."""
        state = super().get_state()
        state.update(settings=self._settings(), data=self._data_settings)
        return state

    def set_state(self, state):
        """Reloads the state; refuses a project created with other settings."""
        super().set_state(state)
        differences = _differences(state.get("settings"), self._settings())
        if differences:
            raise ValueError(f"The project {self.project_dir} was created with different tuner settings "
                             f"({differences}). Repeat the original settings to continue it, or pass "
                             f"overwrite=True or a new project_name.")
        self._data_settings = state.get("data")

    # ------------------------------------------------------------------------------------------ search

    def search(self, train_data, validation_data=None, epochs=None, verbose=1):
        """Runs trials until the oracle stops (max_trials reached, or its space exhausted).

        Args:
            train_data: the data of the searches and of the short training: "digits", a
                tensorflow-datasets name, a folder of class sub-folders, or (x, y) arrays (as in
                `unas_keras.search`).
            validation_data: what the derived networks are scored on. None: the evaluation part of
                `train_data` (its test split for tensorflow-datasets sets that have one, otherwise a
                fixed class-stratified 20% held out from the short training); a fraction in (0, 1) to
                hold out instead; "test" or "validation" (that split of `train_data`); or (x, y) arrays
                or a folder, preprocessed like `train_data` (the training then uses `train_data`'s
                default training part).
            epochs: epochs of each UNAS search, warm-up included (None: the dataset profile's default).
                Not used with a Hyperband oracle: there each trial's `tuner/epochs` is its search's length.
            verbose: 0 silent, 1 (or "auto") trial summaries and search progress.

        Raises:
            ValueError: unusable data or settings, or data / epochs different from those this project was
                searched with.
        """
        from unas_keras import data as data_lib

        verbose = 1 if verbose == "auto" else int(check_choice(verbose, "verbose", (0, 1, 2, "auto")))
        epochs = check_int(epochs, "epochs", 1, allow_none=True)
        data = _json_roundtrip({"train_data": _describe_dataset(train_data),
                                "validation_data": _describe_validation(validation_data), "epochs": epochs})
        # Validate the whole configuration before the first trial (keras-tuner would otherwise record a
        # configuration error as a failed trial and go on).
        data_lib.dataset_info(train_data, self.data_dir)
        search_values, _, seed = _split_values(self.oracle.get_space().values, default_seed=0)
        _search_config(self._search_kwargs(train_data, epochs, search_values, seed), self.data_dir)
        differences = _differences(self._data_settings, data)
        if differences:
            raise ValueError(f"The project {self.project_dir} was searched with other data or epochs "
                             f"({differences}). Repeat them to continue it, or pass overwrite=True or a new "
                             f"project_name.")
        self._data_settings = data
        self.save()
        super().search(train_data, validation_data=validation_data, epochs=epochs, verbose=verbose)

    def _search_kwargs(self, train_data, epochs, search_values, seed):
        """The keyword arguments of a trial's `unas_keras.search` (fixed settings, then the trial's values)."""
        kwargs = dict(space=self.space, dataset=train_data, estimator=self.estimator,
                      objective=self.search_objective, epochs=epochs, warmup_epochs=self.warmup_epochs,
                      batch_size=self.batch_size, seed=seed, target_latency_ms=self.target_latency_ms,
                      steps_per_epoch=self.steps_per_epoch)
        kwargs.update(self.options)
        kwargs.update(search_values)
        return kwargs

    def _trial_search_kwargs(self, trial, train_data, epochs):
        """(search keyword arguments, training overrides, seed) of a trial.

        With Hyperband the trial's budget `tuner/epochs` is the search's length; the warm-up is cut to
        `tuner/epochs - 1` epochs when it would be longer.
        """
        search_values, train_values, seed = _split_values(trial.hyperparameters.values, int(trial.trial_id))
        budget = trial.hyperparameters.values.get("tuner/epochs")
        if budget is not None:
            epochs = check_int(budget, "tuner/epochs", 1)
            warmup = search_values.get("warmup_epochs", self.warmup_epochs)
            if warmup is None:
                warmup = _profile_warmup_epochs(self._space_spec, train_data)
            search_values["warmup_epochs"] = min(warmup, epochs - 1)
        return self._search_kwargs(train_data, epochs, search_values, seed), train_values, seed

    def run_trial(self, trial, train_data, validation_data=None, epochs=None, verbose=1):
        """Runs one UNAS search with the trial's hyper-parameters and scores its derived network.

        Returns:
            dict of metrics: val_accuracy, val_loss, params, macs and (when measured) latency_ms.
        """
        import keras

        from unas_keras.search import checkpoint as checkpoint_lib

        trial_dir = self.get_trial_dir(trial.trial_id)
        result_path = os.path.join(trial_dir, _RESULT_FILE)
        if os.path.exists(result_path) and os.path.exists(os.path.join(trial_dir, _WEIGHTS_FILE)):
            # Scored before an interruption that came before the oracle recorded it.
            return dict(checkpoint_lib.read_json(result_path)["metrics"])
        if not self.reuse_search_model:
            # Drop the previous trial's models. Not when reusing: clear_session also clears TensorFlow's
            # kernel cache, and the reused search step would be optimised and instantiated again.
            keras.backend.clear_session()
        started = time.time()
        try:
            search_kwargs, train_values, seed = self._trial_search_kwargs(trial, train_data, epochs)
            cfg = _search_config(search_kwargs, self.data_dir)
            search_verbose = self.search_verbose if self.search_verbose is not None else min(int(verbose), 1)
            if self.reuse_search_model and self._model_cache is None:
                self._model_cache = _new_model_cache()
            architecture = _run_search(search_kwargs, os.path.join(trial_dir, _SEARCH_DIR), self.strategy,
                                       search_verbose, self.data_dir, self._model_cache).architecture
            score, record = self._score(architecture, cfg, train_data, validation_data, seed, train_values)
        except keras_tuner.errors.FatalError:
            raise
        except ValueError as error:  # a configuration problem: stop the tuner instead of failing each trial
            raise _fatal(str(error)) from error
        architecture.save(os.path.join(trial_dir, _ARCH_FILE))
        self.save_model(trial.trial_id, score.model)
        record.update(trial_id=trial.trial_id, seed=seed,
                      hyperparameters={k: _json_value(v) for k, v in trial.hyperparameters.values.items()},
                      search_dir=os.path.join(trial_dir, _SEARCH_DIR), architecture=str(architecture),
                      wall_time_s=round(time.time() - started, 2))
        checkpoint_lib.write_json_atomic(result_path, record)
        if not self.keep_search_checkpoints:
            shutil.rmtree(os.path.join(trial_dir, _SEARCH_DIR, "checkpoints"), ignore_errors=True)
        return score.metrics

    def _score(self, architecture, cfg, train_data, validation_data, seed, train_values):
        """Trains the derived network briefly and scores it; returns (`scoring.Score`, result record)."""
        batch_size = self.train_batch_size or cfg["batch_size"]
        train_ds, val_ds, info, num_val = _scoring_data(train_data, validation_data, cfg["resolution"],
                                                        cfg["image_channels"], batch_size, seed, self.data_dir)
        steps = min(self.train_steps_per_epoch or info.steps_per_epoch, info.steps_per_epoch)
        recipe = training.Recipe(epochs=self.train_epochs or cfg["epochs"],
                                 learning_rate=float(train_values.get("train_learning_rate", self.train_learning_rate)))
        network_options = self._space_spec.network_options_from_search(cfg["space_options"], self.network_options)
        latency = scoring.LatencySettings(self.latency_threads, self.latency_runs) if self.measure_latency else None
        score = scoring.score_architecture(architecture, train_ds, val_ds, num_classes=info.num_classes,
                                           input_shape=info.input_shape, steps_per_epoch=steps, recipe=recipe,
                                           network_options=network_options, seed=seed, latency=latency,
                                           keep_kernel_cache=self.reuse_search_model)
        record = {"model": {"num_classes": int(info.num_classes), "input_shape": list(info.input_shape),
                            "network_options": network_options},
                  "training": {"epochs": recipe.epochs, "steps_per_epoch": steps, "batch_size": batch_size,
                               "learning_rate": recipe.learning_rate, "num_train": int(info.num_train),
                               "num_val": int(num_val), "history": score.history},
                  "errors": dict(score.errors), "metrics": dict(score.metrics)}
        return score, record

    # ------------------------------------------------------------------------------------ models & results

    def save_model(self, trial_id, model, step=0):
        """Saves the trained derived network's weights in the trial folder (atomically)."""
        from unas_keras import _atomic

        _atomic.write_file_atomic(os.path.join(self.get_trial_dir(trial_id), _WEIGHTS_FILE), model.save_weights)

    def _read_result(self, trial):
        from unas_keras.search import checkpoint as checkpoint_lib

        path = os.path.join(self.get_trial_dir(trial.trial_id), _RESULT_FILE)
        if not os.path.exists(path):
            return None
        return checkpoint_lib.read_json(path)

    def load_model(self, trial):
        """Rebuilds a trial's derived network and loads its trained weights.

        Raises:
            ValueError: the trial has no saved model (it did not complete).
        """
        from unas_keras.networks import build_model
        from unas_keras.space import Architecture

        trial_dir = self.get_trial_dir(trial.trial_id)
        record = self._read_result(trial)
        weights = os.path.join(trial_dir, _WEIGHTS_FILE)
        if record is None or not os.path.exists(weights):
            raise ValueError(f"Trial {trial.trial_id} has no trained model (status {trial.status}).")
        arch = Architecture.load(os.path.join(trial_dir, _ARCH_FILE))
        spec = record["model"]
        model = build_model(arch, num_classes=spec["num_classes"], input_shape=tuple(spec["input_shape"]),
                            **spec["network_options"])
        model.load_weights(weights)
        return model

    def _best_completed_trials(self, num):
        num = check_int(num, "num", 1)
        return [t for t in self.oracle.get_best_trials(num) if t.status == _COMPLETED]

    def get_best_architectures(self, num=1):
        """The derived architectures of the best completed trials, best first.

        Args:
            num: how many (fewer come back when fewer trials completed).

        Returns:
            list of `unas_keras.Architecture`.
        """
        from unas_keras.space import Architecture

        return [Architecture.load(os.path.join(self.get_trial_dir(t.trial_id), _ARCH_FILE))
                for t in self._best_completed_trials(num)]

    def get_best_models(self, num=1, *, num_models=None):
        """The trained derived networks of the best completed trials, best first.

        Args:
            num: how many (fewer come back when fewer trials completed).
            num_models: keras-tuner's spelling of `num` (wins when given).

        Returns:
            list of `keras.Model` (the short-trained networks; retrain the best architecture fully for
            final use).
        """
        return [self.load_model(t) for t in self._best_completed_trials(num if num_models is None else num_models)]

    def get_trial_results(self, num_trials=None):
        """One dict per trial, best first (completed trials first, by the tuner objective).

        Each dict has trial_id, status, seed, hyperparameters (the other values), score, val_accuracy,
        val_loss, params, macs, latency_ms (None when not measured), architecture (compact string) and
        trial_dir (see `unas_keras.tuner_report.trial_row`).
        """
        total = len(self.oracle.trials)
        if num_trials is not None:
            total = min(check_int(num_trials, "num_trials", 1), total)
        trials = self.oracle.get_best_trials(total) if total else []
        return [tuner_report.trial_row(t, self._read_result(t), self.get_trial_dir(t.trial_id)) for t in trials]

    def results_summary(self, num_trials=10):
        """Prints a table of the best trials: id, seed and hyper-parameters, validation accuracy,
        parameters, multiply-adds and latency."""
        settings = (f"Space {self.space}, estimator {self.estimator}, search objective "
                    f"{self.search_objective}")
        lines = tuner_report.summary_lines(self.get_trial_results(num_trials), self.project_dir, settings,
                                           self.oracle.objective, len(self.oracle.trials))
        print("\n".join(lines))

    def search_space_summary(self, extended=False):
        """Prints the hyper-parameter space and the fixed settings of every search."""
        super().search_space_summary(extended=extended)
        print(f"Fixed settings: space={self.space}, objective={self.search_objective}, estimator={self.estimator}"
              + "".join(f", {k}={v}" for k, v in self._settings().items()
                        if k not in ("space", "objective", "estimator") and v not in (None, {})))
