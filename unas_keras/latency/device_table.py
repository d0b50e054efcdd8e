"""`DeviceTable`: measured whole-network latencies of a device, keyed by architecture.

A device table is the simplest way to bring your own hardware: time the
derived networks of a space on the phone, board or GPU you deploy to (or take
a published table, such as HW-NAS-Bench / HELP for NAS-Bench-201) and write one
CSV row per architecture:

    ArchitectureString,raspi4_ms,gold_6226_ms            (nb201: the benchmark string)
    "{""space"": ""darts"", ""genotype"": ...}",pixel7_ms   (any space: architecture JSON)

`DeviceTable.from_csv(path, space=..., column=...)` reads one latency column.
Its `latency_model()` is what a latency-constrained search consumes: the
non-differentiable latency L_n(z) is the measured value (an architecture
missing from the table is an error, never a default) and the differentiable
surrogate g is a ridge regression on the one-hot choices fitted on the
table, with its held-out Spearman correlation and MAPE in `surrogate.report`.

Pure Python and numpy (no TensorFlow).
"""

import csv
import math
import os

import numpy as np

from unas_keras.latency.surrogate import _resolve_space, fit_latency_surrogate
from unas_keras.space import registry

#: Architecture column read by default: the benchmark string for nb201 (when present), else JSON.
# Tables name architectures by their JSON, or (spaces with a text form, e.g. NAS-Bench-201's
# "ArchitectureString") by the genotype's text (`SpaceSpec.text_column`).
JSON_COLUMN = "architecture"


def _parse_architecture(text, space):
    """An `Architecture` of `space` from a benchmark string (nb201) or architecture JSON."""
    from unas_keras.space.architecture import Architecture

    text = (text or "").strip()
    spec = registry.get(space)
    if spec.text_column is not None and not text.startswith("{"):
        return Architecture(space, spec.genotype_class.from_string(text))
    arch = Architecture.from_json(text)
    if arch.space != space:
        raise ValueError(f"a {arch.space!r} architecture in a {space!r} table")
    return arch


