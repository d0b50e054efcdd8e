"""The effective configuration of a search run: defaults per (space, dataset) and validation.

`resolve_config` turns the arguments of `unas_keras.search()` into one plain, JSON-serialisable dict in
which every setting is explicit. That dict is what `run.json` records, what a resumed run is compared
against, and the only thing the runner reads its settings from.

Defaults are chosen by a *profile* of the dataset:

* ``"demo"``: the embedded ``digits`` set. Small enough that the default search finishes in a few minutes
  on 2 CPU cores while still learning a distribution (see `DEFAULTS`; higher learning rates than the
  paper's, since the run is a few hundred iterations long).
* ``"cifar"``: ``cifar10`` / ``cifar100``, the paper's CIFAR settings (docs/ALGORITHM.md section 7.1).
* ``"imagenet"``: ``imagenet2012`` (alias ``imagenet``), the paper's ImageNet settings.
* ``"generic"``: any other tensorflow-datasets name, a folder of images, or arrays.

Optimisers (docs/ALGORITHM.md section 6; the demo and generic profiles raise the two initial learning rates): weights Adam lr 3e-4, weight decay 3e-4, cosine
to 1e-4; architecture logits Adam lr 1e-3, weight decay 1e-6, cosine to 3e-4; both learning rates (and
their floors) scaled by global batch / 64. Weight decay is the release's: coupled L2 added to the gradient
after the global-norm clip (`weight_clipnorm`), before Adam's moments (`unas_keras.optimizers.Adam`).
"""

import copy
import hashlib
import numbers
import os

import numpy as np

SPACES = ("darts", "proxyless", "nb201")
# Spaces whose latency target works without a latency source: per-block TFLite tables timed on this machine.
DEFAULT_LATENCY_SPACES = ("proxyless",)
OBJECTIVES = ("gen_gap", "train", "val")
SAMPLINGS = ("per_example", "per_minibatch")
PROFILES = ("demo", "cifar", "imagenet", "generic")

# Canonical names of tensorflow-datasets spellings that have their own profile.
_DATASET_ALIASES = {"imagenet": "imagenet2012"}
_PROFILE_OF = {"digits": "demo", "cifar10": "cifar", "cifar100": "cifar", "imagenet2012": "imagenet"}

# Hyper-parameters shared by every profile (docs/ALGORITHM.md section 6).
COMMON = {
    "estimator": "rebar",
    "objective": "gen_gap",
    "temperature": 0.4,
    "gen_gap_lambda": 0.5,
    "pair_penalty": None,          # None: the SearchModel default (0.2 for darts, 0 otherwise)
    "weight_lr": 3e-4,
    "weight_lr_min": None,         # None: weight_lr / 3 (the release: 3e-4 -> 1e-4)
    "weight_decay": 3e-4,
    "weight_clipnorm": 5.0,
    "arch_lr": 1e-3,
    "arch_lr_min": None,           # None: 0.3 * arch_lr (the release: 1e-3 -> 3e-4)
    "arch_weight_decay": 1e-6,
    "lr_reference_batch": 64,      # learning rates are scaled by batch_size / lr_reference_batch
    "latency_lambda": 0.1,         # per ms over the target
    "latency_ramp_steps": None,    # architecture steps over which latency_lambda ramps up from 0;
                                   # None: LATENCY_RAMP_FRACTION of the run's architecture steps
    "val_fraction": None,          # None: the data pipeline's default for the dataset
    "augment": None,               # None: the data pipeline's default for the dataset
}

# The latency weight reaches its final value after this fraction of the run's architecture steps. The
# release ramps over 30,000 steps whatever the run's length; its ImageNet search (15 search epochs of
# ~6,000 steps at batch 192 on 90% of ImageNet) has ~90,000 architecture steps, a third of which is that
# ramp. A fixed 30,000 would leave a run of a few hundred steps with lambda ~1e-3 of its final value
# (the target never binds); a fraction keeps the release's shape at every run length.
LATENCY_RAMP_FRACTION = 1.0 / 3.0

