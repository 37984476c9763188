"""Training: the one protocol every entry goes through, its presets and policies, the worker.

Importing this package is cheap (no TensorFlow/Keras): the heavy modules (`protocol`, `augment`,
`svm_baseline`, `worker`) import Keras themselves when they are used.
"""

from training.presets import ENTRIES, PRESET_NAMES

__all__ = ["ENTRIES", "PRESET_NAMES"]
