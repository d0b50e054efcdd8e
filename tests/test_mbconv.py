"""Tests of the MBConv block and the MBConvChoice search layer."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from unas_keras import _compat
from unas_keras.layers.mbconv import MBConv, correct_pad
from unas_keras.layers.mbconv_choice import MBConvChoice
from unas_keras.space.proxyless import BLOCK_CHOICES, OPTIONAL_CHOICES


def _rand(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def _mbconv_params(cin, cout, k, e):
    """Trainable parameters: convs without bias, BN gamma/beta."""
    hidden = cin * e
    expand = cin * hidden + 2 * hidden if e != 1 else 0
    return expand + k * k * hidden + 2 * hidden + hidden * cout + 2 * cout


@pytest.mark.parametrize("side", [8, 9, 224, 7])
@pytest.mark.parametrize("kernel", [3, 5, 7])
def test_correct_pad_matches_keras(side, kernel):
    x = keras.KerasTensor((1, side, side + 1, 4))
    assert correct_pad((side, side + 1), kernel) == _compat.keras_correct_pad(x, kernel)


@pytest.mark.parametrize(
    "cin,cout,k,e,stride,side,out_side",
    [(8, 16, 3, 6, 2, 8, 4), (8, 16, 5, 3, 2, 9, 5), (8, 8, 7, 3, 1, 9, 9), (8, 4, 3, 1, 1, 6, 6),
     (4, 4, 3, 1, 2, 7, 4)],
)
def test_mbconv_shapes_and_params(cin, cout, k, e, stride, side, out_side):
    layer = MBConv(cout, k, e, stride=stride, name="block")
    y = layer(_rand((2, side, side, cin)))
    assert tuple(y.shape) == (2, out_side, out_side, cout)
    assert layer.compute_output_shape((2, side, side, cin)) == (2, out_side, out_side, cout)
    trainable = sum(int(np.prod(w.shape)) for w in layer.trainable_weights)
    assert trainable == _mbconv_params(cin, cout, k, e)
    assert layer.use_residual == (stride == 1 and cin == cout)
    assert (layer.expand is None) == (e == 1)
    assert (layer.pad is None) == (stride == 1)


def test_unknown_spatial_size_gives_ceil_half_output():
    layer = MBConvChoice(16, 2, BLOCK_CHOICES)
    layer.build((None, None, None, 8))
    call = tf.function(lambda a, b: layer(a, b, training=True), input_signature=[
        tf.TensorSpec((None, None, None, 8)), tf.TensorSpec((None, 6))])
    for h, w in ((9, 7), (8, 6)):
        y = call(_rand((2, h, w, 8)), _one_hot(2, k=6))
        assert tuple(y.shape) == (2, -(-h // 2), -(-w // 2), 16)


def test_mbconv_residual_is_added():
    x = _rand((2, 6, 6, 8))
    layer = MBConv(8, 3, 3)
    y = layer(x, training=False)
    # Zero the projection: the block becomes the identity through its residual.
    layer.project.kernel.assign(np.zeros(layer.project.kernel.shape, "float32"))
    layer.project_bn.beta.assign(np.zeros(8, "float32"))
    np.testing.assert_allclose(np.asarray(layer(x, training=False)), x, atol=1e-6)
    assert not np.allclose(np.asarray(y), x)


def test_mbconv_config_round_trip_and_fit():
    layer = MBConv(16, 5, 3, stride=2, bn_epsilon=1e-4, bn_momentum=0.9, name="b")
    clone = MBConv.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    keras.utils.set_random_seed(1)
    inputs = keras.Input((8, 8, 4))
    x = layer(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [np.array(w) for w in layer.trainable_weights]
    history = model.fit(_rand((4, 8, 8, 4)), np.array([0, 1, 2, 0]), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert all(not np.allclose(b, np.array(w)) for b, w in zip(before, layer.trainable_weights))


@pytest.mark.parametrize("kwargs", [dict(kernel_size=4), dict(stride=3), dict(expansion=0),
                                    dict(out_channels=1.5)])
def test_mbconv_rejects_bad_arguments(kwargs):
    args = dict(out_channels=8, kernel_size=3, expansion=3, stride=1)
    args.update(kwargs)
    with pytest.raises(ValueError):
        MBConv(**args)


def _one_hot(index, k=len(OPTIONAL_CHOICES), rows=1):
    return np.tile(np.eye(k, dtype="float32")[[index]], (rows, 1))


def test_choice_one_hot_equals_the_selected_block():
    x = _rand((2, 8, 8, 8))
    layer = MBConvChoice(8, 1, OPTIONAL_CHOICES, name="layer_1")
    layer(x, _one_hot(0))  # build
    for k, choice in enumerate(OPTIONAL_CHOICES):
        y = layer(x, _one_hot(k), training=False)
        expected = x if choice == "zero" else layer.candidate(choice)(x, training=False)
        np.testing.assert_allclose(np.asarray(y), np.asarray(expected), atol=1e-6)


def test_choice_mixture_per_example_and_broadcast():
    x = _rand((3, 8, 8, 8))
    layer = MBConvChoice(8, 1, OPTIONAL_CHOICES, skip_threshold=0.0)
    w = np.random.default_rng(2).dirichlet(np.ones(7), size=3).astype("float32")
    y = np.asarray(layer(x, w, training=False))
    outs = [x if c == "zero" else np.asarray(layer.candidate(c)(x, training=False))
            for c in OPTIONAL_CHOICES]
    expected = sum(w[:, k, None, None, None] * outs[k] for k in range(7))
    np.testing.assert_allclose(y, expected, atol=1e-5)
    # One row for the minibatch broadcasts like the same row per example.
    row = w[:1]
    np.testing.assert_allclose(np.asarray(layer(x, row, training=False)),
                               np.asarray(layer(x, np.tile(row, (3, 1)), training=False)), atol=1e-6)


def test_choice_zero_applies_dropout_in_training():
    keras.utils.set_random_seed(0)
    x = np.ones((2, 8, 8, 8), "float32")
    layer = MBConvChoice(8, 1, OPTIONAL_CHOICES, zero_dropout=0.5)
    y = np.asarray(layer(x, _one_hot(0), training=True))
    assert np.mean(y == 0) > 0.3
    np.testing.assert_allclose(np.asarray(layer(x, _one_hot(0), training=False)), x)


@pytest.mark.parametrize("compiled", [False, True])
def test_choice_skips_blocks_with_zero_weight(compiled):
    """A skipped block is not computed: poisoning its weights with NaN changes nothing."""
    x = _rand((2, 8, 8, 8))
    layer = MBConvChoice(8, 2 if compiled else 1, BLOCK_CHOICES, skip_threshold=1e-6)
    layer(x, _one_hot(0, k=6))
    reference = np.asarray(layer(x, _one_hot(2, k=6), training=True))
    for choice in BLOCK_CHOICES:
        if choice != BLOCK_CHOICES[2]:
            kernel = layer.candidate(choice).project.kernel
            kernel.assign(np.full(kernel.shape, np.nan, "float32"))
    call = tf.function(lambda a, b: layer(a, b, training=True)) if compiled else (
        lambda a, b: layer(a, b, training=True))
    y = np.asarray(call(x, _one_hot(2, k=6)))
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y, reference, atol=1e-6)
    # Without skipping, 0 * NaN poisons the sum: the test above is meaningful.
    layer.skip_threshold = 0.0
    assert np.isnan(np.asarray(layer(x, _one_hot(2, k=6), training=True))).any()


def test_choice_threshold_skips_only_what_is_below_it():
    x = _rand((2, 8, 8, 8))
    layer = MBConvChoice(8, 1, OPTIONAL_CHOICES, skip_threshold=0.05)
    w = np.array([[0.0, 0.04, 0.06, 0.9, 0.0, 0.0, 0.0], [0.0, 0.03, 0.02, 0.95, 0.0, 0.0, 0.0]],
                 "float32")
    y = np.asarray(layer(x, w, training=False))
    # k3e3 (weight < 0.05 on every row) is skipped; k3e6 (0.06 on one row) is kept.
    outs = {c: np.asarray(layer.candidate(c)(x, training=False)) for c in ("k3e6", "k5e3")}
    expected = w[:, 2, None, None, None] * outs["k3e6"] + w[:, 3, None, None, None] * outs["k5e3"]
    np.testing.assert_allclose(y, expected, atol=1e-5)
    assert MBConvChoice(8, 1, OPTIONAL_CHOICES, skip_threshold=None).skip_threshold == 0.0


def test_choice_config_round_trip_and_errors():
    layer = MBConvChoice(16, 2, BLOCK_CHOICES, skip_threshold=0.05, bn_affine=True, name="c")
    clone = MBConvChoice.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    with pytest.raises(ValueError, match="stride"):
        MBConvChoice(16, 2, OPTIONAL_CHOICES)
    with pytest.raises(ValueError, match="Malformed"):
        MBConvChoice(16, 1, ("k3x6",))
    with pytest.raises(ValueError, match="width"):
        MBConvChoice(16, 1, OPTIONAL_CHOICES)(_rand((1, 4, 4, 8)), _one_hot(1))
    with pytest.raises(ValueError, match="op_weights"):
        MBConvChoice(8, 1, OPTIONAL_CHOICES)(_rand((1, 4, 4, 8)), np.ones((1, 6), "float32"))


@pytest.mark.parametrize("compiled", [False, True])
def test_choice_one_hot_runs_only_the_chosen_block(compiled):
    """`one_hot=True` with one row per minibatch: the other blocks are not run (NaN weights stay unseen)."""
    x = _rand((2, 8, 8, 8))
    layer = MBConvChoice(8, 1, OPTIONAL_CHOICES)
    weights = _one_hot(3)
    reference = np.asarray(layer(x, weights, training=True))
    for k, choice in enumerate(OPTIONAL_CHOICES):
        if k != 3 and choice != "zero":
            kernel = layer.candidate(choice).project.kernel
            kernel.assign(np.full(kernel.shape, np.nan, "float32"))
    call = tf.function(lambda a, b: layer(a, b, training=True, one_hot=True)) if compiled else (
        lambda a, b: layer(a, b, training=True, one_hot=True))
    y = np.asarray(call(x, weights))
    np.testing.assert_allclose(y, reference, atol=1e-5)
    # Per-example weights ([N, K], N > 1) cannot switch: every block runs, so the NaNs show.
    assert np.isnan(np.asarray(layer(x, np.repeat(weights, 2, axis=0), training=True, one_hot=True))).any()


@pytest.mark.parametrize("compiled", [False, True])
def test_choice_skipping_gradients_equal_the_naive_sum(compiled):
    """With skip_threshold > 0 in training, the skipping sum (a cond per block) gives the
    values, gradients and moving statistics of the plain sum over the blocks at or above the threshold."""
    x = tf.constant(_rand((2, 8, 8, 8)))
    w = tf.constant([[0.3, 0.01, 0.2, 0.04, 0.3, 0.1, 0.05]], "float32")  # k3e3 and k5e3 below 0.05
    layer = MBConvChoice(8, 1, OPTIONAL_CHOICES, skip_threshold=0.05, zero_dropout=0.0)
    layer(x, w)  # build
    blocks = [layer.candidate(c) for c in OPTIONAL_CHOICES[1:]]
    statistics = [v for b in blocks for v in b.non_trainable_variables]
    start = [v.numpy() for v in statistics]
    variables = [v.value for v in layer.trainable_variables]
    paths = [v.path for v in layer.trainable_variables]

    def gradients(naive):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch([x, w])
            if naive:
                y = w[0, 0] * x + sum(w[0, k] * layer.candidates[k](x, training=True)
                                      for k in range(1, 7) if float(w[0, k]) >= 0.05)
            else:
                y = layer(x, w, training=True)
            loss = tf.reduce_sum(tf.square(y))
        grads = tape.gradient(loss, [x, w] + variables, unconnected_gradients="zero")
        return [y] + grads

    call = tf.function(gradients, autograph=False) if compiled else gradients
    got = [g.numpy() for g in call(False)]
    after = [v.numpy() for v in statistics]
    for v, value in zip(statistics, start):
        v.assign(value)
    want = [g.numpy() for g in gradients(True)]
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    # Moving statistics updated once per block that ran, as the naive sum does.
    for a, b in zip(after, [v.numpy() for v in statistics]):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    # The skipped blocks got zero gradients; the others did not.
    names = paths
    for path, g in zip(names, got[3:]):
        skipped = "/k3e3/" in path or "/k5e3/" in path
        assert (np.abs(g).max() == 0) == skipped, path


def test_choice_skipping_per_example_rows_at_stride_2_equals_the_naive_sum():
    """Per-example weights ([N, K]) at stride 2: a block is skipped only when below the threshold on
    every row; values and all gradients equal the naive sum over the kept blocks (traced)."""
    x = tf.constant(_rand((2, 8, 8, 8)))
    w = tf.constant([[0.01, 0.3, 0.02, 0.04, 0.3, 0.33],
                     [0.02, 0.2, 0.06, 0.01, 0.3, 0.41]], "float32")  # k3e3, k5e6 below 0.05 on both rows
    layer = MBConvChoice(16, 2, BLOCK_CHOICES, skip_threshold=0.05)
    layer(x, w)
    kept = [k for k in range(6) if float(tf.reduce_max(w[:, k])) >= 0.05]
    variables = [v.value for v in layer.trainable_variables]

    @tf.function(autograph=False)
    def gradients(naive):
        with tf.GradientTape() as tape:
            tape.watch([x, w])
            if naive:
                y = sum(w[:, k, None, None, None] * layer.candidates[k](x, training=True) for k in kept)
            else:
                y = layer(x, w, training=True)
            loss = tf.reduce_sum(tf.sin(y))
        return [y] + tape.gradient(loss, [x, w] + variables, unconnected_gradients="zero")

    got, want = gradients(False), gradients(True)
    assert got[0].shape == (2, 4, 4, 16)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    skipped = [p for p, g in zip([v.path for v in layer.trainable_variables], got[3:]) if np.abs(g).max() == 0]
    assert skipped and all("/k3e3/" in p or "/k5e6/" in p for p in skipped)
