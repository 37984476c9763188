"""The report stage's entry point: `build_report` and `refresh_results_csv` on any run directory.

A single run gets its report from reports.single; a grid root (it has replicates/) gets the grid
report from reports.grid (per-replicate metrics refreshed, jobs.csv, aggregated results.csv,
report.md over jobs). This module sits above both; in reports/ only the CLI actions (reports.cli)
import it. Needs no TensorFlow/Keras.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from pathlib import Path

from core.defaults import BOOTSTRAP, RANK_BY, REFERENCE, SEED
from core.rundir import RunDir
from reports.grid import build_grid_report, check_grid_report, write_grid_results_csv
from reports.options import check_rank_by
from reports.results import write_results_csv
from reports.single import build_single_report, check_single_report


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
        IntegrityError: a stale ensemble, leaked lesions, or entries on different test sets
            (reports.integrity); nothing is written then.
        FileSystemError: a folder of the run cannot be written (checked before the first write).
    """
    check_rank_by(rank_by)
    run = RunDir(run_dir)
    if run.is_grid:
        return build_grid_report(run.root, rank_by=rank_by, n_resamples=n_resamples, seed=seed,
                                 figures=figures, reference=reference or REFERENCE)
    return build_single_report(run.root, rank_by=rank_by, n_resamples=n_resamples, seed=seed,
                               processes=processes, figures=figures, reference=reference)


def check_report(
    run_dir: str | os.PathLike,
    rank_by: str = RANK_BY,
    reference: str | None = None,
    replaced: Mapping[str, Collection[str]] | None = None,
    figures: bool = True,
) -> None:
    """Every check `build_report` makes before it writes, without writing anything.

    For an action that writes something else first (pipeline.report_action refits stale
    ensembles, pipeline.ensemble_action builds some): it checks the report's inputs before its
    own writes, so a refusal leaves the run directory as it was.

    Args:
        run_dir: the run directory, single or grid.
        rank_by: the ranking metric.
        reference: the --reference (None: the default).
        replaced: ensembles the caller rewrites before the report, not checked for staleness:
            "" -> names for a single run, replicate folder name -> names for a grid.
        figures: whether the figures will be drawn.

    Raises:
        The errors of `build_report`, before anything is written.
    """
    run = RunDir(run_dir)
    replaced = replaced or {}
    if run.is_grid:
        check_grid_report(run, rank_by, reference or REFERENCE, replaced, figures)
    else:
        check_single_report(run, rank_by, reference, replaced.get("", ()), figures)


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
