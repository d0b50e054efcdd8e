"""Tests of the ProxylessNAS-space networks: golden MobileNetV2 / ProxylessNAS networks, supernet."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from unas_keras.networks import proxyless as px
from unas_keras.space import presets
from unas_keras.space.proxyless import (
    BLOCK_CHOICES,
    OPTIONAL_CHOICES,
    MBConvBackbone,
    ProxylessGenotype,
)

MOBILENET_V2_TRAINABLE = 3_504_872  # keras.applications.MobileNetV2(weights=None), 1000 classes
# ProxylessNAS-GPU, 224x224, 1000 classes (published "7.1M"). Obtained twice, independently of
# our Keras code: (1) a clean-room PyTorch network (torch 2.13 in a separate venv) built like the
# ProxylessNAS release (3x3 stride-2 stem conv without bias + BN + ReLU6; MBConv blocks: 1x1
# expand (absent for expand ratio 1), depthwise, 1x1 project, all without bias, each followed by
# BN with weight and bias; 1x1 feature-mix conv + BN; Linear with bias), counting parameters with
# requires_grad; (2) the formula `_reference_count` below. Both give 7,119,848 (the released
# model's "7.12M"), and the same tool gives 3,504,872 for MobileNetV2 and 5,965,528 for UNAS.
PROXYLESSNAS_GPU_TRAINABLE = 7_119_848
UNAS_PROXYLESS_TRAINABLE = 5_965_528  # UNAS's ProxylessNAS-space result, same count rules

TINY_BACKBONE = MBConvBackbone(
    stem_channels=8, first_block_channels=8, stage_channels=(8, 8, 16), stage_strides=(2, 1, 2),
    stage_depths=(2, 2, 1), head_channels=32)


def _reference_count(genotype, num_classes=1000):
    """Parameter count of an MBConv network written from the ProxylessNAS paper, not our code."""
    b = genotype.backbone

    def conv_bn(cin, cout, k=1, depthwise=False):
        return (k * k * cin if depthwise else k * k * cin * cout) + 2 * cout

    total = conv_bn(3, b.stem_channels, 3)
    total += conv_bn(b.stem_channels, b.stem_channels, 3, True) + conv_bn(b.stem_channels,
                                                                        b.first_block_channels)
    cin = b.first_block_channels
    for choice, (cout, _, _) in zip(genotype.layers, b.layer_plan()):
        if choice == "zero":
            continue
        k, e = int(choice[1]), int(choice[3])
        mid = cin * e
        total += conv_bn(cin, mid) + conv_bn(mid, mid, k, True) + conv_bn(mid, cout)
        cin = cout
    total += conv_bn(cin, b.head_channels) + b.head_channels * num_classes + num_classes
    return total


def _trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.fixture(scope="module")
def mobilenets():
    """(ours, keras.applications.MobileNetV2) at 224x224, 1000 classes, built once."""
    ours = px.build_proxyless_model(presets.get("mobilenet_v2").genotype, 1000, (224, 224, 3))
    reference = keras.applications.MobileNetV2(weights=None)
    return ours, reference


def test_mobilenet_v2_parameter_count(mobilenets):
    ours, reference = mobilenets
    assert _trainable(reference) == MOBILENET_V2_TRAINABLE
    assert _trainable(ours) == MOBILENET_V2_TRAINABLE
    assert _reference_count(presets.get("mobilenet_v2").genotype) == MOBILENET_V2_TRAINABLE
    assert len(ours.non_trainable_weights) == len(reference.non_trainable_weights)


def test_mobilenet_v2_layer_output_shapes(mobilenets):
    ours, reference = mobilenets
    block_ends = []
    for i in range(1, 17):
        names = [layer.name for layer in reference.layers]
        block_ends.append(f"block_{i}_add" if f"block_{i}_add" in names else f"block_{i}_project_BN")
    pairs = [("stem_relu", "Conv1_relu"), ("first_block", "expanded_conv_project_BN")]
    pairs += [(f"layer_{i}", name) for i, name in enumerate(block_ends)]
    pairs += [("head_relu", "out_relu"), ("pool", reference.layers[-2].name),
              ("classifier", "predictions")]
    for mine, theirs in pairs:
        assert ours.get_layer(mine).output.shape == reference.get_layer(theirs).output.shape, mine


def test_mobilenet_v2_same_weights_same_predictions(mobilenets):
    """Weight shapes match in order, so MobileNetV2's weights load into ours: layer for layer."""
    ours, reference = mobilenets
    assert [tuple(w.shape) for w in ours.weights] == [tuple(w.shape) for w in reference.weights]
    rng = np.random.default_rng(0)
    values = []
    for w in reference.weights:
        shape = tuple(w.shape)
        if w.name in ("moving_variance", "gamma"):
            values.append(rng.uniform(0.5, 1.5, shape).astype("float32"))
        elif w.name in ("moving_mean", "beta"):
            values.append(0.1 * rng.standard_normal(shape).astype("float32"))
        else:
            values.append(np.asarray(w))
    reference.set_weights(values)
    ours.set_weights(values)
    x = rng.uniform(-1, 1, (2, 224, 224, 3)).astype("float32")
    expected = np.asarray(reference(x, training=False))
    logits = np.asarray(ours(x, training=False))
    # keras MobileNetV2 ends in softmax; ours returns logits.
    np.testing.assert_allclose(keras.ops.convert_to_numpy(keras.ops.softmax(logits)), expected,
                               rtol=1e-4, atol=1e-6)
    assert np.std(logits) > 1e-3


