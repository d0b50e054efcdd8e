"""`LatencyModel`: the latency term of a latency-constrained UNAS search.

The search engine needs two things (see the engine interface):

* `predict_ms(architecture)` -> float, the non-differentiable latency L_n(z)
  of a hard sample (a lookup-table sum, or a real measurement);
* `surrogate_weights(search_space)` -> `(bias, {decision: [rows, choices]})`,
  the linear surrogate g whose value at a relaxed sample is differentiable.

`LatencyModel.for_space` builds (or loads from `cache_dir`) the per-block
lookup table of a ProxylessNAS space and derives g from it. Because the table
sum is additive over layers and each layer's block depends only on its
position and choice, the table is exactly linear in the one-hot choices;
`surrogate="lut"` (default) reads g's weights straight from the table (zero
error), `surrogate="ridge"` fits the ridge regression of the release on
`num_samples` random architectures scored by the table (cheap: no timing).

Tables time each block on its own; whole networks run ~20% slower on this
CPU (weights compete for the cache). `fit_calibrated_surrogate` /
`LatencyModel.calibrated` correct that with ~20 measured whole networks
(latency ~= a + b * table sum + c * weight count), staying linear.
"""

import hashlib
import json
import os

import numpy as np

from unas_keras.latency import blocks as blocks_lib
from unas_keras.latency.lookup_table import LookupTable, build_lookup_table
from unas_keras.latency.surrogate import LatencySurrogate, _resolve_space, fit_latency_surrogate


def _per_choice(table, search_space, value):
    """`(bias, weights)` of a per-block quantity: `value(block)` summed over an architecture's blocks.

    bias = value(stem) + value(head); weights[decision][row, k] = value of the
    block chosen by `k` at that layer (0 for `"zero"`).
    """
    from unas_keras.space.proxyless import BLOCK_CHOICES, OPTIONAL_CHOICES

    space = blocks_lib.block_table_space(_resolve_space(search_space))
    if space.backbone != table.backbone:
        raise ValueError("The search space's backbone differs from the latency table's backbone.")
    stem, layers, head = blocks_lib.layer_blocks(space.backbone, table.input_shape, table.num_classes,
                                                 table.width_multiplier)
    first, optional = [], []
    for options, (_, _, is_first) in zip(layers, space.backbone.layer_plan()):
        names = BLOCK_CHOICES if is_first else OPTIONAL_CHOICES
        row = [0.0 if options[c] is None else float(value(options[c])) for c in names]
        (first if is_first else optional).append(row)
    weights = {"first": np.array(first)}
    if optional:
        weights["optional"] = np.array(optional)
    return space, float(value(stem)) + float(value(head)), weights


def lookup_table_surrogate(table, search_space):
    """The exact linear decomposition of a lookup table as a `LatencySurrogate`.

    `bias` = overhead + stem + head; `W["first"][r, k]` / `W["optional"][r, k]`
    = the table's contribution of choice `k` at that layer (0 for `zero`).
    """
    space, bias, weights = _per_choice(table, search_space, lambda b: table.block_latency(b.key))
    return LatencySurrogate(space, table.invoke_overhead_ms + bias, weights)


def fit_calibrated_surrogate(table, search_space, architectures, latencies_ms, l2=1e-6):
    """Corrects a lookup table with whole-network measurements: `a + b * LUT + c * weights`.

    Blocks timed on their own keep their weights in cache; in the whole
    network the weights of all layers compete for it, so the table sum is
    biased low for weight-heavy networks. This fits three numbers by least
    squares on measured architectures: latency ~= a + b * table_sum(arch) +
    c * (kernel weights of arch, in millions). The result is still linear in
    the one-hot choices, so it is returned as a `LatencySurrogate` (usable as
    g and as the latency predictor). Needs only ~20 measured networks.

    Args:
        table: the `LookupTable`.
        search_space: the proxyless space (or its object).
        architectures: measured architectures.
        latencies_ms: their whole-network latencies.
        l2: tiny ridge penalty on (b, c) (on standardised features) for
            numerical stability.

    Returns:
        A `LatencySurrogate`; `report["calibration"]` holds a, b, c.
    """
    space, lut_bias, lut_w = _per_choice(table, search_space, lambda b: table.block_latency(b.key))
    lut_bias += table.invoke_overhead_ms
    _, par_bias, par_w = _per_choice(table, search_space, lambda b: blocks_lib.weight_count(b) / 1e6)
    architectures = list(architectures)
    y = np.asarray(latencies_ms, dtype=np.float64).ravel()
    if len(architectures) != y.size or y.size < 3:
        raise ValueError(
            f"fit_calibrated_surrogate needs >= 3 architectures with one latency each; got "
            f"{len(architectures)} architectures and {y.size} latencies."
        )
    lut = LatencySurrogate(space, lut_bias, lut_w)
    par = LatencySurrogate(space, par_bias, par_w)
    x = np.array([[lut.predict(a), par.predict(a)] for a in architectures])
    x_mean, y_mean = x.mean(axis=0), y.mean()
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    xc = (x - x_mean) / scale  # standardised, so l2 means the same at any network size
    coef = np.linalg.solve(xc.T @ xc + l2 * np.eye(2), xc.T @ (y - y_mean)) / scale
    intercept = y_mean - x_mean @ coef
    b, c = float(coef[0]), float(coef[1])
    weights = {name: b * lut_w[name] + c * par_w[name] for name in lut_w}
    report = {"calibration": {"intercept_ms": float(intercept), "lut_scale": b,
                              "ms_per_million_weights": c, "num_measured": int(y.size)}}
    return LatencySurrogate(space, float(intercept) + b * lut_bias + c * par_bias, weights, report=report)


