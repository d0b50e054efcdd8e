"""The papers' optimizers with PyTorch semantics: global-norm clipping, coupled L2, SGD momentum / Adam.

The UNAS (and DARTS) PyTorch loops do, at every step, in this order:

1. clip the *global* norm of the raw gradient of all weights together (`clip_grad_norm_(params, 5)`);
2. add coupled L2 weight decay to the gradient: `d = g + weight_decay * w`;
3. the optimizer's own update on `d`:
   * `torch.optim.SGD(momentum=m)`: `buf = m * buf + d; w -= lr * buf` (the evaluation recipe);
   * `torch.optim.Adam`: the moments see `d`;
     `w -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)` (the search recipe).

Keras' built-in optimizers differ on each point: `clipnorm` clips every variable on its own,
`global_clipnorm` clips each replica's share of the gradient before the cross-replica sum, `weight_decay`
is decoupled (AdamW-style `w -= lr * wd * w`, about ten times weaker than coupled L2 under momentum 0.9),
Keras SGD keeps `lr` inside its momentum buffer (so a schedule changes the buffer's meaning) and Keras Adam
adds `epsilon` before the bias correction. `SGD` and `Adam` here reproduce the PyTorch update exactly, also
under `tf.distribute` strategies (the global norm is that of the global-batch gradient), and save / load
with a model (`import unas_keras` registers them).
"""

import keras
from keras import ops

from unas_keras._variables import resource_handle

__all__ = ["Adam", "SGD"]


def _check_non_negative(value, name):
    if value is None:
        return None
    value = float(value)
    if value < 0:
        raise ValueError(f"{name} must be >= 0 or None, got {value}.")
    return value or None


class _PaperRecipeMixin:
    """Global-norm clipping of the raw gradient before the update, and coupled L2 inside it."""

    def _init_recipe(self, weight_decay, global_clipnorm, variable_weight_decay=False):
        weight_decay = _check_non_negative(weight_decay, "weight_decay")
        self.paper_global_clipnorm = _check_non_negative(global_clipnorm, "global_clipnorm")
        self._constant_weight_decay = weight_decay
        self._weight_decay_setting = None
        self._weight_decay_read = _StepScalars()
        if variable_weight_decay:
            from unas_keras import _settings

            self._weight_decay_setting = _settings.Setting(weight_decay or 0.0, name=f"{self.name}_weight_decay")

    @property
    def coupled_weight_decay(self):
        """The coupled L2 factor (float), or None when it is 0."""
        if self._weight_decay_setting is not None:
            return self._weight_decay_setting.value or None
        return self._constant_weight_decay

    @property
    def settings(self):
        """The `unas_keras._settings.Setting`s the traced update reads (not checkpointed): the weight decay
        with `variable_weight_decay=True`, then those of the learning-rate schedule, if it has any."""
        own = [self._weight_decay_setting] if self._weight_decay_setting is not None else []
        return own + list(getattr(self._learning_rate, "settings", []))

    def set_weight_decay(self, weight_decay):
        """Changes the weight decay of an optimizer built with `variable_weight_decay=True` (no new trace)."""
        if self._weight_decay_setting is None:
            raise ValueError("set_weight_decay needs an optimizer built with variable_weight_decay=True (its "
                             "weight decay is a constant of the traced update).")
        self._weight_decay_setting.assign(_check_non_negative(weight_decay, "weight_decay") or 0.0)

    def apply(self, grads, trainable_variables=None):
        """Clips the global gradient norm, then applies the update (see the module docstring)."""
        if self.paper_global_clipnorm:
            grads = _clip_global_norm(list(grads), self.paper_global_clipnorm)
        return super().apply(grads, trainable_variables)

    def _decayed(self, gradient, variable, learning_rate=None):
        """`d = g + weight_decay * w` (coupled L2, PyTorch `weight_decay`).

        With `variable_weight_decay` the factor is read from its variable (once per update, keyed by the
        update's learning-rate tensor) and the decay is added even when it is 0 (`g + 0 * w == g`).
        """
        gradient = ops.convert_to_tensor(gradient)
        if self._weight_decay_setting is not None:
            decay = self._weight_decay_read.get(learning_rate, lambda: self._weight_decay_setting.read("float32"))
            return ops.add(gradient, ops.multiply(ops.cast(decay, variable.dtype), variable))
        if not self._constant_weight_decay:
            return gradient
        return ops.add(gradient, ops.multiply(ops.cast(self._constant_weight_decay, variable.dtype), variable))

    def _recipe_config(self, config):
        config["weight_decay"] = self.coupled_weight_decay
        config["global_clipnorm"] = self.paper_global_clipnorm
        config["variable_weight_decay"] = self._weight_decay_setting is not None
        return config