@pytest.mark.parametrize("alpha", [0.35, 1.3])
def test_width_multiplier_matches_keras(alpha):
    ours = px.build_proxyless_model(presets.get("mobilenet_v2").genotype, 10, (96, 96, 3),
                                    width_multiplier=alpha)
    reference = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=alpha, weights=None,
                                               classes=10, classifier_activation=None)
    assert [tuple(w.shape) for w in ours.weights] == [tuple(w.shape) for w in reference.weights]


def test_proxylessnas_gpu_and_unas_counts():
    for name, expected in (("proxylessnas_gpu", PROXYLESSNAS_GPU_TRAINABLE),
                           ("unas_proxyless", UNAS_PROXYLESS_TRAINABLE)):
        genotype = presets.get(name).genotype
        model = px.build_proxyless_model(genotype, 1000, (224, 224, 3))
        assert _trainable(model) == expected == _reference_count(genotype), name
        # "zero" layers are absent from the derived network.
        built = {layer.name for layer in model.layers}
        for i, choice in enumerate(genotype.layers):
            assert (f"layer_{i}" in built) == (choice != "zero")


def test_build_model_dispatch_and_options():
    from unas_keras.networks import build_model

    model = build_model(presets.get("unas_proxyless"), num_classes=10, input_shape=(32, 32, 3),
                        width_multiplier=0.5, dropout_rate=0.2)
    assert model.output_shape == (None, 10)
    assert model.get_layer("dropout").rate == 0.2
    with pytest.raises(ValueError):
        px.build_proxyless_model(presets.get("unas_proxyless").genotype, 10, (32, 32))
    with pytest.raises(ValueError):
        px.build_proxyless_model(presets.get("darts_v2").genotype, 10, (32, 32, 3))
    with pytest.raises(ValueError):
        px.build_proxyless_model(presets.get("unas_proxyless").genotype, 10, (32, 32, 3),
                                 width_multiplier=0)


# ---------------------------------------------------------------- supernet (tiny configuration)

TINY_GENOTYPE = ProxylessGenotype(("k5e3", "zero", "k3e6", "k7e6", "k3e3"), TINY_BACKBONE)
# Three searchable layers: keeps the traced train step of `fit` small.
SMALLEST_BACKBONE = MBConvBackbone(
    stem_channels=8, first_block_channels=8, stage_channels=(8, 16), stage_strides=(2, 2),
    stage_depths=(2, 1), head_channels=16)


def _images(n=2, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 32, 32, 3)).astype("float32")


def _one_hot_samples(space, genotype):
    from unas_keras.space.architecture import Architecture

    encoded = space.encode(Architecture("proxyless", genotype))
    return {key: np.eye(k, dtype="float32")[np.array(encoded[key])][None]
            for key, (_, k) in space.decisions().items()}


def _relaxed_samples(space, n, seed=0):
    rng = np.random.default_rng(seed)
    return {key: rng.dirichlet(np.ones(k), size=(n, rows)).astype("float32")
            for key, (rows, k) in space.decisions().items()}


