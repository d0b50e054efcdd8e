"""Tests of unas_keras.config: the one search configuration and the one data set classifier."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from unas_keras.config import SearchConfig, classify, config_differences
from unas_keras.config import datasets as datasets_lib
from unas_keras.space import registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------- fields
def test_every_option_is_one_field_with_help_and_check():
    names = SearchConfig.option_names()
    assert len(names) == len(set(names))
    for field in SearchConfig.fields(derived=False):
        assert field.metadata["help"].strip(), field.name
        assert field.metadata["check"] is not None or field.name == "dataset", field.name
        assert SearchConfig.field_type(field.name) in (int, float, str, bool, object)
    assert SearchConfig.default("temperature") == 0.4 and SearchConfig.default("weight_clipnorm") == 5.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        SearchConfig.resolve().temperature = 1.0


def test_search_signature_and_docstring_derive_from_the_fields():
    import inspect

    from unas_keras.search.runner import search

    parameters = inspect.signature(search).parameters
    for name in SearchConfig.option_names():
        assert name in parameters, name
        assert f"        {name}: " in search.__doc__, name
    assert parameters["temperature"].kind == inspect.Parameter.KEYWORD_ONLY
    assert parameters["estimator"].default == SearchConfig.default("estimator")
    for space in registry.names():
        for option in registry.get(space).supernet_options:
            assert option in search.__doc__


def test_app_flags_and_config_keys_derive_from_the_fields():
    sys.path.insert(0, os.path.join(ROOT, "apps"))
    try:
        import search as app_search
    finally:
        sys.path.pop(0)
    flagged = {f.name for f in SearchConfig.fields(flag=True)}
    assert flagged <= set(app_search._SEARCH_FLAGS)
    assert {"init_channels", "num_cells", "ops", "width_multiplier", "channels", "cells_per_stage"} <= set(
        app_search._SEARCH_FLAGS)
    assert "backbone" not in app_search._SEARCH_FLAGS, "a plan is a config key, not a flag"
    keys = set(app_search.config_keys())
    assert set(SearchConfig.option_names()) <= keys and "backbone" in keys


# ----------------------------------------------------------------------------- resolve
def test_resolve_layers_field_profile_and_space_defaults():
    cifar = SearchConfig.resolve(space="darts", dataset="cifar10")
    demo = SearchConfig.resolve(space="darts", dataset="digits")
    assert cifar.weight_lr == SearchConfig.default("weight_lr") == 3e-4, "the paper's rate on CIFAR"
    assert demo.weight_lr == 6e-3, "the demo profile's short-run rate"
    assert cifar.space_options == registry.get("darts").defaults("cifar")["space_options"]
    assert (cifar.batch_size, demo.batch_size) == (128, 32)
    assert demo.profile == "demo" and cifar.profile == "cifar"
    assert demo.weight_lr_min == pytest.approx(demo.weight_lr / 3)


def test_to_dict_round_trip_and_differences():
    cfg = SearchConfig.resolve(space="proxyless", dataset="digits", temperature=1.0, width_multiplier=0.5)
    payload = json.loads(json.dumps(cfg.to_dict()))
    assert list(payload) == sorted(payload)
    assert SearchConfig.from_dict(payload) == cfg
    other = cfg.replace(temperature=0.5, data_dir="/elsewhere").to_dict()
    assert config_differences(payload, other) == ["temperature: 1.0 -> 0.5"], "data_dir is not compared"


@pytest.mark.parametrize("kwargs, match", [
    (dict(weight_lr=1e-3, weight_lr_min=1e-2), "weight_lr_min"),
    (dict(val_fraction=1.0), "val_fraction"),
    (dict(channels=0, space="nb201"), "channels"),
    (dict(augment=3), "augment"),
    (dict(width_multiplier=1.0), "Unknown option"),  # a proxyless option in a darts search
])
def test_bad_values_are_specific_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SearchConfig.resolve(**kwargs)


# ----------------------------------------------------------------------------- data sets
def test_classifier_kinds_and_profiles(tmp_path):
    assert classify("digits") == datasets_lib.DatasetRef("embedded", "digits", "digits", "demo")
    assert classify("ImageNet").description == "imagenet2012" and classify("imagenet").profile == "imagenet"
    assert classify("cifar100").kind == "tfds" and classify("cifar100").profile == "cifar"
    assert classify("mnist").profile == "generic"
    folder = tmp_path / "imgs"
    folder.mkdir()
    assert classify(folder).description == {"folder": str(folder)}
    assert classify(str(folder)).kind == "folder"
    x, y = np.zeros((4, 8, 8), np.uint8), np.arange(4)
    ref = classify((x, y, 5))
    assert ref.kind == "arrays" and ref.description["arrays"]["num_classes"] == 5
    assert ref.description == classify((x.copy(), y.copy(), 5)).description
    assert ref.description != classify((x + 1, y, 5)).description
    with pytest.raises(ValueError, match="does not exist"):
        classify(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="must not be empty"):
        classify(" ")


def test_one_rule_for_bare_words_that_are_also_folders(tmp_path, monkeypatch):
    """A local folder never shadows the embedded set or a tensorflow-datasets name (it did in run.json)."""
    monkeypatch.chdir(tmp_path)
    for name in ("digits", "cifar10", "my_images"):
        (tmp_path / name).mkdir()
    known = lambda name: name.split("/")[0] == "cifar10"  # noqa: E731
    assert classify("digits", is_tfds_name=known).kind == "embedded"
    assert classify("cifar10", is_tfds_name=known).kind == "tfds"
    assert classify("./cifar10", is_tfds_name=known).kind == "folder"
    assert classify("my_images", is_tfds_name=known).kind == "folder"
    assert classify("cifar10/plain", is_tfds_name=known).kind == "tfds"
    with pytest.raises(ValueError, match="does not exist"):
        classify("no_such/folder", is_tfds_name=known)


def test_data_loader_uses_the_same_classifier(tmp_path, monkeypatch):
    from unas_keras.data import sources

    monkeypatch.chdir(tmp_path)
    (tmp_path / "digits").mkdir()  # an empty folder named like the embedded set
    assert sources.resolve("digits").info.name == "digits" and classify("digits").kind == "embedded"


def test_config_and_space_import_without_tensorflow():
    code = ("import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None; "
            "sys.modules['keras_tuner'] = None\n"
            "from unas_keras.config import SearchConfig, classify\n"
            "from unas_keras.space import registry\n"
            "print(classify('cifar10').profile, registry.get('darts').defaults('demo')['batch_size'], "
            "len(SearchConfig.option_names()) > 20)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["cifar", "32", "True"]
