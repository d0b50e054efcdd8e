"""Batch normalization through TensorFlow's fused kernel in training mode."""

import keras
import numpy as np
import tensorflow as tf


@keras.saving.register_keras_serializable(package="unas_keras")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` that trains through one fused TensorFlow op.

    Keras 3 builds training-mode batch normalization from about 25 small ops
    (moments, the normalisation, two moving-average assignments) and their
    gradients from as many again. A DARTS supernet holds hundreds of batch
    normalizations per forward pass and a search step runs several passes, so
    those ops make graphs of hundreds of thousands of nodes that take minutes
    and gigabytes to trace and optimise. This layer computes the same output
    with one fused op (`FusedBatchNorm`, or `FusedBatchNormV3` for float16 and
    bfloat16 inputs; one op forward, one op backward, oneDNN on CPU) and lets
    the same op update the moving statistics.

    Differences from the parent class, in training mode only: the moving
    variance is updated with the unbiased batch variance (as PyTorch and the
    fused path of Keras 2 do; the normalisation itself uses the biased one,
    as always). Inference, other ranks or axes, masks, `renorm` and
    `synchronized` fall back to the parent class. Weights, config and saved
    files are those of `keras.layers.BatchNormalization`.

    Args:
        **kwargs: `keras.layers.BatchNormalization` arguments.
    """

    def can_fuse(self, inputs, training, mask=None):
        """Whether `call` with these arguments runs the fused op (else the parent class's call)."""
        return (
            training is True
            and self.trainable
            and mask is None
            and not getattr(self, "renorm", False)  # Keras < 3.14 has no batch renormalization
            and not self.synchronized
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and keras.backend.backend() == "tensorflow"
        )

    def call(self, inputs, training=None, mask=None):
        if not self.can_fuse(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        channels = inputs.shape[-1]
        # Constants, not tf.ones / tf.zeros: one graph node each instead of three.
        scale = tf.cast(self.gamma, tf.float32) if self.scale else tf.constant(np.ones(channels, np.float32))
        offset = tf.cast(self.beta, tf.float32) if self.center else tf.constant(np.zeros(channels, np.float32))
        x = inputs if inputs.dtype in (tf.float16, tf.bfloat16, tf.float32) else tf.cast(inputs, tf.float32)
        # The first version of the op for float32: a gradient tape fills the unused output gradients of
        # FusedBatchNormV3 (batch statistics, reserve spaces) with zeros, five nodes per normalization
        # in every pass, and accepts None for those of FusedBatchNorm only. Same kernels on CPU (oneDNN) and
        # GPU (cuDNN); V3 takes float16 / bfloat16 inputs.
        fused = tf.raw_ops.FusedBatchNorm if x.dtype == tf.float32 else tf.raw_ops.FusedBatchNormV3
        outputs, moving_mean, moving_variance, *_ = fused(
            x=x,
            scale=scale,
            offset=offset,
            mean=tf.cast(self.moving_mean, tf.float32),
            variance=tf.cast(self.moving_variance, tf.float32),
            epsilon=float(self.epsilon),
            exponential_avg_factor=1.0 - float(self.momentum),
            data_format="NHWC",
            is_training=True,
        )
        self.moving_mean.assign(moving_mean)
        self.moving_variance.assign(moving_variance)
        return tf.cast(outputs, self.compute_dtype)