# Per-(space, profile) defaults. "space_options" go to the supernet builder.
#
# The demo and generic profiles run a few hundred iterations instead of the paper's tens of thousands, so
# their learning rates are 20x (weights) and 60x (logits) the paper's; everything else follows the paper.
_SHORT_RUN_LRS = dict(weight_lr=6e-3, arch_lr=6e-2)
DEFAULTS = {
    # digits: 8x8 grey images upsampled to 16x16 (two reductions -> 4x4). DARTS: 3 cells (normal,
    # reduce, reduce) with all 7 UNAS ops, C = 8. Tracing the supernet's search step dominates a short
    # run (~2-4 min on 2 CPU cores for 3 cells, about linear in cells x ops), hence 3 cells.
    ("darts", "demo"): dict(resolution=16, image_channels=1, batch_size=32, epochs=6, warmup_epochs=1,
                            sampling="per_example", soften_eps=0.0, **_SHORT_RUN_LRS,
                            space_options=dict(ops="unas", init_channels=8, num_cells=3)),
    ("proxyless", "demo"): dict(resolution=32, image_channels=1, batch_size=32, epochs=6, warmup_epochs=1,
                                sampling="per_minibatch", soften_eps=0.0, **_SHORT_RUN_LRS,
                                space_options=dict(width_multiplier=0.25)),
    ("nb201", "demo"): dict(resolution=16, image_channels=1, batch_size=32, epochs=6, warmup_epochs=1,
                            sampling="per_example", soften_eps=0.0, **_SHORT_RUN_LRS,
                            space_options=dict(channels=8, cells_per_stage=1)),
    # CIFAR-10/100 (release: 4 GPUs x 32, 15 warm-up + 85 search epochs, 7 ops, per-example samples).
    ("darts", "cifar"): dict(resolution=32, image_channels=3, batch_size=128, epochs=100, warmup_epochs=15,
                             sampling="per_example", soften_eps=0.0,
                             space_options=dict(ops="unas", init_channels=16, num_cells=8)),
    ("proxyless", "cifar"): dict(resolution=32, image_channels=3, batch_size=128, epochs=100, warmup_epochs=15,
                                 sampling="per_minibatch", soften_eps=0.0,
                                 space_options=dict(width_multiplier=1.0)),
    ("nb201", "cifar"): dict(resolution=32, image_channels=3, batch_size=128, epochs=100, warmup_epochs=15,
                             sampling="per_example", soften_eps=0.0,
                             space_options=dict(channels=16, cells_per_stage=5)),
    # ImageNet (release: 8 GPUs x 24; DARTS space 5 + 15 epochs, 14 cells, 5 ops; ProxylessNAS space
    # 20 + 15 epochs; one architecture per minibatch; logits softened with eps 0.08).
    ("darts", "imagenet"): dict(resolution=224, image_channels=3, batch_size=192, epochs=20, warmup_epochs=5,
                                sampling="per_minibatch", soften_eps=0.08,
                                space_options=dict(ops="unas_imagenet", init_channels=16, num_cells=14)),
    ("proxyless", "imagenet"): dict(resolution=224, image_channels=3, batch_size=192, epochs=35, warmup_epochs=20,
                                    sampling="per_minibatch", soften_eps=0.08,
                                    space_options=dict(width_multiplier=1.0)),
    ("nb201", "imagenet"): dict(resolution=64, image_channels=3, batch_size=192, epochs=35, warmup_epochs=20,
                                sampling="per_minibatch", soften_eps=0.08,
                                space_options=dict(channels=16, cells_per_stage=5)),
    # Anything else: small search settings at 32x32 (override what you need).
    ("darts", "generic"): dict(resolution=32, image_channels=3, batch_size=32, epochs=10, warmup_epochs=2,
                               sampling="per_example", soften_eps=0.0, **_SHORT_RUN_LRS,
                               space_options=dict(ops="unas", init_channels=8, num_cells=5)),
    ("proxyless", "generic"): dict(resolution=32, image_channels=3, batch_size=32, epochs=10, warmup_epochs=2,
                                   sampling="per_minibatch", soften_eps=0.0, **_SHORT_RUN_LRS,
                                   space_options=dict(width_multiplier=0.25)),
    ("nb201", "generic"): dict(resolution=32, image_channels=3, batch_size=32, epochs=10, warmup_epochs=2,
                               sampling="per_example", soften_eps=0.0, **_SHORT_RUN_LRS,
                               space_options=dict(channels=8, cells_per_stage=1)),
}

