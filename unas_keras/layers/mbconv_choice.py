"""The searchable MBConv layer: a weighted sum of MBConv blocks (and `zero`)."""

import keras
from keras import ops

from unas_keras.layers import mbconv_select
from unas_keras.layers.mbconv import MBConv, conv_output_side
from unas_keras.space.proxyless import ZERO, parse_block

#: Default `skip_threshold`: every block is computed. Skipping needs one `tf.cond` per block; under a
#: gradient tape each cond's gradient is traced as functions of its own and hands the kept branch's
#: intermediates to the backward pass, so a ProxylessNAS search step (96x96, batch 8, 2 CPU threads,
#: threshold 0.05) took 146.5 s to its first step (30.6 s without) and held 6.8 GB (3.8 GB) for a step
#: 1.9x faster (0.66 s against 1.28 s). Running skipped blocks on a one-example stand-in batch instead
#: of a cond traced in 34 s, but oneDNN then builds primitives for new shapes at every step (steps of
#: 2-20 s).
DEFAULT_SKIP_THRESHOLD = 0.0


@keras.saving.register_keras_serializable(package="unas_keras")
class MBConvChoice(keras.layers.Layer):
    """Mixture of candidate blocks of one ProxylessNAS-space layer.

    Called as `layer(x, op_weights)`; returns `sum_k w[:, k] * op_k(x)` where
    `op_k` is the `MBConv` of choice `k` (`"k{kernel}e{expansion}"`) or, for
    `"zero"`, the identity with dropout `zero_dropout` in training (the
    layer is skipped). `op_weights` has shape `[N, K]`: one row per example
    (`N` = batch size) or one row for the whole minibatch (`N = 1`
    broadcasts). A one-hot row selects one block; relaxed rows mix them.

    As in the DARTS cells, with `skip_threshold > 0` a block whose weight
    is below it for every row is not computed at all (`keras.ops.cond`): a
    hard one-hot minibatch sample costs one block, not `K`. Skipped blocks
    contribute zero and get no gradient. `skip_threshold <= 0` (or `None`,
    the default) computes every block (every weight then receives a
    gradient, even an exact zero); the UNAS release uses 0.05.

    Args:
        out_channels: output width of every block.
        stride: stride of every block (1 or 2).
        choices: the candidate names, in the order of the weight columns
            (e.g. `unas_keras.space.proxyless.OPTIONAL_CHOICES`). `"zero"`
            needs stride 1 and an input width equal to `out_channels`.
        zero_dropout: dropout rate of the `"zero"` candidate in training.
        skip_threshold: float, see above (default 0: every block is
            computed, see `DEFAULT_SKIP_THRESHOLD` for why; 1e-6 skips the
            unchosen blocks of one-hot samples).
        bn_epsilon: BatchNormalization epsilon of the blocks.
        bn_momentum: BatchNormalization momentum of the blocks.
        bn_affine: whether the blocks' BatchNormalization has scale/offset.
        name: layer name.
        **kwargs: other `keras.layers.Layer` arguments.
    """

    def __init__(
        self,
        out_channels,
        stride,
        choices,
        zero_dropout=0.1,
        skip_threshold=DEFAULT_SKIP_THRESHOLD,
        bn_epsilon=1e-3,
        bn_momentum=0.99,
        bn_affine=False,
        name=None,
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        choices = tuple(choices)
        if not choices:
            raise ValueError("MBConvChoice needs at least one choice.")
        if len(set(choices)) != len(choices):
            raise ValueError(f"MBConvChoice choices must be distinct, got {list(choices)}.")
        parsed = [parse_block(c) for c in choices]  # raises on malformed names
        if ZERO in choices and stride != 1:
            raise ValueError(f"MBConvChoice: 'zero' needs stride 1, got stride {stride}.")
        if not 0.0 <= zero_dropout < 1.0:
            raise ValueError(f"MBConvChoice zero_dropout must be in [0, 1), got {zero_dropout}.")
        skip_threshold = 0.0 if skip_threshold is None else float(skip_threshold)
        self.out_channels = out_channels
        self.stride = stride
        self.choices = choices
        self.zero_dropout = zero_dropout
        self.skip_threshold = skip_threshold
        self.bn_epsilon = bn_epsilon
        self.bn_momentum = bn_momentum
        self.bn_affine = bn_affine
        self.candidates = []
        for choice, block in zip(choices, parsed):
            if block is None:
                op = keras.layers.Dropout(zero_dropout, name=ZERO, dtype=self.dtype_policy)
            else:
                kernel, expansion = block
                op = MBConv(
                    out_channels, kernel, expansion, stride=stride, bn_epsilon=bn_epsilon,
                    bn_momentum=bn_momentum, bn_affine=bn_affine, name=choice,
                    dtype=self.dtype_policy)
            self.candidates.append(op)

    def build(self, input_shape):
        if self.built:
            return
        input_shape = tuple(input_shape)
        if ZERO in self.choices and input_shape[-1] != self.out_channels:
            raise ValueError(
                f"MBConvChoice {self.name!r}: 'zero' needs input width == out_channels "
                f"({self.out_channels}), got input shape {input_shape}."
            )
        for op in self.candidates:
            op.build(input_shape)
        self.built = True

    def candidate(self, choice):
        """Returns the layer of candidate `choice` (e.g. `"k3e6"`)."""
        if choice not in self.choices:
            raise ValueError(f"{self.name!r} has no candidate {choice!r}; it has {list(self.choices)}.")
        return self.candidates[self.choices.index(choice)]

    def compute_output_shape(self, input_shape, op_weights_shape=None):
        batch, height, width = tuple(input_shape)[:3]
        return (batch, conv_output_side(height, self.stride), conv_output_side(width, self.stride),
                self.out_channels)

    def call(self, inputs, op_weights, training=None, one_hot=False):
        """`sum_k w[:, k] * op_k(inputs)`.

        Args:
            inputs: `[N, H, W, C]` feature map.
            op_weights: `[N, K]` or `[1, K]` candidate weights.
            training: Keras training flag.
            one_hot: promise that `op_weights` is one-hot (a hard sample).
                With one row for the minibatch, only the chosen block runs,
                whatever `skip_threshold`: in training, one block traced for
                all that reads the chosen block's weights
                (`unas_keras.layers.mbconv_select`), else a `switch` (one
                branch executes).

        Returns:
            `[N, H', W', out_channels]`.
        """
        op_weights = ops.convert_to_tensor(op_weights, dtype=inputs.dtype)
        if len(op_weights.shape) != 2 or (op_weights.shape[-1] not in (None, len(self.choices))):
            raise ValueError(
                f"MBConvChoice {self.name!r}: op_weights must have shape [N, {len(self.choices)}], "
                f"got {tuple(op_weights.shape)}."
            )
        if one_hot and op_weights.shape[0] == 1:
            index = ops.argmax(op_weights[0])
            if mbconv_select.can_select(self._blocks(), inputs, training):
                chosen = self._selected_call(index, inputs, training)
            else:
                chosen = ops.switch(
                    index, [lambda x, op=op: op(x, training=training) for op in self.candidates], inputs)
            return ops.take(op_weights[0], index) * chosen
        out_shape = None
        total = None
        # One reshape and one unstack give every block's [N, 1, 1, 1] weight (a slice and a reshape
        # per block made about twice the graph nodes, and as many again in each gradient).
        scales = ops.unstack(ops.reshape(op_weights, (-1, 1, 1, 1, len(self.choices))), axis=-1)
        for op, scale in zip(self.candidates, scales):

            def branch(op=op, scale=scale):
                return scale * op(inputs, training=training)

            if self.skip_threshold <= 0:
                term = branch()
            else:
                if out_shape is None:
                    static = self.compute_output_shape(inputs.shape)
                    dynamic = ops.shape(inputs)
                    out_shape = tuple(
                        dynamic[i] if s is None else s for i, s in enumerate(static[:3])
                    ) + (self.out_channels,)
                    if static[1] is None or static[2] is None:
                        out_shape = (out_shape[0],
                                     (dynamic[1] + self.stride - 1) // self.stride,
                                     (dynamic[2] + self.stride - 1) // self.stride,
                                     self.out_channels)

                def skipped(out_shape=out_shape):
                    return ops.zeros(out_shape, dtype=inputs.dtype)

                term = ops.cond(ops.max(scale) >= self.skip_threshold, branch, skipped)
            total = term if total is None else total + term
        return total

    def _blocks(self):
        return [op for op in self.candidates if isinstance(op, MBConv)]

    def _selected_call(self, index, inputs, training):
        """Candidate `index`'s output, one block traced for all (see `mbconv_select`)."""
        # Candidate position -> position among the blocks (`zero` maps to block 0, computed and dropped).
        block_of = [0] * len(self.choices)
        for position, choice in enumerate(c for c in self.choices if c != ZERO):
            block_of[self.choices.index(choice)] = position
        index = ops.cast(index, "int32")
        is_zero = (ops.equal(index, self.choices.index(ZERO)) if ZERO in self.choices
                   else ops.convert_to_tensor(False))
        block = mbconv_select.selected_block_call(
            self._blocks(), ops.take(ops.convert_to_tensor(block_of, "int32"), index), inputs,
            update=ops.logical_not(is_zero))
        if ZERO not in self.choices:
            return block
        zero = self.candidates[self.choices.index(ZERO)]
        # A cond, so that dropout draws its random numbers only when `zero` is chosen, as in the switch.
        skipped = ops.cond(is_zero, lambda: zero(inputs, training=training), lambda: inputs)
        return ops.where(is_zero, skipped, block)

    def get_config(self):
        config = super().get_config()
        config.update(
            out_channels=self.out_channels,
            stride=self.stride,
            choices=list(self.choices),
            zero_dropout=self.zero_dropout,
            skip_threshold=self.skip_threshold,
            bn_epsilon=self.bn_epsilon,
            bn_momentum=self.bn_momentum,
            bn_affine=self.bn_affine,
        )
        return config
