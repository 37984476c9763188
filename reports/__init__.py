"""The report stage: results.csv, statistics, figures, the markdown report and the regression gate.

Works from the run directory's CSV/JSON files alone: nothing in this package imports TensorFlow or
Keras, so a report can be rebuilt on any machine from a finished run (docs/ARCHITECTURE.md).
`reports.build` is the entry point (a single run: reports.single; a grid: reports.grid); the CLI
actions are in `reports.cli`; what is checked before anything is used or written is in
`reports.integrity`. Nothing here imports the training or ensembles stages.
"""
