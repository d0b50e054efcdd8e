"""Runs one of the apps with tensorflow-datasets mocked (no download): used by the end-to-end tests.

    python tests/_mock_tfds_app.py NUM_EXAMPLES apps/train.py --flag=value ...

`tfds.testing.mock_data(num_examples=NUM_EXAMPLES)` serves random images with the real data set's
features (cifar10: 32x32x3, 10 classes; imagenet2012: variable-size images, 1000 classes) for every split.
"""

import runpy
import sys

import tensorflow_datasets as tfds

if __name__ == "__main__":
    num_examples, app = int(sys.argv[1]), sys.argv[2]
    sys.argv = [app] + sys.argv[3:]
    with tfds.testing.mock_data(num_examples=num_examples):
        runpy.run_path(app, run_name="__main__")
