"""`SearchConfig`: every setting of a search, each written once (name, type, default, check, help).

`SearchConfig.resolve(space=..., dataset=..., **options)` turns the arguments of `unas_keras.search()` into
one frozen, validated value in which every setting is explicit; `to_dict()` is what `run.json` records,
what a resumed run is compared against, and the only thing the runner reads its settings from. The
signature and docstring of `search()`, the flags and `--config` keys of apps/search.py, the tuner's
hyper-parameter names and `SearchModel`'s defaults all derive from the fields below; adding an option
means one field here plus its use.

Defaults come in three layers: the field's default (the paper's setting, shared by every data set), the
data profile's (`PROFILE_DEFAULTS`: short runs get higher learning rates), and the space's per-profile
settings (`SpaceSpec.profile_defaults`: resolution, batch size, epochs, sampling, supernet options). The
profiles (see `unas_keras.config.datasets`):

* ``"demo"``: the embedded ``digits`` set: a search that finishes in a few minutes on 2 CPU cores.
* ``"cifar"``: ``cifar10`` / ``cifar100``: the paper's CIFAR settings (docs/ALGORITHM.md).
* ``"imagenet"``: ``imagenet2012`` (alias ``imagenet``): the paper's ImageNet settings.
* ``"generic"``: any other tensorflow-datasets name, a folder of images, or arrays.

Optimisers (the paper's, with the demo and generic profiles raising the two initial learning rates):
weights Adam lr 3e-4, weight decay 3e-4, cosine to 1e-4; architecture logits Adam lr 1e-3, weight decay
1e-6, cosine to 3e-4; both learning rates (and their floors) scaled by global batch / 64. Weight decay is
the release's: coupled L2 added to the gradient after the global-norm clip (`weight_clipnorm`), before
Adam's moments (`unas_keras.optimizers.Adam`).
"""

import dataclasses
import os
import typing
from typing import Any, Optional, Union

from unas_keras import _validate
from unas_keras.config import datasets as datasets_lib
from unas_keras.space import registry

OBJECTIVES = ("gen_gap", "train", "val")
SAMPLINGS = ("per_example", "per_minibatch")

# The latency weight reaches its final value after this fraction of the run's architecture steps. The
# release ramps over 30,000 steps whatever the run's length; its ImageNet search (15 search epochs of
# ~6,000 steps at batch 192 on 90% of ImageNet) has ~90,000 architecture steps, a third of which is that
# ramp. A fixed 30,000 would leave a run of a few hundred steps with lambda ~1e-3 of its final value
# (the target never binds); a fraction keeps the release's shape at every run length.
LATENCY_RAMP_FRACTION = 1.0 / 3.0
# The release's fixed ramp (SearchModel's default when used without `search()`).
RELEASE_LATENCY_RAMP_STEPS = 30000

# The demo and generic profiles run a few hundred iterations instead of the paper's tens of thousands,
# so their learning rates are 20x (weights) and 60x (logits) the paper's. The demo's logits go 200x: its
# 140 architecture steps at 60x left the distribution close to uniform (DARTS demo: entropy 50.3 -> 48.0
# nats); at 200x it decides (50.3 -> 31.1, two of eight normal-cell ops parameter-free) in the same run.
_SHORT_RUN_LRS = dict(weight_lr=6e-3, arch_lr=6e-2)
PROFILE_DEFAULTS = {"demo": dict(_SHORT_RUN_LRS, arch_lr=2e-1), "cifar": {}, "imagenet": {},
                    "generic": _SHORT_RUN_LRS}


# ------------------------------------------------------------------ checks
def _positive_int(minimum):
    return lambda value, name: _validate.check_int(value, name, minimum)


def _optional_int(minimum):
    return lambda value, name: _validate.check_int(value, name, minimum, allow_none=True)


def _number(value, name):
    return _validate.check_float(value, name, 0.0)


def _positive_number(value, name):
    return _validate.check_float(value, name, 0.0, strict=True)


def _optional_number(value, name):
    return _validate.check_float(value, name, 0.0, allow_none=True)


