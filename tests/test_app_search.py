"""apps/search.py: the happy path and the one-line / exit-status-2 bad-input paths."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP = os.path.join(ROOT, "apps", "search.py")
TINY = ["--space=nb201", "--dataset=digits", "--epochs=2", "--warmup_epochs=0", "--batch_size=8",
        "--steps_per_epoch=2", "--resolution=8", "--seed=0"]


def _run(args, timeout=600):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    return subprocess.run([sys.executable, APP] + args, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_happy_path_config_and_flag_override(tmp_path):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"description": "tiny", "space": "darts", "epochs": 5,
                                  "channels": 4, "cells_per_stage": 1, "temperature": 0.5}))
    out = tmp_path / "run"
    proc = _run([f"--config={config}", f"--output_dir={out}"] + TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert str(out) in proc.stdout.strip().splitlines()[-1], "prints where the results are at the end"
    run = json.loads((out / "run.json").read_text())
    cfg = run["config"]
    assert cfg["space"] == "nb201" and cfg["epochs"] == 2, "command-line flags override --config"
    assert cfg["temperature"] == 0.5 and cfg["space_options"] == {"channels": 4, "cells_per_stage": 1}
    assert run["status"] == "finished"
    for name in ("architecture.json", "distribution.json", "history.json"):
        assert (out / name).is_file()


def _bad(tmp_path):
    malformed = tmp_path / "malformed.json"
    malformed.write_text("{not json")
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"space": "darts", "learning_rate": 0.1}))
    listing = tmp_path / "list.json"
    listing.write_text("[1, 2]")
    return [
        (["--space=nasnet"], "space"),
        (["--epochs=many"], "epochs"),
        (["--no_such_flag=1"], "no_such_flag"),
        ([f"--config={tmp_path / 'missing.json'}"], "cannot read"),
        ([f"--config={malformed}"], "not valid JSON"),
        ([f"--config={unknown}"], "learning_rate"),
        ([f"--config={listing}"], "object"),
        # Reaches the library (imports TensorFlow): its ValueError becomes the one line.
        (["--epochs=2", "--warmup_epochs=2"], "warmup_epochs"),
        (["--cpu_replicas=2"], "mirrored"),
        (["positional"], "unexpected"),
    ]


def test_bad_input_one_line_exit_2(tmp_path):
    for args, needle in _bad(tmp_path):
        out = tmp_path / "never"
        proc = _run(args + [f"--output_dir={out}"], timeout=300)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2, (args, proc.returncode, proc.stderr[-2000:])
        assert len(lines) == 1, (args, proc.stderr)
        assert needle in lines[0] and "Traceback" not in proc.stderr, (args, lines)
        assert not out.exists(), args


@pytest.mark.parametrize("text", ["space: nb201\nepochs: 3\n"])
def test_yaml_config_is_read(tmp_path, text):
    pytest.importorskip("yaml")
    from unas_keras import cli

    path = tmp_path / "c.yaml"
    path.write_text(text + "description: ignored\n")
    assert cli.load_config(str(path)) == {"space": "nb201", "epochs": 3}
