"""Pictures of architectures and of a search (PNG files, matplotlib only).

* `plot_darts_cell`: a derived DARTS cell drawn as a graph.
* `plot_mbconv_strip`: an MBConv stack drawn as a strip of blocks.
* `plot_nb201_cell`: a NAS-Bench-201 cell drawn as a graph.
* `plot_probability_evolution`: heat maps of the architecture probabilities
  over the epochs of a search.
* `plot_architecture`: dispatches on the architecture's space.
"""

import os

import numpy as np

_OP_COLORS = {
    "skip_connect": "#9e9e9e",
    "none": "#eeeeee",
    "max_pool_3x3": "#64b5f6",
    "avg_pool_3x3": "#4dd0e1",
    "sep_conv_3x3": "#ffb74d",
    "sep_conv_5x5": "#ff8a65",
    "sep_conv_7x7": "#e57373",
    "dil_conv_3x3": "#aed581",
    "dil_conv_5x5": "#81c784",
    "nor_conv_1x1": "#ffd54f",
    "nor_conv_3x3": "#ff8a65",
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path):
    """Saves a figure atomically (temp file then rename) and closes it."""
    plt = _pyplot()
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp.png"
    try:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _draw_graph(ax, positions, edges, title):
    """Draws labelled nodes and labelled, colored edges on `ax`."""
    seen = {}
    for (src, dst, label) in edges:
        (x0, y0), (x1, y1) = positions[src], positions[dst]
        repeat = seen.get((src, dst), 0)
        seen[(src, dst)] = repeat + 1
        color = _OP_COLORS.get(label, "#90a4ae")
        rad = 0.12 if repeat == 0 else -0.25
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                    arrowprops=dict(arrowstyle="-|>", color=color, lw=2.2,
                                    shrinkA=16, shrinkB=16, connectionstyle=f"arc3,rad={rad}"))
        if label:
            t = 0.6 if repeat == 0 else 0.78
            ax.text(x0 + t * (x1 - x0), y0 + t * (y1 - y0), label, fontsize=7, ha="center", va="center",
                    bbox=dict(boxstyle="round,pad=0.15", fc="white", ec=color, lw=0.8))
    for name, (x, y) in positions.items():
        ax.text(x, y, name, ha="center", va="center", fontsize=9,
                bbox=dict(boxstyle="round,pad=0.4", fc="#e3f2fd", ec="#1565c0"))
    ax.set_title(title, fontsize=10)
    ax.set_axis_off()
    xs = [p[0] for p in positions.values()]
    ys = [p[1] for p in positions.values()]
    ax.set_xlim(min(xs) - 0.8, max(xs) + 0.8)
    ax.set_ylim(min(ys) - 0.8, max(ys) + 0.8)