def _fused_kernels_available(variable):
    """Whether the update can run as one TensorFlow training kernel per variable.

    Keras' own optimizers spell each update as about twenty small ops per
    variable; a supernet has hundreds of variables, and those ops were a
    third of a search step's graph (tracing and graph optimisation time).
    TensorFlow's `ResourceApplyAdam` / `ResourceApplyMomentum` compute the
    same updates in one kernel each.
    """
    return keras.backend.backend() == "tensorflow" and hasattr(variable, "handle")


class _StepScalars:
    """Per-step scalars computed once per `apply` (keyed by the learning-rate tensor it passes)."""

    def __init__(self):
        self._key = None
        self._values = None

    def get(self, learning_rate, compute):
        import tensorflow as tf

        # A Python float or a variable is the same object at every step (and in every traced function).
        if not isinstance(learning_rate, tf.Tensor):
            return compute()
        if self._key is not learning_rate:
            self._key, self._values = learning_rate, compute()
        return self._values


def _replica_count():
    """Replicas that each hold a share of the gradient right now (1 outside a replica context)."""
    if keras.backend.backend() != "tensorflow":
        return 1, None
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    strategy = tf.distribute.get_strategy()
    if context is None or strategy.num_replicas_in_sync == 1:
        return 1, None
    return strategy.num_replicas_in_sync, context


def _clip_global_norm(grads, clipnorm):
    """Scales the gradients so that the norm of the global-batch gradient is at most `clipnorm`.

    Under a multi-replica strategy each replica holds a share of the gradient whose sum is the global
    gradient; the shares are summed first (the norm of a sum is not the sum of norms), clipped, and divided
    again by the replica count so that the optimizer's own cross-replica sum restores the clipped value.
    """
    present = [i for i, g in enumerate(grads) if g is not None]
    if not present:
        return grads
    values = [grads[i] for i in present]
    num_replicas, context = _replica_count()
    if num_replicas > 1:
        import tensorflow as tf

        values = context.all_reduce(tf.distribute.ReduceOp.SUM, values)
    squares = [ops.sum(ops.square(ops.cast(g, "float32"))) for g in values]
    norm = ops.sqrt(ops.sum(ops.stack(squares)))
    scale = ops.minimum(1.0, clipnorm / ops.maximum(norm, 1e-12)) / float(num_replicas)
    out = list(grads)
    for i, g in zip(present, values):
        out[i] = ops.multiply(g, ops.cast(scale, g.dtype))
    return out


