"""Tests for `unas_keras.tuner.UNASTuner` (keras-tuner facade over UNAS searches).

Most tests replace `unas_keras.search.runner.search` by a fast stand-in that "derives" a random
architecture from the trial's seed, so they exercise the tuner's own logic (hyper-parameters, the short
training, saving / reloading models, summaries, resuming) in seconds per trial. The slow test runs real
UNAS searches.
"""

import json
import os

import keras_tuner
import numpy as np
import pytest

from unas_keras import scoring
from unas_keras import tuner as tuner_lib
from unas_keras.search import runner
from unas_keras.space import Architecture
from unas_keras.space import sample_architecture

# A tiny NAS-Bench-201 network at 16x16 on digits: quick to build, train and convert.
TINY = dict(space="nb201", channels=4, cells_per_stage=1, resolution=16, batch_size=16, warmup_epochs=1,
            train_steps_per_epoch=2)


class _Interrupted(BaseException):
    """Stands for a kill in the middle of a trial (not an Exception, so keras-tuner does not catch it)."""


@pytest.fixture
def fake_search(monkeypatch):
    """Replaces the UNAS search by a stand-in; returns the list of calls (their keyword arguments)."""
    calls = []
    behaviour = {"raise": None}

    def search(space, dataset, estimator, objective, epochs, warmup_epochs, batch_size, seed, output_dir,
               target_latency_ms=None, strategy=None, steps_per_epoch=None, verbose=1, data_dir=None,
               **options):
        calls.append(dict(space=space, estimator=estimator, objective=objective, epochs=epochs,
                          warmup_epochs=warmup_epochs, batch_size=batch_size, seed=seed, output_dir=output_dir,
                          steps_per_epoch=steps_per_epoch, **options))
        if behaviour["raise"] is not None:
            raise behaviour["raise"]
        arch = sample_architecture(space, seed=seed)
        os.makedirs(os.path.join(output_dir, "checkpoints"), exist_ok=True)
        arch.save(os.path.join(output_dir, "architecture.json"))
        return runner.SearchResult(architecture=arch, history={}, output_dir=output_dir)

    monkeypatch.setattr(runner, "search", search)
    return calls, behaviour


def _tiny_tuner(directory, max_trials=2, **kwargs):
    options = dict(TINY)
    options.update(kwargs)
    return tuner_lib.UNASTuner(max_trials=max_trials, directory=str(directory), project_name="proj", seed=3,
                               **options)


@pytest.mark.parametrize("kwargs, match", [
    (dict(space="resnet"), "search space"),
    (dict(objective="accuracy"), "objective"),
    (dict(estimator="sgd"), "estimator"),
    (dict(max_trials=0), "max_trials"),
    (dict(max_trials=-2), "max_trials"),
    (dict(max_trials=1.5), "max_trials"),
    (dict(width_multiplier=0.5), "Unknown option"),          # a proxyless option on the nb201 space
    (dict(tuner_objective="f1"), "tuner_objective"),
    (dict(train_epochs=0), "train_epochs"),
    (dict(seeds=[]), "seeds"),
    (dict(reuse_search_model=1), "reuse_search_model"),
    (dict(oracle=keras_tuner.oracles.RandomSearchOracle(objective="val_accuracy", max_trials=2), max_trials=2),
     "oracle"),
])
def test_bad_constructor_arguments_raise_value_error(tmp_path, kwargs, match):
    args = dict(space="nb201", directory=str(tmp_path), project_name="p")
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        tuner_lib.UNASTuner(**args)


def test_seed_is_always_a_hyperparameter(tmp_path):
    oracle = keras_tuner.oracles.GridSearchOracle(objective=keras_tuner.Objective("val_accuracy", "max"),
                                                  max_trials=3)
    tuner = tuner_lib.UNASTuner(space="nb201", oracle=oracle, seeds=[5, 6, 7], directory=str(tmp_path),
                                project_name="grid")
    seed_hp = tuner.oracle.get_space().get_config()["space"]
    assert [h["config"]["name"] for h in seed_hp] == ["seed"]
    assert seed_hp[0]["config"]["values"] == [5, 6, 7]
    default = tuner_lib.UNASTuner(space="nb201", directory=str(tmp_path), project_name="default")
    assert "seed" in default.oracle.get_space()
    assert default.oracle.objective.name == "val_accuracy" and default.oracle.objective.direction == "max"


