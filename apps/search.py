"""Runs a UNAS architecture search from the command line.

    python apps/search.py --space=darts --dataset=digits --epochs=2 --output_dir=runs/demo
    python apps/search.py --config=configs/darts_cifar10.json --output_dir=runs/c10

A flag given on the command line overrides the same key of --config (a JSON file, or YAML when PyYAML is
installed). Rerunning the same command with the same --output_dir after an interruption resumes from the
last checkpoint. With TF_CONFIG in the environment the process runs as one worker of a
MultiWorkerMirroredStrategy (give every worker the same --output_dir on a shared file system; only the
chief writes results). --strategy=mirrored uses every local GPU, or the CPU split into --cpu_replicas
logical devices.

Bad input (unknown value, missing or malformed file) prints one line on stderr and exits with status 2.
"""

import importlib.util
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402

if importlib.util.find_spec("unas_keras") is None:  # running from a source checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLAGS = flags.FLAGS

flags.DEFINE_string("config", None, "JSON (or YAML) file of search settings; flags override its keys.")
flags.DEFINE_enum("space", None, ["darts", "proxyless", "nb201"], "Search space (default darts).")
flags.DEFINE_string("dataset", None, "'digits', a tensorflow-datasets name (cifar10, cifar100, imagenet), "
                    "or a folder of class sub-folders (default digits).")
flags.DEFINE_string("output_dir", None, "Results folder (default: a new folder under ./runs/).")
flags.DEFINE_string("estimator", None, "Gradient estimator: rebar (alias unas), reinforce, gumbel_softmax, "
                    "relax (default rebar).")
flags.DEFINE_enum("objective", None, ["gen_gap", "train", "val"], "Search objective (default gen_gap).")
flags.DEFINE_integer("epochs", None, "Total epochs, warm-up included.")
flags.DEFINE_integer("warmup_epochs", None, "Weight-only warm-up epochs.")
flags.DEFINE_integer("batch_size", None, "Global batch size.")
flags.DEFINE_integer("steps_per_epoch", None, "Cap on the steps of an epoch (quick runs).")
flags.DEFINE_float("target_latency_ms", None, "Latency target in ms; adds the latency term (latency from "
                   "--latency_table, else, in the proxyless space, a TFLite CPU lookup table).")
flags.DEFINE_string("latency_table", None, "CSV of measured whole-network latencies of your device, one row per "
                    "architecture (nb201: ArchitectureString column; any space: an 'architecture' JSON column).")
flags.DEFINE_string("latency_column", None, "Latency column (ms) of --latency_table, e.g. raspi4_ms.")
flags.DEFINE_integer("seed", None, "Random seed; the search is deterministic with a seed (default 0).")
flags.DEFINE_integer("init_channels", None, "DARTS space: initial channels C.")
flags.DEFINE_integer("num_cells", None, "DARTS space: number of cells.")
flags.DEFINE_string("ops", None, "DARTS space: op set (unas, unas_imagenet, darts) or comma-separated ops.")
flags.DEFINE_integer("resolution", None, "Input image side.")
flags.DEFINE_float("width_multiplier", None, "ProxylessNAS space: width multiplier.")
flags.DEFINE_enum("strategy", None, ["default", "mirrored", "multi_worker"],
                  "Distribution strategy (default: multi_worker when TF_CONFIG is set, else default).")
flags.DEFINE_integer("cpu_replicas", None, "With --strategy=mirrored and no GPU: split the CPU into N "
                     "logical devices.")
flags.DEFINE_string("data_dir", None, "tensorflow-datasets data directory (prepared datasets).")
flags.DEFINE_integer("checkpoint_every_steps", None, "Also checkpoint every N steps inside an epoch.")
flags.DEFINE_integer("verbose", 1, "0 silent, 1 Keras progress bar with ETA, 2 one line per epoch (log files).")

# Flags that map one to one onto keyword arguments of unas_keras.search().
_SEARCH_FLAGS = ("space", "dataset", "output_dir", "estimator", "objective", "epochs", "warmup_epochs",
                 "batch_size", "steps_per_epoch", "target_latency_ms", "seed", "init_channels", "num_cells",
                 "ops", "resolution", "width_multiplier", "checkpoint_every_steps", "data_dir")
