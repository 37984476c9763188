"""Training: the one protocol every entry goes through, its presets and policies, the worker.

The typed configuration lives in `training.settings` (resolved once by `training.config`), the
entries in `training.entries` (the zoo registry's backbones plus the SVM baseline), the presets in
`training.presets`.

Importing this package is cheap (no TensorFlow/Keras): the heavy modules (`protocol`, `model`,
`entry_run`, `callbacks`, `backend`, `augment`, `svm_baseline`, `worker`) import Keras themselves
when they are used.
"""