def plot_darts_cell(genotype, path, title=None):
    """Draws the normal and reduction cells of a `DartsGenotype` side by side.

    Args:
        genotype: a `unas_keras.space.darts.DartsGenotype`.
        path: PNG file to write.
        title: optional figure title.

    Returns:
        The path written.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(15, 5))
    for ax, cell_type in zip(axes, ("normal", "reduce")):
        nodes = genotype.cell(cell_type)
        names = ["c_{k-2}", "c_{k-1}"] + [f"node {n}" for n in range(len(nodes))] + ["c_{k}"]
        positions = {names[0]: (0.0, 2.2), names[1]: (0.0, -2.2)}
        for n in range(len(nodes)):
            positions[names[n + 2]] = (2.5 * (n + 1), 1.0 if n % 2 == 0 else -1.0)
        positions[names[-1]] = (2.5 * (len(nodes) + 1), 0.0)
        edges = [(names[inp], names[n + 2], op) for n, node in enumerate(nodes) for op, inp in node]
        edges += [(names[n + 2], names[-1], "") for n in range(len(nodes))]
        _draw_graph(ax, positions, edges, f"{cell_type} cell")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_nb201_cell(genotype, path, title=None):
    """Draws a NAS-Bench-201 cell (4 nodes, 6 edges)."""
    from unas_keras.space.nb201 import EDGES

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    positions = {f"node {j}": (1.6 * j, 0.8 if j % 2 else -0.8) for j in range(4)}
    edges = [(f"node {i}", f"node {j}", op) for (j, i), op in zip(EDGES, genotype.edges) if op != "none"]
    _draw_graph(ax, positions, edges, title or genotype.to_string())
    return _save(fig, path)


def plot_mbconv_strip(genotype, path, title=None):
    """Draws an MBConv stack (ProxylessNAS space) as a strip of blocks.

    The block height grows with the expansion ratio, the width with the kernel
    size; skipped (`zero`) layers are drawn hollow; stages are labelled with
    their width and stride.
    """
    from unas_keras.space.proxyless import parse_block

    plt = _pyplot()
    plan = genotype.backbone.layer_plan()
    fig, ax = plt.subplots(figsize=(max(8, 0.55 * len(plan) + 2), 3.2))
    x = 0.0
    for i, (choice, (channels, stride, first)) in enumerate(zip(genotype.layers, plan)):
        block = parse_block(choice)
        if first:
            ax.axvline(x - 0.1, color="#b0bec5", lw=0.8, ls="--")
            ax.text(x, 1.25, f"{channels}ch s{stride}", fontsize=7, color="#455a64")
        if block is None:
            ax.add_patch(_pyplot().Rectangle((x, -0.3), 0.4, 0.6, fill=False, ec="#9e9e9e", ls=":"))
            ax.text(x + 0.2, -0.55, "zero", fontsize=6, ha="center", rotation=90, va="top")
            x += 0.6
            continue
        kernel, expansion = block
        width, height = 0.25 + 0.08 * kernel, 0.35 + 0.12 * expansion
        color = {3: "#ffe0b2", 5: "#ffab91", 7: "#e57373"}.get(kernel, "#cfd8dc")
        ax.add_patch(_pyplot().Rectangle((x, -height / 2), width, height, fc=color, ec="#5d4037"))
        ax.text(x + width / 2, 0, f"k{kernel}\ne{expansion}", fontsize=6.5, ha="center", va="center")
        x += width + 0.15
    ax.set_xlim(-0.3, x + 0.3)
    ax.set_ylim(-1.3, 1.5)
    ax.set_axis_off()
    ax.set_title(title or f"MBConv stack, {len(plan)} searchable layers", fontsize=10)
    return _save(fig, path)


def plot_architecture(architecture, path, title=None):
    """Draws any architecture with the picture that suits its space."""
    from unas_keras.space import registry

    plotter = globals()[registry.get(architecture.space).plotter]
    return plotter(architecture.genotype, path, title=title or architecture.name)


def plot_probability_evolution(snapshots, path, choice_labels=None, title=None):
    """Heat maps of architecture probabilities over a search.

    Args:
        snapshots: list (one per epoch) of dicts `decision name -> [rows, choices]`
            probabilities (as written in `distribution.json` / history).
        path: PNG file to write.
        choice_labels: optional dict `decision name -> list of choice labels`.
        title: optional figure title.

    Each decision gets one panel: rows are (decision row, choice) pairs, columns
    are epochs, color is probability.

    Returns:
        The path written.
    """
    if not snapshots:
        raise ValueError("plot_probability_evolution needs at least one snapshot of probabilities.")
    plt = _pyplot()
    names = list(snapshots[0])
    fig, axes = plt.subplots(1, len(names), figsize=(max(6, 2.2 * len(names)), 5), squeeze=False)
    for ax, name in zip(axes[0], names):
        stack = np.stack([np.asarray(s[name], dtype=float) for s in snapshots], axis=-1)
        rows, choices, epochs = stack.shape
        image = stack.reshape(rows * choices, epochs)
        ax.imshow(image, aspect="auto", vmin=0.0, vmax=1.0, cmap="viridis", interpolation="nearest")
        labels = (choice_labels or {}).get(name)
        if labels is not None and rows * choices <= 60:
            ax.set_yticks(range(rows * choices))
            ax.set_yticklabels([f"{r}:{labels[c]}" for r in range(rows) for c in range(choices)], fontsize=5)
        else:
            ax.set_yticks([])
        for r in range(1, rows):
            ax.axhline(r * choices - 0.5, color="white", lw=0.6)
        ax.set_title(name, fontsize=7)
        ax.set_xlabel("epoch", fontsize=7)
    if title:
        fig.suptitle(title)
    return _save(fig, path)
