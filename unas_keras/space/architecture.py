"""The `Architecture` value: one point of a search space, as plain data.

An architecture is what a search returns and what `build_model` builds. It is
pure Python (no TensorFlow needed to read, write or validate one), compares by
value and round-trips through JSON with a schema version.
"""

import dataclasses
import json
from typing import Any

from unas_keras._atomic import write_text_atomic
from unas_keras.space import registry

SCHEMA_VERSION = 1


def space_names():
    """Returns the names of the supported search spaces."""
    return registry.names()


@dataclasses.dataclass(frozen=True)
class Architecture:
    """A derived architecture of one of the search spaces.

    Args:
        space: the name of a registered search space (`space_names()`).
        genotype: the space's genotype (its `SpaceSpec.genotype_class`:
            `darts.DartsGenotype`, `proxyless.ProxylessGenotype` or
            `nb201.NB201Genotype`), already validated by its constructor.
        name: optional label (a preset name, or `None`). Not part of equality.
    """

    space: str
    genotype: Any
    name: str = dataclasses.field(default=None, compare=False)

    def __post_init__(self):
        expected = registry.get(self.space).genotype_class
        if not isinstance(self.genotype, expected):
            raise ValueError(
                f"A {self.space!r} architecture needs a {expected.__name__}, "
                f"got {type(self.genotype).__name__}."
            )

    def to_dict(self):
        """Returns the JSON-compatible dictionary form."""
        out = {
            "schema_version": SCHEMA_VERSION,
            "space": self.space,
            "genotype": self.genotype.to_dict(),
        }
        if self.name:
            out["name"] = self.name
        return out

    @classmethod
    def from_dict(cls, payload):
        """Builds an architecture from its dictionary form, validating it.

        Raises:
            ValueError: if anything is missing, unknown or out of range; the
                message says what and where.
        """
        if not isinstance(payload, dict):
            raise ValueError(
                f"An architecture must be a JSON object, got {type(payload).__name__}."
            )
        unknown = set(payload) - {"schema_version", "space", "genotype", "name"}
        if unknown:
            raise ValueError(f"Unknown architecture keys {sorted(unknown)}.")
        version = payload.get("schema_version")
        if version != SCHEMA_VERSION or isinstance(version, bool):
            raise ValueError(
                f"Unsupported architecture schema_version {version!r}; this version "
                f"of unas_keras reads schema_version {SCHEMA_VERSION}."
            )
        space = payload.get("space")
        if not isinstance(space, str):
            raise ValueError(f"Architecture 'space' must be a string, got {space!r}.")
        spec = registry.get(space)
        if "genotype" not in payload:
            raise ValueError("Architecture has no 'genotype'.")
        name = payload.get("name")
        if name is not None and not isinstance(name, str):
            raise ValueError(f"Architecture 'name' must be a string, got {name!r}.")
        genotype = spec.genotype_class.from_dict(payload["genotype"])
        return cls(space=space, genotype=genotype, name=name)

    def to_json(self, indent=2):
        """Returns the JSON text of this architecture."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text):
        """Parses JSON text; malformed or invalid text raises ValueError."""
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError as err:
                raise ValueError(f"Architecture JSON is not UTF-8: {err}") from None
        if not isinstance(text, str):
            raise ValueError(f"Architecture JSON must be text, got {type(text).__name__}.")
        try:
            payload = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as err:
            raise ValueError(f"Malformed architecture JSON: {err}") from None
        return cls.from_dict(payload)

    def save(self, path):
        """Writes the JSON form to `path` atomically (no half-written file)."""
        write_text_atomic(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path):
        """Reads an architecture JSON file.

        Raises:
            ValueError: if the file is missing, unreadable or invalid.
        """
        try:
            with open(path, "rb") as f:
                text = f.read()
        except OSError as err:
            raise ValueError(f"Cannot read architecture file {path}: {err.strerror}") from None
        try:
            return cls.from_json(text)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None

    def __str__(self):
        return f"{self.space}:{self.genotype.compact()}"

    def __hash__(self):
        return hash(json.dumps(self.genotype.to_dict(), sort_keys=True) + self.space)


def sample_architecture(space, seed=None, **space_options):
    """Draws a uniformly random architecture of a search space.

    This is the random-search baseline: every decision of the space is drawn
    uniformly and independently.

    Args:
        space: the name of a registered search space (`space_names()`).
        seed: integer seed (or `None` for a fresh random draw).
        **space_options: the space's supernet options; those that shape its
            decisions are used (`ops` for DARTS, `backbone` for ProxylessNAS).

    Returns:
        An `Architecture`.

    Raises:
        ValueError: an unknown space, or an option that is not one of the
            space's supernet options.
    """
    spec = registry.get(space)
    unknown = sorted(set(space_options) - set(spec.supernet_options))
    if unknown:
        raise ValueError(f"Unknown option(s) {unknown} for the {space} space; allowed: "
                         f"{sorted(spec.supernet_options)}.")
    return spec.search_space(**space_options).sample(seed)
