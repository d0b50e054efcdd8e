"""DARTS-space layers: the operations, DropPath and the two cell forms."""

import numpy as np
import pytest
import keras
import tensorflow as tf
from keras import ops

from unas_keras.layers.darts_cell import DartsCell, DartsSearchCell
from unas_keras.layers.darts_ops import (
    DilConv,
    FactorizedReduce,
    Pool3x3,
    ReLUConvBN,
    GroupedPointwise,
    SepConv,
    Zero,
    edge_weights,
    make_op,
)
from unas_keras.layers import darts_ops
from unas_keras.layers.drop_path import DropPath, DropPathSchedule, drop_path_layers, set_drop_path_rate
from unas_keras.space.darts import ALL_OPS, DARTS_OPS, UNAS_OPS, DartsSearchSpace, edge_index
from unas_keras.networks.darts import mix_weights

C = 4


def _params(layer):
    return sum(int(np.prod(v.shape)) for v in layer.trainable_weights)


def _expected_params(op_name, c, stride, affine):
    """Parameter counts of the PyTorch DARTS operations (operations.py)."""
    bn = 2 * c if affine else 0
    if op_name.startswith("sep_conv"):
        k = int(op_name[-1])
        return 2 * (c * k * k + c * c) + 2 * bn
    if op_name.startswith("dil_conv"):
        k = int(op_name[-1])
        return c * k * k + c * c + bn
    if op_name == "skip_connect" and stride == 2:
        return 2 * c * (c // 2) + bn  # FactorizedReduce
    return 0  # none, pools, identity


@pytest.mark.parametrize("op_name", ALL_OPS)
@pytest.mark.parametrize("stride", [1, 2])
def test_op_shape_params_and_config(op_name, stride):
    keras.utils.set_random_seed(0)
    layer = make_op(op_name, C, stride, affine=True, name="op")
    x = keras.random.normal((2, 8, 8, C), seed=1)
    y = layer(x, training=True)
    assert tuple(y.shape) == (2, 8 // stride, 8 // stride, C)
    assert tuple(layer.compute_output_shape((2, 8, 8, C))) == (2, 8 // stride, 8 // stride, C)
    assert _params(layer) == _expected_params(op_name, C, stride, True)
    # get_config round trip rebuilds the same layer.
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    clone(x)
    assert _params(clone) == _params(layer)
    if layer.weights:
        clone.set_weights(layer.get_weights())
        np.testing.assert_allclose(clone(x, training=False), layer(x, training=False), atol=1e-6)


@pytest.mark.parametrize("op_name", ["sep_conv_5x5", "dil_conv_3x3", "skip_connect"])
def test_op_without_affine_has_no_bn_parameters(op_name):
    layer = make_op(op_name, C, 2, affine=False)
    layer(keras.random.normal((2, 8, 8, C), seed=2))
    assert _params(layer) == _expected_params(op_name, C, 2, False)
    assert not any("gamma" in v.path or "beta" in v.path for v in layer.weights)


def test_relu_conv_bn_and_factorized_reduce_counts():
    pre = ReLUConvBN(6, 1, 1, affine=True)
    pre(keras.random.normal((2, 8, 8, 10), seed=0))
    assert _params(pre) == 10 * 6 + 2 * 6
    fr = FactorizedReduce(6, affine=True)
    y = fr(keras.random.normal((2, 8, 8, 10), seed=0))
    assert tuple(y.shape) == (2, 4, 4, 6)
    assert _params(fr) == 2 * 10 * 3 + 2 * 6
    # Odd sides work too (the shifted branch is padded at the end).
    assert tuple(fr(keras.random.normal((2, 7, 7, 10), seed=0)).shape) == (2, 4, 4, 6)
    with pytest.raises(ValueError, match="even"):
        FactorizedReduce(5)


def test_bad_op_arguments():
    with pytest.raises(ValueError, match="Unknown DARTS operation"):
        make_op("conv_9x9", C, 1)
    with pytest.raises(ValueError, match="stride"):
        make_op("sep_conv_3x3", C, 3)
    with pytest.raises(ValueError, match="pool_type"):
        Pool3x3("min")


@pytest.mark.parametrize("op_name,stride", [("sep_conv_3x3", 1), ("sep_conv_5x5", 2), ("dil_conv_3x3", 1),
                                            ("dil_conv_5x5", 2), ("skip_connect", 2)])
def test_grouped_op_equals_its_edges_in_outputs_gradients_and_moving_statistics(op_name, stride):
    keras.utils.set_random_seed(3)
    groups = 3
    grouped = make_op(op_name, C, stride, affine=True, name="grouped", groups=groups)
    edges = [make_op(op_name, C, stride, affine=True, name=f"edge{s}") for s in range(groups)]
    xs = [keras.random.normal((2, 8, 8, C), seed=10 + s) for s in range(groups)]
    grouped.build((2, 8, 8, groups * C))
    for edge, x in zip(edges, xs):
        edge.build(x.shape)
    # Random BN statistics and scales, so that slicing mistakes show.
    grouped.set_weights([np.random.default_rng(i).uniform(0.5, 1.5, v.shape).astype("float32")
                         for i, v in enumerate(grouped.get_weights())])
    for s, edge in enumerate(edges):
        edge.set_weights(edge_weights(grouped, s, edge))
    stacked = tf.Variable(ops.concatenate(xs, axis=-1))
    ws = [tf.Variable(x) for x in xs]
    cotangent = keras.random.normal((2, 8 // stride, 8 // stride, groups * C), seed=7)
    with tf.GradientTape() as tape:
        y_grouped = grouped(stacked, training=True)
        loss_grouped = ops.sum(y_grouped * cotangent)
    grads_grouped = tape.gradient(loss_grouped, [stacked] + grouped.trainable_weights)
    with tf.GradientTape() as tape:
        y_edges = [edge(x, training=True) for edge, x in zip(edges, ws)]
        loss_edges = ops.sum(ops.concatenate(y_edges, axis=-1) * cotangent)
    grads_edges = tape.gradient(loss_edges, ws + [v for edge in edges for v in edge.trainable_weights])
    np.testing.assert_allclose(y_grouped, ops.concatenate(y_edges, axis=-1), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(grads_grouped[0], ops.concatenate(grads_edges[:groups], axis=-1),
                               rtol=1e-4, atol=1e-4)
    # Each edge's parameter gradients are its block of the grouped ones; its BN statistics too.
    grouped_after = dict(zip([v.path for v in grouped.trainable_weights], grads_grouped[1:]))
    per_edge = len(edges[0].trainable_weights)
    for s, edge in enumerate(edges):
        as_weights = [grouped_after.get(v.path, v) for v in grouped.weights]
        fake = make_op(op_name, C, stride, affine=True, groups=groups)
        fake.build((2, 8, 8, groups * C))
        fake.set_weights([np.asarray(a) for a in as_weights])
        sliced = edge_weights(fake, s, edge)
        trainable = [i for i, v in enumerate(edge.weights) if v.trainable]
        for i, grad in zip(trainable, grads_edges[groups + s * per_edge:groups + (s + 1) * per_edge]):
            np.testing.assert_allclose(sliced[i], grad, rtol=1e-4, atol=1e-4)
        stats = [i for i, v in enumerate(edge.weights) if not v.trainable]
        for i in stats:
            np.testing.assert_allclose(edge_weights(grouped, s, edge)[i], edge.weights[i], rtol=1e-5, atol=1e-6)


def test_grouped_pointwise_batched_matmul_equals_grouped_convolution(monkeypatch):
    layer = GroupedPointwise(12, groups=3)
    x = keras.random.normal((2, 4, 4, 6), seed=0)
    y_conv = layer(x)
    monkeypatch.setattr(darts_ops, "grouped_conv_runs_on_cpu", lambda: False)
    y_matmul = layer(x)
    kernel = np.asarray(layer.kernel)
    blocks = [np.einsum("bhwc,cf->bhwf", np.asarray(x)[..., 2 * s:2 * s + 2], kernel[0, 0, :, 4 * s:4 * s + 4])
              for s in range(3)]
    np.testing.assert_allclose(y_conv, np.concatenate(blocks, axis=-1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y_matmul, y_conv, rtol=1e-5, atol=1e-5)
    assert GroupedPointwise.from_config(layer.get_config()).get_config() == layer.get_config()
    with pytest.raises(ValueError, match="groups"):
        GroupedPointwise(10, groups=3)


def test_grouped_conv_probe_runs_eagerly_inside_a_trace():
    darts_ops.grouped_conv_runs_on_cpu.cache_clear()
    answers = []

    @tf.function
    def probe():
        answers.append(darts_ops.grouped_conv_runs_on_cpu())
        return tf.constant(0)

    graph = probe.get_concrete_function().graph
    assert not any(op.type == "Conv2D" for op in graph.get_operations())
    darts_ops.grouped_conv_runs_on_cpu.cache_clear()
    assert answers == [darts_ops.grouped_conv_runs_on_cpu()]


def test_edge_weights_rejects_a_different_operation():
    grouped = make_op("sep_conv_3x3", C, 1, groups=2)
    grouped.build((2, 8, 8, 2 * C))
    other = make_op("dil_conv_3x3", C, 1)
    other.build((2, 8, 8, C))
    with pytest.raises(ValueError, match="not the same operation"):
        edge_weights(grouped, 0, other)
    cell = DartsSearchCell(C, "unas")
    with pytest.raises(ValueError, match="no edge"):
        cell.copy_edge_weights(0, 3, "sep_conv_3x3", other)


@pytest.mark.parametrize("stride", [1, 2])
def test_avg_pool_excludes_padding_and_max_pool_ignores_it(stride):
    # count_include_pad=False: a constant map averages to the same constant everywhere.
    const = ops.full((1, 8, 8, 2), 3.0)
    np.testing.assert_allclose(Pool3x3("avg", stride)(const), np.full((1, 8 // stride, 8 // stride, 2), 3.0),
                               rtol=1e-6)
    # The padding never wins a max: an all-negative map stays negative.
    neg = -1.0 - keras.random.uniform((1, 8, 8, 2), seed=0)
    assert float(ops.max(Pool3x3("max", stride)(neg))) < -1.0
    # Symmetric padding 1 (PyTorch): the first stride-2 window is rows/cols -1..1.
    x = np.arange(64, dtype="float32").reshape(1, 8, 8, 1)
    y = np.asarray(Pool3x3("avg", stride)(x))
    np.testing.assert_allclose(y[0, 0, 0, 0], np.mean(x[0, :2, :2, 0]), rtol=1e-6)


def test_dil_conv_stride2_equals_strided_dilated_convolution():
    keras.utils.set_random_seed(3)
    layer = DilConv(C, 5, stride=2, affine=False)
    x = keras.random.normal((2, 10, 10, C), seed=4)
    y = layer(x, training=True)
    # Direct form: ReLU, pad 2 * (k // 2), depthwise k x k, stride 2, dilation 2, then the same pw + BN.
    padded = ops.pad(ops.relu(x), [[0, 0], [4, 4], [4, 4], [0, 0]])
    direct = ops.depthwise_conv(padded, layer.dw.kernel, strides=2, padding="valid", dilation_rate=2)
    direct = layer.bn(layer.pw(direct), training=True)
    np.testing.assert_allclose(y, direct, atol=1e-5)


@pytest.mark.parametrize("side", [8, 7])
def test_factorized_reduce_equals_two_strided_pointwise_convolutions(side):
    # DARTS' FactorizedReduce: ReLU, conv_1 on x[::2, ::2] and conv_2 on x shifted by one pixel (zero
    # padded at the end), concatenated, BN. Even sides take the space-to-depth path, odd the slices.
    keras.utils.set_random_seed(5)
    layer = FactorizedReduce(6, affine=False)
    x = keras.random.normal((2, side, side, 5), seed=6)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y = layer(x, training=True)
        relu = ops.relu(x)
        shifted = ops.pad(relu[:, 1:, 1:, :], [[0, 0], [0, 1], [0, 1], [0, 0]])
        halves = [ops.conv(relu[:, ::2, ::2, :], layer.conv_1.kernel),
                  ops.conv(shifted[:, ::2, ::2, :], layer.conv_2.kernel)]
        mean, var = tf.nn.moments(ops.concatenate(halves, axis=-1), axes=[0, 1, 2])
        direct = (ops.concatenate(halves, axis=-1) - mean) / ops.sqrt(var + darts_ops.BN_EPSILON)
        probe = keras.random.normal(y.shape, seed=7)
        loss, direct_loss = ops.sum(probe * y), ops.sum(probe * direct)
    np.testing.assert_allclose(y, direct, atol=1e-4)
    for ours, reference in ((tape.gradient(loss, x), tape.gradient(direct_loss, x)),
                            *zip(tape.gradient(loss, [layer.conv_1.kernel, layer.conv_2.kernel]),
                                 tape.gradient(direct_loss, [layer.conv_1.kernel, layer.conv_2.kernel]))):
        np.testing.assert_allclose(ours, reference, atol=2e-4)


def test_even_odd_pixels_are_the_strided_slices():
    x = keras.random.normal((2, 6, 4, 3), seed=0)
    even, odd = darts_ops._even_odd_pixels(x)
    np.testing.assert_array_equal(even, x[:, ::2, ::2, :])
    np.testing.assert_array_equal(odd, x[:, 1::2, 1::2, :])


def test_sep_conv_pads_symmetrically_at_stride_2():
    # A 3x3 kernel that picks the top-left tap reads row/col -1 first (zero padding).
    layer = SepConv(1, 3, stride=2, affine=False)
    x = np.arange(1.0, 65.0, dtype="float32").reshape(1, 8, 8, 1)
    layer.build(x.shape)
    first = np.zeros((3, 3, 1, 1), "float32")
    first[0, 0] = 1.0
    identity = np.zeros((3, 3, 1, 1), "float32")
    identity[1, 1] = 1.0
    layer.dw_1.kernel.assign(first)
    layer.pw_1.kernel.assign(np.ones((1, 1, 1, 1), "float32"))
    layer.dw_2.kernel.assign(identity)
    layer.pw_2.kernel.assign(np.ones((1, 1, 1, 1), "float32"))
    inner = ops.relu(layer.pw_1(layer.dw_1(ops.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]))))
    inner = np.asarray(inner)
    assert inner[0, 0, 0, 0] == 0.0  # padding at (-1, -1)
    assert inner[0, 1, 1, 0] == x[0, 1, 1, 0]  # (1, 1) of the input


def test_zero_is_strided_zeros():
    y = Zero(2)(keras.random.normal((2, 7, 7, 3), seed=0))
    assert tuple(y.shape) == (2, 4, 4, 3) and float(ops.max(ops.abs(y))) == 0.0


# ---------------------------------------------------------------- DropPath


def test_drop_path_drops_whole_examples_and_rescales():
    layer = DropPath(0.5, seed=7)
    x = ops.ones((400, 2, 2, 1))
    np.testing.assert_array_equal(layer(x, training=False), x)
    y = np.asarray(layer(x, training=True))
    per_example = y.reshape(400, -1)
    assert np.all(per_example == per_example[:, :1])  # one decision per example
    assert set(np.unique(y)) <= {0.0, 2.0}
    assert 0.35 < np.mean(per_example[:, 0] == 0.0) < 0.65
    assert not layer.rate_variable.trainable
    layer.set_rate(0.0)
    np.testing.assert_array_equal(layer(x, training=True), x)
    with pytest.raises(ValueError, match="rate"):
        DropPath(1.0)
    assert DropPath.from_config(layer.get_config()).get_config() == layer.get_config()


def test_drop_path_schedule_ramps_rate_during_fit():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 4, 2))
    x = keras.layers.Conv2D(2, 1, name="conv")(inputs)
    x = DropPath(0.3, name="dp")(x)
    outputs = keras.layers.Dense(1)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="sgd", loss="mse")
    assert len(drop_path_layers(model)) == 1
    seen = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: seen.append(float(model.get_layer("dp").rate_variable.numpy()))
    )
    schedule = DropPathSchedule(0.3, epochs=3)
    data = np.random.default_rng(0).normal(size=(8, 4, 4, 2)).astype("float32")
    model.fit(data, np.zeros((8, 1), "float32"), epochs=3, batch_size=4, verbose=0, callbacks=[schedule, record])
    np.testing.assert_allclose(seen, [0.0, 0.1, 0.2], atol=1e-6)
    assert set_drop_path_rate(model, 0.25) == 1
    assert float(model.get_layer("dp").rate_variable.numpy()) == pytest.approx(0.25)


# ---------------------------------------------------------------- cells


def _random_samples(space, batch, seed, relaxed):
    rng = np.random.default_rng(seed)
    out = {}
    for name, (rows, k) in space.decisions().items():
        if relaxed:
            logits = rng.normal(size=(batch, rows, k))
            out[name] = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype("float32")
        else:
            out[name] = np.eye(k, dtype="float32")[rng.integers(0, k, size=(batch, rows))]
    return out


def _cell_inputs(reduction_prev, seed=0, batch=2, side=8):
    s0_side = 2 * side if reduction_prev else side
    s0 = keras.random.normal((batch, s0_side, s0_side, 6), seed=seed)
    s1 = keras.random.normal((batch, side, side, 5), seed=seed + 1)
    return s0, s1


def _copy_search_to_derived(search, derived):
    derived.preprocess0.set_weights(search.preprocess0.get_weights())
    derived.preprocess1.set_weights(search.preprocess1.get_weights())
    for n, node in enumerate(derived.nodes):
        for p, (op_name, inp) in enumerate(node):
            search.copy_edge_weights(n, inp, op_name, derived.node_ops[2 * n + p])


@pytest.mark.parametrize("edge_grouping", ["by_source", "per_edge"])
@pytest.mark.parametrize(
    "reduction,reduction_prev,op_set",
    [(False, False, "unas"), (True, False, "unas"), (False, True, "darts")],
)
def test_search_cell_one_hot_equals_derived_cell(reduction, reduction_prev, op_set, edge_grouping):
    keras.utils.set_random_seed(1)
    space = DartsSearchSpace(op_set)
    arch = space.sample(seed=5)
    nodes = list(arch.genotype.reduce if reduction else arch.genotype.normal)
    # Cover a node whose two pairs coincide (weight 2 on one shared edge vs two derived instances).
    nodes[1] = (nodes[1][0], nodes[1][0])
    choices = space.encode(arch)
    cell_type = "reduce" if reduction else "normal"
    choices[f"{cell_type}_node1_inputs"] = [choices[f"{cell_type}_node1_inputs"][0]] * 2
    choices[f"{cell_type}_node1_ops"] = [choices[f"{cell_type}_node1_ops"][0]] * 2
    samples = {}
    for name, (rows, k) in space.decisions().items():
        samples[name] = np.eye(k, dtype="float32")[np.array(choices[name])][None]
    weights = mix_weights(samples)[cell_type]

    s0, s1 = _cell_inputs(reduction_prev)
    search = DartsSearchCell(C, op_set, reduction=reduction, reduction_prev=reduction_prev,
                             edge_grouping=edge_grouping)
    derived = DartsCell(C, nodes, reduction=reduction, reduction_prev=reduction_prev, affine=False)
    y_search = search([s0, s1, weights], training=True)
    derived([s0, s1], training=True)
    _copy_search_to_derived(search, derived)
    y_derived = derived([s0, s1], training=True)
    side = 4 if reduction else 8
    assert tuple(y_search.shape) == (2, side, side, 4 * C)
    np.testing.assert_allclose(y_search, y_derived, atol=1e-5)


@pytest.mark.parametrize("edge_grouping", ["by_source", "per_edge"])
def test_skip_threshold_skips_only_what_is_below_it(edge_grouping):
    keras.utils.set_random_seed(4)
    space = DartsSearchSpace("unas_imagenet")
    s0, s1 = _cell_inputs(False, batch=2, side=4)
    plain = DartsSearchCell(C, "unas_imagenet", name="plain", edge_grouping=edge_grouping)
    skipping = DartsSearchCell(C, "unas_imagenet", skip_threshold=0.05, name="skipping",
                               edge_grouping=edge_grouping)
    w = np.asarray(mix_weights(_random_samples(space, 2, seed=2, relaxed=True))["normal"])
    plain([s0, s1, w], training=True)
    skipping([s0, s1, w], training=True)
    skipping.set_weights(plain.get_weights())
    # Nothing below the threshold: same output.
    w_big = 0.1 + w
    np.testing.assert_allclose(skipping([s0, s1, w_big], training=True),
                               plain([s0, s1, w_big], training=True), atol=1e-5)
    # Some edges below the threshold for every example: as if their weight were 0.
    w_small = w.copy()
    w_small[:, edge_index(0, 1), :] = 0.01
    w_small[:, :, UNAS_OPS.index("sep_conv_5x5")] = 0.04
    w_small[:, edge_index(3, 4), 2] = [0.01, 0.3]  # below for one example only: still evaluated
    below_for_all = np.all(w_small < 0.05, axis=0, keepdims=True)
    assert not below_for_all[0, edge_index(3, 4), 2]
    w_zeroed = np.where(below_for_all, 0.0, w_small)
    np.testing.assert_allclose(skipping([s0, s1, w_small], training=True),
                               plain([s0, s1, w_zeroed], training=True), atol=1e-5)


def test_search_cell_rejects_bad_weights_and_round_trips_config():
    s0, s1 = _cell_inputs(False)
    cell = DartsSearchCell(C, "unas_imagenet", skip_threshold=0.05)
    with pytest.raises(ValueError, match="Edge weights"):
        cell([s0, s1, ops.ones((1, 14, 7))])
    config = cell.get_config()
    assert DartsSearchCell.from_config(config).get_config() == config
    with pytest.raises(ValueError, match="skip_threshold"):
        DartsSearchCell(C, skip_threshold=-1.0)
    with pytest.raises(ValueError, match="edge_grouping must be one of"):
        DartsSearchCell(C, edge_grouping="by_target")


def test_derived_cell_drop_path_and_config():
    keras.utils.set_random_seed(5)
    nodes = ((("sep_conv_3x3", 0), ("skip_connect", 1)),) * 1 + (
        (("skip_connect", 0), ("skip_connect", 2)),
        (("avg_pool_3x3", 1), ("dil_conv_3x3", 3)),
        (("max_pool_3x3", 4), ("skip_connect", 0)),
    )
    cell = DartsCell(C, nodes, drop_path_rate=0.4, name="cell")
    s0, s1 = _cell_inputs(False)
    y = cell([s0, s1], training=False)
    assert tuple(y.shape) == (2, 8, 8, 4 * C)
    np.testing.assert_allclose(cell([s0, s1], training=False), y)  # inference: deterministic
    assert len(drop_path_layers(cell)) == 1
    # Identities are never dropped: node 1 = skip(s0') + skip(node 0) exactly, whatever the masks.
    cell.drop_path.set_rate(0.9)
    y_drop = np.asarray(cell([s0, s1], training=True))
    s0p = np.asarray(cell.preprocess0(s0, training=True))
    np.testing.assert_allclose(y_drop[..., C:2 * C], s0p + y_drop[..., :C], atol=1e-4)
    # Non-identity ops are: per example, node 2 (pool + dil_conv) is 0, one op / 0.1, or both / 0.1.
    cell.drop_path.set_rate(0.0)
    y_keep = np.asarray(cell([s0, s1], training=True))
    assert not np.allclose(y_drop[..., 2 * C:3 * C], y_keep[..., 2 * C:3 * C])
    config = cell.get_config()
    assert DartsCell.from_config(config).get_config() == config
    with pytest.raises(ValueError, match="node 2 may read"):
        DartsCell(C, (nodes[0], nodes[1], (("skip_connect", 5), ("skip_connect", 0)), nodes[3]))


def test_darts_ops_list_includes_none_and_is_skipped():
    cell = DartsSearchCell(C, "darts")
    assert all(layers[cell.op_names.index("none")] is None for layers in cell.group_ops)
    assert len(cell.op_names) == len(DARTS_OPS)
