"""Orchestration above the stages: the only package that imports several of them (training,
ensembles, reports) and runs one after the other. Nothing but benchmark.py imports it.

- `all_action`: the --all action (prints the per-entry summary, sets the exit code), over
  `run_all`: resolve the config, choose and lock the run directory (`rundir_lifecycle`), prepare
  the data, write run.json (`provenance`) and a grid's replicate folders (`replicates`), run the
  jobs through training.executors, then `finish`: out-of-fold predictions, ensembles (one member
  set per grid: `grid_ensembles`), results.csv and the report. `outcome` holds the result.
- `ensemble_action`: the --ensemble action (build, then refresh results.csv and the report).
"""
