"""The configuration of a search: settings (`SearchConfig`) and the data set classifier. Pure Python."""

from unas_keras.config.datasets import DatasetRef, classify
from unas_keras.config.search_config import SearchConfig, config_differences

__all__ = ["DatasetRef", "SearchConfig", "classify", "config_differences"]