@keras.saving.register_keras_serializable(package="unas_keras")
class SGD(_PaperRecipeMixin, keras.optimizers.Optimizer):
    """SGD with momentum as `torch.optim.SGD`, with global-norm clipping and coupled L2 weight decay.

    Per step: `g <- clip_by_global_norm(g, global_clipnorm)`; `d = g + weight_decay * w`;
    `buf = momentum * buf + d` (`buf = d` at the first step); `w -= lr * buf`
    (`w -= lr * (d + momentum * buf)` with `nesterov=True`). This is the DARTS / UNAS evaluation recipe.

    Args:
        learning_rate: a float or a `keras.optimizers.schedules.LearningRateSchedule`.
        momentum: momentum factor in [0, 1).
        nesterov: Nesterov momentum (PyTorch's form).
        weight_decay: coupled L2 factor (PyTorch `weight_decay`); None or 0 disables it.
        global_clipnorm: clip the norm of the whole (global-batch) gradient; None disables it.
        name: optimizer name.
        variable_weight_decay: hold `weight_decay` in a variable that the traced update reads (not
            checkpointed; `set_weight_decay` changes it without tracing again); the decay is then added
            also when it is 0.
        **kwargs: other `keras.optimizers.Optimizer` arguments (not `clipnorm`, `clipvalue`).
    """

    def __init__(self, learning_rate=0.05, momentum=0.9, nesterov=False, weight_decay=None,
                 global_clipnorm=None, name="paper_sgd", variable_weight_decay=False, **kwargs):
        _refuse_keras_clipping(kwargs)
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if not 0.0 <= float(momentum) < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}.")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self._init_recipe(weight_decay, global_clipnorm, variable_weight_decay)
        self._step_scalars = _StepScalars()

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentum_buffers = []
        if self.momentum:
            for variable in variables:
                self.momentum_buffers.append(
                    self.add_variable_from_reference(reference_variable=variable, name="momentum"))

    def update_step(self, gradient, variable, learning_rate):
        d = ops.cast(self._decayed(gradient, variable, learning_rate), variable.dtype)
        if self.momentum and _fused_kernels_available(variable):
            import tensorflow as tf

            # Once per update, not per variable (a graph node each for hundreds of variables).
            lr, momentum = (ops.cast(x, variable.dtype) for x in self._step_scalars.get(
                learning_rate, lambda: (ops.cast(learning_rate, "float32"), ops.convert_to_tensor(self.momentum))))
            # accum = momentum * accum + d; w -= lr * accum (or lr * (d + momentum * accum)).
            buf = self.momentum_buffers[self._get_variable_index(variable)]
            tf.raw_ops.ResourceApplyMomentum(var=resource_handle(variable), accum=resource_handle(buf), lr=lr,
                                             grad=d, momentum=momentum, use_nesterov=self.nesterov)
            return
        lr = ops.cast(learning_rate, variable.dtype)
        if self.momentum:
            buf = self.momentum_buffers[self._get_variable_index(variable)]
            self.assign(buf, ops.add(ops.multiply(buf, self.momentum), d))
            d = ops.add(d, ops.multiply(buf, self.momentum)) if self.nesterov else buf
        self.assign_sub(variable, ops.multiply(lr, d))

    def get_config(self):
        config = super().get_config()
        config.update({"momentum": self.momentum, "nesterov": self.nesterov})
        return self._recipe_config(config)


