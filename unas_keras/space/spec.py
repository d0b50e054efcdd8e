"""`SpaceSpec`: everything the package knows about one search space, in one entry.

Each space module (`darts.py`, `proxyless.py`, `nb201.py`) defines its `SPEC`; `registry.py` lists them.
Code outside a space's own modules asks the space's `SpaceSpec` (or its supernet) instead of switching on
the space's name. Pure Python: the network builders are named by module and imported on first use.
"""

import dataclasses
import importlib
from typing import Any, Callable, Mapping, Optional, Tuple


def _identity(options):
    return dict(options)


@dataclasses.dataclass(frozen=True)
class SpaceSpec:
    """One search space.

    Attributes:
        name: the space's name (`Architecture.space`).
        search_space_class: the class of its decisions: class attribute `name`, `decisions()`,
            `to_architecture`, `encode`, `sample`, and `options()` (the JSON-compatible constructor
            options that rebuild it); constructed with `search_space_options`.
        genotype_class: the genotype class an `Architecture` of the space holds.
        networks_module: the module that builds its networks (`build_supernet(num_classes, input_shape,
            **supernet options)` -> a `unas_keras.networks.supernet.Supernet`, and
            `build_model(genotype, num_classes, input_shape, **network options)`).
        supernet_options: the names of the supernet's options (search settings of the space).
        check_supernet_options: `options -> options`: validates a complete dict of supernet options and
            returns it JSON-serialisable (raises ValueError naming the bad option).
        builder_options: `options -> kwargs` for the supernet builder (decodes JSON forms, e.g. a
            backbone dict into an `MBConvBackbone`).
        search_space_options: the supernet options the search space's constructor takes.
        network_options: the derived network's options (`build_model(..., **options)`).
        inherited_network_options: network options a derived network takes over from the search's
            supernet options when the caller does not give them (same name, same meaning).
        profile_defaults: data profile (`"demo"`, `"cifar"`, `"imagenet"`, `"generic"`) -> the search
            settings of the space on that profile, with its supernet options under `"space_options"`.
        has_default_latency: whether a latency target works without a measured table (per-block TFLite
            timings on this machine).
        option_help: supernet option name -> one line of help (command-line flags, docs).
        text_column: the column of a measurement table that names architectures by the genotype's text
            form (`genotype_class.from_string`), e.g. NAS-Bench-201's "ArchitectureString"; None when the
            space has no text form (tables then hold architecture JSON).
        plotter: the name of the `unas_keras.visualize` function that draws a genotype of the space.
    """

    name: str
    search_space_class: type
    genotype_class: type
    networks_module: str
    supernet_options: Tuple[str, ...]
    check_supernet_options: Callable[[Mapping[str, Any]], dict]
    profile_defaults: Mapping[str, Mapping[str, Any]]
    network_options: Tuple[str, ...]
    inherited_network_options: Tuple[str, ...] = ()
    search_space_options: Tuple[str, ...] = ()
    builder_options: Callable[[Mapping[str, Any]], dict] = _identity
    has_default_latency: bool = False
    option_help: Mapping[str, str] = dataclasses.field(default_factory=dict)
    text_column: Optional[str] = None
    plotter: Optional[str] = None

    def search_space(self, **options):
        """The space's decisions object; `options` may hold any supernet options (others are ignored)."""
        return self.search_space_class(**{k: v for k, v in options.items()
                                          if k in self.search_space_options and v is not None})

    def defaults(self, profile):
        """A fresh copy of the space's search settings for a data profile."""
        import copy

        if profile not in self.profile_defaults:
            raise ValueError(f"Unknown data profile {profile!r}; expected one of {sorted(self.profile_defaults)}.")
        return copy.deepcopy(dict(self.profile_defaults[profile]))

    def networks(self):
        """The module that builds the space's networks (imports Keras / TensorFlow)."""
        return importlib.import_module(self.networks_module)

    def build_supernet(self, num_classes, input_shape, **options):
        """Builds the space's supernet (see `unas_keras.networks.build_supernet`)."""
        return self.networks().build_supernet(num_classes, tuple(input_shape), **options)

    def build_model(self, genotype, num_classes, input_shape, **options):
        """Builds the derived network of a genotype (see `unas_keras.networks.build_model`)."""
        return self.networks().build_model(genotype, num_classes, tuple(input_shape), **options)

    def network_options_from_search(self, space_options, given: Optional[Mapping[str, Any]] = None):
        """Network options of a derived network: `given`, completed from a search's supernet options."""
        out = {k: space_options[k] for k in self.inherited_network_options if space_options.get(k) is not None}
        out.update({k: v for k, v in (given or {}).items() if v is not None})
        return out
