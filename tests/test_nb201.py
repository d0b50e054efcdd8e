"""NAS-Bench-201 layers, derived network and supernet."""

import numpy as np
import pytest

import keras
import tensorflow as tf

from unas_keras.layers import nb201_cell, nb201_ops
from unas_keras.networks import nb201 as nb201_net
from unas_keras.space import nb201 as nb201_space
from unas_keras.space import presets
from unas_keras.space.architecture import Architecture

TINY = {"channels": 4, "cells_per_stage": 1}
SHAPE = (16, 16, 3)


def _param_formula(edge_ops, num_classes=10, c=16, n=5):
    """Independent count of the benchmark network's PyTorch parameters.

    Conv kernels have no bias; every BN has a scale and an offset.
    """
    def cell(width):
        total = 0
        for op in edge_ops:
            if op == "nor_conv_3x3":
                total += 9 * width * width + 2 * width
            elif op == "nor_conv_1x1":
                total += width * width + 2 * width
        return total

    def reduction(cin, cout):
        return (9 * cin * cout + 2 * cout) + (9 * cout * cout + 2 * cout) + cin * cout

    stem = 27 * c + 2 * c
    cells = n * (cell(c) + cell(2 * c) + cell(4 * c))
    head = 2 * 4 * c + 4 * c * num_classes + num_classes
    return stem + cells + reduction(c, 2 * c) + reduction(2 * c, 4 * c) + head


def _trainable(model):
    return int(sum(np.prod(v.shape) for v in model.trainable_weights))


def test_published_parameter_count():
    # NATS-Bench reports 0.802426 MB (million parameters) on CIFAR-10 for cells with three
    # nor_conv_3x3 edges, e.g. this one (D-X-Y/NATS-Bench issues #18 and #36).
    model = nb201_net.build_nb201_model(
        "|skip_connect~0|+|none~0|nor_conv_3x3~1|+|avg_pool_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|", 10, (32, 32, 3))
    assert _trainable(model) == 802426


@pytest.mark.parametrize("name", ["nb201_best_cifar10", "nb201_resnet"])
def test_preset_parameter_counts_match_formula(name):
    arch = presets.get(name)
    model = nb201_net.build_nb201_model(arch, 10, (32, 32, 3))
    assert _trainable(model) == _param_formula(arch.genotype.edges)
    assert model.output_shape == (None, 10)


def test_best_cifar10_count_and_random_cells_match_formula():
    assert _param_formula(presets.get("nb201_best_cifar10").genotype.edges) == 1073466
    space = nb201_space.NB201SearchSpace()
    for seed in range(3):
        arch = space.sample(seed)
        model = nb201_net.build_nb201_model(arch, 100, (16, 16, 3), channels=8, cells_per_stage=2)
        assert _trainable(model) == _param_formula(arch.genotype.edges, num_classes=100, c=8, n=2)


def test_avg_pool_excludes_padding():
    x = np.arange(16, dtype="float32").reshape(1, 4, 4, 1)
    y = keras.ops.convert_to_numpy(nb201_ops.AvgPool3x3()(x))
    assert y[0, 0, 0, 0] == pytest.approx((0 + 1 + 4 + 5) / 4)
    assert y[0, 1, 1, 0] == pytest.approx(np.mean(x[0, :3, :3, 0]))


def test_layer_configs_round_trip():
    layers = [
        nb201_ops.ReLUConvBN(4, 3, strides=2, affine=False, name="a"),
        nb201_ops.NB201ResidualBlock(8, strides=2, name="b"),
        nb201_cell.NB201Cell(4, presets.get("nb201_resnet").genotype.edges, name="c"),
        nb201_cell.NB201MixedOp(4, name="d"),
        nb201_cell.NB201SearchCell(4, name="e"),
    ]
    for layer in layers:
        clone = layer.__class__.from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()