@keras.saving.register_keras_serializable(package="unas_keras")
class Adam(_PaperRecipeMixin, keras.optimizers.Optimizer):
    """Adam as `torch.optim.Adam`, with global-norm clipping and coupled L2 weight decay.

    Per step: `g <- clip_by_global_norm(g, global_clipnorm)`; `d = g + weight_decay * w`;
    `m = b1 m + (1 - b1) d`; `v = b2 v + (1 - b2) d^2`;
    `w -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + epsilon)`. This is the UNAS search recipe
    (weights: lr 3e-4, weight decay 3e-4, clip 5; architecture logits: lr 1e-3, weight decay 1e-6).

    Args:
        learning_rate: a float or a `keras.optimizers.schedules.LearningRateSchedule`.
        beta_1, beta_2: moment decay rates.
        epsilon: PyTorch's epsilon (added after the bias correction; default 1e-8 as in PyTorch).
        weight_decay: coupled L2 factor (PyTorch `weight_decay`); None or 0 disables it.
        global_clipnorm: clip the norm of the whole (global-batch) gradient; None disables it.
        name: optimizer name.
        variable_weight_decay: hold `weight_decay` in a variable that the traced update reads (not
            checkpointed; `set_weight_decay` changes it without tracing again); the decay is then added
            also when it is 0.
        **kwargs: other `keras.optimizers.Optimizer` arguments (not `clipnorm`, `clipvalue`).
    """

    def __init__(self, learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-8, weight_decay=None,
                 global_clipnorm=None, name="paper_adam", variable_weight_decay=False, **kwargs):
        _refuse_keras_clipping(kwargs)
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.epsilon = float(epsilon)
        self._init_recipe(weight_decay, global_clipnorm, variable_weight_decay)
        self._step_scalars = _StepScalars()

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._momentums, self._velocities = [], []
        for variable in variables:
            self._momentums.append(self.add_variable_from_reference(reference_variable=variable, name="momentum"))
            self._velocities.append(self.add_variable_from_reference(reference_variable=variable, name="velocity"))

    def update_step(self, gradient, variable, learning_rate):
        if _fused_kernels_available(variable):
            self._fused_update_step(gradient, variable, learning_rate)
            return
        lr = ops.cast(learning_rate, variable.dtype)
        d = ops.cast(self._decayed(gradient, variable, learning_rate), variable.dtype)
        t = ops.cast(self.iterations + 1, variable.dtype)
        bias_1 = 1.0 - ops.power(ops.cast(self.beta_1, variable.dtype), t)
        bias_2 = 1.0 - ops.power(ops.cast(self.beta_2, variable.dtype), t)
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        self.assign(m, ops.add(ops.multiply(m, self.beta_1), ops.multiply(d, 1.0 - self.beta_1)))
        self.assign(v, ops.add(ops.multiply(v, self.beta_2), ops.multiply(ops.square(d), 1.0 - self.beta_2)))
        denominator = ops.add(ops.divide(ops.sqrt(v), ops.sqrt(bias_2)), self.epsilon)
        self.assign_sub(variable, ops.multiply(ops.divide(lr, bias_1), ops.divide(m, denominator)))

    def _fused_update_step(self, gradient, variable, learning_rate):
        import tensorflow as tf

        def scalars():
            t = ops.cast(self.iterations + 1, "float32")
            beta_1_power = ops.power(self.beta_1, t)
            beta_2_power = ops.power(self.beta_2, t)
            # ResourceApplyAdam adds epsilon before the bias correction of v; PyTorch after it.
            epsilon = self.epsilon * ops.sqrt(1.0 - beta_2_power)
            beta_1, beta_2 = (ops.convert_to_tensor(b, "float32") for b in (self.beta_1, self.beta_2))
            return ops.cast(learning_rate, "float32"), beta_1_power, beta_2_power, epsilon, beta_1, beta_2

        # Once per update, not per variable: a supernet has hundreds of variables, each a few graph nodes.
        lr, beta_1_power, beta_2_power, epsilon, beta_1, beta_2 = (
            ops.cast(x, variable.dtype) for x in self._step_scalars.get(learning_rate, scalars))
        index = self._get_variable_index(variable)
        tf.raw_ops.ResourceApplyAdam(
            var=resource_handle(variable), m=resource_handle(self._momentums[index]),
            v=resource_handle(self._velocities[index]),
            beta1_power=beta_1_power, beta2_power=beta_2_power, lr=lr, beta1=beta_1, beta2=beta_2,
            epsilon=epsilon, grad=ops.cast(self._decayed(gradient, variable, learning_rate), variable.dtype))

    def get_config(self):
        config = super().get_config()
        config.update({"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon})
        return self._recipe_config(config)


def _refuse_keras_clipping(kwargs):
    for name in ("clipnorm", "clipvalue"):
        if kwargs.get(name) is not None:
            raise ValueError(f"{name} clips each variable on its own; the papers clip the global norm: use "
                             f"global_clipnorm=.")
