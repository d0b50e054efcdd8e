"""Tests of `unas_keras.search.passes`: the forward passes of a search iteration, without TensorFlow."""

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PASSES_FILE = os.path.join(ROOT, "unas_keras", "search", "passes.py")


def _load_passes():
    # By file path: importing the package would import TensorFlow (unas_keras/search/__init__.py).
    spec = importlib.util.spec_from_file_location("_passes_under_test", PASSES_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # dataclasses looks the module up by name
    spec.loader.exec_module(module)
    return module


passes = _load_passes()

# What each estimator reads (hard loss, relaxed loss) and each objective reads (train, val batch);
# test_estimators.py (test_needs_flags) and test_search_model.py (test_the_model_runs_its_pass_plan) check
# them against the real estimators and objectives.
ESTIMATOR_NEEDS = {"reinforce": (True, False), "gumbel_softmax": (False, True), "rebar": (True, True),
                   "relax": (True, True)}
OBJECTIVE_BATCHES = {"gen_gap": (True, True), "train": (True, False), "val": (False, True)}

# (estimator, objective, recompute_val_pass) -> (without gradient, with gradient, weight pass,
# recomputed pass, train metric pass, val metric pass), by name. Written out by hand.
EXPECTED = {}
for _name in ("rebar", "relax"):
    EXPECTED.update({
        (_name, "gen_gap", False): ("hard_val hard_train", "relaxed_train relaxed_val", "relaxed_train", None,
                                    "hard_train", "hard_val"),
        (_name, "gen_gap", True): ("hard_val hard_train relaxed_val", "relaxed_train", "relaxed_train",
                                   "relaxed_val", "hard_train", "hard_val"),
        (_name, "train", False): ("hard_train", "relaxed_train", "relaxed_train", None, "hard_train", None),
        (_name, "val", False): ("hard_val", "relaxed_val weight_train", "weight_train", None, "weight_train",
                                "hard_val"),
    })
EXPECTED.update({
    ("gumbel_softmax", "gen_gap", False): ("", "relaxed_train relaxed_val", "relaxed_train", None,
                                           "relaxed_train", "relaxed_val"),
    ("gumbel_softmax", "gen_gap", True): ("relaxed_val", "relaxed_train", "relaxed_train", "relaxed_val",
                                          "relaxed_train", "relaxed_val"),
    ("gumbel_softmax", "train", False): ("", "relaxed_train", "relaxed_train", None, "relaxed_train", None),
    ("gumbel_softmax", "val", False): ("", "relaxed_val weight_train", "weight_train", None, "weight_train",
                                       "relaxed_val"),
    ("reinforce", "gen_gap", False): ("hard_val", "hard_train", "hard_train", None, "hard_train", "hard_val"),
    ("reinforce", "train", False): ("", "hard_train", "hard_train", None, "hard_train", None),
    ("reinforce", "val", False): ("hard_val", "weight_train", "weight_train", None, "weight_train", "hard_val"),
})
# Recomputing the val pass only matters when the relaxed train and val passes are both held.
for (_est, _obj, _recompute), _value in list(EXPECTED.items()):
    if (_est, _obj, True) not in EXPECTED:
        EXPECTED[(_est, _obj, True)] = _value


def _plan(estimator, objective, recompute_val_pass):
    hard, relaxed = ESTIMATOR_NEEDS[estimator]
    train, val = OBJECTIVE_BATCHES[objective]
    return passes.plan_passes(hard_loss=hard, relaxed_loss=relaxed, train_batch=train, val_batch=val,
                              recompute_val_pass=recompute_val_pass)


def _names(seq):
    return " ".join(p.name for p in seq)


def test_every_combination_is_covered():
    assert len(EXPECTED) == len(ESTIMATOR_NEEDS) * len(OBJECTIVE_BATCHES) * 2


@pytest.mark.parametrize("estimator, objective, recompute", sorted(EXPECTED))
def test_plan_of_every_estimator_and_objective(estimator, objective, recompute):
    plan = _plan(estimator, objective, recompute)
    without, with_grad, weight, recomputed, train_metric, val_metric = EXPECTED[(estimator, objective, recompute)]
    assert _names(plan.without_gradient) == without
    assert _names(plan.with_gradient) == with_grad
    assert plan.weight_pass.name == weight and plan.weight_pass in plan.with_gradient
    assert (plan.recomputed.name if plan.recomputed else None) == recomputed
    assert plan.recomputed is None or plan.recomputed in plan.without_gradient
    assert plan.metric_train_pass.name == train_metric
    assert (plan.metric_val_pass.name if plan.metric_val_pass else None) == val_metric
    assert len(set(plan.passes)) == len(plan.passes)   # no pass runs twice on the tape
    # Hard passes never need a gradient unless one doubles as the weight step's forward.
    assert all(p.sample != passes.HARD or p == plan.weight_pass for p in plan.with_gradient)
    # The objective at a sample reads exactly the batches the objective uses.
    train, val = OBJECTIVE_BATCHES[objective]
    for sample, needed in zip((passes.HARD, passes.RELAXED), ESTIMATOR_NEEDS[estimator]):
        train_pass, val_pass = plan.objective_passes(sample)
        assert (train_pass is not None, val_pass is not None) == ((train, val) if needed else (False, False))


def test_plans_are_frozen_values():
    plan = _plan("rebar", "gen_gap", True)
    assert plan == _plan("rebar", "gen_gap", True)
    with pytest.raises(Exception, match="cannot assign"):
        plan.weight_pass = passes.HARD_TRAIN
    assert {passes.Pass("hard", "train"): 1}[passes.HARD_TRAIN] == 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"hard_loss": False, "relaxed_loss": False}, "hard or the relaxed"),
        ({"train_batch": False, "val_batch": False}, "train or the val"),
        ({"recompute_val_pass": None}, "recompute_val_pass"),
    ],
)
def test_bad_plans_raise(kwargs, message):
    args = dict(hard_loss=True, relaxed_loss=True, train_batch=True, val_batch=True, recompute_val_pass=False)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        passes.plan_passes(**args)


def test_plan_needs_no_tensorflow():
    script = textwrap.dedent(f"""
        import importlib.util, sys
        for name in ("tensorflow", "keras", "numpy"):
            sys.modules[name] = None   # any import of them now fails
        spec = importlib.util.spec_from_file_location("passes", {PASSES_FILE!r})
        passes = importlib.util.module_from_spec(spec)
        sys.modules["passes"] = passes
        spec.loader.exec_module(passes)
        plan = passes.plan_passes(hard_loss=True, relaxed_loss=True, train_batch=True, val_batch=True,
                                  recompute_val_pass=True)
        print(" ".join(p.name for p in plan.passes))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["hard_val", "hard_train", "relaxed_val", "relaxed_train"]