def test_conflicting_arguments_raise_value_error(tmp_path):
    hp = keras_tuner.HyperParameters()
    hp.Int("seed", 0, 3)
    with pytest.raises(ValueError, match="seeds"):
        tuner_lib.UNASTuner(space="nb201", hyperparameters=hp, seeds=[1, 2], directory=str(tmp_path))
    with pytest.raises(ValueError, match="measure_latency"):
        tuner_lib.UNASTuner(space="nb201", tuner_objective="latency_ms", measure_latency=False,
                            directory=str(tmp_path))


def test_unknown_hyperparameter_name_is_refused(tmp_path):
    hp = keras_tuner.HyperParameters()
    hp.Float("learning_rate_of_everything", 0.1, 1.0)
    with pytest.raises(ValueError, match="hyper-parameter name"):
        tuner_lib.UNASTuner(space="nb201", hyperparameters=hp, directory=str(tmp_path), project_name="p")


def test_bad_search_arguments_fail_before_any_trial(tmp_path, fake_search):
    calls, _ = fake_search
    tuner = _tiny_tuner(tmp_path)
    with pytest.raises(ValueError, match="dataset"):
        tuner.search("no_such_dataset_anywhere", epochs=2)
    with pytest.raises(ValueError, match="validation_data"):
        tuner.search("digits", validation_data=1.5, epochs=2)
    with pytest.raises(ValueError, match="epochs"):
        tuner.search("digits", epochs=0)
    with pytest.raises(ValueError, match="warmup_epochs"):
        _tiny_tuner(tmp_path / "w", warmup_epochs=3).search("digits", epochs=2)
    assert calls == []
    assert len(tuner.oracle.trials) == 0


def test_configuration_error_inside_a_trial_stops_the_search(tmp_path, fake_search):
    _, behaviour = fake_search
    behaviour["raise"] = ValueError("output_dir holds a search with a different configuration")
    tuner = _tiny_tuner(tmp_path)
    with pytest.raises(ValueError, match="different configuration"):
        tuner.search("digits", epochs=2, verbose=0)


