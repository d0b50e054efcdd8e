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
                  "--verify", "--num_calibration=16", "--num_verify=8")
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
