"""Per-dataset constants of the data pipelines, kept in one place.

Every number that depends on the dataset (normalisation statistics, the default size of the held-out
search split, the default augmentation) lives here; the pipelines look them up by canonical dataset
name and fall back to the ``DEFAULT_*`` values for any other dataset.
"""

# Datasets that ship with the library and the alternative spellings of tensorflow-datasets names: the
# data set classifier's (unas_keras.config.datasets).
from unas_keras.config.datasets import ALIASES, EMBEDDED as EMBEDDED_DATASETS  # noqa: E402,F401

DIGITS = "digits"

# Per-channel (mean, std) of images scaled to [0, 1].  Digits: the 8x8 images divided by 16, over the
# whole set (one grey channel, replicated when 3 channels are requested).  Datasets not listed here
# have their statistics estimated from a fixed sample of their training split (see pipelines.py).
NORMALIZATION = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagenet2012": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    DIGITS: ((0.3053,), (0.3760,)),
}
# How many training examples are used to estimate the statistics of other datasets.
NORMALIZATION_SAMPLE_SIZE = 512

# Fraction of the training split held out to feed the val batches of the search (UNAS paper: CIFAR
# 45k/5k, ImageNet 90/10).  Every other dataset (digits, arrays, folders, other tfds names) uses the
# DARTS-style half split.
SEARCH_VAL_FRACTION = {"cifar10": 0.1, "cifar100": 0.1, "imagenet2012": 0.1}
DEFAULT_SEARCH_VAL_FRACTION = 0.5

# Augmentation policies.  "crop_flip": zero-pad by image_size // 8 (4 pixels at 32x32), random crop
# back, random horizontal flip.  "resized_crop_flip": random crop of 25-100% of the area with aspect
# ratio in [3/4, 4/3], resized to image_size, random horizontal flip.  "none": deterministic resize
# (central 87.5% crop first for images of variable size).
AUGMENT_POLICIES = ("none", "crop_flip", "resized_crop_flip")
# Search (UNAS paper): CIFAR crop + flip, ImageNet none; everything else none.
SEARCH_AUGMENT = {"cifar10": "crop_flip", "cifar100": "crop_flip", "imagenet2012": "none"}
# Training a derived network: CIFAR crop + flip, ImageNet random-resized-crop + flip.
EVAL_AUGMENT = {"cifar10": "crop_flip", "cifar100": "crop_flip", "imagenet2012": "resized_crop_flip"}
DEFAULT_AUGMENT = "none"
# Policy used when augment=True is forced on a dataset whose default is "none".
FORCED_AUGMENT_FIXED_SIZE = "crop_flip"
FORCED_AUGMENT_VARIABLE_SIZE = "resized_crop_flip"

# Fraction of the training data held out for evaluation when a dataset has no test split
# (digits, arrays, folders, tfds datasets without "test"/"validation").
DEFAULT_EVAL_HELDOUT_FRACTION = 0.2

# Central crop used for images of variable size when no augmentation is applied (ImageNet eval).
CENTRAL_CROP_FRACTION = 0.875
# Area range of the random resized crop.
RESIZED_CROP_AREA_RANGE = (0.25, 1.0)
RESIZED_CROP_ASPECT_RANGE = (3.0 / 4.0, 4.0 / 3.0)

# Shuffle buffers for tensorflow-datasets streams (encoded images are shuffled before decoding).
# Fixed small images (<= 64x64, e.g. CIFAR): the whole split up to this many; others (ImageNet): this.
SMALL_IMAGE_SHUFFLE_BUFFER = 60000
LARGE_IMAGE_SHUFFLE_BUFFER = 4096
SMALL_IMAGE_MAX_SIDE = 64

# Seed of the fixed, seed-independent partition of digits/arrays/folders into train and held-out
# parts (a property of the dataset, like CIFAR's last 5k).
SPLIT_SEED = 20200601

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
