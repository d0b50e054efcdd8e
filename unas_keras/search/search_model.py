"""`SearchModel`: one UNAS search iteration as a Keras `train_step`.

One iteration (docs/ALGORITHM.md section 6) on a pair of batches `((x_train, y_train),
(x_val, y_val))`:

1. Sample architectures from the learned distribution: one per example
   (`sampling="per_example"`, N = batch) or one per minibatch (N = 1), giving
   hard one-hot samples `z` and the estimator's relaxed input `zeta_in`.
2. Architecture step: the objective at `z` on the train and val batches (no
   gradient) and at `zeta_in` on both batches (with gradient), combined by the
   gradient estimator into a surrogate loss; Adam step on the logits.
3. Weight step on the same train batch with the relaxed sample detached,
   plain cross-entropy, global-norm clipping; Adam step on the weights.

BatchNorm is in training mode in every pass.

Efficiency. The weight step's forward (train batch, `stop_grad(zeta_in)`, BN
in training mode, the same weights) has exactly the value of the relaxed train
forward of the architecture step, and its gradient with respect to the weights
is the partial derivative at fixed `zeta_in`; so both gradients are taken from
that one forward, recorded on a persistent tape: the architecture gradient
(w.r.t. the logits only, no filter gradients) and the weight gradient (w.r.t.
the weights only). Passes the estimator does not use are not run
(`gumbel_softmax`: no hard pass; `reinforce`: no relaxed pass, the weight step
reuses the hard train forward), nor the val passes when the objective is
`"train"`: which passes run is decided once, in `passes.plan_passes`. No XLA
(`jit_compile=False` by default; XLA is much slower on CPU for this network).

Reading order (the shape of the Keras custom-`train_step` GAN guide):
`train_step` -> `replica_step` runs a warm-up step (weights only) or a search
step; `phase_switch` is the one place the phase is chosen for `fit`. The search
step is `_search_gradients` (`_run_passes` runs the planned forwards,
`_surrogate` is the estimator maths) then one `apply` per optimizer.

Distribution. The per-replica body (`replica_step`) runs unchanged under any
`tf.distribute` strategy: losses are scaled so that the all-reduced (summed)
gradients are those of the global batch; each replica draws its own noise from
a stateless seed `(seed, search_step, replica_id)` (so a resumed run draws the
same noise as an uninterrupted one) while the logits stay mirrored.
"""

import functools
from typing import Any, NamedTuple

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from unas_keras import _compat, _settings
from unas_keras._validate import check_choice, check_float, check_int
from unas_keras import estimators as estimators_lib
from unas_keras.config.search_config import RELEASE_LATENCY_RAMP_STEPS, SAMPLINGS, SearchConfig
from unas_keras.networks.supernet import Supernet
from unas_keras.search import graph_optimization as graph_optimization_lib
from unas_keras.search import objectives as objectives_lib
from unas_keras.search import passes as passes_lib
from unas_keras.search.distribution import ArchitectureDistribution

# Defaults of the search's settings (written once, in SearchConfig).
_DEFAULT = SearchConfig.default

_SEED_SALT = 0x5EA5C4  # separates the architecture noise stream from other uses of `seed`

# The logs of an iteration (with a latency model: also _LATENCY_METRICS).
_METRICS = ("loss", "train_loss", "val_loss", "accuracy", "val_accuracy", "gen_gap", "entropy", "arch_loss",
            "weight_loss")
_LATENCY_METRICS = ("latency_ms", "sampled_latency_ms")


def _check_supernet(supernet):
    if not isinstance(supernet, Supernet):
        raise ValueError(
            "`supernet` must be a unas_keras.networks.supernet.Supernet (see unas_keras.networks.build_supernet). "
            f"Received: {type(supernet).__name__}"
        )


def _check_latency_model(latency, target_latency_ms):
    if target_latency_ms is not None and latency is None:
        raise ValueError("`target_latency_ms` needs a `latency` model (predict_ms / surrogate_weights).")
    if latency is not None and not (callable(getattr(latency, "predict_ms", None))
                                    and callable(getattr(latency, "surrogate_weights", None))):
        raise ValueError(
            "`latency` must have `predict_ms(architecture)` and `surrogate_weights(search_space)`. "
            f"Received: {type(latency).__name__}"
        )


def _has_dropout(model):
    """Whether `model` holds a Dropout layer with a positive rate (stochastic forward passes)."""
    for layer in _compat.flatten_layers(model, include_self=False):
        if isinstance(layer, keras.layers.Dropout) and float(getattr(layer, "rate", 0.0)) > 0:
            return True
    return False


def _watchable(variables):
    """The backend `tf.Variable`s of Keras variables (what `GradientTape.watch` accepts)."""
    return [getattr(v, "value", v) for v in variables]


