"""Depthwise convolution whose kernel gradient is fast on CPU for large kernels."""

import keras
import tensorflow as tf

#: Kernels at least this large take the fast kernel gradient; TensorFlow's own is fast for 3x3.
FAST_FILTER_GRADIENT_MIN_KERNEL = 5


def _same_padding(size, kernel, stride):
    """`(before, after)` zero padding of TensorFlow's "SAME" convolution on one side."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _kernel_gradient(inputs, grad, kernel_size, strides, pads):
    """The depthwise kernel gradient `[kh, kw, C, 1]`.

    `dK[i, j, c] = sum_{n, h, w} padded[n, s*h + i, s*w + j, c] * grad[n, h, w, c]` (`padded`: the
    inputs with the zero padding `pads`), computed as one depthwise convolution with the batch moved
    into the channels: the input is `inputs` as `[1, H, W, N*C]`, the filter is `grad` as
    `[Ho, Wo, N*C, 1]` (dilated by the stride), and the `[1, kh, kw, N*C]` result is summed over the
    batch. TensorFlow's `DepthwiseConv2dNativeBackpropFilter` computes the same sum 3-12x slower on
    CPU for 5x5 and 7x7 kernels (e.g. 35 ms against 3 ms at 6x6x1152, batch 8, 7x7).
    """
    kh, kw = kernel_size
    sh, sw = strides
    ho, wo = grad.shape[1], grad.shape[2]
    channels = inputs.shape[3]
    # After `grad` exists: else the executor may run these copies of every layer's input as soon as
    # the forward pass is done and hold them all until the backward pass reaches their layer.
    with tf.control_dependencies([grad]):
        explicit = strides == (1, 1)
        if not explicit and pads != [(0, 0), (0, 0)]:
            inputs = tf.pad(inputs, [(0, 0), pads[0], pads[1], (0, 0)])
        if not explicit:  # only the rows and columns the convolution read
            inputs = inputs[:, : (ho - 1) * sh + kh, : (wo - 1) * sw + kw, :]
        images = tf.reshape(tf.transpose(inputs, [1, 2, 0, 3]), [1, inputs.shape[1], inputs.shape[2], -1])
    filters = tf.reshape(tf.transpose(grad, [1, 2, 0, 3]), [ho, wo, -1, 1])
    if explicit:
        out = tf.nn.depthwise_conv2d(images, filters, [1, 1, 1, 1], [[0, 0], list(pads[0]), list(pads[1]), [0, 0]])
    else:
        out = tf.nn.depthwise_conv2d(images, filters, [1, 1, 1, 1], "VALID", dilations=[sh, sw])
    return tf.reduce_sum(tf.reshape(out, [kh, kw, -1, channels]), axis=2)[..., None]


def depthwise_conv2d(inputs, kernel, strides, padding):
    """`tf.nn.depthwise_conv2d` (NHWC, multiplier 1) with the fast kernel gradient of `_kernel_gradient`.

    Args:
        inputs: `[N, H, W, C]` with static `H, W, C`.
        kernel: `[kh, kw, C, 1]`.
        strides: `(sh, sw)`.
        padding: `"SAME"` or `"VALID"`.

    Returns:
        `[N, Ho, Wo, C]`, the value of `tf.nn.depthwise_conv2d`.
    """
    kernel_size = tuple(int(k) for k in kernel.shape[:2])
    strides = tuple(int(s) for s in strides)
    strides4 = [1, strides[0], strides[1], 1]
    if padding == "SAME":
        pads = [_same_padding(int(inputs.shape[d + 1]), kernel_size[d], strides[d]) for d in (0, 1)]
    else:
        pads = [(0, 0), (0, 0)]

    @tf.custom_gradient
    def conv(x, k):
        y = tf.nn.depthwise_conv2d(x, k, strides4, padding)

        def grad(dy):
            dx = tf.raw_ops.DepthwiseConv2dNativeBackpropInput(
                input_sizes=tf.shape(x), filter=k, out_backprop=dy, strides=strides4, padding=padding)
            return dx, _kernel_gradient(x, dy, kernel_size, strides, pads)

        return y, grad

    return conv(inputs, kernel)


@keras.saving.register_keras_serializable(package="unas_keras")
class DepthwiseConv2D(keras.layers.DepthwiseConv2D):
    """`keras.layers.DepthwiseConv2D` whose kernel gradient is fast on CPU for 5x5 and larger kernels.

    Same weights, config and outputs as the parent class; with the TensorFlow
    backend, a kernel of side >= `FAST_FILTER_GRADIENT_MIN_KERNEL`, depth
    multiplier 1, no dilation, channels last and static spatial sizes, the
    gradient with respect to the kernel is computed by `depthwise_conv2d`
    (the same sum in another order). Otherwise the parent's call runs.

    Args:
        **kwargs: `keras.layers.DepthwiseConv2D` arguments.
    """

    def _can_use_fast_gradient(self, inputs):
        return (
            keras.backend.backend() == "tensorflow"
            and min(self.kernel_size) >= FAST_FILTER_GRADIENT_MIN_KERNEL
            and self.depth_multiplier == 1
            and tuple(self.dilation_rate) == (1, 1)
            and self.data_format == "channels_last"
            and len(inputs.shape) == 4
            and None not in tuple(inputs.shape[1:])
        )

    def call(self, inputs):
        if not self._can_use_fast_gradient(inputs):
            return super().call(inputs)
        kernel = tf.convert_to_tensor(self.kernel)
        outputs = depthwise_conv2d(tf.convert_to_tensor(inputs), kernel, tuple(self.strides),
                                   self.padding.upper())
        if self.use_bias:
            outputs = outputs + self.bias
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs
