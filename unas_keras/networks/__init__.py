"""Network builders: one builder per space makes the supernet and the derived network.

Which module builds a space's networks is a fact of the space's `SpaceSpec`
(`unas_keras.space.registry`); every supernet is a `Supernet`
(`unas_keras.networks.supernet`).
"""

import inspect


def _check_options(builder, options, what):
    allowed = [
        name for name, p in inspect.signature(builder).parameters.items()
        if p.kind == p.KEYWORD_ONLY or (p.default is not inspect.Parameter.empty)
    ]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"Unknown option(s) {unknown} for {what}; allowed: {sorted(allowed)}.")


def build_model(architecture, num_classes, input_shape, **options):
    """Builds the derived network of an architecture as a plain `keras.Model`.

    Args:
        architecture: a `unas_keras.Architecture`.
        num_classes: number of output classes.
        input_shape: `(height, width, channels)`.
        **options: network options of the space. DARTS: `init_channels` (36),
            `num_cells` (20), `auxiliary` (False), `drop_path_rate` (0.0); an
            input side >= 128 selects the ImageNet stem. Proxyless:
            `width_multiplier` (1.0), `dropout_rate`. NB201: `channels` (16),
            `cells_per_stage` (5).

    Returns:
        A `keras.Model` that trains with `fit` and saves as `.keras`.
    """
    from unas_keras.space import Architecture, registry

    if not isinstance(architecture, Architecture):
        raise ValueError(f"build_model needs a unas_keras.Architecture, got {type(architecture).__name__}.")
    spec = registry.get(architecture.space)
    _check_options(spec.networks().build_model, options, f"a {spec.name} network")
    return spec.build_model(architecture.genotype, num_classes, input_shape, **options)


def build_supernet(space, num_classes, input_shape, **options):
    """Builds the search supernet of a space.

    Args:
        space: the name of a registered search space (`unas_keras.space.space_names()`).
        num_classes: number of output classes.
        input_shape: `(height, width, channels)`.
        **options: the space's supernet options (e.g. `ops`, `init_channels`,
            `num_cells` for DARTS; `width_multiplier`, `backbone` for proxyless).

    Returns:
        A `unas_keras.networks.supernet.Supernet`: a `keras.Model` called as
        `model((images, weights))`, with a `search_space` attribute and a
        `mix_weights(samples)` method.
    """
    from unas_keras.space import registry

    spec = registry.get(space)
    _check_options(spec.networks().build_supernet, options, f"the {spec.name} supernet")
    return spec.build_supernet(num_classes, input_shape, **options)
