"""The papers' optimizer recipe against an independent numpy reference of the PyTorch update.

Reference (torch.nn.utils.clip_grad_norm_ then torch.optim.SGD / torch.optim.Adam with weight_decay):
g <- g * min(1, c / ||g||) over all weights together; d = g + wd * w;
SGD: buf = m * buf + d (buf = d at step 1); w -= lr * buf.
Adam: m = b1 m + (1 - b1) d; v = b2 v + (1 - b2) d^2; w -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
The gradients of the tiny MLP are written out by hand in float64, so nothing of Keras is in the reference.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import unas_keras  # noqa: F401  (registers the optimizers for load_model)
from unas_keras import optimizers, training
from unas_keras.search.distributed import mirrored_strategy

N, D, H, K = 8, 5, 4, 3
CLIP = 0.05          # small enough to bind at both steps (asserted)
WEIGHT_DECAY = 0.05  # large, so that coupled vs decoupled decay is visible
LR = 0.3


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, D)).astype("float32")
    y = np.eye(K, dtype="float32")[rng.integers(0, K, size=N)]
    return x, y


def _model():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((D,))
    hidden = keras.layers.Dense(H, activation="tanh")(inputs)
    return keras.Model(inputs, keras.layers.Dense(K)(hidden))


def _weights(model):
    return [np.array(w, dtype=np.float64) for w in model.get_weights()]  # W1, b1, W2, b2


def _gradients(params, x, y):
    """d mean(cross-entropy(softmax(tanh(x W1 + b1) W2 + b2), y)) / d params, by hand."""
    w1, b1, w2, b2 = params
    x, y = x.astype(np.float64), y.astype(np.float64)
    h = np.tanh(x @ w1 + b1)
    z = h @ w2 + b2
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    dz = (p - y) / len(x)
    da = (dz @ w2.T) * (1.0 - h ** 2)
    return [x.T @ da, da.sum(0), h.T @ dz, dz.sum(0)]


def _clipped_decayed(params, grads, clip, weight_decay):
    norm = np.sqrt(sum((g ** 2).sum() for g in grads))
    scale = min(1.0, clip / norm)
    return [g * scale + weight_decay * w for g, w in zip(grads, params)], norm


def reference_sgd(params, x, y, lrs, momentum, weight_decay, clip):
    params, bufs, norms = [p.copy() for p in params], None, []
    for lr in lrs:
        d, norm = _clipped_decayed(params, _gradients(params, x, y), clip, weight_decay)
        norms.append(norm)
        bufs = d if bufs is None else [momentum * b + di for b, di in zip(bufs, d)]
        params = [w - lr * b for w, b in zip(params, bufs)]
    return params, norms


def reference_adam(params, x, y, lrs, weight_decay, clip, b1=0.9, b2=0.999, eps=1e-8):
    params = [p.copy() for p in params]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    norms = []
    for t, lr in enumerate(lrs, start=1):
        d, norm = _clipped_decayed(params, _gradients(params, x, y), clip, weight_decay)
        norms.append(norm)
        m = [b1 * mi + (1 - b1) * di for mi, di in zip(m, d)]
        v = [b2 * vi + (1 - b2) * di ** 2 for vi, di in zip(v, d)]
        params = [w - lr / (1 - b1 ** t) * mi / (np.sqrt(vi) / np.sqrt(1 - b2 ** t) + eps)
                  for w, mi, vi in zip(params, m, v)]
    return params, norms


def _max_abs_diff(a, b):
    return max(float(np.max(np.abs(np.asarray(u, np.float64) - v))) for u, v in zip(a, b))


def _fit_two_steps(model, x, y):
    model.fit(x, y, batch_size=N, epochs=2, shuffle=False, verbose=0)
    return model.get_weights()


def _compiled_sgd(model):
    # Two one-step epochs of a cosine schedule: lr 0.3 then 0.15 (a schedule separates PyTorch's
    # `w -= lr * buf` from Keras SGD's lr-inside-the-buffer momentum).
    return training.compile_for_training(model, steps_per_epoch=1, epochs=2, learning_rate=LR, momentum=0.9,
                                         weight_decay=WEIGHT_DECAY, clipnorm=CLIP)


def test_compile_for_training_is_the_pytorch_sgd_update():
    x, y = _data()
    model = _compiled_sgd(_model())
    initial = _weights(model)
    schedule = training.learning_rate_schedule(LR, steps_per_epoch=1, epochs=2)
    lrs = [float(schedule(i)) for i in range(2)]
    assert lrs == pytest.approx([LR, LR / 2])
    expected, norms = reference_sgd(initial, x, y, lrs, 0.9, WEIGHT_DECAY, CLIP)
    assert min(norms) > 5 * CLIP, "clipping must be active at both steps"
    ours = _fit_two_steps(model, x, y)
    error = _max_abs_diff(ours, expected)
    print(f"SGD-momentum + coupled L2 + global clip, 2 steps: max abs diff vs numpy reference {error:.3g}")
    assert error < 2e-6
    moved = _max_abs_diff(ours, initial)
    assert moved > 1e-2  # the comparison is not between two unmoved models

    # Keras' own recipe (per-variable clipnorm, decoupled weight_decay, lr in the buffer) is measurably off.
    keras_model = _model()
    keras_model.compile(optimizer=keras.optimizers.SGD(
        learning_rate=schedule, momentum=0.9, weight_decay=WEIGHT_DECAY, clipnorm=CLIP),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    assert _max_abs_diff(_fit_two_steps(keras_model, x, y), expected) > 100 * error + 1e-4


def test_compile_for_training_builds_the_optimizer_so_fit_traces_once():
    x, y = _data()
    model = _compiled_sgd(_model())
    assert model.optimizer.built
    traces = []
    train_step = model.train_step
    model.train_step = lambda data: traces.append(1) or train_step(data)  # runs only while tracing
    _fit_two_steps(model, x, y)
    assert len(traces) == 1  # an optimizer built inside the first trace makes TensorFlow trace twice


def test_adam_is_the_pytorch_adam_update_with_coupled_l2():
    x, y = _data()
    schedule = keras.optimizers.schedules.CosineDecay(0.01, decay_steps=2)
    model = _model()
    model.compile(optimizer=optimizers.Adam(schedule, weight_decay=WEIGHT_DECAY, global_clipnorm=CLIP),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    initial = _weights(model)
    expected, norms = reference_adam(initial, x, y, [float(schedule(0)), float(schedule(1))], WEIGHT_DECAY, CLIP)
    assert min(norms) > 5 * CLIP
    ours = _fit_two_steps(model, x, y)
    error = _max_abs_diff(ours, expected)
    print(f"Adam + coupled L2 + global clip, 2 steps: max abs diff vs numpy reference {error:.3g}")
    assert error < 2e-6
    assert _max_abs_diff(ours, initial) > 1e-3


@pytest.mark.parametrize("which", ["sgd", "adam"])
def test_mirrored_strategy_clips_the_global_batch_gradient(which):
    if len(tf.config.list_logical_devices("CPU")) < 2:
        pytest.skip("needs the two logical CPU devices of tests/conftest.py")
    x, y = _data()
    strategy = mirrored_strategy()
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        model = _model()
        if which == "sgd":
            _compiled_sgd(model)
        else:
            model.compile(optimizer=optimizers.Adam(0.01, weight_decay=WEIGHT_DECAY, global_clipnorm=CLIP),
                          loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    initial = _weights(model)
    if which == "sgd":
        expected, _ = reference_sgd(initial, x, y, [LR, LR / 2], 0.9, WEIGHT_DECAY, CLIP)
    else:
        expected, _ = reference_adam(initial, x, y, [0.01, 0.01], WEIGHT_DECAY, CLIP)
    # Each replica sees 4 of the 8 examples; the clip must act on the sum of the two shares.
    assert _max_abs_diff(_fit_two_steps(model, x, y), expected) < 2e-6


def test_saved_model_reloads_the_optimizer_and_its_state(tmp_path):
    x, y = _data()
    model = training.compile_for_training(_model(), steps_per_epoch=1, epochs=4, learning_rate=LR,
                                          weight_decay=WEIGHT_DECAY, clipnorm=CLIP)
    model.fit(x, y, batch_size=N, epochs=1, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.optimizer, optimizers.SGD)
    config = loaded.optimizer.get_config()
    assert config["weight_decay"] == WEIGHT_DECAY and config["global_clipnorm"] == CLIP
    assert config["momentum"] == 0.9
    for model_ in (model, loaded):
        model_.fit(x, y, batch_size=N, epochs=1, verbose=0)
    assert _max_abs_diff(loaded.get_weights(), _weights(model)) < 1e-7


def test_keras_per_variable_clipping_is_refused():
    with pytest.raises(ValueError, match="global_clipnorm"):
        optimizers.SGD(clipnorm=1.0)
    with pytest.raises(ValueError, match="weight_decay"):
        optimizers.Adam(weight_decay=-1.0)


def test_search_optimizers_are_pytorch_adam_with_the_release_decay():
    from unas_keras.config import SearchConfig
    from unas_keras.search import schedules

    cfg = SearchConfig.resolve(space="nb201", dataset="digits", epochs=2, warmup_epochs=1)
    weight_opt, arch_opt = schedules.search_optimizers(cfg, steps_per_epoch=3)
    assert isinstance(weight_opt, optimizers.Adam) and isinstance(arch_opt, optimizers.Adam)
    assert weight_opt.coupled_weight_decay == cfg.weight_decay == 3e-4
    assert arch_opt.coupled_weight_decay == cfg.arch_weight_decay == 1e-6
    # The weights' global-norm clip is SearchModel's (applied to the global-batch gradient first).
    assert weight_opt.paper_global_clipnorm is None and cfg.weight_clipnorm == 5.0
    assert weight_opt.weight_decay is None and arch_opt.weight_decay is None  # no decoupled decay on top


@pytest.mark.parametrize("which", ["sgd", "adam"])
def test_variable_weight_decay_gives_the_constant_decays_updates(which):
    x, y = _data()

    def fitted(**options):
        model = _model()
        if which == "sgd":
            optimizer = optimizers.SGD(LR, momentum=0.9, weight_decay=WEIGHT_DECAY, global_clipnorm=CLIP, **options)
        else:
            optimizer = optimizers.Adam(0.01, weight_decay=WEIGHT_DECAY, global_clipnorm=CLIP, **options)
        model.compile(optimizer=optimizer, loss=keras.losses.CategoricalCrossentropy(from_logits=True))
        return _fit_two_steps(model, x, y)

    constant, variable = fitted(), fitted(variable_weight_decay=True)
    for a, b in zip(constant, variable):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("momentum", [0.0, 0.9])  # the plain and the fused (ResourceApplyMomentum) update
def test_set_weight_decay_changes_the_traced_update_without_tracing_again(momentum):
    w0 = np.array([1.0, -2.0, 0.5], "float32")
    g = np.array([0.1, 0.2, -0.3], "float32")
    w = keras.Variable(w0)
    optimizer = optimizers.SGD(0.1, momentum=momentum, weight_decay=0.5, variable_weight_decay=True)
    optimizer.build([w])
    traces = []

    @tf.function
    def step():
        traces.append(1)
        optimizer.apply([tf.constant(g)], [w])

    step()
    optimizer.set_weight_decay(0.0)
    assert optimizer.coupled_weight_decay is None
    step()
    optimizer.set_weight_decay(2.0)
    step()
    assert len(traces) == 1
    expected, buf = w0.astype(np.float64), None
    for decay in (0.5, 0.0, 2.0):  # torch.optim.SGD with coupled L2
        d = g + decay * expected
        buf = d if buf is None else momentum * buf + d
        expected = expected - 0.1 * (buf if momentum else d)
    np.testing.assert_allclose(np.asarray(w.numpy()), expected, rtol=1e-6)


def test_variable_weight_decay_serialises_and_is_refused_a_new_value_otherwise():
    optimizer = optimizers.Adam(1e-3, weight_decay=3e-4, variable_weight_decay=True)
    optimizer.set_weight_decay(1e-3)
    config = optimizer.get_config()
    assert config["weight_decay"] == 1e-3 and config["variable_weight_decay"] is True
    again = optimizers.Adam.from_config(config)
    assert again.coupled_weight_decay == 1e-3 and [s.value for s in again.settings] == [1e-3]
    assert optimizers.SGD().get_config()["variable_weight_decay"] is False
    with pytest.raises(ValueError, match="variable_weight_decay=True"):
        optimizers.SGD(weight_decay=1e-4).set_weight_decay(0.0)
