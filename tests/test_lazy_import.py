"""`import unas_keras` is cheap and lazy, and saved models still reload (subprocesses: a fresh interpreter
each, since this test process has TensorFlow imported already)."""

import os
import pathlib
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

import unas_keras as uk
from unas_keras import _import_hook

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _python(code, **env):
    environ = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    environ.pop("TF_CPP_MIN_LOG_LEVEL", None)  # a user's default environment (conftest sets it for pytest)
    environ.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environ,
                          timeout=600, cwd=str(ROOT))


def test_bare_import_loads_no_tensorflow_and_prints_nothing():
    out = _python(
        "import sys, unas_keras\n"
        "heavy = sorted(m for m in ('tensorflow', 'keras', 'keras_tuner') if m in sys.modules)\n"
        "print(heavy)\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    assert out.stderr == ""


@pytest.mark.parametrize("unimportable", [("tensorflow", "keras_tuner"), ("tensorflow", "keras", "keras_tuner")])
def test_pure_python_names_work_without_tensorflow(unimportable):
    blocked = "; ".join(f"sys.modules[{name!r}] = None" for name in unimportable)
    out = _python(
        f"import sys; {blocked}\n"
        "import unas_keras as uk\n"
        "arch = uk.presets.get('unas_cifar10')\n"
        "assert uk.Architecture.from_json(arch.to_json()) == arch\n"
        "assert 'mobilenet_v2' in uk.presets.names()\n"
        "sample = uk.sample_architecture('proxyless', seed=0)\n"
        "assert uk.Architecture.from_json(sample.to_json()) == sample and sample.space == 'proxyless'\n"
        "assert uk.space.registry.names() == ('darts', 'proxyless', 'nb201')\n"
        "assert uk.space.registry.get('nb201').name == 'nb201'\n"
        "assert 'SearchModel' in dir(uk) and 'search' in dir(uk)\n"
        "try:\n"
        "    uk.SearchModel\n"
        "except ImportError as err:\n"
        "    print('ImportError:', err)\n"
        "else:\n"
        "    print('no error')\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ImportError: unas_keras.SearchModel needs the package"), out.stdout
    assert re.search(r"needs the package '(tensorflow|keras)'", out.stdout), out.stdout


def test_all_names_resolve_and_dir_lists_them():
    for name in uk.__all__:
        assert getattr(uk, name) is not None, name
    assert set(uk.__all__) <= set(dir(uk))
    assert callable(uk.search) and uk.search.__module__ == "unas_keras.search.runner"
    assert uk.SearchModel.__name__ == "SearchModel" and uk.UNASTuner.__name__ == "UNASTuner"
    assert uk.training.__name__ == "unas_keras.training"  # any submodule, as before
    with pytest.raises(AttributeError):
        uk.no_such_name  # noqa: B018


def test_keras_object_modules_list_every_registering_module():
    registering = set()
    for path in (ROOT / "unas_keras").rglob("*.py"):
        if "register_keras_serializable" in path.read_text(encoding="utf-8"):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            registering.add(module.removesuffix(".__init__"))
    assert registering - {"unas_keras._import_hook"} == set(_import_hook.KERAS_OBJECT_MODULES)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A tiny derived DARTS network (cells with DropPath, FusedBatchNorm...) saved as .keras."""
    keras.utils.set_random_seed(0)
    arch = uk.presets.get("darts_v2")
    model = uk.build_model(arch, num_classes=3, input_shape=(16, 16, 3), init_channels=4, num_cells=2,
                           drop_path_rate=0.1)
    folder = tmp_path_factory.mktemp("saved")
    images = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype("float32")
    np.save(folder / "images.npy", images)
    np.save(folder / "expected.npy", keras.ops.convert_to_numpy(model(images, training=False)))
    model.save(folder / "tiny.keras")
    return folder


_LOAD = (
    "import numpy as np\n"
    "model = keras.models.load_model({folder!r} + '/tiny.keras')\n"
    "out = keras.ops.convert_to_numpy(model(np.load({folder!r} + '/images.npy'), training=False))\n"
    "np.testing.assert_allclose(out, np.load({folder!r} + '/expected.npy'), rtol=1e-5, atol=1e-6)\n"
    "print('reloaded', type(model).__name__)\n"
)


@pytest.mark.slow
@pytest.mark.parametrize("order", ["unas_keras first", "keras first", "tensorflow first"])
def test_saved_model_reloads_after_import_in_either_order(saved_model, order):
    first = {"unas_keras first": "import unas_keras as uk\nimport keras\n",
             "keras first": "import keras\nimport unas_keras as uk\n",
             "tensorflow first": "import unas_keras as uk\nimport tensorflow\nimport keras\n"}[order]
    out = _python(first + _LOAD.format(folder=str(saved_model)) + (
        # Loading `unas_keras.search` (the engine package) leaves `uk.search` the search function.
        "import unas_keras.search.distribution\n"
        "from unas_keras.search import runner\n"
        "assert uk.search is runner.search, uk.search\n"), TF_CPP_MIN_LOG_LEVEL="3")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("reloaded")


@pytest.mark.slow
def test_reload_needs_the_registration(saved_model):
    # The control of the test above: without `import unas_keras` Keras cannot find our layers.
    out = _python("import keras\n" + _LOAD.format(folder=str(saved_model)), TF_CPP_MIN_LOG_LEVEL="3")
    assert out.returncode != 0
    assert "unas_keras>" in out.stderr


@pytest.mark.slow
def test_tensorflow_import_after_the_package_is_quiet_and_tuner_loads_keras_tuner_only_when_asked():
    out = _python(
        "import sys\n"
        "import unas_keras as uk\n"
        "import tensorflow as tf\n"
        "uk.search, uk.SearchModel, uk.build_model, uk.data, uk.latency\n"
        "print(sorted(m for m in ('keras', 'keras_tuner') if m in sys.modules))\n"
        "uk.UNASTuner\n"
        "print('keras_tuner' in sys.modules)\n", TF_CPP_MIN_LOG_LEVEL="2")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["['keras']", "True"]
    assert out.stderr == ""
