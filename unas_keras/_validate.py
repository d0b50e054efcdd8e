"""Checks of plain values with precise messages: genotype payloads (`require_*`) and settings (`check_*`).

The one home of validation helpers; pure Python.
"""

import math
import numbers


def require_int(value, where):
    """Returns `value` if it is an int (not a bool), else raises ValueError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where}: expected an integer, got {value!r}.")
    return value


def require_str(value, where):
    """Returns `value` if it is a str, else raises ValueError."""
    if not isinstance(value, str):
        raise ValueError(f"{where}: expected a string, got {value!r}.")
    return value


def require_list(value, where, length=None):
    """Returns `value` as a tuple if it is a list/tuple (of `length`), else raises."""
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{where}: expected a list, got {type(value).__name__}.")
    if length is not None and len(value) != length:
        raise ValueError(f"{where}: expected {length} entries, got {len(value)}.")
    return tuple(value)


def require_dict(value, where, required=(), optional=()):
    """Checks that `value` is a dict with exactly the allowed keys."""
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected an object, got {type(value).__name__}.")
    missing = [k for k in required if k not in value]
    if missing:
        raise ValueError(f"{where}: missing key(s) {missing}.")
    unknown = set(value) - set(required) - set(optional)
    if unknown:
        raise ValueError(
            f"{where}: unknown key(s) {sorted(map(str, unknown))}; allowed: "
            f"{sorted(set(required) | set(optional))}."
        )
    return value


def check_int(value, name, minimum, allow_none=False):
    """Returns `value` as an int if it is an integer >= `minimum` (None passes with `allow_none`).

    Raises:
        ValueError: naming `name`, the bound and the value given.
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def check_float(value, name, minimum=0.0, strict=False, allow_none=False):
    """Returns `value` as a float if it is a finite number >= `minimum` (> with `strict`).

    Raises:
        ValueError: naming `name`, the bound and the value given.
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or (
            value <= minimum if strict else value < minimum):
        op = ">" if strict else ">="
        raise ValueError(f"{name} must be a number {op} {minimum}, got {value!r}.")
    return float(value)


def check_choice(value, name, allowed):
    """Returns `value` if it is one of `allowed`, else raises ValueError listing them."""
    if value not in allowed:
        raise ValueError(f"Unknown {name} {value!r}; expected one of {list(allowed)}.")
    return value