# Space options each supernet accepts (checked here so a typo fails before any data is loaded).
SPACE_OPTIONS = {
    "darts": ("ops", "init_channels", "num_cells"),
    "proxyless": ("width_multiplier", "backbone"),
    "nb201": ("channels", "cells_per_stage"),
}

# Settings that may be given to search() besides the contract's arguments (all optional).
SEARCH_OPTIONS = tuple(COMMON) + ("resolution", "image_channels", "sampling", "soften_eps")

# Keys whose value does not change the result of a run (ignored when a rerun is compared with run.json).
_NOT_COMPARED = ("checkpoint_every_steps", "data_dir")


def canonical_dataset_name(name):
    """Returns the canonical spelling of a dataset name ("imagenet" -> "imagenet2012")."""
    return _DATASET_ALIASES.get(name, name)


def dataset_profile(dataset):
    """Returns the profile ("demo", "cifar", "imagenet", "generic") of a dataset argument."""
    if isinstance(dataset, str) and not os.path.isdir(dataset):
        return _PROFILE_OF.get(canonical_dataset_name(dataset.lower()), "generic")
    return "generic"


def describe_dataset(dataset):
    """Returns a JSON-serialisable description of a dataset argument that identifies it.

    Names are canonicalised, folders made absolute, and arrays summarised by shape, dtype and a SHA-256
    digest of their bytes (so a resumed run can check it is given the same data).

    Raises:
        ValueError: if `dataset` is none of a name, a folder, or (x, y) / (x, y, num_classes) arrays.
    """
    if isinstance(dataset, os.PathLike):
        dataset = os.fspath(dataset)
    if isinstance(dataset, str):
        if not dataset:
            raise ValueError("dataset must not be empty: give 'digits', a tensorflow-datasets name, "
                             "a folder of class sub-folders, or (x, y) arrays.")
        if os.path.isdir(dataset):
            return {"folder": os.path.abspath(dataset)}
        if os.sep in dataset or dataset.startswith("."):
            raise ValueError(f"dataset folder {dataset!r} does not exist.")
        return canonical_dataset_name(dataset.lower())
    if isinstance(dataset, (tuple, list)) and len(dataset) in (2, 3):
        x, y = np.asarray(dataset[0]), np.asarray(dataset[1])
        if x.ndim not in (3, 4):
            raise ValueError(f"dataset arrays: x must be NHW or NHWC images, got shape {x.shape}.")
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise ValueError(f"dataset arrays: y must be a vector of {x.shape[0]} labels, got shape {y.shape}.")
        digest = hashlib.sha256()
        digest.update(np.ascontiguousarray(x).tobytes())
        digest.update(np.ascontiguousarray(y).tobytes())
        out = {"arrays": {"x_shape": list(x.shape), "x_dtype": str(x.dtype), "y_dtype": str(y.dtype),
                          "sha256": digest.hexdigest()}}
        if len(dataset) == 3:
            out["arrays"]["num_classes"] = int(dataset[2])
        return out
    raise ValueError(
        f"dataset must be 'digits', a tensorflow-datasets name, a folder of class sub-folders, or (x, y) "
        f"arrays; got {type(dataset).__name__}.")