@keras.saving.register_keras_serializable(package="unas_keras")
class SearchModel(keras.Model):
    """The UNAS search: a supernet, an architecture distribution and two optimizers.

    Use it like any Keras model: `compile(weight_optimizer, arch_optimizer)`
    then `fit(dataset)` where the dataset yields `((x_train, y_train),
    (x_val, y_val))` forever (e.g. `unas_keras.data.search_data(...).dataset`)
    with `steps_per_epoch`.

    Args:
        supernet: a `unas_keras.networks.supernet.Supernet`
            (`unas_keras.networks.build_supernet`).
        estimator: gradient estimator name (`"rebar"` (alias `"unas"`),
            `"gumbel_softmax"`, `"reinforce"`, `"relax"`) or an
            `unas_keras.estimators.Estimator`.
        objective: `"gen_gap"` (`L_train + lambda |L_val - L_train|` per example
            pair), `"train"` or `"val"`.
        gen_gap_lambda: `lambda` of the generalization-gap objective.
        pair_penalty: weight of the DARTS duplicate-pair penalty added to the
            architecture objective per sample; None means 0.2 for the DARTS
            space and 0 otherwise.
        temperature: relaxation temperature `tau` (estimator names only).
        soften_eps: logit softening `phi <- log(softmax(phi) + eps)`; 0 disables it.
        sampling: `"per_example"` (one architecture per example) or
            `"per_minibatch"` (one architecture per minibatch and replica).
        warmup_steps: iterations at the start that train only the weights,
            with architectures sampled from the initial (uniform) distribution;
            the logits do not change during them.
        latency: optional latency model with `predict_ms(architecture)` and
            `surrogate_weights(search_space) -> (bias, {decision: [rows, choices]})`.
            With it, `latency_ms` and `sampled_latency_ms` are logged.
        target_latency_ms: latency target `t`; with it (and `latency`) the
            objective gains `lambda_lat * max(0, latency - t)` per sample
            (measured latency at hard samples, the linear surrogate at relaxed
            ones).
        latency_lambda: final `lambda_lat` (per ms over the target).
        latency_ramp_steps: architecture steps over which `lambda_lat` ramps
            linearly from 0 (0: no ramp).
        weight_clipnorm: global-norm clip of the (global-batch) weight
            gradient; None or 0 disables it.
        seed: integer seed of the architecture noise.
        baseline_decay: moving-average decay of the REINFORCE baseline (used
            by `"reinforce"` only).
        recompute_val_pass: with the generalization-gap objective, evaluate
            the relaxed val pass twice (values first, then with gradient after
            the train pass's gradients) so that only one relaxed pass's
            activations are held at a time: about half the activation memory
            for one more forward pass; the gradients are unchanged. None (the
            default) enables it unless the supernet has dropout layers (a
            second pass would draw other dropout noise).
        graph_optimization: how TensorFlow's graph optimiser treats the
            traced step: `"auto"` (the default: a lean set of passes on a
            CPU-only host, TensorFlow's defaults where a GPU or TPU is
            visible), `"lean"` or `"full"`; see
            `unas_keras.search.graph_optimization`. The step's results do not
            depend on it; its first-call time and memory do.
        **kwargs: `keras.Model` arguments (e.g. `name`).

    Attributes:
        supernet: the supernet.
        distribution: the `ArchitectureDistribution` holding the logits.
        estimator: the `Estimator` (it owns its state, e.g. REINFORCE's
            baseline, checkpointed with the model).
        pass_plan: the `passes.PassPlan`: which supernet forward passes an
            iteration runs.
        search_step: non-trainable int64 variable counting iterations (seeds,
            warm-up and ramps derive from it; restored from checkpoints).
        seed_variable: non-trainable int64 variable holding `seed` (modulo
            2**31 - 1), read by the traced step.
    """

    def __init__(self, supernet, estimator=_DEFAULT("estimator"), objective=_DEFAULT("objective"),
                 gen_gap_lambda=_DEFAULT("gen_gap_lambda"), pair_penalty=None,
                 temperature=_DEFAULT("temperature"), soften_eps=0.0, sampling="per_example", warmup_steps=0,
                 latency=None, target_latency_ms=None, latency_lambda=_DEFAULT("latency_lambda"),
                 latency_ramp_steps=RELEASE_LATENCY_RAMP_STEPS, weight_clipnorm=_DEFAULT("weight_clipnorm"),
                 seed=_DEFAULT("seed"), baseline_decay=0.9, recompute_val_pass=None, graph_optimization="auto",
                 **kwargs):
        kwargs.setdefault("name", "search_model")
        super().__init__(**kwargs)
        _check_supernet(supernet)
        _check_latency_model(latency, target_latency_ms)
        if sampling not in SAMPLINGS:
            raise ValueError(f"Unknown sampling {sampling!r}; expected one of {list(SAMPLINGS)}.")
        objectives_lib.check_objective(objective)
        self.baseline_decay = check_float(baseline_decay, "baseline_decay")
        if self.baseline_decay >= 1.0:
            raise ValueError(f"`baseline_decay` must be in [0, 1). Received: {baseline_decay!r}")
        self.estimator = estimators_lib.get(
            estimator, temperature=temperature,
            **estimators_lib.accepted_options(estimator, baseline_decay=self.baseline_decay))
        self.objective = objective
        # A variable, not a constant of the traced step: a reused model (`model_cache`) takes a new value.
        self._gen_gap_lambda = _settings.Setting(check_float(gen_gap_lambda, "gen_gap_lambda"),
                                                 name="gen_gap_lambda")
        self.pair_penalty = check_float(pair_penalty, "pair_penalty", allow_none=True)
        self.soften_eps = check_float(soften_eps, "soften_eps")
        self.sampling = sampling
        self.warmup_steps = check_int(warmup_steps, "warmup_steps", 0)
        self.latency = latency
        self.target_latency_ms = check_float(target_latency_ms, "target_latency_ms", allow_none=True)
        self.latency_lambda = check_float(latency_lambda, "latency_lambda")
        self.latency_ramp_steps = check_int(latency_ramp_steps, "latency_ramp_steps", 0)
        self.weight_clipnorm = check_float(weight_clipnorm, "weight_clipnorm", allow_none=True) or None
        self.seed = check_int(seed, "seed", 0)
        self.graph_optimization = check_choice(graph_optimization, "graph_optimization",
                                               graph_optimization_lib.GRAPH_OPTIMIZATIONS)

        if recompute_val_pass is None:
            recompute_val_pass = not _has_dropout(supernet)
        if not isinstance(recompute_val_pass, bool):
            raise ValueError(f"`recompute_val_pass` must be a bool or None. Received: {recompute_val_pass!r}")
        self.recompute_val_pass = recompute_val_pass
        self.pass_plan = passes_lib.plan_passes(
            hard_loss=self.estimator.needs_hard_loss, relaxed_loss=self.estimator.needs_relaxed_loss,
            train_batch=objectives_lib.uses_train_batch(objective),
            val_batch=objectives_lib.uses_val_batch(objective), recompute_val_pass=recompute_val_pass)
        self.supernet = supernet
        self.distribution = ArchitectureDistribution(
            supernet.search_space.decisions(), soften_eps=self.soften_eps, name="architecture_distribution")
        self._decision_names = tuple(self.distribution.decision_names)
        if self.pair_penalty is None:  # the duplicate-pair penalty where the space has such pairs
            self.pair_penalty = objectives_lib.DEFAULT_PAIR_PENALTY if self.distribution.has_decision_pairs else 0.0
        if latency is not None:
            bias, coefficients = latency.surrogate_weights(supernet.search_space)
            self._latency_bias = float(bias)
            self._latency_coefficients = {
                name: np.asarray(coefficients[name], dtype="float32") for name in coefficients
            }
        self.search_step = self.add_weight(
            name="search_step", shape=(), dtype="int64", initializer="zeros", trainable=False,
            aggregation="only_first_replica")
        # The estimator's own state (REINFORCE: its baseline), created in this (distribution) scope and
        # tracked here so that it is checkpointed with the model.
        with keras.name_scope(self.name):
            self.estimator.create_state()
            # A variable, not a constant of the traced step (as `gen_gap_lambda`).
            self._temperature = self.estimator.temperature_variable()
        self._estimator_variables = list(self.estimator.variables)
        # The noise seed is a variable, not a constant of the traced step: a model reused for another
        # search (`unas_keras.search.model_cache`) takes that search's seed with its other variables.
        self.seed_variable = self.add_weight(
            name="seed", shape=(), dtype="int64", initializer=keras.initializers.Constant(self.seed % (2**31 - 1)),
            trainable=False, aggregation="only_first_replica")
        names = _METRICS + (_LATENCY_METRICS if latency is not None else ())
        self._trackers = [keras.metrics.Mean(name=name) for name in names]
        self._tracker_by_name = {t.name: t for t in self._trackers}
        # evaluate() keeps its own means, so that evaluating never touches the search's epoch metrics.
        self._eval_trackers = [keras.metrics.Mean(name="eval_loss"), keras.metrics.Mean(name="eval_accuracy")]
        self.weight_optimizer = None
        self.arch_optimizer = None
        self.built = True

    @property
    def gen_gap_lambda(self):
        """`lambda` of the generalization-gap objective (float; the traced step reads its variable)."""
        return self._gen_gap_lambda.value

    @property
    def settings(self):
        """The hyper-parameters the traced step reads from variables (`unas_keras._settings.Setting`), which
        a model reused for another search takes from that search's model (not checkpointed)."""
        return [self._gen_gap_lambda, self._temperature]

    @property
    def temperature(self):
        """The estimator's relaxation temperature `tau` (float; the traced step reads its variable)."""
        return self._temperature.value

    # ----------------------------------------------------------------- keras
    @property
    def metrics(self):
        return list(self._trackers)

    def compile(self, weight_optimizer="adam", arch_optimizer="adam", **kwargs):
        """Sets (and builds, in the distribution scope) the two optimizers.

        Args:
            weight_optimizer: optimizer of the supernet weights (also
                `self.optimizer`).
            arch_optimizer: optimizer of the architecture logits.
            **kwargs: other `keras.Model.compile` arguments; `jit_compile`
                defaults to False (XLA is slow on CPU for supernets), `loss`
                and `metrics` are not used.
        """
        if "optimizer" in kwargs:
            raise ValueError("Pass `weight_optimizer=` and `arch_optimizer=` instead of `optimizer=`.")
        kwargs.setdefault("jit_compile", False)
        weight_optimizer = keras.optimizers.get(weight_optimizer)
        arch_optimizer = keras.optimizers.get(arch_optimizer)
        if weight_optimizer is arch_optimizer:
            raise ValueError("`weight_optimizer` and `arch_optimizer` must be two optimizer objects.")
        super().compile(optimizer=weight_optimizer, **kwargs)
        self.weight_optimizer = self.optimizer
        self.arch_optimizer = arch_optimizer
        # Built here, in the strategy's scope: building them lazily inside the
        # distributed train function fails ("must feed a value for placeholder").
        with self.distribute_strategy.scope():
            self.weight_optimizer.build(self.supernet.trainable_variables)
            self.arch_optimizer.build(self.distribution.trainable_variables)

    def call(self, inputs, training=False):
        """Supernet logits of `inputs` (images) at the most likely architecture."""
        one_hot = {
            name: ops.one_hot(ops.argmax(phi, axis=-1), phi.shape[-1], dtype=phi.dtype)[None]
            for name, phi in self.distribution.logits().items()
        }
        return self.supernet((inputs, self.supernet.mix_weights(one_hot)), training=training)

    def reset_metrics(self):
        super().reset_metrics()
        for tracker in self._eval_trackers:
            tracker.reset_state()

    def evaluate(self, *args, **kwargs):
        """`keras.Model.evaluate` (see `test_step`); the search's own metrics keep their values."""
        variables = [v for tracker in self._trackers for v in tracker.variables]
        values = [ops.convert_to_numpy(v) for v in variables]
        try:
            return super().evaluate(*args, **kwargs)
        finally:
            for variable, value in zip(variables, values):
                variable.assign(value)

    def test_step(self, data):
        """Loss and accuracy of the supernet at the argmax architecture, for `evaluate`.

        The architecture is the one `derive_architecture` returns (the most likely choice of every
        decision), run in inference mode: BatchNorm uses the moving statistics gathered during the
        search. `evaluate(x, y)` or `evaluate(dataset)` with batches of (images, integer labels) (and
        optional sample weights); a search dataset's `((x_train, y_train), (x_val, y_val))` batches are
        accepted too, and their val half is evaluated.

        Returns:
            `{"loss": mean cross-entropy, "accuracy": mean top-1 accuracy}` over the batches so far.
        """
        if isinstance(data, (tuple, list)) and len(data) == 2 and all(
                isinstance(part, (tuple, list)) and len(part) == 2 for part in data):
            data = data[1]
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if y is None:
            raise ValueError("SearchModel.evaluate needs labels: (images, integer labels) batches.")
        logits = self(x, training=False)
        loss_tracker, accuracy_tracker = self._eval_trackers
        loss_tracker.update_state(objectives_lib.cross_entropy(y, logits), sample_weight=sample_weight)
        accuracy_tracker.update_state(objectives_lib.correct(y, logits), sample_weight=sample_weight)
        return {"loss": loss_tracker.result(), "accuracy": accuracy_tracker.result()}

    def get_config(self):
        if self.latency is not None:
            raise NotImplementedError("A SearchModel with a latency model cannot be serialised.")
        return {
            "name": self.name,
            "supernet": keras.saving.serialize_keras_object(self.supernet),
            "estimator": self.estimator.name,
            "objective": self.objective,
            "gen_gap_lambda": self.gen_gap_lambda,
            "pair_penalty": self.pair_penalty,
            "temperature": self.temperature,
            "soften_eps": self.soften_eps,
            "sampling": self.sampling,
            "warmup_steps": self.warmup_steps,
            "latency_lambda": self.latency_lambda,
            "latency_ramp_steps": self.latency_ramp_steps,
            "weight_clipnorm": self.weight_clipnorm,
            "seed": self.seed,
            "baseline_decay": self.baseline_decay,
            "recompute_val_pass": self.recompute_val_pass,
            "graph_optimization": self.graph_optimization,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["supernet"] = keras.saving.deserialize_keras_object(config["supernet"])
        return cls(**config)

    # ------------------------------------------------------------ results
    def derive_architecture(self):
        """The argmax architecture of the learned distribution (`unas_keras.Architecture`)."""
        return self.supernet.search_space.to_architecture(self.distribution.argmax())

    def arch_probabilities(self):
        """dict decision name -> sampling probabilities as nested lists of floats."""
        return self.distribution.as_json_dict()

    # ------------------------------------------------------------ seeds
    def step_seed(self, step, replica_id=0):
        """The stateless seed `[2]` (int32) of iteration `step` on replica `replica_id`."""
        key = tf.stack([tf.convert_to_tensor(self.seed_variable.value), tf.constant(_SEED_SALT, tf.int64)])
        key = tf.random.experimental.stateless_fold_in(key, tf.cast(step, tf.int64))
        key = tf.random.experimental.stateless_fold_in(key, tf.cast(replica_id, tf.int64))
        return tf.cast(tf.math.floormod(key, 2**31 - 1), tf.int32)

    def sample_architectures(self, num_samples, step=None, replica_id=0):
        """The architecture sample that iteration `step` draws on replica `replica_id`.

        Args:
            num_samples: batch size (per-example sampling) or 1.
            step: the iteration (defaults to the current `search_step`).
            replica_id: replica index in the sync group.

        Returns:
            An `ArchitectureSample` (see `ArchitectureDistribution.sample`).
        """
        if step is None:
            step = self.search_step
        return self.distribution.sample(self.estimator, num_samples, self.step_seed(step, replica_id))

    # ------------------------------------------------------------ the step: warm-up or search
    def in_warmup(self):
        """Whether the next iteration is a weight-only warm-up iteration (python bool)."""
        return bool(self._is_warmup(int(ops.convert_to_numpy(self.search_step.value))))

    def _is_warmup(self, step):
        """The warm-up rule: iteration `step` (int or tensor) trains only the weights."""
        return step < self.warmup_steps

    def phase_switch(self, make_function):
        """A train function that runs the warm-up function during warm-up, the search function after.

        Under `tf.distribute` a synchronisation point (gradient all-reduce, optimizer update) cannot
        sit inside a `tf.cond`, so each phase has its own traced function, chosen in Python before
        each execution from `search_step` (with `steps_per_execution > 1` the switch happens at the
        first execution that starts after warm-up). Both run with the Grappler settings of
        `graph_optimization`. `fit` (`make_train_function`) and the custom distributed loop both use
        this.

        Args:
            make_function: `warmup (bool) -> function(iterator)`, e.g. a traced
                `strategy.run(functools.partial(model.replica_step, warmup=warmup), ...)`.

        Returns:
            `function(iterator)`.
        """
        search_function = make_function(False)
        warmup_function = make_function(True) if self.warmup_steps else None
        rewrite_options = graph_optimization_lib.rewrite_options(self.graph_optimization)

        def function(iterator):
            chosen = warmup_function if warmup_function is not None and self.in_warmup() else search_function
            with _compat.function_rewrite_options(rewrite_options):
                return chosen(iterator)

        return function

    def make_train_function(self, force=False):
        """Builds `train_function` for `fit`: one traced function per phase (see `phase_switch`)."""
        if self.train_function is None or force:
            self.train_function = self.phase_switch(lambda warmup: _compat.make_train_function(
                self, functools.partial(self.replica_step, warmup=warmup)))
        return self.train_function

    def train_step(self, data):
        """One UNAS iteration on `((x_train, y_train), (x_val, y_val))`; returns the logs."""
        return self.replica_step(data)

    # Not converted by AutoGraph (the step's control flow is explicit `tf.cond`s): converting this
    # method and everything it calls took about a quarter of the step's tracing time.
    @tf.autograph.experimental.do_not_convert
    def replica_step(self, data, warmup=None, return_samples=False):
        """The per-replica body of one search iteration.

        Runs in a replica context (`strategy.run(model.replica_step, ...)`, as
        `fit` does and as a custom multi-worker loop may do).

        Args:
            data: `((x_train, y_train), (x_val, y_val))` of this replica.
            warmup: True for a weight-only warm-up iteration, False for a
                full search iteration, None to decide from `search_step`
                inside the graph (`tf.cond`; single replica only: with several
                replicas pass `warmup=model.in_warmup()` and trace one
                function per phase, as `fit` does).
            return_samples: also return the hard architecture samples drawn
                by this replica (dict name -> `[N, rows, choices]`), for tests
                and diagnostics.

        Returns:
            The logs dict (metric name -> value), or `(logs, hard_samples)`.

        Raises:
            ValueError: before `compile`, on malformed data, or with
                `warmup=None` under a multi-replica strategy.
        """
        if self.weight_optimizer is None:
            raise ValueError("Call `compile(weight_optimizer, arch_optimizer)` before training.")
        batches = self._unpack(data)
        num_replicas = tf.distribute.get_strategy().num_replicas_in_sync
        context = tf.distribute.get_replica_context()
        replica_id = context.replica_id_in_sync_group if context is not None else 0
        step = tf.convert_to_tensor(self.search_step.value)
        seed = self.step_seed(step, replica_id)
        num_samples = self._num_samples(batches.x_train)

        def warmup_step():
            return self._warmup_step(batches, num_samples, seed, num_replicas)

        def search_step():
            return self._search_step(batches, num_samples, seed, step, num_replicas)

        if warmup is None and self.warmup_steps > 0:
            if num_replicas > 1:
                raise ValueError(
                    "With several replicas, call replica_step(data, warmup=model.in_warmup()) and trace "
                    "one function per phase: a tf.cond cannot hold the gradient all-reduce."
                )
            hard = tf.cond(self._is_warmup(step), warmup_step, search_step)
        else:
            hard = warmup_step() if warmup else search_step()
        self.search_step.assign_add(1)
        self._log_distribution_metrics()
        logs = {t.name: t.result() for t in self._trackers}
        if return_samples:
            return logs, hard
        return logs

    def _warmup_step(self, batches, num_samples, seed, num_replicas):
        """Warm-up iteration: weights trained with samples of the (frozen) distribution."""
        sample = self.distribution.sample(self.estimator, num_samples, seed)
        weights_in = self.supernet.mix_weights(_sample_input(sample, passes_lib.DETACHED))
        variables = self.supernet.trainable_variables
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(_watchable(variables))
            logits = self._forward(batches.x_train, weights_in)
            ce = objectives_lib.cross_entropy(batches.y_train, logits)
            weight_loss = ops.mean(ce)
            scaled = weight_loss / float(num_replicas)
        self._apply_weight_gradients(tape.gradient(scaled, variables), num_replicas)
        self._update("weight_loss", weight_loss)
        self._update("train_loss", ops.mean(ce))
        self._update("accuracy", ops.mean(objectives_lib.correct(batches.y_train, logits)))
        self._update("loss", ops.mean(ce))
        self._skip("val_loss", "val_accuracy", "gen_gap", "arch_loss")
        if self.latency is not None:
            self._update("sampled_latency_ms", ops.mean(self._measured_latency(sample.hard)))
        return sample.hard

    def _search_step(self, batches, num_samples, seed, step, num_replicas):
        """A full iteration: architecture step then weight step, and the metrics."""
        arch_grads, weight_grads, result = self._search_gradients(
            batches, num_samples, seed, step, num_replicas)
        self.arch_optimizer.apply(arch_grads, self.distribution.trainable_variables)
        self._apply_weight_gradients(weight_grads, num_replicas)
        self.estimator.update_baseline(result.baseline, result.hard_objective)
        self._log_search_metrics(result, batches)
        return result.sample.hard

    # ------------------------------------------------------------ gradients
    def search_gradients(self, data, step=None, replica_id=0):
        """The gradients one search iteration would apply, without applying them.

        For tests and diagnostics (the training step uses the same code).

        Args:
            data: `((x_train, y_train), (x_val, y_val))`.
            step: the iteration whose noise to draw (default: `search_step`).
            replica_id: the replica whose noise to draw.

        Returns:
            `(arch_grads, weight_grads, info)`: gradients aligned with
            `distribution.trainable_variables` and
            `supernet.trainable_variables` (per replica, before any
            all-reduce or clipping), and a dict with the `sample`, the
            per-sample `hard_objective` / `relaxed_objective` (None when not
            computed), the `baseline` (None without one), `arch_loss`,
            `weight_loss`, the supernet `logits` and cross-entropies `ce` of
            every pass run (by pass name, e.g. "hard_train"), `passes` (their
            names), `weight_key` (the weight step's pass) and the `plan`
            (`passes.PassPlan`).
        """
        batches = self._unpack(data)
        step = tf.convert_to_tensor(self.search_step.value if step is None else step, dtype=tf.int64)
        num_samples = self._num_samples(batches.x_train)
        arch_grads, weight_grads, result = self._search_gradients(
            batches, num_samples, self.step_seed(step, replica_id), step, 1)
        info = dict(result._asdict(), plan=self.pass_plan, weight_key=self.pass_plan.weight_pass.name,
                    passes=tuple(p.name for p in result.logits))
        info["logits"] = {p.name: value for p, value in result.logits.items()}
        info["ce"] = {p.name: value for p, value in result.ce.items()}
        return arch_grads, weight_grads, info

    def _search_gradients(self, batches, num_samples, seed, step, num_replicas):
        """Samples, runs the planned passes, returns `(arch_grads, weight_grads, _Iteration)`.

        Both gradients come from one set of forwards on a persistent tape: the
        architecture gradient w.r.t. the logits only (no filter gradients),
        the weight gradient w.r.t. the weights only.
        """
        plan = self.pass_plan
        arch_vars = self.distribution.trainable_variables
        weight_vars = self.supernet.trainable_variables
        with tf.GradientTape(persistent=True, watch_accessed_variables=False) as tape:
            tape.watch(_watchable(arch_vars))
            tape.watch(_watchable(weight_vars))
            sample = self.distribution.sample(self.estimator, num_samples, seed)
            logits = self._run_passes(sample, batches, tape)
            ce = {p: objectives_lib.cross_entropy(batches.labels(p.batch), value)
                  for p, value in logits.items()}
            if plan.recomputed is not None:
                # The surrogate's sensitivity to each loss of that pass, d arch_loss / d L_i.
                tape.watch(ce[plan.recomputed])
            result = self._surrogate(sample, logits, ce, num_samples, step)
            scaled_arch_loss = result.arch_loss / float(num_replicas)
            scaled_weight_loss = result.weight_loss / float(num_replicas)
        if plan.recomputed is None:
            arch_grads = tape.gradient(scaled_arch_loss, arch_vars)
        else:
            *arch_grads, cotangent = tape.gradient(scaled_arch_loss, list(arch_vars) + [ce[plan.recomputed]])
        weight_grads = tape.gradient(scaled_weight_loss, weight_vars)
        del tape
        if plan.recomputed is not None:
            arch_grads = self._add_recomputed_pass_gradients(
                arch_grads, weight_grads, cotangent, batches, num_samples, seed)
        return arch_grads, weight_grads, result

    def _surrogate(self, sample, logits, ce, num_samples, step):
        """The estimator maths: per-sample objectives, baseline and surrogate loss (an `_Iteration`)."""
        plan = self.pass_plan
        objectives = {}
        for kind, wanted in ((passes_lib.HARD, plan.hard_loss), (passes_lib.RELAXED, plan.relaxed_loss)):
            if wanted:
                train_ce, val_ce = (None if p is None else ce[p] for p in plan.objective_passes(kind))
                objectives[kind] = self._sample_objective(train_ce, val_ce, _sample_input(sample, kind),
                                                          num_samples, step, measured=kind == passes_lib.HARD)
        hard_objective = objectives.get(passes_lib.HARD)
        relaxed_objective = objectives.get(passes_lib.RELAXED)
        # The first architecture step comes right after warm-up (REINFORCE starts its average there).
        baseline = self.estimator.baseline_for_step(hard_objective, step, first_step=self.warmup_steps)
        arch_loss = self.estimator.surrogate_from_losses(sample.log_prob, hard_objective, relaxed_objective,
                                                         baseline=baseline)
        return _Iteration(sample=sample, logits=logits, ce=ce, hard_objective=hard_objective,
                          relaxed_objective=relaxed_objective, baseline=baseline, arch_loss=arch_loss,
                          weight_loss=ops.mean(ce[plan.weight_pass]))

    def _add_recomputed_pass_gradients(self, arch_grads, weight_grads, cotangent, batches, num_samples, seed):
        """Adds the gradient of the recomputed pass, run after the other gradients are taken.

        Chain rule through that pass: `sum_i (d arch_loss / d L_i) * d L_i / d logits`, with the
        cotangents `d arch_loss / d L_i` of the first tape; the pass draws the same sample again.
        """
        recomputed = self.pass_plan.recomputed
        arch_vars = self.distribution.trainable_variables
        done = [g for g in list(arch_grads) + list(weight_grads) + [cotangent] if g is not None]
        with tf.control_dependencies([tf.group(done)]):
            # One control edge: the pass starts from this copy of its input.
            images = tf.identity(batches.images(recomputed.batch))
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(_watchable(arch_vars))
            again = self.distribution.sample(self.estimator, num_samples, seed)
            logits = self._forward(images, self.supernet.mix_weights(_sample_input(again, recomputed.sample)))
            term = ops.sum(ops.stop_gradient(cotangent)
                           * objectives_lib.cross_entropy(batches.labels(recomputed.batch), logits))
        extra = tape.gradient(term, arch_vars)
        return [a if b is None else (b if a is None else a + b) for a, b in zip(arch_grads, extra)]

    def _apply_weight_gradients(self, grads, num_replicas):
        variables = self.supernet.trainable_variables
        pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
        if not pairs:
            return
        grads = [g for g, _ in pairs]
        variables = [v for _, v in pairs]
        if self.weight_clipnorm:
            context = tf.distribute.get_replica_context()
            if num_replicas > 1 and context is not None:
                # Clip the norm of the global-batch gradient: sum over replicas
                # first; the optimizer sums again, hence the division.
                grads = context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
                grads, _ = tf.clip_by_global_norm(grads, self.weight_clipnorm)
                grads = [g / float(num_replicas) for g in grads]
            else:
                grads, _ = tf.clip_by_global_norm(grads, self.weight_clipnorm)
        self.weight_optimizer.apply(grads, variables)

    # ------------------------------------------------------------ forward passes
    def _run_passes(self, sample, batches, tape):
        """The plan's forward passes: dict `passes.Pass` -> logits."""
        plan = self.pass_plan
        weights = {kind: self.supernet.mix_weights(_sample_input(sample, kind))
                   for kind in dict.fromkeys(p.sample for p in plan.passes)}
        with tape.stop_recording():
            logits = self._forward_without_gradient(
                [(p, batches.images(p.batch), weights[p.sample], p.sample == passes_lib.HARD)
                 for p in plan.without_gradient])
        for p in plan.with_gradient:
            logits[p] = self._forward(batches.images(p.batch), weights[p.sample])
        return logits

    def _skips_unchosen_blocks(self, one_hot):
        """Whether a forward at a one-hot sample runs only the chosen blocks (the supernet says)."""
        return bool(one_hot) and self.supernet.skips_unchosen_blocks

    def _forward(self, images, weights, one_hot=False):
        """Supernet logits; `one_hot`: `weights` is a hard sample (the supernet may skip unchosen blocks)."""
        # Eager callers (search_gradients) may pass numpy batches; Keras refuses mixed call arguments.
        return self.supernet((keras.ops.convert_to_tensor(images), weights), training=True,
                             one_hot=self._skips_unchosen_blocks(one_hot))

    def _forward_without_gradient(self, passes):
        """Runs forward passes whose gradient is not needed; returns dict key -> logits.

        Passes of the same shapes run as the iterations of one loop, so the
        step's graph holds one copy of the supernet for all of them instead
        of one per pass (each pass still sees its own batch, as separate
        calls would: batch normalisation statistics included).

        Args:
            passes: list of `(key, images, weights, one_hot)`.
        """
        out = {}
        groups = {}
        for key, images, weights, one_hot in passes:
            one_hot = self._skips_unchosen_blocks(one_hot)   # else the flag changes nothing
            signature = (one_hot, tuple(images.shape),
                         tuple(tuple(w.shape) for w in tf.nest.flatten(weights)))
            groups.setdefault(signature, []).append((key, images, weights))
        for (one_hot, image_shape, _), members in groups.items():
            if len(members) == 1 or not tf.inside_function() or None in image_shape:
                for key, images, weights in members:
                    out[key] = self._forward(images, weights, one_hot=one_hot)
                continue
            images = tf.stack([keras.ops.convert_to_tensor(m[1]) for m in members])
            weights = tf.nest.map_structure(lambda *w: tf.stack(w), *[m[2] for m in members])
            logits = tf.map_fn(lambda pair: self._forward(pair[0], pair[1], one_hot=one_hot), (images, weights),
                               fn_output_signature=self.compute_dtype, parallel_iterations=1)
            for i, (key, _, _) in enumerate(members):
                out[key] = logits[i]
        return out

    # ------------------------------------------------------------ objective and latency
    def _sample_objective(self, train_ce, val_ce, samples, num_samples, step, measured):
        """Per-sample objective `[N]`: network loss + pair penalty + latency hinge."""
        gen_gap_lambda = (self._gen_gap_lambda.read(train_ce.dtype) if self.objective == "gen_gap"
                          else self.gen_gap_lambda)
        per_example = objectives_lib.objective_per_example(self.objective, train_ce, val_ce, gen_gap_lambda)
        total = objectives_lib.per_sample(per_example, num_samples)
        if self.pair_penalty > 0:
            total = total + objectives_lib.pair_penalty(self.distribution.pair_overlap(samples),
                                                        self.pair_penalty)
        if self.latency is not None and self.target_latency_ms is not None:
            if measured:
                latency_ms = self._measured_latency(samples)
            else:
                latency_ms = objectives_lib.linear_latency(
                    self._latency_bias, self._latency_coefficients, samples)
            weight = objectives_lib.latency_lambda(step, self.warmup_steps, self.latency_lambda,
                                                   self.latency_ramp_steps)
            total = total + objectives_lib.latency_hinge(latency_ms, self.target_latency_ms, weight)
        return total

    def _measured_latency(self, hard_samples):
        """`[N]` latency (ms) of each hard sample from the latency model (a py function)."""
        arrays = [hard_samples[name] for name in self._decision_names]
        latency = tf.numpy_function(self._predict_latency_np, arrays, tf.float32, stateful=False)
        return tf.reshape(latency, [-1])

    def _predict_latency_np(self, *arrays):
        choices = [np.argmax(a, axis=-1) for a in arrays]
        space = self.supernet.search_space
        out = []
        for i in range(choices[0].shape[0]):
            picked = {name: [int(c) for c in value[i]] for name, value in zip(self._decision_names, choices)}
            out.append(float(self.latency.predict_ms(space.to_architecture(picked))))
        return np.asarray(out, dtype=np.float32)

    # ------------------------------------------------------------ metrics
    def _update(self, name, value, weight=1.0):
        self._tracker_by_name[name].update_state(value, sample_weight=weight)

    def _skip(self, *names):
        for name in names:
            self._tracker_by_name[name].update_state(0.0, sample_weight=0.0)

    def _log_search_metrics(self, result, batches):
        """Hard-sample values where they exist, else the relaxed ones."""
        plan = self.pass_plan
        self._update("weight_loss", result.weight_loss)
        self._update("arch_loss", result.arch_loss)
        objective = result.hard_objective if result.hard_objective is not None else result.relaxed_objective
        self._update("loss", ops.mean(objective))
        train, val = plan.metric_train_pass, plan.metric_val_pass
        self._update("train_loss", ops.mean(result.ce[train]))
        self._update("accuracy", ops.mean(objectives_lib.correct(batches.y_train, result.logits[train])))
        if val is not None:
            self._update("val_loss", ops.mean(result.ce[val]))
            self._update("val_accuracy", ops.mean(objectives_lib.correct(batches.y_val, result.logits[val])))
            self._update("gen_gap", ops.mean(ops.abs(result.ce[val] - result.ce[train])))
        else:
            self._skip("val_loss", "val_accuracy", "gen_gap")
        if self.latency is not None:
            self._update("sampled_latency_ms", ops.mean(self._measured_latency(result.sample.hard)))

    def _log_distribution_metrics(self):
        self._tracker_by_name["entropy"].update_state(self.distribution.entropy())
        if self.latency is not None:
            probabilities = {k: v[None] for k, v in self.distribution.probabilities().items()}
            self._tracker_by_name["latency_ms"].update_state(
                objectives_lib.linear_latency(self._latency_bias, self._latency_coefficients,
                                              probabilities)[0])

    # ------------------------------------------------------------ input
    @staticmethod
    def _unpack(data):
        try:
            (x_train, y_train), (x_val, y_val) = data
        except (TypeError, ValueError):
            raise ValueError(
                "SearchModel expects batches ((x_train, y_train), (x_val, y_val)) "
                "(see unas_keras.data.search_data)."
            ) from None
        return _Batches(x_train, y_train, x_val, y_val)

    def _num_samples(self, x_train):
        if self.sampling == "per_minibatch":
            return 1
        batch = x_train.shape[0]
        return int(batch) if batch is not None else tf.shape(x_train)[0]


class _Batches(NamedTuple):
    """One replica's train and val batches."""

    x_train: Any
    y_train: Any
    x_val: Any
    y_val: Any

    def images(self, batch):
        return self.x_train if batch == passes_lib.TRAIN else self.x_val

    def labels(self, batch):
        return self.y_train if batch == passes_lib.TRAIN else self.y_val


class _Iteration(NamedTuple):
    """What one search iteration computed on one replica (`logits` / `ce`: dict `passes.Pass` -> `[B]`)."""

    sample: Any
    logits: Any
    ce: Any
    hard_objective: Any
    relaxed_objective: Any
    baseline: Any
    arch_loss: Any
    weight_loss: Any


def _sample_input(sample, kind):
    """The per-decision supernet input of a sample kind: hard, relaxed or detached relaxed."""
    if kind == passes_lib.HARD:
        return sample.hard
    if kind == passes_lib.RELAXED:
        return sample.relaxed
    return {name: ops.stop_gradient(value) for name, value in sample.relaxed.items()}
