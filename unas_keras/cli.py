"""Shared plumbing of the command-line apps (absl flags).

* `run_app(main)`: runs an absl `main`, turning user mistakes (ValueError,
  FileNotFoundError, flag errors) into one line on stderr and exit status 2.
* `load_config(path)`: reads a JSON config file.
* `merged_options(flag_values, names, config)`: a flag given on the command
  line overrides the same key of the config, which overrides the flag default.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class UsageError(ValueError):
    """A user mistake an app reports in one line (exit status 2)."""


def fail(message):
    """Prints `error: message` on one line to stderr and exits with status 2."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    sys.exit(2)


# Config keys that document a file and are not settings.
DOCUMENTATION_KEYS = ("description", "notes", "paper")


def load_config(path):
    """Reads a config file into a dict: JSON, or YAML when the name ends in .yaml / .yml.

    Keys in `DOCUMENTATION_KEYS` and keys starting with "_" are documentation and are dropped.

    Raises:
        UsageError: if the file is missing, malformed, or not an object of settings.
    """
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as err:
        raise UsageError(f"cannot read config {path}: {err.strerror}") from None
    if path.endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError:
            raise UsageError(f"config {path}: YAML needs PyYAML; use a JSON config instead.") from None
        try:
            config = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise UsageError(f"config {path} is not valid YAML: {err}") from None
    else:
        try:
            config = json.loads(text)
        except json.JSONDecodeError as err:
            raise UsageError(f"config {path} is not valid JSON: {err}") from None
    if not isinstance(config, dict):
        raise UsageError(f"config {path} must hold an object of settings, got {type(config).__name__}.")
    return {k: v for k, v in config.items() if k not in DOCUMENTATION_KEYS and not str(k).startswith("_")}


def define_flag(name, kind, help, default=None, choices=None, flag_values=None):
    """Defines an absl flag of a plain type.

    Args:
        name: the flag's name.
        kind: `int`, `float`, `str` or `bool`.
        help: one line of help.
        default: the flag's default (None: not given).
        choices: allowed values of a string flag (an enum flag).
        flag_values: the absl `FlagValues` (default: `absl.flags.FLAGS`).
    """
    from absl import flags

    kwargs = {} if flag_values is None else {"flag_values": flag_values}
    if choices is not None:
        return flags.DEFINE_enum(name, default, list(choices), help, **kwargs)
    define = {int: flags.DEFINE_integer, float: flags.DEFINE_float, str: flags.DEFINE_string,
              bool: flags.DEFINE_boolean}[kind]
    return define(name, default, help, **kwargs)


def merged_options(flag_values, names, config):
    """Options from flags and a config, the command line winning.

    Args:
        flag_values: absl `FLAGS`.
        names: the flag names that may also appear in the config.
        config: the dict read from `--config`.

    Returns:
        dict name -> value: the flag's value if given on the command line, else the
        config's value if present, else the flag's default.

    Raises:
        UsageError: if the config has keys that are not known options.
    """
    unknown = sorted(set(config) - set(names))
    if unknown:
        raise UsageError(f"unknown config key(s) {unknown}; allowed: {sorted(names)}.")
    out = {}
    for name in names:
        flag = flag_values[name]
        if flag.present or name not in config:
            out[name] = flag.value
        else:
            out[name] = config[name]
    return out


def run_app(main):
    """Runs an absl app, mapping user errors to one line and exit status 2."""
    from absl import app, flags

    def guarded(argv):
        if len(argv) > 1:
            fail(f"unexpected positional arguments {argv[1:]}; use --flag=value.")
        try:
            return main(argv)
        except (UsageError, ValueError, FileNotFoundError, flags.Error) as err:
            fail(err)

    try:
        app.run(guarded, flags_parser=_one_line_flags_parser)
    except SystemExit:
        raise


def _one_line_flags_parser(argv):
    """absl's flag parsing, but an unknown/bad flag is one line and exit 2."""
    from absl import flags

    try:
        return flags.FLAGS(argv)
    except flags.Error as err:
        fail(err)
