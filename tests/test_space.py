"""Architectures as plain data: JSON round trips, validation, sampling, presets."""

import json
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unas_keras.space import Architecture, presets, registry, sample_architecture
from unas_keras.space.darts import DartsGenotype
from unas_keras.space.nb201 import NB201Genotype, format_string, parse_string
from unas_keras.space.proxyless import MOBILENET_V2_BACKBONE, ProxylessGenotype

CONTRACT_PRESETS = ("darts_v2", "unas_cifar10", "unas_cifar100", "unas_imagenet", "mobilenet_v2",
                    "proxylessnas_gpu", "unas_proxyless", "darts_v1")


def test_contract_presets_exist_and_round_trip(tmp_path):
    for name in CONTRACT_PRESETS:
        arch = presets.get(name)
        assert arch.space in ("darts", "proxyless")
        assert Architecture.from_json(arch.to_json()) == arch
        path = tmp_path / f"{name}.json"
        arch.save(path)
        assert Architecture.load(path) == arch


def test_unknown_preset_lists_valid_names():
    with pytest.raises(ValueError, match="darts_v2"):
        presets.get("darts_v3")


@pytest.mark.parametrize("space", ["darts", "proxyless", "nb201"])
def test_sample_is_seeded_and_valid(space):
    a, b, c = (sample_architecture(space, seed=s) for s in (0, 0, 1))
    assert a == b and a != c
    assert a.space == space
    assert Architecture.from_json(a.to_json()) == a


@pytest.mark.parametrize("space", ["darts", "proxyless", "nb201"])
def test_encode_inverts_to_architecture(space):
    sp = registry.get(space).search_space()
    arch = sp.sample(seed=3)
    choices = sp.encode(arch)
    assert set(choices) == set(sp.decisions())
    for name, (rows, k) in sp.decisions().items():
        assert len(choices[name]) == rows and all(0 <= c < k for c in choices[name])
    assert sp.to_architecture(choices) == arch


def test_darts_decisions_count_168_parameters():
    decisions = registry.get("darts").search_space().decisions()
    assert sum(r * k for r, k in decisions.values()) == 168


def test_proxyless_decisions_shapes():
    assert registry.get("proxyless").search_space().decisions() == {"first": (6, 6), "optional": (15, 7)}


def _darts_payload():
    return json.loads(presets.get("unas_cifar10").to_json())


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda p: p["genotype"]["normal"][0][0].__setitem__(0, "conv_9x9"), "unknown operation 'conv_9x9'"),
        (lambda p: p["genotype"]["normal"][1][0].__setitem__(1, 3), "node 1, pair 0: input 3 does not exist"),
        (lambda p: p["genotype"]["reduce"].pop(), "reduce cell: expected 4 entries"),
        (lambda p: p.__setitem__("space", "nasnet"), "Unknown search space 'nasnet'"),
        (lambda p: p.__setitem__("schema_version", 99), "schema_version 99"),
        (lambda p: p["genotype"].pop("normal"), "missing key"),
        (lambda p: p["genotype"]["normal"][2][1].__setitem__(1, True), "expected an integer"),
    ],
)
def test_darts_validation_errors_say_what_and_where(mutate, message):
    payload = _darts_payload()
    mutate(payload)
    with pytest.raises(ValueError, match=message):
        Architecture.from_json(json.dumps(payload))


def test_proxyless_validation_errors():
    layers = list(presets.get("proxylessnas_gpu").genotype.layers)
    with pytest.raises(ValueError, match="expected 21 layers"):
        ProxylessGenotype(tuple(layers[:-1]))
    bad = list(layers)
    bad[4] = "zero"
    with pytest.raises(ValueError, match="layer 4: 'zero' is not allowed on the first layer"):
        ProxylessGenotype(tuple(bad))
    bad = list(layers)
    bad[1] = "k9e6"
    with pytest.raises(ValueError, match="layer 1: unknown choice 'k9e6'"):
        ProxylessGenotype(tuple(bad))
    mbv2 = presets.get("mobilenet_v2")
    assert mbv2.genotype.backbone == MOBILENET_V2_BACKBONE
    assert Architecture.from_json(mbv2.to_json()).genotype.backbone == MOBILENET_V2_BACKBONE


def test_nb201_string_round_trip_and_errors():
    text = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
    assert format_string(parse_string(text)) == text
    arch = presets.get("nb201_best_cifar10")
    assert arch.genotype.to_string() == text
    assert json.loads(arch.to_json())["genotype"] == {"cell": text}
    with pytest.raises(ValueError, match="unknown operation 'conv'"):
        NB201Genotype.from_string(text.replace("nor_conv_1x1", "conv"))
    with pytest.raises(ValueError, match="node 2 needs 2 edges"):
        NB201Genotype.from_string("|none~0|+|none~0|+|none~0|none~1|none~2|")


def test_darts_genotype_equality_ignores_name():
    a = presets.get("darts_v2")
    b = Architecture("darts", DartsGenotype(a.genotype.normal, a.genotype.reduce))
    assert a == b and hash(a) == hash(b)


def test_load_missing_file_is_value_error(tmp_path):
    with pytest.raises(ValueError, match="Cannot read architecture file"):
        Architecture.load(tmp_path / "nope.json")


def test_save_is_atomic_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "arch.json"
    presets.get("darts_v2").save(path)
    before = path.read_text()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(OSError):
        presets.get("unas_cifar10").save(path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["arch.json"]


def test_space_package_works_without_tensorflow():
    # Load unas_keras.space with the parent package's __init__ bypassed and TensorFlow and Keras
    # made unimportable: architectures must read, validate and write without them.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = (
        "import sys, types; sys.modules['tensorflow'] = None; sys.modules['keras'] = None; "
        f"pkg = types.ModuleType('unas_keras'); pkg.__path__ = [{os.path.join(root, 'unas_keras')!r}]; "
        "sys.modules['unas_keras'] = pkg; "
        "import unas_keras.space as s; a = s.presets.get('darts_v2'); "
        "assert s.Architecture.from_json(a.to_json()) == a; s.sample_architecture('proxyless', seed=1); "
        "print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 30) | st.floats(allow_nan=True) | st.text(max_size=12)
    | st.sampled_from(["darts", "proxyless", "nb201", "skip_connect", "k3e6", "zero", "none~0"]),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(
        st.sampled_from(["schema_version", "space", "genotype", "normal", "reduce", "layers", "cell",
                         "backbone", "name", "x"]), children, max_size=5),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(_json_values)
def test_fuzz_structured_payloads_only_raise_value_error(payload):
    try:
        Architecture.from_json(json.dumps(payload))
    except ValueError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(CONTRACT_PRESETS + ("nb201_resnet",)), st.integers(0, 2000), st.text(max_size=3))
def test_fuzz_corrupted_text_only_raises_value_error(name, position, insert):
    text = presets.get(name).to_json()
    position %= len(text) + 1
    corrupted = text[:position] + insert + text[position + 1:]
    try:
        arch = Architecture.from_json(corrupted)
    except ValueError:
        return
    assert Architecture.from_json(arch.to_json()) == arch


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=64))
def test_fuzz_bytes_only_raise_value_error(blob):
    try:
        Architecture.from_json(blob)
    except ValueError:
        pass
