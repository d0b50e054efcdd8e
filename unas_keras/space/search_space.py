"""Look-up of the search spaces' decision descriptions by name."""

from unas_keras.space.darts import DartsSearchSpace
from unas_keras.space.nb201 import NB201SearchSpace
from unas_keras.space.proxyless import ProxylessSearchSpace

_SPACES = {"darts": DartsSearchSpace, "proxyless": ProxylessSearchSpace, "nb201": NB201SearchSpace}


def get(space, **options):
    """Returns the search-space object for `space` (`"darts"`, `"proxyless"`, `"nb201"`).

    Args:
        space: the space name.
        **options: constructor options (`ops=` for DARTS, `backbone=` for proxyless).
    """
    if space not in _SPACES:
        raise ValueError(f"Unknown search space {space!r}; expected one of {sorted(_SPACES)}.")
    return _SPACES[space](**options)