def describe_latency(latency, space):
    """JSON description of a search's latency source (what run.json records), or None.

    Args:
        latency: None, a `unas_keras.latency.DeviceTable` of `space`, or a `LatencyModel` (anything with
            `predict_ms` and `surrogate_weights`).
        space: the search space.

    Raises:
        ValueError: on another object, or a device table of another space.
    """
    if latency is None:
        return None
    from unas_keras.latency.device_table import DeviceTable

    table = latency if isinstance(latency, DeviceTable) else getattr(latency, "table", None)
    if isinstance(latency, DeviceTable) or isinstance(table, DeviceTable):
        if table.space != space:
            raise ValueError(f"The latency table holds {table.space!r} architectures; the search is in the "
                             f"{space!r} space.")
        out = {"kind": "device_table", "path": os.path.abspath(table.path) if table.path else None,
               "column": table.column, "sha256": table.fingerprint()}
        return out if latency is table else dict(out, kind="latency_model")
    if not (callable(getattr(latency, "predict_ms", None)) and callable(getattr(latency, "surrogate_weights", None))):
        raise ValueError("latency must be a unas_keras.latency.DeviceTable or LatencyModel (predict_ms and "
                         f"surrogate_weights); got {type(latency).__name__}.")
    return {"kind": "latency_model", "type": type(latency).__name__}


