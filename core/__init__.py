"""Foundations shared by every stage: errors, atomic writes, class order, the run-directory
contract, prediction files, metrics and metrics.json.

Nothing here imports a later layer (data_utils, zoo, training, ensembles, reports, pipeline) or
TensorFlow/Keras (import-linter contracts in pyproject.toml), so any stage can use it.
"""
