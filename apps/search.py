"""Runs a UNAS architecture search from the command line.

    python apps/search.py --space=darts --dataset=digits --epochs=2 --output_dir=runs/demo
    python apps/search.py --config=configs/darts_cifar10.json --output_dir=runs/c10

A flag given on the command line overrides the same key of --config (a JSON file, or YAML when PyYAML is
installed); a config file may hold every setting of `unas_keras.config.SearchConfig` and the supernet
options of the spaces, the flags are the common ones (both derive from SearchConfig and the space
registry). Rerunning the same command with the same --output_dir after an interruption resumes from the
last checkpoint. With TF_CONFIG in the environment the process runs as one worker of a
MultiWorkerMirroredStrategy (give every worker the same --output_dir on a shared file system; only the
chief writes results). --strategy=mirrored uses every local GPU, or the CPU split into --cpu_replicas
logical devices.

Bad input (unknown value, missing or malformed file) prints one line on stderr and exits with status 2.
"""

import importlib.util
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402
from absl import logging  # noqa: E402

if importlib.util.find_spec("unas_keras") is None:  # running from a source checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from unas_keras import cli  # noqa: E402
from unas_keras.config import SearchConfig  # noqa: E402
from unas_keras.space import registry  # noqa: E402

FLAGS = flags.FLAGS


def _define_search_flags():
    """One flag per SearchConfig field marked `flag=True` and per scalar supernet option of a space."""
    names = []
    for field in SearchConfig.fields(flag=True):
        kind = SearchConfig.field_type(field.name)
        cli.define_flag(field.name, kind if kind is not object else str, field.metadata["help"],
                        choices=field.metadata["choices"])
        names.append(field.name)
    for space in registry.names():
        spec = registry.get(space)
        demo = spec.defaults("demo")["space_options"]
        for option in spec.supernet_options:
            kind = type(demo.get(option))
            if option in names or kind not in (int, float, str):
                continue  # a plan (e.g. a backbone) is a --config key only
            cli.define_flag(option, kind, spec.option_help.get(option, f"{space} space option."))
            names.append(option)
    return tuple(names)


flags.DEFINE_string("config", None, "JSON (or YAML) file of search settings; flags override its keys.")
_SEARCH_FLAGS = _define_search_flags()
flags.adopt_module_key_flags(cli)  # list them in this app's --help
flags.DEFINE_string("output_dir", None, "Results folder (default: a new folder under ./runs/).")
flags.DEFINE_string("latency_table", None, "CSV of measured whole-network latencies of your device, one row per "
                    "architecture (nb201: ArchitectureString column; any space: an 'architecture' JSON column).")
flags.DEFINE_string("latency_column", None, "Latency column (ms) of --latency_table, e.g. raspi4_ms.")
flags.DEFINE_enum("strategy", None, ["default", "mirrored", "multi_worker"],
                  "Distribution strategy (default: multi_worker when TF_CONFIG is set, else default).")
flags.DEFINE_integer("cpu_replicas", None, "With --strategy=mirrored and no GPU: split the CPU into N "
                     "logical devices.")
flags.DEFINE_integer("verbose", 1, "0 silent, 1 Keras progress bar with ETA, 2 one line per epoch (log files).")

# Flags (and config keys) that name the device latency table; they become search(latency=DeviceTable).
_LATENCY_FLAGS = ("latency_table", "latency_column")


def config_keys():
    """Every key a --config file may hold: the settings, the space options, output and latency table."""
    space_options = [o for space in registry.names() for o in registry.get(space).supernet_options]
    return tuple(dict.fromkeys(SearchConfig.option_names() + tuple(space_options) + ("output_dir",)
                               + _LATENCY_FLAGS))


def settings_from_flags(flag_values):
    """Merges --config and the flags given on the command line (flags win) into search() kwargs."""
    settings = cli.load_config(flag_values.config) if flag_values.config else {}
    unknown = sorted(set(settings) - set(config_keys()))
    if unknown:
        raise cli.UsageError(f"--config {flag_values.config}: unknown key(s) {unknown}; allowed: "
                             f"{sorted(config_keys())}.")
    for name in _SEARCH_FLAGS + ("output_dir",) + _LATENCY_FLAGS:
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
            raise cli.UsageError("--latency_column needs --latency_table.")
        return settings
    from unas_keras.latency.device_table import DeviceTable

    settings["latency"] = DeviceTable.from_csv(path, space=settings.get("space", SearchConfig.default("space")),
                                               column=column)
    return settings


def main(argv):
    del argv  # run_app refuses positional arguments
    logging.set_verbosity(logging.INFO if FLAGS.verbose >= 2 else logging.WARNING)
    settings = settings_from_flags(FLAGS)
    strategy_name = FLAGS.strategy or ("multi_worker" if os.environ.get("TF_CONFIG") else "default")
    if FLAGS.cpu_replicas is not None and strategy_name != "mirrored":
        raise cli.UsageError("--cpu_replicas needs --strategy=mirrored.")
    if FLAGS.verbose not in (0, 1, 2):
        raise cli.UsageError(f"--verbose must be 0, 1 or 2, got {FLAGS.verbose}.")

    from unas_keras.search import distributed
    from unas_keras.search.runner import search

    # The strategy first: it configures devices / the cluster before anything else runs on TensorFlow.
    strategy = distributed.make_strategy(strategy_name, cpu_replicas=FLAGS.cpu_replicas)
    result = search(strategy=strategy, verbose=FLAGS.verbose, **latency_from_settings(settings))
    if not FLAGS.verbose:
        print(os.path.abspath(result.output_dir))
    return 0


if __name__ == "__main__":
    cli.run_app(main)