@pytest.mark.slow
def test_trials_models_summary_and_resume(tmp_path, fake_search, capsys):
    calls, _ = fake_search
    hp = keras_tuner.HyperParameters()
    hp.Choice("temperature", [0.3, 0.6])
    hp.Choice("arch_learning_rate", [1e-3, 3e-3])
    tuner = _tiny_tuner(tmp_path, hyperparameters=hp, seeds=[11, 12, 13], measure_latency=True, latency_runs=3)
    tuner.search("digits", epochs=2, verbose=0)

    trials = list(tuner.oracle.trials.values())
    assert [t.status for t in trials] == ["COMPLETED", "COMPLETED"]
    assert len(calls) == 2
    for trial in trials:
        values = trial.hyperparameters.values
        call = next(c for c in calls if c["seed"] == values["seed"])
        # The trial's hyper-parameters reach the search (alias arch_learning_rate -> arch_lr).
        assert call["temperature"] == values["temperature"]
        assert call["arch_lr"] == values["arch_learning_rate"]
        assert call["space"] == "nb201" and call["channels"] == 4 and call["epochs"] == 2
        assert call["output_dir"].startswith(tuner.get_trial_dir(trial.trial_id))
        metrics = {name: trial.metrics.get_last_value(name) for name in tuner_lib.METRIC_NAMES}
        assert 0.0 <= metrics["val_accuracy"] <= 1.0
        assert metrics["params"] > 0 and metrics["macs"] > 0 and metrics["latency_ms"] > 0
        trial_dir = tuner.get_trial_dir(trial.trial_id)
        for name in ("architecture.json", "model.weights.h5", "result.json"):
            assert os.path.exists(os.path.join(trial_dir, name)), name
        assert not os.path.exists(os.path.join(trial_dir, "search", "checkpoints"))

    # Best architectures come back best first and are the searches' architectures.
    best = tuner.oracle.get_best_trials(2)
    archs = tuner.get_best_architectures(num=2)
    assert len(archs) == 2 and all(isinstance(a, Architecture) for a in archs)
    for trial, arch in zip(best, archs):
        assert arch == sample_architecture("nb201", seed=trial.hyperparameters.values["seed"])
    assert best[0].score >= best[1].score

    # The best model is the trained one: it reproduces its trial's validation accuracy and parameter count.
    model = tuner.get_best_models(num=1)[0]
    from unas_keras.data import eval_data

    _, val_ds, info = eval_data("digits", image_size=16, batch_size=16, channels=1, seed=0)
    accuracy = scoring.evaluate(model, val_ds, info.num_classes)["val_accuracy"]
    assert accuracy == pytest.approx(best[0].metrics.get_last_value("val_accuracy"), abs=1e-6)
    assert model.count_params() >= best[0].metrics.get_last_value("params")
    assert len(tuner.get_best_models(num_models=5)) == 2

    capsys.readouterr()
    tuner.results_summary()
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("trial "))
    for column in ("seed", "temperature", "arch_learning_rate", "val_accuracy", "params", "MACs", "latency_ms"):
        assert column in header
    for trial in trials:
        assert any(line.split()[:1] == [trial.trial_id] for line in out.splitlines())
    rows = tuner.get_trial_results()
    assert [r["trial_id"] for r in rows] == [t.trial_id for t in best]
    assert {r["seed"] for r in rows} == {t.hyperparameters.values["seed"] for t in trials}

    # Resume: the same project with max_trials=3 runs exactly one more trial.
    resumed = _tiny_tuner(tmp_path, max_trials=3, hyperparameters=hp, seeds=[11, 12, 13], measure_latency=False)
    assert resumed.remaining_trials == 1
    resumed.search("digits", epochs=2, verbose=0)
    assert len(calls) == 3
    assert len(resumed.oracle.trials) == 3
    (new_id,) = set(resumed.oracle.trials) - {t.trial_id for t in trials}
    assert calls[-1]["output_dir"].startswith(resumed.get_trial_dir(new_id))
    assert all(t.status == "COMPLETED" for t in resumed.oracle.trials.values())
    new_values = {(t.hyperparameters.values["seed"], t.hyperparameters.values["temperature"],
                   t.hyperparameters.values["arch_learning_rate"]) for t in resumed.oracle.trials.values()}
    assert len(new_values) == 3  # the oracle did not repeat a configuration
    resumed.search("digits", epochs=2, verbose=0)  # nothing left to do
    assert len(calls) == 3
    assert len(resumed.get_best_models(num=3)) == 3  # models of earlier sessions reload too

    # A project is only continued with the same settings and data.
    with pytest.raises(ValueError, match="different tuner settings"):
        _tiny_tuner(tmp_path, max_trials=4, hyperparameters=hp, seeds=[11, 12, 13], train_epochs=2)
    again = _tiny_tuner(tmp_path, max_trials=4, hyperparameters=hp, seeds=[11, 12, 13], measure_latency=False)
    with pytest.raises(ValueError, match="other data or epochs"):
        again.search("digits", epochs=3, verbose=0)
    # overwrite=True starts afresh.
    fresh = _tiny_tuner(tmp_path, max_trials=1, overwrite=True, train_epochs=2)
    assert len(fresh.oracle.trials) == 0


def _digits_arrays():
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images * (255.0 / 16.0)).astype(np.uint8), digits.target.astype(np.int64)


def test_explicit_validation_arrays_are_normalised_like_the_training_data():
    from unas_keras.data import eval_data

    x, y = _digits_arrays()
    _, _, info = eval_data((x[:1200], y[:1200]), image_size=16, batch_size=16, channels=1)
    dataset, count = tuner_lib._explicit_validation_dataset((x[1200:], y[1200:]), info, 16, None)
    images = np.concatenate([batch for batch, _ in dataset.as_numpy_iterator()])
    labels = np.concatenate([batch for _, batch in dataset.as_numpy_iterator()])
    assert count == len(x) - 1200 and images.shape == (count, 16, 16, 1)
    np.testing.assert_array_equal(labels, y[1200:])
    # Same distribution as the training data, normalised with the training statistics.
    assert abs(float(images.mean())) < 0.1 and 0.8 < float(images.std()) < 1.2
    with pytest.raises(ValueError, match="classes"):
        tuner_lib._explicit_validation_dataset((x[:20], np.full(20, 12)), info, 16, None)