def _optional_positive_number(value, name):
    return _validate.check_float(value, name, 0.0, strict=True, allow_none=True)


def _choice(allowed):
    return lambda value, name: _validate.check_choice(value, name, allowed)


def _estimator(value, name):
    from unas_keras.estimators import registry as estimators  # the estimators' own list of names

    if not isinstance(value, str) or value.lower() not in estimators.names():
        raise ValueError(f"Unknown estimator {value!r}; expected one of {estimators.names()}.")
    return value.lower()


def _image_channels(value, name):
    value = _validate.check_int(value, name, 1)
    if value not in (1, 3):
        raise ValueError(f"image_channels must be 1 or 3, got {value!r}.")
    return value


def _val_fraction(value, name):
    if value is None:
        return None
    value = _validate.check_float(value, name, 0.0, strict=True)
    if value >= 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {value!r}.")
    return value


def _augment(value, name):
    if value is not None and not isinstance(value, (bool, str)):
        raise ValueError(f"augment must be None, a bool or a policy name, got {value!r}.")
    return value


def _optional_str(value, name):
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise ValueError(f"{name} must be a path, got {value!r}.")
    return None if value is None else os.fspath(value)


def option(default, help, check=None, *, choices=None, flag=False, tunable=False, compared=True, profile=False,
           derived=False):
    """A `SearchConfig` field with its metadata.

    Args:
        default: the default (for `profile=True` fields, None: the profile's value).
        help: one line (the docstring of `search()`, the command-line flag).
        check: `(value, name) -> value`: validates and normalises a value (raises ValueError).
        choices: the allowed values of a string option (then `check` defaults to a choice check).
        flag: whether apps/search.py has a `--name` flag for it (every field is a `--config` key).
        tunable: whether `UNASTuner` may tune it as a hyper-parameter.
        compared: whether a resumed run must repeat it (False: it does not change the results).
        profile: whether the data profile / space sets its default.
        derived: set by `resolve`, not by the caller (e.g. the data profile).
    """
    if choices is not None and check is None:
        check = _choice(choices)
    return dataclasses.field(default=default, metadata=dict(
        help=help, check=check, choices=choices, flag=flag, tunable=tunable, compared=compared, profile=profile,
        derived=derived))


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """The effective, validated configuration of a search (see the module docstring).

    Build it with `SearchConfig.resolve(...)`; every attribute is explicit there. Its fields (and their
    help) are listed by `SearchConfig.fields()`.
    """

    # What to search, on what.
    space: str = option("darts", "Search space: " + ", ".join(registry.names()) + ".",
                        choices=registry.names(), flag=True)
    dataset: Any = option("digits", "'digits' (ships offline), a tensorflow-datasets name (cifar10, cifar100, "
                          "imagenet2012; imagenet is an alias), a folder of class sub-folders of images, or "
                          "(x, y) arrays.", flag=True)
    estimator: str = option("rebar", "Gradient estimator: rebar (alias unas), reinforce, gumbel_softmax, relax.",
                            _estimator, flag=True, tunable=True)
    objective: str = option("gen_gap", "Search objective: gen_gap (train loss + lambda |val - train| per "
                            "example pair), train or val.", choices=OBJECTIVES, flag=True)
    # Length and batches (per data profile and space).
    epochs: int = option(None, "Total epochs, warm-up included.", _positive_int(1), flag=True, profile=True)
    warmup_epochs: int = option(None, "Leading epochs that train only the weights (architecture uniform).",
                                _positive_int(0), flag=True, profile=True, tunable=True)
    batch_size: int = option(None, "Global batch size (split across replicas); learning rates scale with "
                             "batch / lr_reference_batch.", _positive_int(1), flag=True, profile=True, tunable=True)
    steps_per_epoch: Optional[int] = option(None, "Cap on the steps of an epoch (quick runs).", _optional_int(1),
                                            flag=True)
    seed: Optional[int] = option(0, "Seed of the weights, the data order and the architecture noise; None: a "
                                 "random seed, recorded in run.json.", _optional_int(0), flag=True)
    # Input.
    resolution: int = option(None, "Input image side.", _positive_int(8), flag=True, profile=True)
    image_channels: int = option(None, "Image channels of the input, 1 or 3.", _image_channels, profile=True)
    val_fraction: Optional[float] = option(None, "Held-out share of the training data that feeds the val "
                                           "batches (None: the data set's default).", _val_fraction)
    augment: Union[bool, str, None] = option(None, "Augmentation of the search batches: a policy name or a "
                                             "bool (None: the data set's default).", _augment)
    # The architecture distribution and its estimator.
    sampling: str = option(None, "per_example (one architecture per example) or per_minibatch.",
                           choices=SAMPLINGS, tunable=True, profile=True)
    temperature: float = option(0.4, "Relaxation temperature tau.", _positive_number, tunable=True)
    soften_eps: float = option(None, "Logit softening phi <- log(softmax(phi) + eps); 0 disables it.", _number,
                               tunable=True, profile=True)
    gen_gap_lambda: float = option(0.5, "lambda of the generalization-gap objective.", _number, tunable=True)
    pair_penalty: Optional[float] = option(None, "Weight of the DARTS duplicate-pair penalty (None: 0.2 in the "
                                           "DARTS space, else 0).", _optional_number, tunable=True)
    # Optimisers.
    weight_lr: float = option(3e-4, "Initial learning rate of the weights (Adam, at lr_reference_batch).",
                              _positive_number, tunable=True, profile=True)
    weight_lr_min: Optional[float] = option(None, "Final (cosine) learning rate of the weights (None: "
                                            "weight_lr / 3).", _optional_number, tunable=True)
    weight_decay: float = option(3e-4, "Coupled L2 weight decay of the weights.", _number, tunable=True)
    weight_clipnorm: float = option(5.0, "Global-norm clip of the weight gradient; 0 disables it.", _number)
    arch_lr: float = option(1e-3, "Initial learning rate of the architecture logits (Adam, at "
                            "lr_reference_batch).", _positive_number, tunable=True, profile=True)
    arch_lr_min: Optional[float] = option(None, "Final (cosine) learning rate of the logits (None: 0.3 * "
                                          "arch_lr).", _optional_number, tunable=True)
    arch_weight_decay: float = option(1e-6, "Coupled L2 weight decay of the logits.", _number, tunable=True)
    lr_reference_batch: float = option(64, "Learning rates are scaled by batch_size / lr_reference_batch.",
                                       _positive_number)
    # Latency.
    target_latency_ms: Optional[float] = option(None, "Latency target (ms): adds latency_lambda * max(0, "
                                                "latency - target) per sample.", _optional_positive_number,
                                                flag=True)
    latency_lambda: float = option(0.1, "Weight of the latency hinge (per ms over the target).", _number,
                                   tunable=True)
    latency_ramp_steps: Optional[int] = option(None, "Architecture steps over which latency_lambda ramps up "
                                               "from 0 (None: a third of the run's architecture steps).",
                                               _optional_int(0), tunable=True)
    # Bookkeeping (does not change the results).
    checkpoint_every_steps: Optional[int] = option(None, "Also checkpoint every N steps inside an epoch.",
                                                   _optional_int(1), flag=True, compared=False)
    data_dir: Optional[str] = option(None, "tensorflow-datasets data directory (prepared data sets).",
                                     _optional_str, flag=True, compared=False)
    # Set by `resolve`.
    space_options: dict = option(None, "The supernet options of the space (see SpaceSpec).", derived=True)
    profile: str = option(None, "The data profile of `dataset`.", derived=True)
    latency: Optional[dict] = option(None, "Description of the latency source.", derived=True)

    # ------------------------------------------------------------ fields
    @classmethod
    def fields(cls, **metadata):
        """The `dataclasses.Field`s whose metadata match, e.g. `fields(flag=True)`, in order."""
        return tuple(f for f in dataclasses.fields(cls)
                     if all(f.metadata.get(k) == v for k, v in metadata.items()))

    @classmethod
    def option_names(cls):
        """The names a caller may set (every field but the derived ones)."""
        return tuple(f.name for f in cls.fields(derived=False))

    @classmethod
    def field_type(cls, name):
        """The plain type of a field (int, float, str, bool or object), for flags and tuner values."""
        hint = typing.get_type_hints(cls)[name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if typing.get_origin(hint) is Union and len(args) == 1:
            hint = args[0]
        return hint if hint in (int, float, str, bool) else object

    @classmethod
    def default(cls, name):
        """The field default of an option (not the profile's)."""
        return cls.__dataclass_fields__[name].default

    # ------------------------------------------------------------ resolve
    @classmethod
    def resolve(cls, space="darts", dataset="digits", seed=0, latency=None, **options):
        """The configuration of a search: defaults filled in, every value checked.

        Args:
            space: the search space name.
            dataset: see `unas_keras.search`.
            seed: the integer seed, or None for a random one (chosen by the run, recorded in run.json).
            latency: a `unas_keras.latency.DeviceTable` or `LatencyModel` (described, not stored), or None.
            **options: any of `option_names()` and the space's supernet options
                (`SpaceSpec.supernet_options`); None keeps the default.

        Returns:
            A `SearchConfig`.

        Raises:
            ValueError: an unknown name or option, or a value out of range; the message says what is
                allowed.
        """
        spec = registry.get(space)
        ref = datasets_lib.classify(dataset)
        allowed = set(cls.option_names()) - {"space", "dataset"}
        unknown = sorted(set(options) - allowed - set(spec.supernet_options))
        if unknown:
            raise ValueError(
                f"Unknown option(s) {unknown} for a {space!r} search; search options: {sorted(allowed)}; "
                f"{space} space options: {list(spec.supernet_options)}.")
        values = {f.name: f.default for f in cls.fields(derived=False)}
        values.update(PROFILE_DEFAULTS[ref.profile])
        space_defaults = spec.defaults(ref.profile)
        space_options = space_defaults.pop("space_options")
        values.update(space_defaults)
        _array_input_defaults(ref, options, values)
        for key, value in options.items():
            if value is None:
                continue
            if key in spec.supernet_options:
                space_options[key] = value
            else:
                values[key] = value
        values.update(space=space, dataset=ref.description, seed=seed)
        for f in cls.fields(derived=False):
            if f.metadata["check"] is not None:
                values[f.name] = f.metadata["check"](values[f.name], f.name)
        if values["warmup_epochs"] >= values["epochs"]:
            raise ValueError(
                f"warmup_epochs ({values['warmup_epochs']}) must be smaller than epochs ({values['epochs']}): "
                f"the architecture is only learned after the warm-up.")
        if values["weight_lr_min"] is None:
            values["weight_lr_min"] = float(f"{values['weight_lr'] / 3.0:.12g}")
        if values["arch_lr_min"] is None:
            values["arch_lr_min"] = float(f"{values['arch_lr'] * 0.3:.12g}")
        for rate in ("weight_lr", "arch_lr"):
            if values[f"{rate}_min"] > values[rate]:
                raise ValueError(f"{rate}_min ({values[f'{rate}_min']}) must not exceed {rate} ({values[rate]}).")
        latency_description = _describe_latency(latency, spec, values["target_latency_ms"])
        return cls(**values, space_options=spec.check_supernet_options(space_options), profile=ref.profile,
                   latency=latency_description)

    # ------------------------------------------------------------ views
    def to_dict(self):
        """The JSON form (what run.json records), keys sorted."""
        return dict(sorted(dataclasses.asdict(self).items()))

    @classmethod
    def from_dict(cls, payload):
        """The configuration of a run.json `config` (no checks: it was checked when it was written)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in payload.items() if k in names})

    def replace(self, **changes):
        """A copy with some fields changed (not re-checked)."""
        return dataclasses.replace(self, **changes)

    def supernet_options(self):
        """The space options as the supernet builder takes them."""
        return registry.get(self.space).builder_options(self.space_options)

    def scaled_learning_rates(self):
        """(weight_lr, weight_lr_min, arch_lr, arch_lr_min) scaled by batch_size / lr_reference_batch."""
        scale = self.batch_size / self.lr_reference_batch
        return (self.weight_lr * scale, self.weight_lr_min * scale, self.arch_lr * scale, self.arch_lr_min * scale)

    def latency_ramp(self, steps_per_epoch):
        """Architecture steps over which the latency weight ramps from 0 to `latency_lambda`.

        The configured `latency_ramp_steps` when given (0: no ramp), else `LATENCY_RAMP_FRACTION` of the
        run's architecture steps (`(epochs - warmup_epochs) * steps_per_epoch`), at least 1.
        """
        if self.latency_ramp_steps is not None:
            return int(self.latency_ramp_steps)
        arch_steps = (self.epochs - self.warmup_epochs) * int(steps_per_epoch)
        return max(1, int(round(arch_steps * LATENCY_RAMP_FRACTION)))


def _array_input_defaults(ref, options, values):
    """Arrays: the default resolution is their own side when square and small, channels their own."""
    if ref.kind != "arrays":
        return
    shape = ref.description["arrays"]["x_shape"]
    if options.get("resolution") is not None:
        return
    if shape[1] == shape[2] and shape[1] <= 64:
        values["resolution"] = int(shape[1])
    if options.get("image_channels") is None:
        values["image_channels"] = 1 if len(shape) == 3 or shape[3] == 1 else 3


def _describe_latency(latency, spec, target_latency_ms):
    """JSON description of a search's latency source (what run.json records), or None.

    Raises:
        ValueError: another object, a device table of another space, or a target without a source in a
            space that has no default one.
    """
    if latency is None:
        if target_latency_ms is None:
            return None
        if not spec.has_default_latency:
            defaults = [name for name in registry.names() if registry.get(name).has_default_latency]
            raise ValueError(
                f"target_latency_ms in the {spec.name!r} space needs measured latencies: pass latency= a "
                "unas_keras.latency.DeviceTable (or a LatencyModel built from one), or --latency_table=CSV "
                f"--latency_column=NAME. Only {defaults} have a default (a TFLite CPU lookup table timed on "
                "this machine).")
        return {"kind": "lookup_table", "device": "this CPU (LiteRT)"}
    from unas_keras.latency.device_table import DeviceTable

    table = latency if isinstance(latency, DeviceTable) else getattr(latency, "table", None)
    if isinstance(table, DeviceTable):
        if table.space != spec.name:
            raise ValueError(f"The latency table holds {table.space!r} architectures; the search is in the "
                             f"{spec.name!r} space.")
        out = {"kind": "device_table", "path": os.path.abspath(table.path) if table.path else None,
               "column": table.column, "sha256": table.fingerprint()}
        return out if latency is table else dict(out, kind="latency_model")
    if not (callable(getattr(latency, "predict_ms", None)) and callable(getattr(latency, "surrogate_weights", None))):
        raise ValueError("latency must be a unas_keras.latency.DeviceTable or LatencyModel (predict_ms and "
                         f"surrogate_weights); got {type(latency).__name__}.")
    return {"kind": "latency_model", "type": type(latency).__name__}


def comparable(config):
    """The part of a configuration dict that must match for a rerun to resume (or be a no-op)."""
    ignored = {f.name for f in SearchConfig.fields(compared=False)}
    return {k: v for k, v in config.items() if k not in ignored}


def config_differences(old, new):
    """Lists `key: old -> new` for every compared setting that differs between two configuration dicts."""
    old, new = comparable(old), comparable(new)
    old.setdefault("latency", None)  # run.json written before the key existed: no latency source
    out = []
    for key in sorted(set(old) | set(new)):
        if old.get(key, "<missing>") != new.get(key, "<missing>"):
            out.append(f"{key}: {old.get(key, '<missing>')!r} -> {new.get(key, '<missing>')!r}")
    return out
