"""apps/train.py: trains a derived network and saves a .keras; bad input is one line, exit 2."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP = os.path.join(ROOT, "apps", "train.py")
TINY = ["--dataset=digits", "--epochs=1", "--batch_size=64", "--resolution=16", "--init_channels=4",
        "--num_cells=3"]


def run_app(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, APP, *args], capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
def test_trains_a_preset_and_saves_a_reloadable_model(tmp_path):
    output = tmp_path / "model.keras"
    proc = run_app("--architecture=darts_v2", f"--output={output}", *TINY)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "validation accuracy" in proc.stdout
    assert output.exists() and not list(tmp_path.glob("*.tmp.keras"))

    import keras

    import unas_keras  # noqa: F401  (registers the layers)

    model = keras.models.load_model(output)
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype("float32")
    assert model.predict(x, verbose=0).shape == (2, 10)


def test_architecture_file_and_config_override(tmp_path):
    import unas_keras as uk

    arch_path = tmp_path / "architecture.json"
    uk.presets.get("nb201_resnet").save(arch_path)
    config = tmp_path / "recipe.json"
    config.write_text(json.dumps({"epochs": 7, "batch_size": 64, "resolution": 16}))
    output = tmp_path / "nb.keras"
    proc = run_app(f"--architecture={arch_path}", f"--config={config}", "--epochs=1", f"--output={output}",
                   "--dataset=digits")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "1 epochs" in proc.stdout  # the command line won over the config's 7
    assert output.exists()


@pytest.mark.parametrize("args, message", [
    (["--architecture=/nonexistent/arch.json", "--output=/tmp/x.keras"], "no such file"),
    (["--architecture=darts_v2", "--output=/tmp/x.h5"], "must end in .keras"),
    (["--architecture=darts_v2"], "--output is required"),
    (["--architecture=darts_v2", "--output=/tmp/x.keras", "--epochs=0"], "--epochs must be >= 1"),
    (["--architecture=darts_v2", "--output=/tmp/x.keras", "--no_such_flag=1"], "no_such_flag"),
])
def test_bad_input_is_one_line_exit_2(args, message):
    proc = run_app(*args)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_malformed_architecture_and_config(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    proc = run_app(f"--architecture={bad}", "--output=/tmp/x.keras")
    assert proc.returncode == 2 and "Malformed architecture JSON" in proc.stderr
    proc = run_app("--architecture=darts_v2", "--output=/tmp/x.keras", f"--config={bad}")
    assert proc.returncode == 2 and "not valid JSON" in proc.stderr
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"learning_rte": 0.1}))
    proc = run_app("--architecture=darts_v2", "--output=/tmp/x.keras", f"--config={unknown}")
    assert proc.returncode == 2 and "unknown config key" in proc.stderr


def _weights(path):
    import keras

    import unas_keras  # noqa: F401  (registers the layers and optimizers)

    model = keras.models.load_model(path)
    return model.get_weights() + [np.asarray(v) for v in model.optimizer.variables]


# Drop-path, cutout, the auxiliary head and a schedule: every source of randomness and state a resume must
# restore. 3 epochs of 4 steps.
RESUME_ARGS = ["--architecture=darts_v2", "--dataset=digits", "--epochs=3", "--steps_per_epoch=4",
               "--batch_size=16", "--resolution=32", "--init_channels=4", "--num_cells=3", "--auxiliary",
               "--drop_path_rate=0.2", "--cutout=8", "--warmup_epochs=1", "--seed=5", "--deterministic"]


@pytest.mark.slow
def test_kill_9_mid_training_then_rerun_ends_with_the_same_model(tmp_path):
    import signal
    import time

    reference = tmp_path / "reference" / "model.keras"
    proc = run_app(*RESUME_ARGS, f"--output={reference}")
    assert proc.returncode == 0, proc.stderr[-3000:]

    output = tmp_path / "resumed" / "model.keras"
    backup = tmp_path / "resumed" / "model_run" / "backup" / "latest.weights.h5"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    killed = subprocess.Popen([sys.executable, APP, *RESUME_ARGS, f"--output={output}"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    try:
        while time.time() < deadline and killed.poll() is None and not backup.exists():
            time.sleep(0.02)
        assert killed.poll() is None, "the run ended before it could be killed"
        os.kill(killed.pid, signal.SIGKILL)  # in epoch 2: epoch 1 is backed up, the run is not finished
        killed.wait(timeout=60)
    finally:
        if killed.poll() is None:
            killed.kill()
    assert killed.returncode == -signal.SIGKILL
    assert not output.exists()

    resumed = run_app(*RESUME_ARGS, f"--output={output}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming from the end of epoch 1" in resumed.stdout
    ours, theirs = _weights(output), _weights(reference)
    assert len(ours) == len(theirs)
    diff = max(float(np.max(np.abs(a - b))) if a.size else 0.0 for a, b in zip(ours, theirs))
    print(f"kill -9 resume: max abs weight difference vs uninterrupted run = {diff}")
    assert diff == 0.0
    assert json.loads((tmp_path / "resumed" / "model.keras.json").read_text())["result"] == \
        json.loads(reference.with_name("model.keras.json").read_text())["result"]
    # Another recipe in the same folder is refused (one line, status 2), not silently mixed.
    refused = run_app(*RESUME_ARGS, "--learning_rate=0.1", f"--output={output}")
    assert refused.returncode == 2 and "other settings (options)" in refused.stderr


@pytest.mark.slow
def test_mirrored_strategy_on_two_cpu_replicas(tmp_path):
    output = tmp_path / "model.keras"
    proc = run_app("--architecture=nb201_resnet", "--dataset=digits", "--epochs=1", "--steps_per_epoch=2",
                   "--batch_size=8", "--resolution=16", "--strategy=mirrored", "--cpu_replicas=2",
                   f"--output={output}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 replica(s)" in proc.stdout and output.exists()
    assert (tmp_path / "model_run" / "logs" / "train").is_dir()  # TensorBoard event files
    bad = run_app("--architecture=nb201_resnet", "--cpu_replicas=2", f"--output={output}")
    assert bad.returncode == 2 and "--cpu_replicas needs --strategy=mirrored" in bad.stderr
