"""DARTS-space networks: derived model, supernet, their equivalence, training and saving."""

import numpy as np
import pytest
import tensorflow as tf
import keras
from keras import ops

from unas_keras.layers.darts_cell import DartsCell, DartsSearchCell
from unas_keras.layers.darts_ops import FactorizedReduce
from unas_keras.layers.drop_path import DropPathSchedule, drop_path_layers
from unas_keras.networks.darts import (
    DartsSupernet,
    architecture_samples,
    build_darts_model,
    build_darts_supernet,
    mix_weights,
    reduction_cells,
)
from unas_keras.space import presets
from unas_keras.space.darts import DartsSearchSpace, edge_index

TINY = dict(init_channels=4, num_cells=5)
SHAPE = (16, 16, 3)


@pytest.fixture(scope="module", params=["by_source", "per_edge"])
def supernet(request):
    keras.utils.set_random_seed(0)
    return build_darts_supernet(10, SHAPE, ops="unas", edge_grouping=request.param, **TINY)


def _images(batch, seed=0, shape=SHAPE):
    return tf.constant(np.random.default_rng(seed).normal(size=(batch,) + shape).astype("float32"))


def _relaxed_samples(space, batch, seed):
    rng = np.random.default_rng(seed)
    out = {}
    for name, (rows, k) in space.decisions().items():
        logits = rng.normal(size=(batch, rows, k))
        out[name] = tf.constant((np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype("float32"))
    return out


def _copy_supernet_to_derived(supernet, derived):
    """Copies the supernet weights that the derived architecture uses (layers match by name)."""
    for layer in derived.layers:
        if not layer.weights:
            continue
        src = supernet.get_layer(layer.name)
        if isinstance(layer, DartsCell):
            assert isinstance(src, DartsSearchCell)
            layer.preprocess0.set_weights(src.preprocess0.get_weights())
            layer.preprocess1.set_weights(src.preprocess1.get_weights())
            for n, node in enumerate(layer.nodes):
                for p, (op_name, inp) in enumerate(node):
                    src.copy_edge_weights(n, inp, op_name, layer.node_ops[2 * n + p])
        else:
            layer.set_weights(src.get_weights())


def test_reduction_cells_and_structure():
    assert reduction_cells(20) == [6, 13]
    assert reduction_cells(8) == [2, 5]
    assert reduction_cells(14) == [4, 9]
    model = build_darts_model(presets.get("darts_v2"), 10, SHAPE, **TINY)
    assert [l.name for l in model.layers if isinstance(l, DartsCell)] == [f"cell_{i}" for i in range(5)]
    assert [l.reduction for l in model.layers if isinstance(l, DartsCell)] == [False, True, False, True, False]
    assert model.get_layer("cell_2").reduction_prev and isinstance(
        model.get_layer("cell_2").preprocess0, FactorizedReduce)
    assert model.output_shape == (None, 10)


def test_supernet_one_hot_equals_derived_network(supernet):
    arch = supernet.search_space.sample(seed=3)
    derived = build_darts_model(arch, 10, SHAPE, affine=False, **TINY)
    _copy_supernet_to_derived(supernet, derived)
    x = _images(2)
    for batch in (1, 2):  # one architecture per minibatch, and the same one per example
        weights = supernet.architecture_weights(arch, batch_size=batch)
        y_super = supernet((x, weights), training=True)
        np.testing.assert_allclose(y_super, derived(x, training=True), atol=1e-4)


def test_supernet_per_example_architectures(supernet):
    # With inference BN every example is independent: example b follows architecture b.
    space = supernet.search_space
    archs = [space.sample(seed=11), space.sample(seed=12)]
    samples = {k: np.concatenate([architecture_samples(space, a)[k] for a in archs]) for k in space.decisions()}
    x = _images(2, seed=1)
    y = supernet((x, supernet.mix_weights(samples)), training=False)
    for b, arch in enumerate(archs):
        derived = build_darts_model(arch, 10, SHAPE, affine=False, **TINY)
        _copy_supernet_to_derived(supernet, derived)
        np.testing.assert_allclose(y[b:b + 1], derived(x[b:b + 1], training=False), atol=1e-4)


def test_supernet_every_variable_gets_gradient_and_weights_broadcast(supernet):
    space = supernet.search_space
    samples = _relaxed_samples(space, 1, seed=2)
    x = _images(3, seed=2)
    labels = tf.constant([1, 4, 7])
    weights = supernet.mix_weights(samples)
    with tf.GradientTape() as tape:
        tape.watch(weights["normal"])
        logits = supernet((x, weights), training=True)
        loss = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        loss = ops.mean(loss)
    grads = tape.gradient(loss, supernet.trainable_variables + [weights["normal"]])
    missing = [v.path for v, g in zip(supernet.trainable_variables, grads) if g is None or not np.any(g)]
    assert not missing, missing
    assert np.any(grads[-1])  # the edge weights get a gradient too (the architecture step needs it)
    # N = 1 broadcasts: same as tiling the weights over the batch.
    tiled = {k: ops.tile(v, (3, 1, 1)) for k, v in weights.items()}
    np.testing.assert_allclose(logits, supernet((x, tiled), training=True), atol=1e-5)


def test_mix_weights_is_sum_of_outer_products():
    space = DartsSearchSpace("unas_imagenet")
    samples = _relaxed_samples(space, 2, seed=4)
    w = mix_weights(samples)
    assert tuple(w["normal"].shape) == (2, 14, 5) and tuple(w["reduce"].shape) == (2, 14, 5)
    for n in range(4):
        i = np.asarray(samples[f"reduce_node{n}_inputs"])
        o = np.asarray(samples[f"reduce_node{n}_ops"])
        expected = np.einsum("bj,bk->bjk", i[:, 0], o[:, 0]) + np.einsum("bj,bk->bjk", i[:, 1], o[:, 1])
        start = edge_index(n, 0)
        np.testing.assert_allclose(np.asarray(w["reduce"])[:, start:start + n + 2], expected, rtol=1e-6)
    with pytest.raises(ValueError, match="normal_node0_inputs"):
        mix_weights({})
    bad = dict(samples, normal_node2_inputs=np.zeros((2, 2, 3), "float32"))
    with pytest.raises(ValueError, match=r"\[N, 2, 4\]"):
        mix_weights(bad)


def test_supernet_attributes_and_op_count_check(supernet):
    assert isinstance(supernet, keras.Model) and isinstance(supernet, DartsSupernet)
    assert supernet.search_space.ops[0] == "skip_connect" and len(supernet.search_space.ops) == 7
    five = _relaxed_samples(DartsSearchSpace("unas_imagenet"), 1, seed=0)
    with pytest.raises(ValueError, match="5 ops"):
        supernet.mix_weights(five)
    assert supernet.get_config()["num_cells"] == 5
    # No affine BN inside the cells of the search form.
    for layer in supernet.layers:
        if isinstance(layer, DartsSearchCell):
            assert not any("gamma" in v.path or "beta" in v.path for v in layer.weights)


def test_fit_step_with_drop_path():
    keras.utils.set_random_seed(1)
    model = build_darts_model(presets.get("unas_cifar10"), 10, SHAPE, drop_path_rate=0.2, init_channels=4,
                              num_cells=3)
    assert len(drop_path_layers(model)) == 3
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).normal(size=(4,) + SHAPE).astype("float32")
    y = np.arange(4) % 10
    before = [v.numpy().copy() for v in model.trainable_variables]
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[DropPathSchedule(0.2, 2)])
    assert np.isfinite(history.history["loss"]).all()
    assert float(drop_path_layers(model)[0].rate_variable.numpy()) == pytest.approx(0.0)  # epoch 0 of the ramp
    changed = [not np.allclose(b, v.numpy()) for b, v in zip(before, model.trainable_variables)]
    assert all(changed)


