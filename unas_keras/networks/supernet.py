"""`Supernet`: the interface every search supernet implements.

A supernet holds the shared weights of every architecture of its search space.
`SearchModel` (and anything else that trains or evaluates a supernet) uses only
this interface, so it never asks which space a supernet belongs to:

    supernet = unas_keras.networks.build_supernet("nb201", 10, (16, 16, 3))
    samples = {name: one_hot_or_relaxed for name in supernet.decisions()}
    logits = supernet((images, supernet.mix_weights(samples)), training=True)

All three supernets (`DartsSupernet`, `ProxylessSupernet`, `NB201Supernet`) are
subclassed `keras.Model`s with an explicit `call`. The DARTS and NAS-Bench-201
networks lay out their layers with one function shared with their derived
(functional) networks; their supernets run that function once on symbolic
inputs in the constructor, which makes and builds the layers in the same order
as the derived network's, and again in every `call`, which reuses them
(`LayerCache`).
"""

import keras
import numpy as np


class Supernet(keras.Model):
    """Base class of the search supernets.

    A subclass builds its layers in its constructor, passes its search space and
    image shape to `Supernet.__init__`, and implements `mix_weights` and `call`.

    Args:
        search_space: the space's decisions object (`decisions()`, `encode`,
            `to_architecture`, `sample`); see `unas_keras.space.registry`.
        num_classes: number of output classes.
        image_shape: `(height, width, channels)` of the images.
        **kwargs: `keras.Model` arguments (`name`, ...).

    Attributes:
        search_space: the search space whose decisions `mix_weights` takes; set
            once here (the same object for the supernet's lifetime).
        num_classes: number of output classes.
        image_shape: `(height, width, channels)` of the images, a tuple.
        skips_unchosen_blocks: whether `call(..., one_hot=True)` can skip the
            blocks a hard sample does not choose (so a caller gains by passing
            `one_hot=True`; the others ignore the flag).
    """

    skips_unchosen_blocks: bool = False

    def __init__(self, search_space, num_classes, image_shape, **kwargs):
        super().__init__(**kwargs)
        self.search_space = search_space
        self.num_classes = num_classes
        self.image_shape = tuple(image_shape)

    def decisions(self):
        """The space's decisions: ordered dict name -> `(rows, choices)` (`search_space.decisions()`)."""
        return self.search_space.decisions()

    def mix_weights(self, samples):
        """Maps architecture samples to this supernet's `weights` input.

        Args:
            samples: dict decision name -> `[N, rows, choices]` tensor, one-hot
                (a hard sample) or relaxed, for every decision of `decisions()`;
                N is the batch size (one architecture per example) or 1 (one for
                the whole batch).

        Returns:
            The `weights` structure `call` takes (space-specific).

        Raises:
            ValueError: on a missing or unexpected decision, or a bad shape.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement mix_weights.")

    def call(self, inputs, training=None, one_hot=False):
        """Logits of a batch of images under architecture weights.

        Args:
            inputs: `(images, weights)`: images `[B, *image_shape]` and the
                `weights` of `mix_weights(samples)`.
            training: Keras training flag.
            one_hot: `True` when the weights come from a hard (one-hot) sample;
                a supernet with `skips_unchosen_blocks` may then run only the
                chosen blocks (same logits), the others ignore it.

        Returns:
            `[B, num_classes]` logits.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement call.")

    def architecture_weights(self, architecture, batch_size=1):
        """The `weights` input that selects one architecture of the space (one-hot).

        Args:
            architecture: an `Architecture` of this supernet's space.
            batch_size: N of the weights (1 broadcasts over any batch).
        """
        return self.mix_weights(one_hot_samples(self.search_space, architecture, batch_size))


def one_hot_samples(search_space, architecture, batch_size=1):
    """One-hot samples (numpy float32, `[batch_size, rows, choices]` per decision) that select `architecture`.

    `supernet.mix_weights(one_hot_samples(supernet.search_space, arch))` gives the
    supernet weights of the derived architecture.
    """
    choices = search_space.encode(architecture)
    out = {}
    for key, (rows, k) in search_space.decisions().items():
        onehot = np.zeros((batch_size, rows, k), "float32")
        for r, c in enumerate(choices[key]):
            onehot[:, r, c] = 1.0
        out[key] = onehot
    return out


class LayerCache:
    """Named layers, each made once: lets one layout function build a network and then run it again.

    `cache(factory, *args, name=n, **kwargs)` returns the layer named `n`,
    calling `factory(*args, name=n, **kwargs)` the first time only. A derived
    network's layout uses a fresh cache (every layer is made); a supernet keeps
    its cache's `layers` and reuses them in `call`.
    """

    def __init__(self, layers=None):
        self.layers = {} if layers is None else layers

    def __call__(self, factory, *args, name, **kwargs):
        layer = self.layers.get(name)
        if layer is None:
            layer = factory(*args, name=name, **kwargs)
            self.layers[name] = layer
        return layer
