"""The UNAS search engine: `SearchModel`, its objectives, schedules and the architecture distribution."""

from unas_keras.search import objectives
from unas_keras.search import schedules
from unas_keras.search.distribution import ArchitectureDistribution
from unas_keras.search.distribution import ArchitectureSample
from unas_keras.search.search_model import SearchModel

__all__ = [
    "ArchitectureDistribution",
    "ArchitectureSample",
    "SearchModel",
    "objectives",
    "schedules",
]
