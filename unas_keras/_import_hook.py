"""What `import unas_keras` arranges for the moment TensorFlow and Keras get imported.

`import unas_keras` does not import TensorFlow or Keras (see `unas_keras/__init__.py`), yet two things
used to happen as a side effect of that import and must keep happening:

* Keras finds our layers, networks and optimizers when it reloads a saved `.keras` file
  (`keras.models.load_model` after `import unas_keras`, a CONTRACT promise). Keras 3 looks classes up
  in its registry of serializable objects, and a class is registered when the module defining it runs
  (`@keras.saving.register_keras_serializable`); for packages other than Keras' own it never imports a
  module to find a class. So the modules in `KERAS_OBJECT_MODULES` must have run before `load_model`.
* TensorFlow's C++ start-up notices stay hidden when `TF_CPP_MIN_LOG_LEVEL >= 2`
  (`unas_keras._quiet_import`).

`install()` does both without importing TensorFlow: if Keras is already imported it registers our
objects at once (importing them costs little then); otherwise it puts a finder on `sys.meta_path`
that watches only `tensorflow` and `keras`. The finder lets the normal finders locate them and wraps
their loader: TensorFlow's module body runs inside `quiet_native_stderr()`, and once Keras and
TensorFlow have both finished importing (whichever came first: TensorFlow imports Keras and Keras
imports TensorFlow, so the first to finish is imported half-way) our Keras modules are imported and
the finder removes itself. Every later import is untouched.

Options measured (TensorFlow 2.21, Keras 3.15, this 2-core machine; issue 10 item 6):

* Eager, as before: `import unas_keras` imported TensorFlow, Keras and keras-tuner: 4.5 s wall
  (median of 5, idle machine; `-X importtime`: 3.6 s, 4,400 modules), and printed TensorFlow's
  start-up lines.
* Lazy with registration only when Keras is already imported: `import keras` first works, but
  `import unas_keras; import keras; keras.models.load_model(...)` fails: Keras cannot locate the
  classes named `unas_keras>...` (tests/test_lazy_import.py keeps that failure as its control).
* Lazy plus this hook (chosen): `import unas_keras` takes 0.05 s in-process (`-X importtime`:
  50 ms, 130 modules, none of them TensorFlow); `import keras` takes the same time with or without the
  hook (7-9 s on the loaded machine, noise larger than any difference), of which registering our
  modules is about 0.05 s; with Keras imported first, `import unas_keras` takes 0.11 s.
* Rejected without measuring: asking users for `custom_objects` or a submodule import (breaks the
  CONTRACT), wrapping `keras.models.load_model` (patches Keras' public function), and Keras itself
  (it imports a module to find a class only for its own packages: keras, keras_hub, keras_cv).
"""

import importlib
import importlib.abc
import sys
import warnings

from unas_keras._quiet_import import quiet_native_stderr

# Every module that defines a class with `@keras.saving.register_keras_serializable`
# (tests/test_lazy_import.py checks this list against the source tree).
KERAS_OBJECT_MODULES = (
    "unas_keras.layers.darts_cell",
    "unas_keras.layers.darts_ops",
    "unas_keras.layers.depthwise_conv",
    "unas_keras.layers.drop_path",
    "unas_keras.layers.fused_batch_norm",
    "unas_keras.layers.mbconv",
    "unas_keras.layers.mbconv_choice",
    "unas_keras.layers.nb201_cell",
    "unas_keras.layers.nb201_ops",
    "unas_keras.networks.darts",
    "unas_keras.networks.nb201",
    "unas_keras.networks.proxyless",
    "unas_keras.optimizers",
    "unas_keras.search.distribution",
    "unas_keras.search.search_model",
    "unas_keras.search.schedules",
)

_WATCHED = ("tensorflow", "keras")


def register_keras_objects():
    """Imports every module of `KERAS_OBJECT_MODULES` (needs Keras; idempotent)."""
    for name in KERAS_OBJECT_MODULES:
        importlib.import_module(name)


class _Loader(importlib.abc.Loader):
    """Runs a watched module through its real loader, then tells the finder."""

    def __init__(self, loader, finder):
        self._loader = loader
        self._finder = finder

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        # The module keeps its real loader (importlib.resources and pickling look at it).
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        self._finder.run(module, self._loader)


class _Finder(importlib.abc.MetaPathFinder):
    """Watches the imports of TensorFlow and Keras (see the module docstring)."""

    def __init__(self):
        self._loading = set()  # watched modules whose body is running (they import each other)
        self._registered = False

    def find_spec(self, fullname, path, target=None):
        if fullname not in _WATCHED:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _Loader(spec.loader, self)
        return spec

    def run(self, module, loader):
        self._loading.add(module.__name__)
        try:
            if module.__name__ == "tensorflow":
                with quiet_native_stderr():
                    loader.exec_module(module)
            else:
                loader.exec_module(module)
        finally:
            self._loading.discard(module.__name__)
        if not self._loading and _imported("keras"):
            self._finish()

    def _finish(self):
        # Without TensorFlow (another Keras backend) the finder stays to keep a later TensorFlow quiet.
        if _imported("tensorflow"):
            uninstall()
        if not self._registered:
            self._registered = True
            _register_or_warn()


def _imported(name):
    return sys.modules.get(name) is not None


def _register_or_warn():
    # A failure here must not break the user's own `import keras`; load_model will then name the
    # missing class, and this warning says why.
    try:
        register_keras_objects()
    except Exception as err:  # noqa: BLE001
        warnings.warn(f"unas_keras could not register its Keras layers ({type(err).__name__}: {err}); "
                      "keras.models.load_model will not find them.", RuntimeWarning, stacklevel=2)


def install():
    """Registers our Keras objects now if Keras is imported, else watches for its import."""
    if _imported("keras"):
        register_keras_objects()
        if _imported("tensorflow"):
            return
    if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


def uninstall():
    """Removes the finder (a no-op when it is not installed)."""
    for finder in [f for f in sys.meta_path if isinstance(f, _Finder)]:
        sys.meta_path.remove(finder)
