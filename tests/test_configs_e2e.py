"""Every file in configs/ runs the whole path at a tiny size: search -> architecture -> train -> export -> verify.

tensorflow-datasets sets are mocked (tests/_mock_tfds_app.py), so CIFAR and ImageNet configs run offline.
Flags override the configs' sizes (few cells and channels, small images, one or two steps per epoch); every
other setting (estimator, objective, sampling, softening, latency target, auxiliary head, drop-path, cutout,
label smoothing, warm-up, the recipe) is the config's own.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs")
LAUNCHER = os.path.join(ROOT, "tests", "_mock_tfds_app.py")
MOCK_EXAMPLES = 48

# One search step (no warm-up epoch: tracing the supernet's step is most of a tiny run's time; the
# warm-up / search switch is covered by tests/test_search_runner.py).
SEARCH_TINY = ["--epochs=1", "--warmup_epochs=0", "--steps_per_epoch=1", "--batch_size=4", "--verbose=0"]
TRAIN_TINY = ["--epochs=1", "--steps_per_epoch=2", "--batch_size=4"]
DARTS_TINY = ["--init_channels=4", "--num_cells=3"]
# The DARTS configs search over 3 of their ops (all three are in both op sets) to halve the supernet's
# tracing time, most of a tiny run; every op of both sets is covered by the layer and supernet tests.
FEW_OPS = ["--ops=skip_connect,sep_conv_3x3,max_pool_3x3"]

# search config, its tiny overrides, train config (None: apps/train.py defaults), its tiny overrides.
PIPELINES = {
    "digits_demo": ("digits_demo.json", DARTS_TINY + FEW_OPS + ["--resolution=16"],
                    None, DARTS_TINY + ["--dataset=digits", "--resolution=16"]),
    "cifar10": ("darts_cifar10.json", DARTS_TINY + FEW_OPS + ["--resolution=16"],
                "train_cifar10.json", DARTS_TINY + ["--resolution=32", "--cutout=8"]),
    "cifar100": ("darts_cifar100.json", DARTS_TINY + FEW_OPS + ["--resolution=16"],
                 "train_cifar100.json", DARTS_TINY + ["--resolution=32", "--cutout=8"]),
    "imagenet_darts": ("darts_imagenet.json", DARTS_TINY + FEW_OPS + ["--resolution=16"],
                       "train_imagenet.json", DARTS_TINY + ["--resolution=224"]),  # aux head: 7 px
    "imagenet_proxyless": ("proxyless_imagenet_latency.json", ["--width_multiplier=0.25", "--resolution=32"],
                           "train_proxyless_imagenet.json", ["--width_multiplier=0.25", "--resolution=32"]),
}


def _env():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    return env


def _app(name, *args):
    proc = subprocess.run([sys.executable, LAUNCHER, str(MOCK_EXAMPLES), os.path.join(ROOT, "apps", name),
                           *args], env=_env(), capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, f"{name} {' '.join(args)}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_every_config_is_in_a_pipeline():
    used = set()
    for search_config, _, train_config, _ in PIPELINES.values():
        used.update(c for c in (search_config, train_config) if c)
    assert used == set(os.listdir(CONFIGS)), "add the new config to PIPELINES"


@pytest.mark.slow
@pytest.mark.timeout(2400)  # a few minutes each on 2 CPU cores, most of it tracing the supernet once
@pytest.mark.parametrize("pipeline", list(PIPELINES))
def test_config_runs_end_to_end(pipeline, tmp_path):
    search_config, search_tiny, train_config, train_tiny = PIPELINES[pipeline]
    search_dir = tmp_path / "search"
    _app("search.py", f"--config={os.path.join(CONFIGS, search_config)}", f"--output_dir={search_dir}",
         *SEARCH_TINY, *search_tiny)
    architecture = search_dir / "architecture.json"
    run = json.loads((search_dir / "run.json").read_text())
    assert architecture.exists() and run["status"] == "finished"

    model = tmp_path / "model.keras"
    train_args = [f"--architecture={architecture}", f"--output={model}", *TRAIN_TINY, *train_tiny]
    if train_config:
        train_args.insert(0, f"--config={os.path.join(CONFIGS, train_config)}")
    trained = _app("train.py", *train_args)
    assert "validation accuracy" in trained.stdout
    metadata = json.loads((tmp_path / "model.keras.json").read_text())
    assert metadata["dataset"] == run["config"]["dataset"]
    if train_config and json.loads(open(os.path.join(CONFIGS, train_config)).read()).get("auxiliary"):
        assert metadata["training_only_outputs"] == [1]  # trained with the auxiliary head

    tflite_path = tmp_path / "model.tflite"
    exported = _app("export_tflite.py", f"--model={model}", f"--output={tflite_path}", "--quantize=int8",
                    "--verify", "--num_calibration=8", "--num_verify=4")
    assert "verify OK" in exported.stdout

    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(tflite_path))
    outputs = interpreter.get_output_details()
    assert len(outputs) == 1 and list(outputs[0]["shape"]) == [1, metadata["num_classes"]]
    assert list(interpreter.get_input_details()[0]["shape"]) == [1] + metadata["input_shape"]
    assert np.dtype(interpreter.get_input_details()[0]["dtype"]) == np.float32
