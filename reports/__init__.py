"""Metrics, statistics, figures, the markdown report and the regression gate.

Works from the run directory's CSV/JSON files alone: nothing in this package imports TensorFlow or
Keras, so a report can be rebuilt on any machine from a finished run (DESIGN.md).
"""