def test_supernet_structure():
    net = px.build_proxyless_supernet(10, (32, 32, 3), backbone=TINY_BACKBONE)
    assert net.built
    assert net.search_space.decisions() == {"first": (3, 6), "optional": (2, 7)}
    full = px.build_proxyless_supernet(10, (32, 32, 3))
    assert full.search_space.decisions() == {"first": (6, 6), "optional": (15, 7)}
    assert [layer.choices for layer in full.choice_layers].count(OPTIONAL_CHOICES) == 15
    assert [layer.choices for layer in full.choice_layers].count(BLOCK_CHOICES) == 6
    # No BN scale/offset in the search form.
    assert not any(w.name in ("gamma", "beta") for w in net.weights)


@pytest.mark.parametrize("bn_affine", [False, True])
def test_one_hot_supernet_equals_derived_network(bn_affine):
    keras.utils.set_random_seed(0)
    net = px.build_proxyless_supernet(5, (32, 32, 3), backbone=TINY_BACKBONE, zero_dropout=0.0,
                                      bn_affine=bn_affine)
    if bn_affine:  # make scale/offset non-trivial so the copy is tested
        for w in net.weights:
            if w.name in ("gamma", "beta"):
                w.assign(np.random.default_rng(1).uniform(0.5, 1.5, w.shape).astype("float32"))
    model = px.build_proxyless_model(TINY_GENOTYPE, 5, (32, 32, 3))
    px.inherit_supernet_weights(model, net)
    weights = net.mix_weights(_one_hot_samples(net.search_space, TINY_GENOTYPE))
    x = _images()
    np.testing.assert_allclose(np.asarray(net((x, weights), training=True)),
                               np.asarray(model(x, training=True)), rtol=1e-5, atol=1e-5)
    # Module-level mix_weights gives the same input.
    samples = _one_hot_samples(net.search_space, TINY_GENOTYPE)
    for a, b in zip(px.mix_weights(samples, TINY_BACKBONE), net.mix_weights(samples)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_every_variable_gets_a_gradient_with_relaxed_weights():
    keras.utils.set_random_seed(0)
    net = px.build_proxyless_supernet(5, (32, 32, 3), backbone=TINY_BACKBONE, bn_affine=True)
    samples = {k: tf.constant(v) for k, v in _relaxed_samples(net.search_space, n=2).items()}
    x = _images()
    with tf.GradientTape() as tape:
        tape.watch(list(samples.values()))
        logits = net((x, net.mix_weights(samples)), training=True)
        loss = tf.reduce_mean(logits ** 2)
    grads = tape.gradient(loss, net.trainable_variables + list(samples.values()))
    names = [v.path for v in net.trainable_variables] + list(samples)
    for name, g in zip(names, grads):
        assert g is not None, name
        assert float(tf.reduce_sum(tf.abs(g))) > 0, name


def test_per_minibatch_weights_broadcast():
    net = px.build_proxyless_supernet(5, (32, 32, 3), backbone=TINY_BACKBONE)
    one = _relaxed_samples(net.search_space, n=1, seed=3)
    tiled = {k: np.tile(v, (3, 1, 1)) for k, v in one.items()}
    x = _images(3)
    np.testing.assert_allclose(np.asarray(net((x, net.mix_weights(one)), training=False)),
                               np.asarray(net((x, net.mix_weights(tiled)), training=False)),
                               rtol=1e-5, atol=1e-6)


def test_supernet_fit_step_and_save_reload(tmp_path):
    keras.utils.set_random_seed(0)
    # skip_threshold=0: no cond ops, so the one-time trace of the train step stays cheap
    # (the skipping path's gradients are covered by the gradient test above).
    net = px.build_proxyless_supernet(5, (32, 32, 3), backbone=SMALLEST_BACKBONE, skip_threshold=0)
    weights = net.mix_weights(_relaxed_samples(net.search_space, n=4))
    weights = [np.asarray(w) for w in weights]
    x, y = _images(4), np.array([0, 1, 2, 3])
    net.compile(optimizer=keras.optimizers.Adam(1e-2),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=False)
    before = [np.array(v) for v in net.trainable_variables]
    history = net.fit((x, weights), y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    changed = [not np.allclose(b, np.array(v)) for b, v in zip(before, net.trainable_variables)]
    assert all(changed)

    path = str(tmp_path / "supernet.keras")
    net.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, px.ProxylessSupernet)
    assert loaded.get_config() == net.get_config()
    np.testing.assert_allclose(np.asarray(loaded((x, weights), training=False)),
                               np.asarray(net((x, weights), training=False)), rtol=1e-6, atol=1e-6)


def test_derived_fit_and_save_reload(tmp_path):
    keras.utils.set_random_seed(0)
    genotype = ProxylessGenotype(("k3e3", "k5e6", "k7e3"), SMALLEST_BACKBONE)
    model = px.build_proxyless_model(genotype, 5, (32, 32, 3), dropout_rate=0.1)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=False)
    history = model.fit(_images(4), np.array([0, 1, 2, 3]), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    path = str(tmp_path / "derived.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    x = _images(2, seed=5)
    np.testing.assert_allclose(np.asarray(loaded(x, training=False)),
                               np.asarray(model(x, training=False)), rtol=1e-6, atol=1e-6)


def test_mix_weights_rejects_bad_samples():
    net = px.build_proxyless_supernet(5, (32, 32, 3), backbone=TINY_BACKBONE)
    good = _relaxed_samples(net.search_space, n=1)
    with pytest.raises(ValueError, match="keys"):
        net.mix_weights({"first": good["first"]})
    with pytest.raises(ValueError, match="shape"):
        net.mix_weights({"first": good["first"], "optional": good["optional"][:, :, :6]})
    with pytest.raises(ValueError, match="weight tensors"):
        net((_images(), net.mix_weights(good)[:-1]))


def test_search_model_hard_passes_run_chosen_blocks_with_the_same_logits():
    """SearchModel's no-gradient hard passes use `one_hot=True`; the logits equal the dense mixture's."""
    from unas_keras.search import SearchModel

    keras.utils.set_random_seed(0)
    net = px.build_proxyless_supernet(5, (32, 32, 3), backbone=TINY_BACKBONE)
    model = SearchModel(net, estimator="rebar", sampling="per_minibatch", seed=0)
    model.compile(weight_optimizer="sgd", arch_optimizer="adam")
    data = ((_images(4, seed=1), np.arange(4) % 5), (_images(4, seed=2), np.arange(4) % 5))
    _, _, info = model.search_gradients(data)
    hard = net.mix_weights(info["sample"].hard)
    for key, images in (("hard_train", data[0][0]), ("hard_val", data[1][0])):
        dense = net((tf.constant(images), hard), training=True)
        np.testing.assert_allclose(np.asarray(info["logits"][key]), np.asarray(dense), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_traced_search_gradients_equal_eager_ones():
    """The search step's gradients as `fit` computes them (traced, Grappler on) equal eager ones.

    A guard against graph optimisations that change values beyond rounding: on one thread, with one
    `unstack` per decision in `mix_weights`, the traced architecture gradient differed from the eager
    one by up to 0.52 (entries up to 7.2), where the slices agree to 8e-6.
    """
    from unas_keras.search import SearchModel

    keras.utils.set_random_seed(0)
    # The full backbone: the smallest one did not show the difference described above.
    net = px.build_proxyless_supernet(5, (32, 32, 3), zero_dropout=0.0)
    model = SearchModel(net, estimator="rebar", objective="gen_gap", sampling="per_minibatch",
                        soften_eps=0.08)
    model.compile(weight_optimizer="adam", arch_optimizer="adam")
    rng = np.random.default_rng(0)
    data = tuple((rng.standard_normal((4, 32, 32, 3)).astype("float32"),
                  rng.integers(0, 5, 4).astype("int32")) for _ in range(2))
    step = tf.constant(3, tf.int64)
    eager = model.search_gradients(data, step=step)[:2]
    traced = tf.function(lambda d: model.search_gradients(d, step=step)[:2])(data)
    # Batch normalization over 4 examples at 1x1 in the last layers amplifies rounding, and how much
    # depends on the thread count (reduction orders): traced and eager architecture gradients differ
    # entry by entry by up to 0.012 on one thread and 0.15 on two (entries up to about 7); weight
    # gradients by up to 0.08 (of about 5). So both are compared as a whole.
    for index in (0, 1):
        flat = [np.concatenate([np.ravel(np.asarray(g)) for g in grads[index]]) for grads in (eager, traced)]
        assert np.linalg.norm(flat[1] - flat[0]) < 0.02 * np.linalg.norm(flat[0])
    assert any(float(np.abs(np.asarray(g)).sum()) > 0 for g in eager[0])
