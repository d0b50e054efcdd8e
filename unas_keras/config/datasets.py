"""The one classifier of the `dataset` argument: what kind of data set a value names.

`classify(dataset)` decides, by one rule used everywhere (the search configuration, run.json, the data
loaders, the tuner), whether a value is the embedded set, a tensorflow-datasets name, a folder of images
or (x, y) arrays; and gives its canonical description and data profile. Pure Python apart from asking
tensorflow-datasets whether a bare word that is also a local folder is one of its names.

The rule for strings: an embedded name (``digits``) is the embedded set; a path that starts with ``/``,
``.`` or ``~`` is a folder; any other word is a tensorflow-datasets name (aliases resolved: ``imagenet`` ->
``imagenet2012``; ``name/config`` and ``name:version`` allowed), unless it is not a registered name and a
folder of that name exists, or it holds a path separator and its first part is not a registered name
(write ``./cifar10`` for a local folder that shares a tensorflow-datasets name).
"""

import dataclasses
import hashlib
import os
from typing import Any, Optional

# Data sets that ship with the library (no download).
EMBEDDED = ("digits",)
# Alternative spellings of tensorflow-datasets names.
ALIASES = {"imagenet": "imagenet2012"}
# Data profiles: the default search settings (see `unas_keras.config.search_config`).
PROFILES = ("demo", "cifar", "imagenet", "generic")
_PROFILE_OF = {"digits": "demo", "cifar10": "cifar", "cifar100": "cifar", "imagenet2012": "imagenet"}
KINDS = ("embedded", "tfds", "folder", "arrays")

ALLOWED = ("'digits' (embedded), a tensorflow-datasets name such as 'cifar10', 'cifar100', 'imagenet2012' "
           "(alias 'imagenet'), a folder with one sub-folder of images per class, or (x, y) / "
           "(x, y, num_classes) arrays")


@dataclasses.dataclass(frozen=True)
class DatasetRef:
    """A classified `dataset` argument.

    Attributes:
        kind: "embedded", "tfds", "folder" or "arrays".
        name: the canonical name (embedded / tfds), the absolute folder path, or None for arrays.
        description: JSON-serialisable identity (what run.json records): the canonical name, or
            ``{"folder": path}``, or ``{"arrays": {shapes, dtypes, sha256[, num_classes]}}``.
        profile: the data profile ("demo", "cifar", "imagenet", "generic").
        value: the argument itself (arrays are kept as given).
    """

    kind: str
    name: Optional[str]
    description: Any
    profile: str
    value: Any = dataclasses.field(default=None, compare=False, repr=False)


def canonical_name(name):
    """The canonical spelling of a data set name (lower case, aliases resolved)."""
    key = name.strip().lower()
    return ALIASES.get(key, key)


def _is_explicit_path(text):
    return text.startswith(("/", ".", "~"))


def _has_separator(text):
    return os.sep in text or bool(os.altsep and os.altsep in text)


def _is_tfds_name(name):
    import tensorflow_datasets as tfds  # only asked for a bare word that is also a local folder

    return name.split(":")[0].split("/")[0] in set(tfds.list_builders(with_community_datasets=False))


def _folder(path):
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    if not os.path.isdir(path):
        raise ValueError(f"dataset folder {path!r} does not exist (or is not a directory); expected {ALLOWED}.")
    return DatasetRef("folder", path, {"folder": path}, "generic", path)


def _arrays(dataset):
    import numpy as np

    x, y = np.asarray(dataset[0]), np.asarray(dataset[1])
    if x.ndim not in (3, 4):
        raise ValueError(f"dataset arrays: x must be NHW or NHWC images, got shape {x.shape}.")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"dataset arrays: y must be a vector of {x.shape[0]} labels, got shape {y.shape}.")
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(x).tobytes())
    digest.update(np.ascontiguousarray(y).tobytes())
    arrays = {"x_shape": list(x.shape), "x_dtype": str(x.dtype), "y_dtype": str(y.dtype),
              "sha256": digest.hexdigest()}
    if len(dataset) == 3:
        arrays["num_classes"] = int(dataset[2])
    return DatasetRef("arrays", None, {"arrays": arrays}, "generic", dataset)


def classify(dataset, is_tfds_name=None):
    """Classifies a `dataset` argument (see the module docstring for the rule).

    Args:
        dataset: a name, a folder path (str or os.PathLike), or (x, y) / (x, y, num_classes) arrays.
        is_tfds_name: `name -> bool`, whether a bare word is a registered tensorflow-datasets name
            (default: asks tensorflow-datasets; only called for a bare word that is also a local folder).

    Returns:
        A `DatasetRef`.

    Raises:
        ValueError: an empty name, a missing folder, malformed arrays or another type; the message says
            what is allowed.
    """
    if isinstance(dataset, os.PathLike):
        return _folder(dataset)
    if isinstance(dataset, (tuple, list)):
        if len(dataset) not in (2, 3):
            raise ValueError(f"array datasets are (x, y) or (x, y, num_classes); got a sequence of length "
                             f"{len(dataset)}.")
        return _arrays(dataset)
    if not isinstance(dataset, str):
        raise ValueError(f"dataset must be a name, a folder path or arrays: {ALLOWED}; got "
                         f"{type(dataset).__name__}.")
    if not dataset.strip():
        raise ValueError(f"dataset must not be empty: give {ALLOWED}.")
    name = canonical_name(dataset)
    if name in EMBEDDED:
        return DatasetRef("embedded", name, name, _PROFILE_OF.get(name, "generic"), name)
    text = dataset.strip()
    if _is_explicit_path(text):
        return _folder(text)
    if (os.path.isdir(text) or _has_separator(text)) and not (is_tfds_name or _is_tfds_name)(name):
        return _folder(text)  # raises "does not exist" for a missing one
    return DatasetRef("tfds", name, name, _PROFILE_OF.get(name, "generic"), name)
