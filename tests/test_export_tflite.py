"""Command-line tests of apps/export_tflite.py and apps/measure_latency.py (subprocesses)."""

import os
import subprocess
import sys

import keras
import pytest

from unas_keras.networks.proxyless import build_proxyless_model
from unas_keras.space.proxyless import MBConvBackbone, ProxylessSearchSpace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = MBConvBackbone(stem_channels=8, first_block_channels=8, stage_channels=(8, 16),
                      stage_strides=(2, 2), stage_depths=(2, 1), head_channels=32)


def _run(app, *args):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # a user's default environment (conftest sets it for pytest)
    return subprocess.run([sys.executable, os.path.join(ROOT, "apps", app), *args], capture_output=True,
                          text=True, env=env, timeout=600)


def _meaningful_stderr(stderr):
    """stderr lines minus the runtimes' own start-up notices."""
    return [line for line in stderr.splitlines() if line.strip() and "XNNPACK delegate" not in line]


def _assert_one_line_error(result):
    assert result.returncode == 2, result.stderr
    lines = _meaningful_stderr(result.stderr)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:")
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def keras_path(tmp_path_factory):
    keras.utils.set_random_seed(0)
    arch = ProxylessSearchSpace(TINY).sample(0)
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    build_proxyless_model(arch.genotype, 10, (32, 32, 3)).save(path)
    return str(path)


@pytest.mark.slow
def test_export_int8_verify_then_measure(keras_path, tmp_path):
    out = tmp_path / "out" / "tiny.tflite"
    result = _run("export_tflite.py", f"--model={keras_path}", f"--output={out}", "--quantize=int8",
                  "--verify", "--num_calibration=16", "--num_verify=8", "--representative_dataset=digits")
    assert result.returncode == 0, result.stderr
    assert "verify OK" in result.stdout and "top-1 agreement" in result.stdout
    assert out.is_file() and out.read_bytes()[4:8] == b"TFL3"
    assert sorted(os.listdir(out.parent)) == ["tiny.tflite"]  # no temporary leftovers
    measured = _run("measure_latency.py", f"--model={out}", "--runs=5")
    assert measured.returncode == 0, measured.stderr
    assert float(measured.stdout.split()[0]) > 0 and " ms " in measured.stdout


def test_export_missing_model(tmp_path):
    out = tmp_path / "x.tflite"
    _assert_one_line_error(_run("export_tflite.py", f"--model={tmp_path / 'nope.keras'}", f"--output={out}"))
    assert not out.exists()


def test_export_bad_flag_value(keras_path, tmp_path):
    out = tmp_path / "x.tflite"
    result = _run("export_tflite.py", f"--model={keras_path}", f"--output={out}", "--quantize=int4")
    _assert_one_line_error(result)
    assert "int4" in result.stderr
    assert not out.exists()


@pytest.mark.slow
def test_export_corrupt_model(tmp_path):
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"this is not a keras archive")
    out = tmp_path / "x.tflite"
    result = _run("export_tflite.py", f"--model={bad}", f"--output={out}")
    _assert_one_line_error(result)
    assert not out.exists() and sorted(os.listdir(tmp_path)) == ["bad.keras"]


def test_measure_latency_missing_model(tmp_path):
    _assert_one_line_error(_run("measure_latency.py", f"--model={tmp_path / 'none.tflite'}"))


def test_int8_without_a_known_dataset_is_refused(keras_path, tmp_path):
    # No <model>.json beside the model and no --representative_dataset: calibrating on some default
    # data set would silently quantize for the wrong images.
    out = tmp_path / "x.tflite"
    result = _run("export_tflite.py", f"--model={keras_path}", f"--output={out}", "--quantize=int8")
    _assert_one_line_error(result)
    assert "--representative_dataset" in result.stderr and "own data set" in result.stderr
    assert not out.exists()


TRAIN_TINY = {
    "darts": ["--architecture=darts_v2", "--resolution=32", "--init_channels=4", "--num_cells=3", "--auxiliary",
              "--drop_path_rate=0.1"],
    "proxyless": ["--architecture=unas_proxyless", "--resolution=32", "--width_multiplier=0.25"],
    "nb201": ["--architecture=nb201_resnet", "--resolution=16"],
}


@pytest.mark.slow
@pytest.mark.parametrize("space", list(TRAIN_TINY))
def test_trained_model_of_each_space_exports_its_inference_graph(space, tmp_path):
    """apps/train.py -> apps/export_tflite.py int8 --verify, calibration data taken from the model's metadata."""
    import json

    from ai_edge_litert.interpreter import Interpreter

    model = tmp_path / "model.keras"
    trained = _run("train.py", *TRAIN_TINY[space], "--dataset=digits", "--epochs=1", "--steps_per_epoch=2",
                   "--batch_size=8", f"--output={model}")
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "validation accuracy" in trained.stdout and "n/a" not in trained.stdout
    metadata = json.loads((tmp_path / "model.keras.json").read_text())
    assert metadata["dataset"] == "digits" and metadata["architecture"]["space"] == space
    assert metadata["training_only_outputs"] == ([1] if space == "darts" else [])
    out = tmp_path / "model.tflite"
    result = _run("export_tflite.py", f"--model={model}", f"--output={out}", "--quantize=int8", "--verify",
                  "--num_calibration=8", "--num_verify=8")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "verify OK (int8, 8 inputs)" in result.stdout and "random inputs" not in result.stderr
    outputs = Interpreter(model_path=str(out)).get_output_details()
    assert len(outputs) == 1 and list(outputs[0]["shape"]) == [1, 10]  # the logits only, no auxiliary head
