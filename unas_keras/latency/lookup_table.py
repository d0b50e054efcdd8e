"""Per-block latency lookup tables for the ProxylessNAS space.

`build_lookup_table` times every distinct block of the space (each as its own
tiny Keras model converted to TFLite, timed with LiteRT) plus the fixed stem
and head; `LookupTable.predict` sums the entries of an architecture's blocks.
Identical blocks at different positions share one entry, so a table for the
21-layer space holds about 70 entries and builds in a few minutes.

The table is JSON:

    {"format": "unas_keras.latency_lut", "version": 1,
     "metadata": {"space", "input_shape", "num_classes", "backbone", "threads", "runs",
                  "device", "cpu", "tf_version", "litert_version", "created", ...},
     "invoke_overhead_ms": <time of one invocation of an empty-ish model>,
     "entries": {"<block key>": <median ms>, ...}}

Each entry is a block's own measured median. Since every timed block model
also pays the fixed cost of one interpreter invocation, `predict` removes
that cost from every block and adds it back once:
`overhead + sum(entry - overhead)`.
"""

import datetime
import json
import os
import platform
import sys

from unas_keras._atomic import write_text_atomic
from unas_keras.latency import blocks as blocks_lib
from unas_keras.space.proxyless import PROXYLESS_BACKBONE, MBConvBackbone

FORMAT = "unas_keras.latency_lut"
VERSION = 1
#: Metadata that must agree for a cache to be reused.
_CACHE_KEYS = ("space", "input_shape", "num_classes", "backbone", "width_multiplier", "threads", "cpu",
               "tf_version", "litert_version", "statistic")
#: Statistics of the per-block timings a table may store.
STATISTICS = ("median", "min", "p10", "mean")


