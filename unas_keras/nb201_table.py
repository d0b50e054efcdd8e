"""Reader of the NAS-Bench-201 (NATS-Bench topology) accuracy table.

The table is a CSV with one row per cell architecture and, per dataset, the
test accuracy (%) after the benchmark's 200-epoch training (mean over its
seeds):

    CIFAR10TestAccuracy200Epochs, CIFAR100TestAccuracy200Epochs,
    ImageNetTestAccuracy200Epochs, ArchitectureString[, other columns]

`ArchitectureString` is the benchmark string, the text form of
`unas_keras.space.nb201.NB201Genotype`. The table is not shipped with
unas_keras: pass its path, or set the environment variable
`UNAS_NB201_TABLE`; by default it is looked for at
`<repository root>/../shared/data/nas_bench_201.csv`.

Pure Python and numpy (no TensorFlow).
"""

import csv
import math
import os

import numpy as np

from unas_keras.space import nb201 as nb201_space

ENV_VAR = "UNAS_NB201_TABLE"
ARCH_COLUMN = "ArchitectureString"
#: dataset name -> CSV column of its 200-epoch test accuracy (%).
DATASET_COLUMNS = {
    "cifar10": "CIFAR10TestAccuracy200Epochs",
    "cifar100": "CIFAR100TestAccuracy200Epochs",
    "imagenet16": "ImageNetTestAccuracy200Epochs",
}
NUM_ARCHITECTURES = len(nb201_space.OPS) ** len(nb201_space.EDGES)


def default_table_path():
    """The path `load_nb201_table()` reads when given none.

    Returns:
        `$UNAS_NB201_TABLE` if set, else
        `<repository root>/../shared/data/nas_bench_201.csv`, where the
        repository root is the folder holding the `unas_keras` package.
    """
    env = os.environ.get(ENV_VAR)
    if env:
        return env
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.normpath(os.path.join(repo, "..", "shared", "data", "nas_bench_201.csv"))


def architecture_index(choices):
    """Index in `[0, 5**6)` of an architecture given its 6 op indices.

    Base-5 number with the first edge (node 0 -> 1) as the most significant
    digit; the order used by `NB201Table.accuracy_array`.
    """
    index = 0
    for c in choices:
        index = index * len(nb201_space.OPS) + int(c)
    return index


def _choices_of(arch):
    """Op indices (6 ints) of an Architecture, genotype, string or sequence."""
    from unas_keras.space.architecture import Architecture

    if isinstance(arch, Architecture):
        if arch.space != "nb201":
            raise ValueError(f"Expected an 'nb201' architecture, got a {arch.space!r} one.")
        arch = arch.genotype
    if isinstance(arch, nb201_space.NB201Genotype):
        return tuple(nb201_space.OPS.index(op) for op in arch.edges)
    if isinstance(arch, str):
        return tuple(nb201_space.OPS.index(op) for op in nb201_space.parse_string(arch))
    try:
        choices = tuple(int(c) for c in arch)
    except (TypeError, ValueError):
        raise ValueError(
            "An NB201 architecture must be an Architecture, an NB201Genotype, a benchmark string or "
            f"6 op indices. Received: {arch!r}"
        ) from None
    if len(choices) != len(nb201_space.EDGES) or not all(0 <= c < len(nb201_space.OPS) for c in choices):
        raise ValueError(f"Expected 6 op indices in [0, {len(nb201_space.OPS)}). Received: {arch!r}")
    return choices