class LatencyModel:
    """Latency of architectures: exact (non-differentiable) and linear surrogate.

    Args:
        predict_fn: callable architecture -> ms (e.g. `LookupTable.predict`,
            or a function that builds, converts and measures the network).
        surrogate: a `LatencySurrogate` (g).
        table: the `LookupTable` behind `predict_fn`, if any.
    """

    def __init__(self, predict_fn, surrogate, table=None):
        if not callable(predict_fn):
            raise ValueError("predict_fn must be callable (architecture -> milliseconds).")
        if not isinstance(surrogate, LatencySurrogate):
            raise ValueError(f"surrogate must be a LatencySurrogate, got {type(surrogate).__name__}.")
        self._predict_fn = predict_fn
        self.surrogate = surrogate
        self.table = table

    def predict_ms(self, architecture):
        """L_n(architecture): milliseconds (lookup-table sum or measurement)."""
        return float(self._predict_fn(architecture))

    def surrogate_ms(self, architecture):
        """g(architecture): the linear surrogate's milliseconds."""
        return self.surrogate.predict(architecture)

    def surrogate_weights(self, search_space=None):
        """`(bias, {decision_name: [rows, choices] array})` of the linear surrogate g.

        Args:
            search_space: optional space object whose decisions must match.
        """
        return self.surrogate.surrogate_weights(search_space)

    @classmethod
    def for_space(cls, space="proxyless", input_shape=(64, 64, 3), num_classes=10, threads=1,
                  cache_dir=None, runs=20, surrogate="lut", num_samples=500, l2=1e-3, seed=0,
                  progress=True, backbone=None, width_multiplier=1.0, statistic="median"):
        """Builds (or loads) the lookup table of a space and the surrogate on top.

        Args:
            space: `"proxyless"` or a proxyless search-space object (e.g.
                `supernet.search_space`; its backbone is used).
            input_shape: network input `(h, w, c)`.
            num_classes: classifier width.
            threads: LiteRT threads the table is timed with.
            cache_dir: directory for the table (a file named after the
                configuration); an existing one is reused, a partial one
                resumed. `None`: build in memory.
            runs: timed invocations per block.
            surrogate: `"lut"` (g read off the table exactly) or `"ridge"`
                (ridge regression on `num_samples` random architectures scored
                by the table, as the release does with measurements).
            num_samples: architectures for `"ridge"`.
            l2: ridge penalty for `"ridge"`.
            seed: sampling seed for `"ridge"`.
            progress: progress lines while measuring (see `build_lookup_table`).
            backbone: `MBConvBackbone` when `space` is the name.
            width_multiplier: channel multiplier of the network.
            statistic: per-block timing statistic (see `build_lookup_table`).

        Returns:
            A `LatencyModel` whose `predict_ms` is the table sum.
        """
        space_obj = blocks_lib.block_table_space(space if isinstance(space, str) else _resolve_space(space),
                                                 backbone)
        if surrogate not in ("lut", "ridge"):
            raise ValueError(f"surrogate must be 'lut' or 'ridge', got {surrogate!r}.")
        cache_path = None
        if cache_dir is not None:
            config = json.dumps([space_obj.backbone.to_dict(), list(input_shape), int(num_classes),
                                 int(threads), float(width_multiplier), statistic], sort_keys=True)
            digest = hashlib.sha1(config.encode()).hexdigest()[:10]
            h, w, _ = input_shape
            cache_path = os.path.join(
                os.fspath(cache_dir), f"lut_{space_obj.name}_{h}x{w}_n{num_classes}_t{threads}_{digest}.json")
        table = build_lookup_table(space_obj.name, input_shape=input_shape, num_classes=num_classes,
                                   threads=threads, runs=runs, cache_path=cache_path, progress=progress,
                                   backbone=space_obj.backbone, width_multiplier=width_multiplier,
                                   statistic=statistic)
        if surrogate == "lut":
            g = lookup_table_surrogate(table, space_obj)
        else:
            archs = [space_obj.sample(seed * 1_000_003 + i) for i in range(int(num_samples))]
            g = fit_latency_surrogate(space_obj, archs, [table.predict(a) for a in archs], l2=l2)
        return cls(table.predict, g, table=table)

    @classmethod
    def calibrated(cls, table, search_space, architectures, latencies_ms):
        """A `LatencyModel` whose L_n and g are the table corrected by measurements.

        See `fit_calibrated_surrogate`; both `predict_ms` and the surrogate are
        the calibrated linear predictor.
        """
        g = fit_calibrated_surrogate(table, search_space, architectures, latencies_ms)
        return cls(g.predict, g, table=table)

    @classmethod
    def from_lookup_table(cls, table, search_space=None):
        """A `LatencyModel` from an existing `LookupTable` (surrogate read off the table)."""
        from unas_keras.space.proxyless import ProxylessSearchSpace

        if not isinstance(table, LookupTable):
            table = LookupTable.load(table)
        space = search_space if search_space is not None else ProxylessSearchSpace(table.backbone)
        return cls(table.predict, lookup_table_surrogate(table, space), table=table)

    @classmethod
    def from_device_table(cls, table, search_space=None, **fit_options):
        """A `LatencyModel` from a `DeviceTable` (or the path of its CSV, with `space=` / `column=`).

        L_n is the measured latency (an architecture the table lacks raises
        ValueError); g is the ridge surrogate fitted on the table, its held-out
        figures in `surrogate.report` (see `DeviceTable.fit_surrogate`).
        """
        from unas_keras.latency.device_table import DeviceTable

        if not isinstance(table, DeviceTable):
            csv_options = {k: fit_options.pop(k) for k in ("space", "column") if k in fit_options}
            table = DeviceTable.from_csv(table, **csv_options)
        return table.latency_model(search_space, **fit_options)
