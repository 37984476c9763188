"""Orchestration above the stages: the only package that imports several of them (training,
ensembles, reports) and runs one after the other. Nothing but benchmark.py imports it."""
