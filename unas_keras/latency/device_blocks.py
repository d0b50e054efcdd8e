"""Lookup tables timed on the user's device: export the blocks, time them there, import the timings.

`export_block_models` writes every distinct block of a ProxylessNAS lookup
table as its own `.tflite` file (the very models `build_lookup_table` times
with LiteRT here), plus the trivial model whose time is the cost of one
invocation, a `manifest.json` that maps files to table keys, and
`run_benchmarks.sh`, which times every file with TensorFlow Lite's
`benchmark_model` on a phone or board:

    adb push blocks /data/local/tmp/blocks
    adb shell "cd /data/local/tmp/blocks && sh run_benchmarks.sh /data/local/tmp/benchmark_model" > results.txt

`LookupTable.from_device_results(manifest, results)` reads `benchmark_model`'s
output back (or a simple `model,ms` CSV) and returns the device's table.
"""

import csv
import io
import json
import os
import re

from unas_keras._atomic import write_bytes_atomic, write_text_atomic
from unas_keras.latency import blocks as blocks_lib
from unas_keras.space.proxyless import PROXYLESS_BACKBONE, MBConvBackbone

FORMAT = "unas_keras.latency_blocks"
VERSION = 1
MANIFEST = "manifest.json"
OVERHEAD_FILE = "invoke_overhead.tflite"
SCRIPT = "run_benchmarks.sh"
BENCHMARK_STATISTICS = ("avg", "min")

_SCRIPT_TEXT = """#!/bin/sh
# Times every block model of this folder with TensorFlow Lite's benchmark_model.
# Usage: sh run_benchmarks.sh [path/to/benchmark_model] [threads] > results.txt
# Then, on your computer: unas_keras.latency.LookupTable.from_device_results("manifest.json", "results.txt")
BENCH="${1:-./benchmark_model}"
THREADS="${2:-1}"
for f in *.tflite; do
  "$BENCH" --graph="$f" --num_threads="$THREADS" --warmup_runs=5 --num_runs=50 2>&1
done
"""


