"""The registry of search spaces: one `SpaceSpec` per space (see `spec.py`)."""

from unas_keras.space import darts, nb201, proxyless

_SPECS = {spec.name: spec for spec in (darts.SPEC, proxyless.SPEC, nb201.SPEC)}


def names():
    """The names of the search spaces, in a fixed order."""
    return tuple(_SPECS)


def get(space):
    """The `SpaceSpec` of a space name.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    if not isinstance(space, str) or space not in _SPECS:
        raise ValueError(f"Unknown search space {space!r}; expected one of {list(_SPECS)}.")
    return _SPECS[space]