def _check_int(value, name, minimum, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _check_float(value, name, minimum=0.0, strict=False, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) or (
            value <= minimum if strict else value < minimum):
        op = ">" if strict else ">="
        raise ValueError(f"{name} must be a number {op} {minimum}, got {value!r}.")
    return float(value)


def _check_choice(value, name, allowed):
    if value not in allowed:
        raise ValueError(f"Unknown {name} {value!r}; expected one of {list(allowed)}.")
    return value


def resolve_config(space="darts", dataset="digits", estimator=None, objective=None, epochs=None,
                   warmup_epochs=None, batch_size=None, seed=0, target_latency_ms=None,
                   steps_per_epoch=None, checkpoint_every_steps=None, data_dir=None, latency=None, **options):
    """Returns the effective, validated configuration of a search as a plain dict.

    Args:
        space: "darts", "proxyless" or "nb201".
        dataset: see `unas_keras.search`.
        estimator, objective, epochs, warmup_epochs, batch_size, seed, target_latency_ms,
            steps_per_epoch: see `unas_keras.search`; None picks the profile default.
        checkpoint_every_steps: also checkpoint every this many steps inside an epoch (None: only at
            epoch ends and every 10 minutes).
        data_dir: tensorflow-datasets data directory.
        latency: a `DeviceTable` or `LatencyModel` (see `describe_latency`), or None.
        **options: search options (`SEARCH_OPTIONS`, e.g. `resolution`, `temperature`, `soften_eps`)
            and space options (`SPACE_OPTIONS[space]`); None values pick the default.

    Returns:
        A dict with every setting explicit (space options under "space_options").

    Raises:
        ValueError: an unknown name or option, or a value out of range; the message says what is allowed.
    """
    if not isinstance(space, str) or space not in SPACES:
        raise ValueError(f"Unknown search space {space!r}; expected one of {list(SPACES)}.")
    dataset_desc = describe_dataset(dataset)
    profile = dataset_profile(dataset)
    base = copy.deepcopy(DEFAULTS[(space, profile)])
    cfg = dict(COMMON)
    cfg.update({k: v for k, v in base.items() if k != "space_options"})
    space_options = dict(base["space_options"])

    unknown = sorted(set(options) - set(SEARCH_OPTIONS) - set(SPACE_OPTIONS[space]))
    if unknown:
        raise ValueError(
            f"Unknown option(s) {unknown} for a {space!r} search; search options: {sorted(SEARCH_OPTIONS)}; "
            f"{space} space options: {list(SPACE_OPTIONS[space])}.")
    for key, value in options.items():
        if value is None:
            continue
        if key in SPACE_OPTIONS[space]:
            space_options[key] = value
        else:
            cfg[key] = value
    explicit = dict(estimator=estimator, objective=objective, epochs=epochs, warmup_epochs=warmup_epochs,
                    batch_size=batch_size)
    cfg.update({k: v for k, v in explicit.items() if v is not None})

    # Arrays: default resolution is their own side when square and small.
    if isinstance(dataset_desc, dict) and "arrays" in dataset_desc and options.get("resolution") is None:
        shape = dataset_desc["arrays"]["x_shape"]
        if shape[1] == shape[2] and shape[1] <= 64:
            cfg["resolution"] = int(shape[1])
        if options.get("image_channels") is None:
            cfg["image_channels"] = 1 if len(shape) == 3 or shape[3] == 1 else 3

    from unas_keras import estimators as _estimators

    if not isinstance(cfg["estimator"], str) or cfg["estimator"].lower() not in _estimators.names():
        raise ValueError(f"Unknown estimator {cfg['estimator']!r}; expected one of {_estimators.names()}.")
    cfg["estimator"] = cfg["estimator"].lower()
    _check_choice(cfg["objective"], "objective", OBJECTIVES)
    _check_choice(cfg["sampling"], "sampling", SAMPLINGS)
    cfg["epochs"] = _check_int(cfg["epochs"], "epochs", 1)
    cfg["warmup_epochs"] = _check_int(cfg["warmup_epochs"], "warmup_epochs", 0)
    if cfg["warmup_epochs"] >= cfg["epochs"]:
        raise ValueError(
            f"warmup_epochs ({cfg['warmup_epochs']}) must be smaller than epochs ({cfg['epochs']}): the "
            f"architecture is only learned after the warm-up.")
    cfg["batch_size"] = _check_int(cfg["batch_size"], "batch_size", 1)
    cfg["resolution"] = _check_int(cfg["resolution"], "resolution", 8)
    cfg["image_channels"] = _check_int(cfg["image_channels"], "image_channels", 1)
    if cfg["image_channels"] not in (1, 3):
        raise ValueError(f"image_channels must be 1 or 3, got {cfg['image_channels']!r}.")
    for key in ("temperature", "weight_lr", "arch_lr", "lr_reference_batch"):
        cfg[key] = _check_float(cfg[key], key, 0.0, strict=True)
    if cfg["weight_lr_min"] is None:
        cfg["weight_lr_min"] = float(f"{cfg['weight_lr'] / 3.0:.12g}")
    if cfg["arch_lr_min"] is None:
        cfg["arch_lr_min"] = float(f"{cfg['arch_lr'] * 0.3:.12g}")
    for key in ("weight_lr_min", "arch_lr_min", "weight_decay", "arch_weight_decay", "gen_gap_lambda",
                "latency_lambda", "weight_clipnorm"):
        cfg[key] = _check_float(cfg[key], key, 0.0)
    cfg["soften_eps"] = _check_float(cfg["soften_eps"], "soften_eps", 0.0)
    cfg["pair_penalty"] = _check_float(cfg["pair_penalty"], "pair_penalty", 0.0, allow_none=True)
    cfg["latency_ramp_steps"] = _check_int(cfg["latency_ramp_steps"], "latency_ramp_steps", 0, allow_none=True)
    if cfg["val_fraction"] is not None:
        cfg["val_fraction"] = _check_float(cfg["val_fraction"], "val_fraction", 0.0, strict=True)
        if cfg["val_fraction"] >= 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {cfg['val_fraction']!r}.")
    if cfg["augment"] is not None and not isinstance(cfg["augment"], (bool, str)):
        raise ValueError(f"augment must be None, a bool or a policy name, got {cfg['augment']!r}.")

    if seed is not None:
        seed = _check_int(seed, "seed", 0)
    target_latency_ms = _check_float(target_latency_ms, "target_latency_ms", 0.0, strict=True,
                                     allow_none=True)
    latency = describe_latency(latency, space)
    if target_latency_ms is not None and latency is None:
        if space not in DEFAULT_LATENCY_SPACES:
            raise ValueError(
                f"target_latency_ms in the {space!r} space needs measured latencies: pass latency= a "
                "unas_keras.latency.DeviceTable (or a LatencyModel built from one), or --latency_table=CSV "
                f"--latency_column=NAME. Only {list(DEFAULT_LATENCY_SPACES)} have a default (a TFLite CPU "
                "lookup table timed on this machine).")
        latency = {"kind": "lookup_table", "device": "this CPU (LiteRT)"}
    steps_per_epoch = _check_int(steps_per_epoch, "steps_per_epoch", 1, allow_none=True)
    checkpoint_every_steps = _check_int(checkpoint_every_steps, "checkpoint_every_steps", 1, allow_none=True)

    if space == "darts":
        space_options["init_channels"] = _check_int(space_options["init_channels"], "init_channels", 1)
        space_options["num_cells"] = _check_int(space_options["num_cells"], "num_cells", 3)
        from unas_keras.space import darts as _darts

        ops = space_options["ops"]
        _darts.resolve_ops(ops)  # raises ValueError listing the allowed names
        space_options["ops"] = ops if isinstance(ops, str) else list(ops)
    elif space == "proxyless":
        space_options["width_multiplier"] = _check_float(space_options["width_multiplier"],
                                                         "width_multiplier", 0.0, strict=True)
        if space_options.get("backbone") is not None:
            # An MBConvBackbone (or its dict): another depth / width plan than ProxylessNAS's 21 layers.
            from unas_keras.space.proxyless import MBConvBackbone

            backbone = space_options["backbone"]
            if not isinstance(backbone, MBConvBackbone):
                backbone = MBConvBackbone.from_dict(backbone)  # raises ValueError on a malformed plan
            space_options["backbone"] = backbone.to_dict()
    else:
        space_options["channels"] = _check_int(space_options["channels"], "channels", 1)
        space_options["cells_per_stage"] = _check_int(space_options["cells_per_stage"], "cells_per_stage", 1)

    cfg.update(space=space, dataset=dataset_desc, profile=profile, seed=seed,
               target_latency_ms=target_latency_ms, latency=latency, steps_per_epoch=steps_per_epoch,
               checkpoint_every_steps=checkpoint_every_steps, data_dir=data_dir,
               space_options=space_options)
    return dict(sorted(cfg.items()))


def supernet_options(config):
    """The space options of a configuration as `build_supernet` takes them (a backbone dict as an object)."""
    options = dict(config["space_options"])
    if options.get("backbone") is not None:
        from unas_keras.space.proxyless import MBConvBackbone

        options["backbone"] = MBConvBackbone.from_dict(options["backbone"])
    return options


def comparable(config):
    """The part of a configuration that must match for a rerun to resume (or be a no-op)."""
    return {k: v for k, v in config.items() if k not in _NOT_COMPARED}


def config_differences(old, new):
    """Lists `key: old -> new` for every compared setting that differs between two configurations."""
    old, new = comparable(old), comparable(new)
    old.setdefault("latency", None)  # run.json written before the key existed: no latency source
    out = []
    for key in sorted(set(old) | set(new)):
        if old.get(key, "<missing>") != new.get(key, "<missing>"):
            out.append(f"{key}: {old.get(key, '<missing>')!r} -> {new.get(key, '<missing>')!r}")
    return out


def scaled_learning_rates(config):
    """Returns (weight_lr, weight_lr_min, arch_lr, arch_lr_min) scaled by batch_size / lr_reference_batch."""
    scale = config["batch_size"] / config["lr_reference_batch"]
    return (config["weight_lr"] * scale, config["weight_lr_min"] * scale,
            config["arch_lr"] * scale, config["arch_lr_min"] * scale)


def latency_ramp_steps(config, steps_per_epoch):
    """Architecture steps over which the latency weight ramps from 0 to `latency_lambda`.

    The configured `latency_ramp_steps` when given (0: no ramp), else `LATENCY_RAMP_FRACTION` of the run's
    architecture steps (`(epochs - warmup_epochs) * steps_per_epoch`), at least 1.
    """
    if config["latency_ramp_steps"] is not None:
        return int(config["latency_ramp_steps"])
    arch_steps = (config["epochs"] - config["warmup_epochs"]) * int(steps_per_epoch)
    return max(1, int(round(arch_steps * LATENCY_RAMP_FRACTION)))