# Flags (and config keys) that name the device latency table; they become search(latency=DeviceTable).
_LATENCY_FLAGS = ("latency_table", "latency_column")
# Extra keys a config file may hold (search() keyword arguments without a flag of their own).
_CONFIG_ONLY = ("image_channels", "temperature", "soften_eps", "sampling", "gen_gap_lambda", "pair_penalty",
                "weight_lr", "arch_lr", "latency_lambda", "latency_ramp_steps", "val_fraction", "augment",
                "channels", "cells_per_stage")
# Keys ignored in a config file (documentation).
_IGNORED = ("description", "notes", "paper")


class UsageError(Exception):
    """Bad input from the user: reported as one line, exit status 2."""


def _fail(message):
    text = " ".join(str(message).split())
    print(f"search.py: error: {text}", file=sys.stderr)
    sys.exit(2)


def load_config(path):
    """Reads a config file (JSON; YAML if PyYAML is installed and the name ends in .yaml / .yml)."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            text = f.read()
    except OSError as err:
        raise UsageError(f"cannot read --config {path}: {err.strerror}") from None
    if path.endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError:
            raise UsageError(f"--config {path}: YAML needs PyYAML; use a JSON config instead.") from None
        try:
            payload = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise UsageError(f"--config {path} is not valid YAML: {err}") from None
    else:
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as err:
            raise UsageError(f"--config {path} is not valid JSON: {err}") from None
    if not isinstance(payload, dict):
        raise UsageError(f"--config {path} must hold an object of settings, got {type(payload).__name__}.")
    allowed = _SEARCH_FLAGS + _LATENCY_FLAGS + _CONFIG_ONLY
    unknown = sorted(k for k in payload if k not in allowed + _IGNORED and not k.startswith("_"))
    if unknown:
        raise UsageError(f"--config {path}: unknown key(s) {unknown}; allowed: {sorted(allowed)}.")
    return {k: v for k, v in payload.items() if k not in _IGNORED and not k.startswith("_")}


def settings_from_flags(flag_values):
    """Merges --config and the flags given on the command line (flags win) into search() kwargs."""
    settings = load_config(flag_values.config) if flag_values.config else {}
    for name in _SEARCH_FLAGS + _LATENCY_FLAGS:
        if flag_values[name].present:
            settings[name] = flag_values[name].value
    if isinstance(settings.get("ops"), str) and "," in settings["ops"]:
        settings["ops"] = [op.strip() for op in settings["ops"].split(",") if op.strip()]
    return settings


def latency_from_settings(settings):
    """Replaces `latency_table` / `latency_column` in `settings` by `latency=DeviceTable` (in place)."""
    path, column = settings.pop("latency_table", None), settings.pop("latency_column", None)
    if path is None:
        if column is not None:
            raise UsageError("--latency_column needs --latency_table.")
        return settings
    from unas_keras.latency.device_table import DeviceTable

    settings["latency"] = DeviceTable.from_csv(path, space=settings.get("space", "darts"), column=column)
    return settings


def _parse_flags(argv):
    try:
        return FLAGS(argv)
    except flags.Error as err:
        _fail(err)


def main(argv):
    logging.set_verbosity(logging.INFO if FLAGS.verbose >= 2 else logging.WARNING)
    if len(argv) > 1:
        _fail(f"unexpected arguments {argv[1:]}; every setting is a --flag.")
    try:
        settings = settings_from_flags(FLAGS)
        strategy_name = FLAGS.strategy or ("multi_worker" if os.environ.get("TF_CONFIG") else "default")
        if FLAGS.cpu_replicas is not None and strategy_name != "mirrored":
            raise UsageError("--cpu_replicas needs --strategy=mirrored.")
        if FLAGS.verbose not in (0, 1, 2):
            raise UsageError(f"--verbose must be 0, 1 or 2, got {FLAGS.verbose}.")

        # Importing the package imports TensorFlow with its start-up notices hidden (TF_CPP_MIN_LOG_LEVEL
        # >= 2, set above).
        from unas_keras.search import distributed
        from unas_keras.search.runner import search

        # The strategy first: it configures devices / the cluster before anything else runs on TensorFlow.
        strategy = distributed.make_strategy(strategy_name, cpu_replicas=FLAGS.cpu_replicas)

        result = search(strategy=strategy, verbose=FLAGS.verbose, **latency_from_settings(settings))
    except (UsageError, ValueError) as err:
        _fail(err)
    if not FLAGS.verbose:
        print(os.path.abspath(result.output_dir))
    return 0


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