def _cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_metadata(threads):
    """Describes where timings were taken: cpu model, threads, library versions, date."""
    import importlib.metadata

    import tensorflow as tf

    try:
        litert = importlib.metadata.version("ai-edge-litert")
    except importlib.metadata.PackageNotFoundError:
        litert = "unknown"
    return {
        "device": "cpu",
        "cpu": _cpu_model(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": int(threads),
        "tf_version": tf.__version__,
        "litert_version": litert,
        "python": sys.version.split()[0],
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


class LookupTable:
    """Per-block latencies (ms) of one space at one resolution on one device.

    Args:
        entries: dict block key -> median milliseconds.
        metadata: dict describing the table (space, input_shape, num_classes,
            backbone, threads, device, versions, date).
        invoke_overhead_ms: fixed cost of one LiteRT invocation, included in
            every entry; `predict` counts it once.
    """

    def __init__(self, entries, metadata, invoke_overhead_ms=0.0):
        self.entries = {str(k): float(v) for k, v in dict(entries).items()}
        self.metadata = dict(metadata)
        self.invoke_overhead_ms = float(invoke_overhead_ms)
        self._layouts = {}

    @property
    def input_shape(self):
        return tuple(self.metadata["input_shape"])

    @property
    def num_classes(self):
        return int(self.metadata["num_classes"])

    @property
    def backbone(self):
        return MBConvBackbone.from_dict(self.metadata["backbone"])

    @property
    def width_multiplier(self):
        return float(self.metadata.get("width_multiplier", 1.0))

    def __len__(self):
        return len(self.entries)

    def __contains__(self, key):
        return key in self.entries

    def block_keys(self, architecture):
        """The table keys of an architecture's blocks (stem, non-zero layers, head)."""
        genotype = blocks_lib.proxyless_genotype(architecture)
        layout = self._layouts.get(genotype.backbone)
        if layout is None:  # per-layer choice -> key, computed once per backbone
            stem, layers, head = blocks_lib.layer_blocks(genotype.backbone, self.input_shape,
                                                         self.num_classes, self.width_multiplier)
            layout = (stem.key, [{c: (b.key if b else None) for c, b in o.items()} for o in layers],
                      head.key)
            self._layouts[genotype.backbone] = layout
        stem_key, layers, head_key = layout
        keys = [stem_key]
        keys += [options[choice] for options, choice in zip(layers, genotype.layers) if options[choice]]
        return keys + [head_key]

    def missing(self, architecture):
        """Keys of the architecture's blocks that the table lacks."""
        return [k for k in self.block_keys(architecture) if k not in self.entries]

    def block_latency(self, key):
        """One block's contribution (its entry minus the invocation overhead, >= 0)."""
        if key not in self.entries:
            raise ValueError(
                f"The latency table has no entry for block {key!r} (table: "
                f"{self.metadata.get('space')} at {self.metadata.get('input_shape')}, "
                f"{self.metadata.get('num_classes')} classes); rebuild it for this space/resolution."
            )
        return max(self.entries[key] - self.invoke_overhead_ms, 0.0)

    def predict(self, architecture):
        """Predicted latency (ms) of a derived network: sum of its blocks' entries.

        Raises:
            ValueError: if the architecture has a block the table lacks (the
                message names the block), or is not a proxyless architecture.
        """
        keys = self.block_keys(architecture)
        missing = [k for k in keys if k not in self.entries]
        if missing:
            raise ValueError(
                f"The latency table has no entry for block(s) {missing} (table: "
                f"{self.metadata.get('space')} at {self.metadata.get('input_shape')}, "
                f"{self.metadata.get('num_classes')} classes); rebuild it for this "
                "space/resolution."
            )
        return self.invoke_overhead_ms + sum(self.block_latency(k) for k in keys)

    def to_dict(self):
        return {
            "format": FORMAT,
            "version": VERSION,
            "metadata": self.metadata,
            "invoke_overhead_ms": self.invoke_overhead_ms,
            "entries": dict(sorted(self.entries.items())),
        }

    def save(self, path):
        """Writes the table as JSON atomically (temporary file + rename)."""
        write_text_atomic(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def from_dict(cls, payload, where="latency table"):
        """Validates and builds a table from its dictionary form (ValueError if invalid)."""
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise ValueError(f"{where}: not a unas_keras latency lookup table (format {FORMAT!r} expected).")
        if payload.get("version") != VERSION:
            raise ValueError(f"{where}: unsupported version {payload.get('version')!r}; expected {VERSION}.")
        metadata, entries = payload.get("metadata"), payload.get("entries")
        if not isinstance(metadata, dict) or not isinstance(entries, dict):
            raise ValueError(f"{where}: 'metadata' and 'entries' must be JSON objects.")
        for required in ("space", "input_shape", "num_classes", "backbone", "threads"):
            if required not in metadata:
                raise ValueError(f"{where}: metadata lacks {required!r}.")
        try:
            MBConvBackbone.from_dict(metadata["backbone"])
        except (ValueError, TypeError) as err:
            raise ValueError(f"{where}: bad backbone in metadata: {err}") from None
        for key, value in entries.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"{where}: entry {key!r} must be a non-negative number, got {value!r}.")
        overhead = payload.get("invoke_overhead_ms", 0.0)
        if isinstance(overhead, bool) or not isinstance(overhead, (int, float)) or not overhead >= 0:
            raise ValueError(f"{where}: invoke_overhead_ms must be a non-negative number.")
        return cls(entries, metadata, overhead)

    @classmethod
    def from_device_results(cls, manifest, results, statistic="avg", device=None, threads=None):
        """A table from block timings taken on a device (see `export_block_models`).

        Args:
            manifest: the `manifest.json` written by `export_block_models` (or its folder).
            results: TensorFlow Lite `benchmark_model` output (text, one or many runs; each run's
                `Graph: [...]` names the file) or a CSV with a `model` column (file name or block key)
                and an `ms` (or `us`) column.
            statistic: for benchmark_model output, `"avg"` (its `Inference (avg)`) or `"min"` (the
                minimum of the timed runs).
            device: a label for the metadata (e.g. "pixel7").
            threads: the threads the blocks were timed with, for the metadata.

        Raises:
            ValueError: an unreadable file, or a block (or the overhead model) with no timing.
        """
        from unas_keras.latency.device_blocks import table_from_device_results

        return table_from_device_results(manifest, results, statistic=statistic, device=device, threads=threads)

    @classmethod
    def load(cls, path):
        """Reads a table written by `save`.

        Raises:
            ValueError: if the file is missing, not JSON, or not a valid table.
        """
        path = os.fspath(path)
        try:
            with open(path, "rb") as f:
                text = f.read()
        except OSError as err:
            raise ValueError(f"Cannot read latency table {path}: {err.strerror}") from None
        try:
            payload = json.loads(text.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
            raise ValueError(f"{path}: malformed latency table JSON: {err}") from None
        return cls.from_dict(payload, where=path)


def _progress_printer(progress):
    if callable(progress):
        return progress
    if not progress:
        return lambda *args: None

    def show(done, total, key, ms, cached):
        note = " (cached)" if cached else ""
        print(f"[latency table {done}/{total}] {key}: {ms:.3f} ms{note}", file=sys.stderr, flush=True)

    return show


def block_tflite(block, backbone=PROXYLESS_BACKBONE, width_multiplier=1.0):
    """The float32 `.tflite` bytes of one block as its own model (what the table times).

    `backbone` and `width_multiplier` select the network whose stem/head
    layers are copied (see `blocks.build_block_model`).
    """
    from unas_keras.latency.tflite import convert_to_tflite

    return convert_to_tflite(blocks_lib.build_block_model(block, backbone, width_multiplier), method="frozen_graph")


def overhead_tflite():
    """The `.tflite` bytes of a trivial model (1x1x1 ReLU): its time is the cost of one invocation."""
    import keras

    from unas_keras.latency.tflite import convert_to_tflite

    inputs = keras.Input((1, 1, 1), batch_size=1)
    return convert_to_tflite(keras.Model(inputs, keras.layers.ReLU()(inputs)), method="frozen_graph")


def measure_block(block, threads=1, runs=20, warmup=5, backbone=PROXYLESS_BACKBONE, width_multiplier=1.0,
                  statistic="median"):
    """LiteRT latency (ms; median by default) of one block as its own TFLite model (see `block_tflite`)."""
    from unas_keras.latency.timing import measure_tflite_stats

    stats = measure_tflite_stats(block_tflite(block, backbone, width_multiplier), threads=threads, runs=runs,
                                 warmup=warmup)
    return stats[f"{statistic}_ms"]


def measure_invoke_overhead(threads=1, runs=200, warmup=20, statistic="median"):
    """LiteRT latency (ms) of a trivial model: the fixed cost of one invocation."""
    from unas_keras.latency.timing import measure_tflite_stats

    stats = measure_tflite_stats(overhead_tflite(), threads=threads, runs=runs, warmup=warmup)
    return stats[f"{statistic}_ms"]


def build_lookup_table(space="proxyless", input_shape=(64, 64, 3), num_classes=10, threads=1, runs=20,
                       cache_path=None, progress=True, backbone=PROXYLESS_BACKBONE, warmup=5,
                       width_multiplier=1.0, statistic="median"):
    """Times every distinct block of the ProxylessNAS space with LiteRT.

    Each block (stem, every distinct MBConv (input shape, out width, kernel,
    expansion, stride), head) is built as a tiny Keras model, converted to
    float32 TFLite and timed (median of `runs`). `"zero"` layers cost 0.

    Args:
        space: `"proxyless"` (the only space with per-block tables).
        input_shape: network input `(h, w, c)`.
        num_classes: classifier width.
        threads: LiteRT threads.
        runs: timed invocations per block.
        cache_path: optional JSON path: an existing compatible table there is
            reused (its blocks are not measured again) and the table is saved
            there after every measured block, so an interrupted build resumes.
        progress: `True` prints one line per block to stderr; a callable
            receives `(done, total, key, ms, cached)`; `False` is silent.
        backbone: the `MBConvBackbone` of the space.
        warmup: untimed invocations per block.
        width_multiplier: channel multiplier of the network (MobileNetV2 rounding).
        statistic: which statistic of each block's `runs` timings to store:
            `"median"` (default), or `"min"` / `"p10"` on a machine shared
            with other loads (contention only ever adds time).

    Returns:
        A `LookupTable`.

    Raises:
        ValueError: on an unsupported space or shape, or a cache built for
            another configuration.
    """
    space = blocks_lib.block_table_space(space).name
    if not isinstance(backbone, MBConvBackbone):
        raise ValueError(f"backbone must be an MBConvBackbone, got {type(backbone).__name__}.")
    input_shape = tuple(int(d) for d in input_shape)
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape}.")
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
    if statistic not in STATISTICS:
        raise ValueError(f"Unknown statistic {statistic!r}; expected one of {list(STATISTICS)}.")
    metadata = device_metadata(threads)
    metadata.update(space=space, input_shape=list(input_shape), num_classes=int(num_classes),
                    backbone=backbone.to_dict(), runs=int(runs), warmup=int(warmup),
                    width_multiplier=float(width_multiplier), statistic=statistic)
    entries, overhead = {}, None
    if cache_path is not None and os.path.exists(cache_path):
        cached = LookupTable.load(cache_path)
        mismatched = [k for k in _CACHE_KEYS if cached.metadata.get(k) != metadata.get(k)]
        if mismatched:
            raise ValueError(
                f"Latency table cache {cache_path} was built for another configuration (differs in "
                f"{mismatched}); use another cache_path or delete it."
            )
        entries = dict(cached.entries)
        overhead = cached.invoke_overhead_ms
    if overhead is None:
        overhead = measure_invoke_overhead(threads=threads, statistic=statistic)
    show = _progress_printer(progress)
    todo = blocks_lib.space_blocks(backbone, input_shape, num_classes, width_multiplier)
    for i, block in enumerate(todo, 1):
        cached = block.key in entries
        if not cached:
            entries[block.key] = measure_block(block, threads=threads, runs=runs, warmup=warmup,
                                               backbone=backbone, width_multiplier=width_multiplier,
                                               statistic=statistic)
            if cache_path is not None:
                LookupTable(entries, metadata, overhead).save(cache_path)
        show(i, len(todo), block.key, entries[block.key], cached)
    table = LookupTable({b.key: entries[b.key] for b in todo}, metadata, overhead)
    if cache_path is not None:
        table.save(cache_path)
    return table