def export_block_models(output_dir, input_shape=(64, 64, 3), num_classes=10, backbone=PROXYLESS_BACKBONE,
                        width_multiplier=1.0, progress=False):
    """Writes the lookup table's blocks as `.tflite` files for timing on a device.

    Args:
        output_dir: folder to write into (created; existing block files are overwritten).
        input_shape: network input `(h, w, c)`, as for `build_lookup_table`.
        num_classes: classifier width.
        backbone: the `MBConvBackbone` of the space.
        width_multiplier: channel multiplier of the network.
        progress: print one line per written file to stderr.

    Returns:
        The path of `manifest.json`.
    """
    import sys

    from unas_keras.latency.lookup_table import block_tflite, overhead_tflite

    if not isinstance(backbone, MBConvBackbone):
        raise ValueError(f"backbone must be an MBConvBackbone, got {type(backbone).__name__}.")
    input_shape = tuple(int(d) for d in input_shape)
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape}.")
    output_dir = os.fspath(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    todo = blocks_lib.space_blocks(backbone, input_shape, int(num_classes), width_multiplier)
    files = {}
    for i, block in enumerate(todo, 1):
        name = f"{block.key}.tflite"
        write_bytes_atomic(os.path.join(output_dir, name), block_tflite(block, backbone, width_multiplier))
        files[block.key] = name
        if progress:
            print(f"[export blocks {i}/{len(todo)}] {name}", file=sys.stderr, flush=True)
    write_bytes_atomic(os.path.join(output_dir, OVERHEAD_FILE), overhead_tflite())
    write_text_atomic(os.path.join(output_dir, SCRIPT), _SCRIPT_TEXT)
    manifest = {
        "format": FORMAT, "version": VERSION,
        "metadata": {"space": "proxyless", "input_shape": list(input_shape), "num_classes": int(num_classes),
                     "backbone": backbone.to_dict(), "width_multiplier": float(width_multiplier)},
        "overhead_model": OVERHEAD_FILE,
        "blocks": files,
    }
    return write_text_atomic(os.path.join(output_dir, MANIFEST), json.dumps(manifest, indent=1) + "\n")


def _read_manifest(path):
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, MANIFEST)
    try:
        with open(path, "rb") as f:
            payload = json.loads(f.read().decode("utf-8"))
    except OSError as err:
        raise ValueError(f"Cannot read block manifest {path}: {err.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: malformed block manifest JSON: {err}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or payload.get("version") != VERSION:
        raise ValueError(f"{path}: not a unas_keras block manifest (format {FORMAT!r}, version {VERSION}).")
    if not isinstance(payload.get("blocks"), dict) or not isinstance(payload.get("metadata"), dict):
        raise ValueError(f"{path}: the manifest lacks 'blocks' or 'metadata'.")
    return path, payload


_GRAPH = re.compile(r"Graph:\s*\[([^\]]+)\]")
# New benchmark_model: "Inference timings in us: Init: 3422, First inference: 36044, Warmup (avg): 28150.9,
# Inference (avg): 27655.2"; older releases: "Average inference timings in us: Warmup: 28150.9, Init: 3422,
# Inference: 27655.2".
_AVG = re.compile(r"Inference(?: \(avg\))?:\s*([0-9.eE+-]+)")
_COUNT = re.compile(r"count=\d+\b.*?\bmin=([0-9.eE+-]+)")


def parse_benchmark_output(text, statistic="avg"):
    """Milliseconds per model file from TensorFlow Lite `benchmark_model` output.

    Args:
        text: the output of one or several runs; each run starts by naming its `Graph: [file]`.
        statistic: `"avg"` (the run's `Inference (avg)`) or `"min"` (the minimum of its timed runs,
            from the last `count=... min=...` line).

    Returns:
        dict file base name -> ms.
    """
    if statistic not in BENCHMARK_STATISTICS:
        raise ValueError(f"statistic must be one of {list(BENCHMARK_STATISTICS)}, got {statistic!r}.")
    marks = list(_GRAPH.finditer(text))
    out = {}
    for i, mark in enumerate(marks):
        segment = text[mark.end(): marks[i + 1].start() if i + 1 < len(marks) else len(text)]
        if statistic == "avg":
            found = [m for line in segment.splitlines() if "timings in us" in line for m in _AVG.finditer(line)]
        else:
            found = list(_COUNT.finditer(segment))
        if found:
            out[os.path.basename(mark.group(1).strip())] = float(found[-1].group(1)) / 1000.0
    return out


def _parse_csv(text, where):
    reader = csv.DictReader(io.StringIO(text))
    columns = [c.strip() for c in (reader.fieldnames or [])]
    if "model" not in columns or not ({"ms", "us"} & set(columns)):
        raise ValueError(f"{where}: a timing CSV needs a 'model' column and an 'ms' (or 'us') column; it has "
                         f"{columns}.")
    unit, scale = ("ms", 1.0) if "ms" in columns else ("us", 1e-3)
    out = {}
    for row in reader:
        row = {k.strip(): v for k, v in row.items() if k is not None}
        try:
            value = float(row[unit]) * scale
        except (TypeError, ValueError):
            raise ValueError(f"{where}, line {reader.line_num}: {unit} = {row.get(unit)!r} is not a number.") from None
        if not value >= 0:
            raise ValueError(f"{where}, line {reader.line_num}: a time must be >= 0, got {value}.")
        out[os.path.basename(row["model"].strip())] = value
    return out


def table_from_device_results(manifest, results, statistic="avg", device=None, threads=None):
    """See `LookupTable.from_device_results`."""
    from unas_keras.latency.lookup_table import LookupTable

    manifest_path, payload = _read_manifest(manifest)
    results = os.fspath(results)
    try:
        with open(results, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"Cannot read device timings {results}: {err}") from None
    timings = (parse_benchmark_output(text, statistic) if _GRAPH.search(text) else _parse_csv(text, results))

    def timing(key, name):
        for candidate in (name, key, os.path.splitext(name)[0]):
            if candidate in timings:
                return timings[candidate]
        return None

    entries = {key: timing(key, name) for key, name in payload["blocks"].items()}
    overhead = timing("invoke_overhead", payload.get("overhead_model", OVERHEAD_FILE))
    missing = [payload["blocks"][k] for k, v in entries.items() if v is None]
    if overhead is None:
        missing.append(payload.get("overhead_model", OVERHEAD_FILE))
    if missing:
        raise ValueError(f"{results} has no timing for {len(missing)} model(s) of {manifest_path}, e.g. "
                         f"{missing[:3]}; time every .tflite file of the folder.")
    metadata = dict(payload["metadata"])
    metadata.update(device=device or "device", threads=threads, statistic=statistic, source=os.path.abspath(results),
                    timed_with="benchmark_model" if _GRAPH.search(text) else "csv")
    return LookupTable.from_dict({"format": "unas_keras.latency_lut", "version": 1, "metadata": metadata,
                                  "invoke_overhead_ms": overhead, "entries": entries}, where=results)