def test_auxiliary_head_outputs():
    keras.utils.set_random_seed(1)
    model = build_darts_model(presets.get("darts_v2"), 10, (32, 32, 3), auxiliary=True, **TINY)
    plain = build_darts_model(presets.get("darts_v2"), 10, (32, 32, 3), **TINY)
    assert len(model.outputs) == 2
    logits, aux_logits = model(_images(2, shape=(32, 32, 3)), training=True)
    assert tuple(logits.shape) == (2, 10) and tuple(aux_logits.shape) == (2, 10)
    # The auxiliary head (after cell 2 * 5 // 3 = 3, an 8x8 map) is everything the plain model lacks.
    aux_params = sum(int(np.prod(v.shape)) for l in model.layers if l.name.startswith("auxiliary")
                     for v in l.trainable_weights)
    c_aux = 4 * 4 * 4  # 4 nodes x C after two doublings
    expected_aux = c_aux * 128 + 2 * 128 + 128 * 768 * 4 + 2 * 768 + 768 * 10 + 10
    assert aux_params == expected_aux
    assert model.count_params() - plain.count_params() == expected_aux + 2 * (128 + 768)  # + BN moving stats


def test_save_and_reload_keras_format(tmp_path):
    # Import every layer module, so same-named classes of other spaces are registered too.
    import unas_keras  # noqa: F401
    import unas_keras.layers.nb201_ops  # noqa: F401

    keras.utils.set_random_seed(2)
    model = build_darts_model(presets.get("darts_v2"), 10, SHAPE, drop_path_rate=0.1, **TINY)
    x = _images(2, seed=5)
    expected = model(x, training=False)
    path = str(tmp_path / "darts.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_allclose(reloaded(x, training=False), expected, atol=1e-6)
    assert len(drop_path_layers(reloaded)) == 5
    assert [l.name for l in reloaded.layers] == [l.name for l in model.layers]


def test_imagenet_stem_and_first_cell():
    model = build_darts_model(presets.get("unas_imagenet"), 7, (128, 128, 3), init_channels=4, num_cells=3)
    # stem0: two stride-2 convolutions (C/2 then C), stem1: one more; the first cell sees a reduced s0.
    assert model.get_layer("stem0_a_conv").output.shape[1:] == (64, 64, 2)
    assert model.get_layer("stem0_b_bn").output.shape[1:] == (32, 32, 4)
    assert model.get_layer("stem1_bn").output.shape[1:] == (16, 16, 4)
    cell0 = model.get_layer("cell_0")
    assert cell0.reduction_prev and isinstance(cell0.preprocess0, FactorizedReduce)
    assert model.output_shape == (None, 7)


def test_bad_arguments():
    arch = presets.get("darts_v2")
    with pytest.raises(ValueError, match="input_shape"):
        build_darts_model(arch, 10, (32, 32))
    with pytest.raises(ValueError, match="num_classes"):
        build_darts_model(arch, 0, SHAPE)
    with pytest.raises(ValueError, match="darts"):
        build_darts_model(presets.get("mobilenet_v2"), 10, SHAPE)
    with pytest.raises(ValueError, match="drop_path_rate"):
        build_darts_model(arch, 10, SHAPE, drop_path_rate=1.5)
    with pytest.raises(ValueError, match="auxiliary head"):
        build_darts_model(arch, 10, SHAPE, auxiliary=True, **TINY)
    with pytest.raises(ValueError, match="op set"):
        build_darts_supernet(10, SHAPE, ops="nope")