class NB201Table:
    """Accuracies of NAS-Bench-201 cells, by benchmark string and dataset.

    Args:
        accuracies: dict benchmark string -> dict dataset -> accuracy (%),
            with the datasets of `DATASET_COLUMNS`.
        path: where the table was read from (for messages), or None.
    """

    datasets = tuple(DATASET_COLUMNS)

    def __init__(self, accuracies, path=None):
        self.path = path
        self._arrays = {d: np.full(NUM_ARCHITECTURES, np.nan) for d in self.datasets}
        self._strings = []
        for text, values in accuracies.items():
            index = architecture_index(_choices_of(text))
            for dataset in self.datasets:
                self._arrays[dataset][index] = float(values[dataset])
            self._strings.append(nb201_space.format_string(nb201_space.parse_string(text)))
        for array in self._arrays.values():
            array.setflags(write=False)

    def __len__(self):
        return len(self._strings)

    def __contains__(self, arch):
        try:
            index = architecture_index(_choices_of(arch))
        except ValueError:
            return False
        return not math.isnan(self._arrays[self.datasets[0]][index])

    def strings(self):
        """The benchmark strings of the table, in file order."""
        return list(self._strings)

    def _check_dataset(self, dataset):
        if dataset not in DATASET_COLUMNS:
            raise ValueError(f"Unknown NB201 dataset {dataset!r}; allowed: {list(DATASET_COLUMNS)}.")
        return dataset

    def accuracy(self, arch, dataset):
        """Test accuracy (%) of one architecture.

        Args:
            arch: an `"nb201"` `Architecture`, an `NB201Genotype`, the
                benchmark string or 6 op indices.
            dataset: `"cifar10"`, `"cifar100"` or `"imagenet16"`.

        Raises:
            ValueError: unknown dataset, malformed architecture, or an
                architecture the table does not hold.
        """
        self._check_dataset(dataset)
        choices = _choices_of(arch)
        value = self._arrays[dataset][architecture_index(choices)]
        if math.isnan(value):
            text = nb201_space.format_string([nb201_space.OPS[c] for c in choices])
            raise ValueError(f"Architecture {text} is not in the NB201 table {self.path or ''}".rstrip() + ".")
        return float(value)

    def accuracy_array(self, dataset):
        """Read-only array `[5**6]` of accuracies indexed by `architecture_index`.

        Entries the table lacks are NaN.
        """
        return self._arrays[self._check_dataset(dataset)]

    def best(self, dataset):
        """`(benchmark string, accuracy)` of the best architecture of the table."""
        array = self.accuracy_array(dataset)
        index = int(np.nanargmax(array))
        choices = []
        for _ in nb201_space.EDGES:
            choices.append(index % len(nb201_space.OPS))
            index //= len(nb201_space.OPS)
        choices.reverse()
        text = nb201_space.format_string([nb201_space.OPS[c] for c in choices])
        return text, float(np.nanmax(array))


def load_nb201_table(path=None):
    """Reads the NAS-Bench-201 accuracy table.

    Args:
        path: the CSV file; None reads `default_table_path()` (the
            `UNAS_NB201_TABLE` environment variable, else
            `<repository root>/../shared/data/nas_bench_201.csv`).

    Returns:
        An `NB201Table`.

    Raises:
        ValueError: if the file does not exist (the message says where it
            looked and how to point to the table), lacks a required column
            (named in the message), has an unparsable or duplicated row (its
            line number is given) or holds no rows.
    """
    source = "the given path" if path is not None else (
        f"${ENV_VAR}" if os.environ.get(ENV_VAR) else "the default location"
    )
    path = os.fspath(path) if path is not None else default_table_path()
    if not os.path.isfile(path):
        raise ValueError(
            f"NAS-Bench-201 table not found: looked for {os.path.abspath(path)!r} ({source}). Pass its path "
            f"(load_nb201_table(path) or --table=PATH) or set the environment variable {ENV_VAR}."
        )
    required = [ARCH_COLUMN] + list(DATASET_COLUMNS.values())
    accuracies = {}
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        missing = [c for c in required if c not in columns]
        if missing:
            raise ValueError(
                f"NAS-Bench-201 table {path!r} lacks the column(s) {missing}; it has {list(columns)}. "
                f"Required: {required}."
            )
        for row in reader:
            line = reader.line_num
            text = (row.get(ARCH_COLUMN) or "").strip()
            try:
                nb201_space.parse_string(text)
            except ValueError as error:
                raise ValueError(f"NAS-Bench-201 table {path!r}, line {line}: {error}") from None
            if text in accuracies:
                raise ValueError(f"NAS-Bench-201 table {path!r}, line {line}: duplicate architecture {text}.")
            values = {}
            for dataset, column in DATASET_COLUMNS.items():
                raw = row.get(column)
                try:
                    value = float(raw)
                except (TypeError, ValueError):
                    raise ValueError(
                        f"NAS-Bench-201 table {path!r}, line {line}: column {column} is not a number: {raw!r}."
                    ) from None
                if not 0.0 <= value <= 100.0:
                    raise ValueError(
                        f"NAS-Bench-201 table {path!r}, line {line}: {column} = {value} is not an accuracy "
                        "in [0, 100]."
                    )
                values[dataset] = value
            accuracies[text] = values
    if not accuracies:
        raise ValueError(f"NAS-Bench-201 table {path!r} has no rows.")
    return NB201Table(accuracies, path=path)