@pytest.mark.slow
def test_trials_share_one_model_cache_unless_reuse_is_off(tmp_path, fake_search):
    from unas_keras.search.model_cache import ModelCache

    calls, _ = fake_search
    _tiny_tuner(tmp_path / "reuse", measure_latency=False).search("digits", epochs=2, verbose=0)
    assert len(calls) == 2
    assert isinstance(calls[0]["model_cache"], ModelCache) and calls[1]["model_cache"] is calls[0]["model_cache"]
    _tiny_tuner(tmp_path / "off", max_trials=1, measure_latency=False,
                reuse_search_model=False).search("digits", epochs=2, verbose=0)
    assert len(calls) == 3 and calls[2]["model_cache"] is None


@pytest.mark.slow
def test_interrupted_trial_is_rerun_with_the_same_hyperparameters(tmp_path, fake_search):
    """Also covers explicit (x, y) validation arrays through a whole trial."""
    calls, behaviour = fake_search
    x, y = _digits_arrays()
    train, validation = (x[:1200], y[:1200]), (x[1200:], y[1200:])
    tuner = _tiny_tuner(tmp_path, max_trials=1, measure_latency=False)
    behaviour["raise"] = _Interrupted()
    with pytest.raises(_Interrupted):
        tuner.search(train, validation_data=validation, epochs=2, verbose=0)
    interrupted = dict(calls[-1])
    behaviour["raise"] = None

    resumed = _tiny_tuner(tmp_path, max_trials=1, measure_latency=False)
    with pytest.raises(ValueError, match="other data"):
        resumed.search(train, epochs=2, verbose=0)  # the project was searched with explicit validation data
    resumed.search(train, validation_data=validation, epochs=2, verbose=0)
    assert len(calls) == 2
    # Same trial folder, same seed: the search resumes from its own checkpoints.
    assert calls[-1]["output_dir"] == interrupted["output_dir"]
    assert calls[-1]["seed"] == interrupted["seed"]
    (trial,) = resumed.oracle.trials.values()
    assert trial.status == "COMPLETED"
    with open(os.path.join(resumed.get_trial_dir(trial.trial_id), "result.json")) as f:
        record = json.load(f)
    assert record["seed"] == interrupted["seed"]
    assert record["training"]["num_val"] == len(x) - 1200
    assert 0.0 <= record["metrics"]["val_accuracy"] <= 1.0


@pytest.mark.slow
def test_real_search_trial_end_to_end(tmp_path, capsys):
    """One trial with a real (tiny) UNAS search: its output folder, seed and architecture are the tuner's."""
    # REINFORCE: the cheapest search step to trace (the estimator does not matter to the tuner).
    tuner = tuner_lib.UNASTuner(space="nb201", objective="gen_gap", estimator="reinforce", max_trials=1,
                                directory=str(tmp_path), project_name="real", seed=0, channels=4,
                                cells_per_stage=1, resolution=16, batch_size=16, steps_per_epoch=2,
                                warmup_epochs=1, train_steps_per_epoch=2, measure_latency=False)
    tuner.search("digits", epochs=2, verbose=0)
    (trial,) = tuner.oracle.trials.values()
    assert trial.status == "COMPLETED", trial.message
    seed = trial.hyperparameters.values["seed"]
    trial_dir = tuner.get_trial_dir(trial.trial_id)
    search_dir = os.path.join(trial_dir, "search")
    with open(os.path.join(search_dir, "run.json")) as f:
        run = json.load(f)
    assert run["status"] == "finished" and run["effective_seed"] == seed
    assert run["config"]["estimator"] == "reinforce" and run["config"]["objective"] == "gen_gap"
    assert run["config"]["space_options"] == {"channels": 4, "cells_per_stage": 1}
    (arch,) = tuner.get_best_architectures(num=1)
    assert arch == Architecture.load(os.path.join(search_dir, "architecture.json"))
    model = tuner.get_best_models(num=1)[0]
    assert model.count_params() > 0
    tuner.results_summary()
    out = capsys.readouterr().out
    assert "val_accuracy" in out and str(seed) in out


