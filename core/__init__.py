"""Foundations shared by every stage: errors, atomic writes, class order, the run-directory
contract, prediction files, metrics and metrics.json, and the checks every stage makes before it
uses or writes a file: file-system errors as user errors (`core.filesystem`), what derived files
were derived from (`core.provenance`: test-set identity, ensemble inputs) and leakage between
splits (`core.integrity`).

Nothing here imports a later layer (data_utils, zoo, training, ensembles, reports, pipeline) or
TensorFlow/Keras (import-linter contracts in pyproject.toml), so any stage can use it.
"""
