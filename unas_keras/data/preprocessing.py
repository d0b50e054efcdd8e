"""Per-example image transforms for tf.data pipelines (stateless, so they replay exactly).

Every random transform takes an explicit ``seed`` (an int64 tensor of shape [2]) and uses
``tf.image.stateless_*`` / ``tf.random.stateless_*`` ops, so the same seed always gives the same result.
"""

import tensorflow as tf

from unas_keras.data import constants


def to_unit_float(image):
    """Converts an image to float32; uint8 images are scaled to [0, 1], floats are kept as they are."""
    if image.dtype == tf.uint8:
        return tf.cast(image, tf.float32) / 255.0
    return tf.cast(image, tf.float32)


def convert_channels(image, channels):
    """Converts an HWC image with 1, 3 or 4 channels to `channels` (1 or 3) channels.

    Grey is replicated to RGB, RGB is converted to grey with the ITU-R 601 weights, and an alpha channel
    is dropped.  The channel count of `image` must be known statically.
    """
    source = image.shape[-1]
    if source is None:
        raise ValueError("convert_channels needs a static channel count; got shape %s" % (image.shape,))
    if source == 4:
        image = image[..., :3]
        source = 3
    if source == channels:
        return image
    if source == 1 and channels == 3:
        return tf.tile(image, [1, 1, 3])
    if source == 3 and channels == 1:
        return tf.image.rgb_to_grayscale(image)
    raise ValueError("cannot convert images with %d channels to %d channels; sources may have 1, 3 or 4 "
                     "channels and targets 1 or 3" % (source, channels))


def resize(image, size):
    """Bilinear resize to size x size (a no-op when the image already has that static size)."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    return tf.image.resize(image, [size, size], method="bilinear")


def central_crop_resize(image, size, fraction=constants.CENTRAL_CROP_FRACTION):
    """Crops the central square of side `fraction` * shorter side and resizes it to size x size.

    This equals the usual ImageNet evaluation transform (resize the shorter side to size / fraction,
    then take the central size x size crop) and keeps the aspect ratio.
    """
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    side = tf.maximum(1, tf.cast(tf.cast(tf.minimum(height, width), tf.float32) * fraction, tf.int32))
    top = (height - side) // 2
    left = (width - side) // 2
    crop = tf.image.crop_to_bounding_box(image, top, left, side, side)
    return tf.image.resize(crop, [size, size], method="bilinear")


def pad_crop_flip(image, seed):
    """CIFAR augmentation: zero-pad by side // 8 pixels, random crop back, random horizontal flip."""
    height, width, channels = image.shape
    pad = max(1, height // 8)
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
    image = tf.image.stateless_random_crop(padded, [height, width, channels], seed=crop_seed)
    return tf.image.stateless_random_flip_left_right(image, seed=flip_seed)


def resized_crop_flip(image, size, seed):
    """ImageNet-style augmentation: random crop (25-100% area, aspect 3/4-4/3), resize, random flip."""
    box_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=box_seed,
        min_object_covered=0.0, aspect_ratio_range=constants.RESIZED_CROP_ASPECT_RANGE,
        area_range=constants.RESIZED_CROP_AREA_RANGE, max_attempts=10, use_image_if_no_bounding_boxes=True)
    crop = tf.slice(image, begin, crop_size)
    crop = tf.image.resize(crop, [size, size], method="bilinear")
    return tf.image.stateless_random_flip_left_right(crop, seed=flip_seed)


def normalize(image, mean, std):
    """(image - mean) / std with per-channel constants (sequences of length `channels`)."""
    mean = tf.constant(mean, tf.float32)
    std = tf.constant(std, tf.float32)
    return (image - mean) / std


def cutout(image, length, seed):
    """Zeroes a length x length square (clipped at the border) centred at a random pixel."""
    height, width = image.shape[0], image.shape[1]
    center = tf.random.stateless_uniform([2], seed=seed, minval=0, maxval=tf.int32.max, dtype=tf.int32)
    cy = center[0] % height
    cx = center[1] % width
    rows = tf.range(height)[:, None]
    cols = tf.range(width)[None, :]
    half = length // 2
    inside = ((rows >= cy - half) & (rows < cy - half + length)
              & (cols >= cx - half) & (cols < cx - half + length))
    mask = tf.cast(tf.logical_not(inside), image.dtype)[:, :, None]
    return image * mask


def make_preprocess_fn(image_size, variable_size, augment, mean, std, cutout_length=0):
    """Returns fn(image, label, seed) -> (float32 [S, S, C] normalised image, int32 label).

    Args:
        image_size: output side S.
        variable_size: True when source images have no fixed size (ImageNet, folders).
        augment: one of constants.AUGMENT_POLICIES.
        mean: per-channel means (in [0, 1] units), one per output channel.
        std: per-channel standard deviations, one per output channel.
        cutout_length: side of the cutout square (0 disables it).

    `image` must already have the output channel count; `seed` is an int64 [2] tensor, unused when
    neither augmentation nor cutout is on.
    """
    if augment not in constants.AUGMENT_POLICIES:
        raise ValueError("unknown augmentation policy %r; allowed: %s" % (augment, constants.AUGMENT_POLICIES))

    def preprocess(image, label, seed):
        image = to_unit_float(image)
        aug_seed, cut_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
        if augment == "resized_crop_flip":
            image = resized_crop_flip(image, image_size, aug_seed)
        else:
            if variable_size:
                image = central_crop_resize(image, image_size)
            else:
                image = resize(image, image_size)
            image = tf.ensure_shape(image, [image_size, image_size, None])
            if augment == "crop_flip":
                image = pad_crop_flip(image, aug_seed)
        image = tf.ensure_shape(image, [image_size, image_size, len(mean)])
        image = normalize(image, mean, std)
        if cutout_length > 0:
            image = cutout(image, cutout_length, cut_seed)
        return image, tf.cast(label, tf.int32)

    return preprocess