def test_layer_argument_errors():
    with pytest.raises(ValueError, match="strides"):
        nb201_ops.ReLUConvBN(4, 3, strides=3)
    with pytest.raises(ValueError, match="Unknown NAS-Bench-201 operation"):
        nb201_cell.NB201Cell(4, ["conv"] * 6)
    with pytest.raises(ValueError, match="6 operations"):
        nb201_cell.NB201Cell(4, ["none"] * 5)
    with pytest.raises(ValueError, match="multiples of 4"):
        nb201_net.build_nb201_model(presets.get("nb201_resnet"), 10, (18, 16, 3))
    with pytest.raises(ValueError, match="nb201"):
        nb201_net.build_nb201_model(presets.get("darts_v2"), 10, (32, 32, 3))
    with pytest.raises(ValueError, match="num_classes"):
        nb201_net.build_nb201_supernet(0, SHAPE)


def test_all_none_cell_outputs_zeros():
    cell = nb201_cell.NB201Cell(4, ["none"] * 6)
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 4)).astype("float32")
    assert np.all(keras.ops.convert_to_numpy(cell(x)) == 0.0)


def test_derived_model_fits_and_reloads(tmp_path):
    keras.utils.set_random_seed(0)
    arch = presets.get("nb201_best_cifar10")
    model = nb201_net.build_nb201_model(arch, 3, SHAPE, **TINY)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).normal(size=(4,) + SHAPE).astype("float32")
    y = np.array([0, 1, 2, 0])
    history = model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    path = str(tmp_path / "nb201.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_allclose(model.predict(x, verbose=0), reloaded.predict(x, verbose=0), rtol=1e-5, atol=1e-5)


def _copy_supernet_into_derived(supernet, model, edge_ops):
    """Shared weights: every derived layer takes the supernet's values."""
    for layer in model.layers:
        if isinstance(layer, nb201_cell.NB201Cell):
            search_cell = supernet.get_layer(layer.name)
            for k, edge_layer in enumerate(layer.edge_layers):
                if edge_layer is None or not edge_layer.weights:
                    continue
                source = search_cell.edge_layers[k].candidates[edge_ops[k]]
                edge_layer.conv.kernel.assign(source.conv.kernel)
                edge_layer.bn.moving_mean.assign(source.bn.moving_mean)
                edge_layer.bn.moving_variance.assign(source.bn.moving_variance)
                edge_layer.bn.gamma.assign(np.ones(edge_layer.bn.gamma.shape, "float32"))
                edge_layer.bn.beta.assign(np.zeros(edge_layer.bn.beta.shape, "float32"))
        elif layer.weights:
            source = supernet.get_layer(layer.name)
            assert [v.path for v in source.weights] == [v.path for v in layer.weights]
            for target, value in zip(layer.weights, source.weights):
                target.assign(value)


def _randomize(model, seed):
    rng = np.random.default_rng(seed)
    for v in model.weights:
        if "moving_variance" in v.path:
            v.assign(rng.uniform(0.5, 2.0, size=v.shape).astype("float32"))
        else:
            v.assign(rng.normal(scale=0.3, size=v.shape).astype("float32"))


def _one_hot(choices):
    return np.eye(len(nb201_space.OPS), dtype="float32")[np.asarray(choices)]


@pytest.fixture(scope="module")
def supernet():
    keras.utils.set_random_seed(1)
    net = nb201_net.build_nb201_supernet(5, SHAPE, **TINY)
    _randomize(net, 1)
    return net


def test_supernet_interface(supernet):
    assert isinstance(supernet.search_space, nb201_space.NB201SearchSpace)
    samples = {"edges": np.zeros((2, 6, 5), "float32")}
    assert supernet.mix_weights(samples)["edges"] is samples["edges"]
    with pytest.raises(ValueError, match="edges"):
        supernet.mix_weights({"normal": samples["edges"]})
    with pytest.raises(ValueError, match=r"\[N, 6, 5\]"):
        supernet.mix_weights({"edges": np.zeros((2, 6, 4), "float32")})
    clone = nb201_net.NB201Supernet.from_config(supernet.get_config())
    assert clone.count_params() == supernet.count_params()


@pytest.mark.parametrize("training", [False, True])
def test_supernet_one_hot_equals_derived_network(supernet, training):
    x = np.random.default_rng(2).normal(size=(3,) + SHAPE).astype("float32")
    cells = [
        presets.get("nb201_best_cifar10").genotype.edges,
        presets.get("nb201_resnet").genotype.edges,
        ("avg_pool_3x3", "none", "nor_conv_1x1", "none", "none", "skip_connect"),
    ]
    for edge_ops in cells:
        choices = [nb201_space.OPS.index(op) for op in edge_ops]
        model = nb201_net.build_nb201_model(nb201_space.NB201Genotype(edge_ops), 5, SHAPE, **TINY)
        _copy_supernet_into_derived(supernet, model, edge_ops)
        expected = keras.ops.convert_to_numpy(model(x, training=training))
        weights = supernet.mix_weights({"edges": _one_hot(choices)[None]})
        got = keras.ops.convert_to_numpy(supernet((x, weights), training=training))
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_supernet_per_example_architectures(supernet):
    # Inference mode: row i of a per-example sample must give derived(arch_i)(x_i).
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3,) + SHAPE).astype("float32")
    choices = rng.integers(0, 5, size=(3, 6))
    got = keras.ops.convert_to_numpy(supernet((x, {"edges": _one_hot(choices)}), training=False))
    for i in range(3):
        edge_ops = tuple(nb201_space.OPS[c] for c in choices[i])
        model = nb201_net.build_nb201_model(nb201_space.NB201Genotype(edge_ops), 5, SHAPE, **TINY)
        _copy_supernet_into_derived(supernet, model, edge_ops)
        expected = keras.ops.convert_to_numpy(model(x[i:i + 1], training=False))
        np.testing.assert_allclose(got[i:i + 1], expected, rtol=1e-4, atol=1e-4)


def test_supernet_broadcast_of_one_weight(supernet):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2,) + SHAPE).astype("float32")
    w = rng.dirichlet(np.ones(5), size=(1, 6)).astype("float32")
    one = supernet((x, {"edges": w}), training=True)
    repeated = supernet((x, {"edges": np.repeat(w, 2, axis=0)}), training=True)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(one), keras.ops.convert_to_numpy(repeated), atol=1e-5)


def test_every_supernet_variable_gets_a_gradient(supernet):
    rng = np.random.default_rng(5)
    x = tf.constant(rng.normal(size=(2,) + SHAPE).astype("float32"))
    w = tf.Variable(rng.dirichlet(np.ones(5), size=(2, 6)).astype("float32"))
    labels = tf.constant([0, 3])
    with tf.GradientTape() as tape:
        logits = supernet((x, {"edges": w}), training=True)
        loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
    variables = supernet.trainable_variables
    grads = tape.gradient(loss, variables + [w])
    assert len(variables) > 0
    for var, grad in zip(variables + [w], grads):
        assert grad is not None, var.path
        assert float(tf.reduce_max(tf.abs(grad))) > 0.0, var.path
    # Only the convolution kernels of the cells, the stem/reduction/head BNs and the
    # classifier are trainable: the cells' BNs are not affine in search.
    assert not any("cell_" in v.path and ("gamma" in v.path or "beta" in v.path) for v in variables)


def test_architecture_round_trip_and_dispatch():
    from unas_keras import networks

    arch = presets.get("nb201_best_cifar10")
    again = Architecture.from_json(arch.to_json())
    assert again == arch
    assert again.genotype.to_string() == arch.genotype.to_string()
    model = networks.build_model(again, 10, SHAPE, **TINY)
    assert model.output_shape == (None, 10)
    net = networks.build_supernet("nb201", 10, SHAPE, **TINY)
    assert isinstance(net, nb201_net.NB201Supernet)
