"""Small helpers for validating genotype payloads with precise messages."""


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
