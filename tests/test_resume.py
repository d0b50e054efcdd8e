"""Exact resume: a seeded search killed with `kill -9` mid-epoch and rerun ends like an uninterrupted one."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP = os.path.join(ROOT, "apps", "search.py")
# Tiny NB201 search, 3 epochs x 8 steps, a checkpoint every 2 steps. No warm-up: one traced function
# per process (the warm-up / search switch is decided from the restored step counter either way).
ARGS = ["--space=nb201", "--dataset=digits", "--epochs=3", "--warmup_epochs=0", "--batch_size=8",
        "--steps_per_epoch=8", "--resolution=8", "--seed=3", "--checkpoint_every_steps=2"]


def _env():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    return env


def _config(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps({"channels": 4, "cells_per_stage": 1}))
    return f"--config={path}"


def _run(out, tmp_path, timeout=600):
    proc = subprocess.run([sys.executable, APP, _config(tmp_path), f"--output_dir={out}"] + ARGS,
                          env=_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _pointer(out):
    try:
        with open(os.path.join(out, "checkpoints", "latest.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


@pytest.mark.slow
def test_kill_9_mid_epoch_then_rerun_gives_identical_results(tmp_path):
    reference = tmp_path / "reference"
    _run(reference, tmp_path)

    resumed = tmp_path / "resumed"
    cmd = [sys.executable, APP, _config(tmp_path), f"--output_dir={resumed}"] + ARGS
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    pointer = None
    try:
        while time.time() < deadline and proc.poll() is None:
            pointer = _pointer(resumed)
            # Mid-epoch in the second epoch, so the resumed state includes a moved architecture
            # distribution, both optimizers' slots and a partly accumulated epoch of metrics.
            if pointer is not None and pointer["state"]["epoch"] >= 1 and pointer["state"]["step_in_epoch"] > 0:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert pointer is not None and pointer["state"]["step_in_epoch"] > 0, "killed mid-epoch"
    assert pointer["state"]["epoch"] >= 1, "killed in the second epoch"
    assert not (resumed / "architecture.json").exists(), "the killed run had not finished"

    second = _run(resumed, tmp_path)
    assert "Resuming" in second.stdout
    for name in ("architecture.json", "distribution.json"):
        assert (resumed / name).read_bytes() == (reference / name).read_bytes(), name
    ref_history = json.loads((reference / "history.json").read_text())
    new_history = json.loads((resumed / "history.json").read_text())
    ref_history.pop("epoch_time_s"), new_history.pop("epoch_time_s")
    assert new_history == ref_history, "the resumed run logs the same per-epoch means"

    # Same command on the finished folder: a no-op that says so.
    third = _run(resumed, tmp_path)
    assert "already finished" in third.stdout
    # Another configuration on the finished folder: refused, one line, status 2.
    refused = subprocess.run(cmd[:-1] + ["--epochs=4"], env=_env(), capture_output=True, text=True,
                             timeout=300)
    assert refused.returncode == 2
    assert "different configuration" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