class DeviceTable:
    """Measured latencies (ms) of whole networks of one space on one device.

    Args:
        space: `"nb201"`, `"darts"` or `"proxyless"`.
        latencies: dict `Architecture` -> milliseconds (> 0).
        column: name of the measured quantity (e.g. the CSV column).
        path: where the table was read from (for messages), or None.
    """

    def __init__(self, space, latencies, column=None, path=None):
        from unas_keras.space.architecture import space_names

        if space not in space_names():
            raise ValueError(f"Unknown search space {space!r}; expected one of {list(space_names())}.")
        self.space = space
        self.column = column
        self.path = path
        self._ms = {}
        for arch, ms in dict(latencies).items():
            if getattr(arch, "space", None) != space:
                raise ValueError(f"A {space!r} device table got the architecture {arch!r}.")
            ms = float(ms)
            if not (math.isfinite(ms) and ms > 0):
                raise ValueError(f"Latency of {arch} must be a finite number > 0, got {ms!r}.")
            self._ms[arch.__class__(arch.space, arch.genotype)] = ms  # drop names: key by value only
        if not self._ms:
            raise ValueError("A device table needs at least one architecture.")

    @classmethod
    def from_csv(cls, path, space="nb201", column=None, architecture_column=None):
        """Reads a CSV of measured latencies.

        Args:
            path: the CSV file (header row first).
            space: the search space of its architectures.
            column: the latency column (milliseconds). None: the only column
                besides the architecture column; an error if there are several.
            architecture_column: the column naming the architectures. None:
                the space's text column when present (nb201: `ArchitectureString`), else `architecture`
                (architecture JSON, as in a search's architecture.json).

        Returns:
            A `DeviceTable`.

        Raises:
            ValueError: a missing file or column (the message lists the
                columns), an unparsable or duplicated architecture, or a latency
                that is not a positive number (the line is given).
        """
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise ValueError(f"Device latency table not found: {os.path.abspath(path)!r}.")
        latencies = {}
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = list(reader.fieldnames or [])
            arch_col = architecture_column
            if arch_col is None:
                text_column = registry.get(space).text_column
                arch_col = text_column if text_column in columns else JSON_COLUMN
            if arch_col not in columns:
                raise ValueError(f"Device table {path!r} has no architecture column {arch_col!r}; its columns: "
                                 f"{columns}.")
            others = [c for c in columns if c != arch_col]
            if column is None:
                if len(others) != 1:
                    raise ValueError(f"Device table {path!r}: choose the latency column (column=...) among "
                                     f"{others}.")
                column = others[0]
            if column not in others:
                raise ValueError(f"Device table {path!r} has no latency column {column!r}; choose among {others}.")
            for row in reader:
                line = reader.line_num
                try:
                    arch = _parse_architecture(row.get(arch_col), space)
                except ValueError as error:
                    raise ValueError(f"Device table {path!r}, line {line}: {error}") from None
                raw = row.get(column)
                try:
                    ms = float(raw)
                except (TypeError, ValueError):
                    ms = float("nan")
                if not (math.isfinite(ms) and ms > 0):
                    raise ValueError(f"Device table {path!r}, line {line}: {column} = {raw!r} is not a latency "
                                     "in ms (a number > 0).")
                if arch in latencies:
                    raise ValueError(f"Device table {path!r}, line {line}: duplicate architecture {arch}.")
                latencies[arch] = ms
        if not latencies:
            raise ValueError(f"Device table {path!r} has no rows.")
        return cls(space, latencies, column=column, path=path)

    def __len__(self):
        return len(self._ms)

    def __contains__(self, architecture):
        return self._key(architecture, strict=False) in self._ms

    def architectures(self):
        """The table's architectures, in file order."""
        return list(self._ms)

    def latencies(self):
        """numpy array of the latencies (ms), in the order of `architectures()`."""
        return np.fromiter(self._ms.values(), dtype=np.float64, count=len(self._ms))

    def median_ms(self):
        """Median latency of the table (a natural first target)."""
        return float(np.median(self.latencies()))

    def fingerprint(self):
        """SHA-256 of the table's content (architectures and latencies), to recognise it in run.json."""
        import hashlib
        import json

        digest = hashlib.sha256(f"{self.space}|{self.column}".encode())
        for arch, ms in self._ms.items():
            digest.update(f"\n{json.dumps(arch.genotype.to_dict(), sort_keys=True)}={ms!r}".encode())
        return digest.hexdigest()

    def _key(self, architecture, strict=True):
        from unas_keras.space.architecture import Architecture

        spec = registry.get(self.space)
        if isinstance(architecture, str) and spec.text_column is not None:
            try:
                return Architecture(self.space, spec.genotype_class.from_string(architecture))
            except ValueError:
                if strict:
                    raise
                return None
        if not isinstance(architecture, Architecture) or architecture.space != self.space:
            if strict:
                raise ValueError(f"This device table holds {self.space!r} architectures; got {architecture!r}.")
            return None
        return architecture

    def predict(self, architecture):
        """The measured latency (ms) of `architecture`.

        Raises:
            ValueError: if the table does not hold it (never a default value).
        """
        key = self._key(architecture)
        if key not in self._ms:
            where = f" {self.path}" if self.path else ""
            raise ValueError(f"The device latency table{where} ({self.column or 'latency'}) has no entry for the "
                             f"architecture {key}; measure it on the device and add a row.")
        return self._ms[key]

    predict_ms = predict

    def fit_surrogate(self, search_space=None, l2=1.0, holdout_fraction=0.2, seed=0):
        """Fits the linear surrogate g on the table and reports its held-out accuracy.

        A ridge regression on the concatenated one-hot choices (the release's
        g) is fitted on a random `1 - holdout_fraction` of the rows and
        evaluated on the rest (`latency_report`: Spearman, MAPE, ...); the
        returned g is then refitted on every row.

        Args:
            search_space: the space object the search uses (its decisions must
                cover the table's architectures); None: the default space.
            l2: ridge penalty.
            holdout_fraction: share of rows held out for the report.
            seed: the split's seed.

        Returns:
            A `LatencySurrogate`; `report` holds `held_out` (None when the
            table is too small to hold rows out), `num_fit`, `num_held_out`.
        """
        from unas_keras.latency.metrics import latency_report

        space = _resolve_space(search_space if search_space is not None else self.space)
        if getattr(space, "name", self.space) != self.space:
            raise ValueError(f"A {self.space!r} device table cannot fit a surrogate for the "
                             f"{getattr(space, 'name', space)!r} space.")
        if not 0.0 <= float(holdout_fraction) < 1.0:
            raise ValueError(f"holdout_fraction must be in [0, 1), got {holdout_fraction!r}.")
        archs = self.architectures()
        choices = [space.encode(a) for a in archs]
        y = self.latencies()
        held = int(round(float(holdout_fraction) * len(archs)))
        report = {"num_fit": len(archs), "num_held_out": 0, "held_out": None, "column": self.column}
        if held >= 2 and len(archs) - held >= 2:
            order = np.random.default_rng(seed).permutation(len(archs))
            test, train = order[:held], order[held:]
            g = fit_latency_surrogate(space, [choices[i] for i in train], y[train], l2=l2)
            report.update(num_fit=len(train), num_held_out=held,
                          held_out=latency_report([g.predict_choices(choices[i]) for i in test], y[test]))
        g = fit_latency_surrogate(space, choices, y, l2=l2)
        g.report = report
        return g

    def latency_model(self, search_space=None, **fit_options):
        """A `LatencyModel`: measured latency as L_n, the fitted surrogate as g (see `fit_surrogate`)."""
        from unas_keras.latency.latency_model import LatencyModel

        return LatencyModel(self.predict, self.fit_surrogate(search_space, **fit_options), table=self)
