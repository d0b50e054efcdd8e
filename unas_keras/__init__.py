"""unas_keras: UNAS neural architecture search for Keras 3 / TensorFlow.

Quick reference (see README.md):

    import unas_keras as uk
    arch = uk.presets.get("darts_v2")
    model = uk.build_model(arch, num_classes=10, input_shape=(32, 32, 3))
    result = uk.search(space="darts", dataset="digits")

`import unas_keras` is cheap: it imports only the pure-Python part (architectures, presets, the space
registry), which works without TensorFlow, Keras or keras-tuner installed. The names backed by
TensorFlow (`search`, `SearchModel`, `UNASTuner`, `build_model`, `data`, ...) import their module on
first access (PEP 562 module `__getattr__`); keras-tuner loads only with `UNASTuner`. The package's
Keras layers still register themselves with Keras for `keras.models.load_model` as soon as Keras is
imported, before or after this package (`unas_keras/_import_hook.py` explains how and why).
"""

import importlib as _importlib
import importlib.util as _importlib_util
import sys as _sys
import types as _types

from unas_keras import _import_hook
from unas_keras.space import Architecture, presets, sample_architecture
from unas_keras.space import registry as _space_registry  # noqa: F401  (uk.space.registry at once)

__version__ = "0.1.0"

# Name -> (module, attribute in it or None for the module itself), imported on first access.
_LAZY = {
    "SearchModel": ("unas_keras.search.search_model", "SearchModel"),
    "SearchResult": ("unas_keras.search.runner", "SearchResult"),
    "UNASTuner": ("unas_keras.tuner", "UNASTuner"),
    "build_model": ("unas_keras.networks", "build_model"),
    "build_supernet": ("unas_keras.networks", "build_supernet"),
    "data": ("unas_keras.data", None),
    "estimators": ("unas_keras.estimators", None),
    "latency": ("unas_keras.latency", None),
    "optimizers": ("unas_keras.optimizers", None),
    "profile": ("unas_keras.profile", None),
    # `uk.search` is the search function; the engine package stays importable as
    # `unas_keras.search.<module>`.
    "search": ("unas_keras.search.runner", "search"),
    "visualize": ("unas_keras.visualize", None),
}

__all__ = [
    "Architecture",
    "SearchModel",
    "SearchResult",
    "UNASTuner",
    "build_model",
    "build_supernet",
    "data",
    "estimators",
    "latency",
    "optimizers",
    "presets",
    "profile",
    "sample_architecture",
    "search",
    "visualize",
]


def __getattr__(name):
    """Imports a TensorFlow-backed name (or any submodule, e.g. `uk.training`) on first access."""
    if name in _LAZY:
        module_name, attribute = _LAZY[name]
    elif not name.startswith("_") and _importlib_util.find_spec(f"{__name__}.{name}") is not None:
        module_name, attribute = f"{__name__}.{name}", None
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        module = _importlib.import_module(module_name)
    except ImportError as err:
        missing = (err.name or "").split(".")[0]
        if not missing or missing == __name__:
            raise
        raise ImportError(f"unas_keras.{name} needs the package {missing!r}, which cannot be imported "
                          f"({err}). Install the project's requirements (see README.md).",
                          name=err.name) from err
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


class _Package(_types.ModuleType):
    """The package's module type: keeps `unas_keras.search` the search function.

    Importing a submodule makes the import system bind the subpackage to its parent's attribute
    (`unas_keras.search = <package unas_keras.search>`) the first time it is loaded. The eager
    package of old bound the function after that; here the subpackage may be loaded at any time
    (`from unas_keras.search import distributed`), so that one binding is ignored.
    """

    def __setattr__(self, name, value):
        if name == "search" and isinstance(value, _types.ModuleType):
            return
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package

_import_hook.install()
