"""Data layer: readers, download, validation, splits, decoded-image cache, batches, synthetic set.

Importing this package is cheap: it pulls in no TensorFlow/Keras, so `ensembles/` and `reports/`
can use its contracts (class order, prediction files, atomic writes, run-directory layout).
"""

from data_utils.classes import CLASSES, NUM_CLASSES
from data_utils.errors import BenchmarkError, DataError

__all__ = ["CLASSES", "NUM_CLASSES", "BenchmarkError", "DataError"]
