"""Pictures: every space draws to a real PNG; the heat map checks its input."""

import numpy as np
import pytest

from unas_keras import visualize
from unas_keras.space import presets

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name", ["unas_cifar10", "unas_proxyless", "mobilenet_v2", "nb201_best_cifar10"])
def test_plot_architecture_writes_png(tmp_path, name):
    path = visualize.plot_architecture(presets.get(name), tmp_path / f"{name}.png")
    data = open(path, "rb").read()
    assert data.startswith(PNG_MAGIC) and len(data) > 5000
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{name}.png"]  # no temp file left


def test_probability_heatmap(tmp_path):
    rng = np.random.default_rng(0)
    snaps = [{"first": rng.dirichlet(np.ones(6), size=6).tolist()} for _ in range(4)]
    path = visualize.plot_probability_evolution(snaps, tmp_path / "p.png",
                                                choice_labels={"first": list("abcdef")})
    assert open(path, "rb").read().startswith(PNG_MAGIC)
    with pytest.raises(ValueError, match="at least one snapshot"):
        visualize.plot_probability_evolution([], tmp_path / "q.png")
