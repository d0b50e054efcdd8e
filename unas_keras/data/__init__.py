"""Data pipelines for UNAS search and for training derived networks (tf.data).

Datasets: "digits" (scikit-learn's 8x8 digits, embedded, offline), tensorflow-datasets image
classification names ("cifar10", "cifar100", "imagenet2012" alias "imagenet", ...; never downloaded here),
a folder with one sub-folder of images per class, or (x, y) numpy arrays (`search()` also reads a finite
tf.data.Dataset of (image, label) pairs into arrays: `sources.tf_data_arrays`).
"""

from unas_keras.data.constants import AUGMENT_POLICIES
from unas_keras.data.constants import EMBEDDED_DATASETS
from unas_keras.data.pipelines import EvalInfo
from unas_keras.data.pipelines import SearchData
from unas_keras.data.pipelines import dataset_info
from unas_keras.data.pipelines import eval_batches
from unas_keras.data.pipelines import eval_data
from unas_keras.data.pipelines import representative_arrays
from unas_keras.data.pipelines import search_data
from unas_keras.data.sources import DatasetInfo

__all__ = [
    "AUGMENT_POLICIES",
    "DatasetInfo",
    "EMBEDDED_DATASETS",
    "EvalInfo",
    "SearchData",
    "dataset_info",
    "eval_batches",
    "eval_data",
    "representative_arrays",
    "search_data",
]
