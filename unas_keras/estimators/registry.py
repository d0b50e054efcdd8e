"""Look-up of estimators by name."""

from unas_keras.estimators import base
from unas_keras.estimators.gumbel_softmax import GumbelSoftmax
from unas_keras.estimators.rebar import Rebar
from unas_keras.estimators.reinforce import Reinforce
from unas_keras.estimators.relax import Relax

_CLASSES = {
    "reinforce": Reinforce,
    "gumbel_softmax": GumbelSoftmax,
    "rebar": Rebar,
    "relax": Relax,
}
_ALIASES = {"unas": "rebar"}
_KWARGS = {
    "reinforce": ("baseline_decay",),
    "gumbel_softmax": (),
    "rebar": (),
    "relax": ("control_variate",),
}


def names():
    """All accepted estimator names (aliases included), in a fixed order."""
    return ["reinforce", "gumbel_softmax", "rebar", "unas", "relax"]


def get(name, temperature=0.4, **kwargs):
    """Creates an estimator by name.

    Args:
        name: one of `names()` ("unas" is an alias of "rebar"), or an
            `Estimator` instance, returned unchanged.
        temperature: relaxation temperature (> 0); unused by reinforce.
        **kwargs: estimator-specific options: `baseline_decay` (reinforce),
            `control_variate` (relax).

    Returns:
        An `Estimator`.

    Raises:
        ValueError: unknown name or an option the estimator does not take.
    """
    if isinstance(name, base.Estimator):
        return name
    if not isinstance(name, str) or name.lower() not in names():
        raise ValueError(f"Unknown estimator {name!r}. Valid names: {', '.join(names())}.")
    key = _ALIASES.get(name.lower(), name.lower())
    unknown = sorted(set(kwargs) - set(_KWARGS[key]))
    if unknown:
        allowed = ", ".join(("temperature",) + _KWARGS[key])
        raise ValueError(
            f"Estimator {key!r} does not take {', '.join(unknown)}. Allowed: {allowed}."
        )
    return _CLASSES[key](temperature=temperature, **kwargs)


def accepted_options(name, **options):
    """The subset of `options` that estimator `name` takes.

    For a caller holding the options of every estimator (`SearchModel` passes
    its `baseline_decay` this way): `get(name, **accepted_options(name, ...))`.

    Args:
        name: an estimator name, or an `Estimator` instance (which takes none:
            it is used as it is).
        **options: candidate estimator options.

    Returns:
        A dict, a subset of `options` (empty for an unknown name: `get` then
        reports it).
    """
    if not isinstance(name, str):
        return {}
    key = _ALIASES.get(name.lower(), name.lower())
    return {k: v for k, v in options.items() if k in _KWARGS.get(key, ())}
