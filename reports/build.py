"""The report stage's entry point: `build_report` and `refresh_results_csv` on any run directory.

A single run gets its report from reports.single; a grid root (it has replicates/) gets the grid
report from reports.grid (per-replicate metrics refreshed, jobs.csv, aggregated results.csv,
report.md over jobs). This module sits above both; in reports/ only the CLI actions (reports.cli)
import it. Needs no TensorFlow/Keras.
"""

from __future__ import annotations

import os
from pathlib import Path

from core.defaults import BOOTSTRAP, RANK_BY, REFERENCE, SEED
from core.rundir import RunDir
from reports.grid import build_grid_report, write_grid_results_csv
from reports.options import check_rank_by
from reports.results import write_results_csv
from reports.single import build_single_report


def build_report(
    run_dir: str | os.PathLike,
    rank_by: str = RANK_BY,
    n_resamples: int = BOOTSTRAP,
    seed: int = SEED,
    processes: int | None = None,
    figures: bool = True,
    reference: str | None = None,
) -> Path:
    """Regenerate the report of a run directory: metrics.json of every entry, results.csv,
    comparisons.csv, the figures and report.md (single run: also the ISIC 2018 exports; grid:
    also jobs.csv).

    Args:
        run_dir: the run directory, single or grid.
        rank_by: metric that orders the ranking.
        n_resamples: lesion-bootstrap resamples for every interval.
        seed: bootstrap seed.
        processes: worker processes for a single run's figures (default: up to 4, by CPU count;
            1 = serial).
        figures: draw the figures (False: report.md says they were skipped; for quick checks).
        reference: the entry every other is compared with (None: core.defaults.REFERENCE). When
            the run lacks the default reference the comparisons are skipped and the report says
            so; any other name must be an entry with test predictions.

    Returns:
        The path of report.md.

    Raises:
        ReportError: unknown `rank_by`, or a `reference` other than the default without test
            predictions.
        MixedEnsembleError: a grid whose replicates hold different variants of one ensemble.
        RunDirError: the directory is missing or holds no prediction file.
        PredictionFileError: a prediction file breaks the contract.
    """
    check_rank_by(rank_by)
    run = RunDir(run_dir)
    if run.is_grid:
        return build_grid_report(run.root, rank_by=rank_by, n_resamples=n_resamples, seed=seed,
                                 figures=figures, reference=reference or REFERENCE)
    return build_single_report(run.root, rank_by=rank_by, n_resamples=n_resamples, seed=seed,
                               processes=processes, figures=figures, reference=reference)


def refresh_results_csv(run: RunDir) -> Path:
    """Write results.csv of a run directory from its entries' metrics.json files.

    A single run: one row per entry and split (reports.results.write_results_csv). A grid root:
    the replicates' metrics are refreshed, then jobs.csv and the aggregated results.csv are
    written (reports.grid.write_grid_results_csv).

    Args:
        run: the run directory.

    Returns:
        The path of results.csv.
    """
    return write_grid_results_csv(run) if run.is_grid else write_results_csv(run)