def _oracle(kind, **kwargs):
    objective = keras_tuner.Objective("val_accuracy", "max")
    if kind == "random":
        return keras_tuner.oracles.RandomSearchOracle(objective=objective, max_trials=2, seed=1, **kwargs)
    if kind == "bayesian":
        return keras_tuner.oracles.BayesianOptimizationOracle(objective=objective, max_trials=2,
                                                              num_initial_points=1, seed=1, **kwargs)
    # max_epochs=2, factor=3: one bracket of two 2-epoch trials.
    return keras_tuner.oracles.HyperbandOracle(objective=objective, max_epochs=2, factor=3, seed=1, **kwargs)


@pytest.mark.slow
def test_hyperband_budget_is_the_search_length(tmp_path, fake_search):
    calls, _ = fake_search
    # max_epochs=3, factor=3: a bracket of 1-epoch trials whose best is promoted to 3 epochs, then a
    # bracket of 3-epoch trials.
    oracle = keras_tuner.oracles.HyperbandOracle(objective=keras_tuner.Objective("val_accuracy", "max"),
                                                 max_epochs=3, factor=3, seed=1)
    options = {k: v for k, v in TINY.items() if k != "warmup_epochs"}
    tuner = tuner_lib.UNASTuner(oracle=oracle, directory=str(tmp_path), project_name="hb", seeds=[1, 2, 3, 4],
                                **options)
    tuner.search("digits", verbose=0)
    trials = list(tuner.oracle.trials.values())
    assert all(t.status == "COMPLETED" for t in trials), [t.message for t in trials]
    assert len(calls) == len(trials) >= 3
    budgets = set()
    for trial in trials:
        values = trial.hyperparameters.values
        call = next(c for c in calls if c["output_dir"].startswith(tuner.get_trial_dir(trial.trial_id)))
        # The budget is the search's length; keras-tuner's own values never reach the search.
        assert call["epochs"] == values["tuner/epochs"]
        assert not any(k.startswith("tuner/") for k in call)
        # The profile's 1 warm-up epoch is kept when it fits, cut to 0 for a 1-epoch search.
        assert call["warmup_epochs"] == min(1, values["tuner/epochs"] - 1)
        # The derived network is trained for as many epochs as its search (the default).
        with open(os.path.join(tuner.get_trial_dir(trial.trial_id), "result.json")) as f:
            assert json.load(f)["training"]["epochs"] == values["tuner/epochs"]
        budgets.add(values["tuner/epochs"])
    assert budgets == {1, 3}
    promoted = [t for t in trials if "tuner/trial_id" in t.hyperparameters.values]
    assert promoted and all(t.hyperparameters.values["tuner/epochs"] == 3 for t in promoted)


@pytest.mark.slow
# RandomSearchOracle is the default oracle: test_trials_models_summary_and_resume runs it.
@pytest.mark.parametrize("kind", ["bayesian", "hyperband"])
def test_oracles_run_real_searches(tmp_path, kind):
    """Each keras-tuner oracle drives two real (tiny) UNAS searches to completion."""
    tuner = tuner_lib.UNASTuner(space="nb201", objective="gen_gap", estimator="reinforce",
                                oracle=_oracle(kind), directory=str(tmp_path), project_name=kind,
                                channels=4, cells_per_stage=1, resolution=8, batch_size=16, steps_per_epoch=2,
                                train_steps_per_epoch=2, measure_latency=False)
    tuner.search("digits", epochs=2, verbose=0)
    trials = list(tuner.oracle.trials.values())
    assert len(trials) == 2
    assert all(t.status == "COMPLETED" for t in trials), [t.message for t in trials]
    for trial in trials:
        run_dir = os.path.join(tuner.get_trial_dir(trial.trial_id), "search")
        with open(os.path.join(run_dir, "run.json")) as f:
            run = json.load(f)
        assert run["status"] == "finished" and run["config"]["epochs"] == 2
        assert run["effective_seed"] == trial.hyperparameters.values["seed"]
        assert 0.0 <= trial.metrics.get_last_value("val_accuracy") <= 1.0
    (best,) = tuner.get_best_models(num=1)
    assert best.count_params() > 0
