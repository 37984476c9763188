"""The report of a grid run (`--seeds` and/or `--folds K`): every entry repeated per (fold, seed).

Files written at the grid root (each replicate keeps its own metrics.json and results.csv):

- jobs.csv: one row per job and split: entry, kind, fold, seed, replicate, split, status, error,
  then the summary metrics of core.metrics (NaN for a job that failed, went NaN or is missing).
- results.csv: one row per entry and split: entry, kind, split, n_jobs (ok jobs), n_failed (the
  others), <metric>_mean and <metric>_sd (ddof=1) for every summary metric but the counts, then
  <metric>_min and <metric>_max of balanced accuracy and of the ranking metric.
- comparisons.csv: the reference entry against every other entry, per metric (the ranking
  metric, balanced accuracy, accuracy, macro AUC), over the paired jobs, with a test valid for
  repeated K-fold and Holm's correction (reports.grid_stats); the columns of the single run's
  comparisons.csv.
- figures/jobs_<rank_by>.png: the per-job values of the ranking metric per entry (box + points,
  reports.figures.jobs_chart).
- report.md: see reports.grid_markdown.

Before anything is written (`check_grid_report`): every ensemble name must have one variant
(members and fit source) in all replicates (reports.grid_consistency); every replicate's
prediction files are read and checked (reports.integrity: no stale ensemble, no leaked lesion,
one test set per replicate); the reference must have a test job; every folder written must be
writable. No TensorFlow/Keras. Per-replicate metrics.json
files are recomputed only when stale, with few bootstrap resamples (`REPLICATE_RESAMPLES`): the
grid report uses point estimates per job.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Collection, Mapping
from pathlib import Path

import pandas as pd

from core.atomic import atomic_write_csv, atomic_write_text
from core.defaults import BOOTSTRAP, RANK_BY, REFERENCE, SEED
from core.entry_metrics import FAILED_STATUSES, entry_metrics_current, entry_metrics_match
from core.errors import RunDirError
from core.filesystem import check_writable_dir
from core.metrics import SUMMARY_METRICS
from core.predictions import Predictions, read_predictions
from core.rundir import SPLITS, RunDir
from reports.aggregate import (
    AGGREGATE_METRICS,
    OK,
    aggregate_jobs,
    complete_grid,
    job_rows,
    jobs_frame,
    rank_aggregate,
)
from reports.cleanup import remove_stale_files
from reports.context import read_context
from reports.grid_consistency import check_ensemble_consistency
from reports.grid_layout import GridLayout, grid_layout
from reports.grid_markdown import GridReport, render_grid_report
from reports.grid_stats import (
    GridDesign,
    SharedTestBootstrap,
    compared_metrics,
    grid_comparisons,
    read_design,
)
from reports.integrity import check_entries
from reports.options import ReportError, check_rank_by
from reports.results import Entry, discover_entries, write_results_csv

log = logging.getLogger(__name__)

REPLICATE_RESAMPLES = 100
# Besides the ranking metric's, results.csv always has this metric's min and max.
RANGE_METRIC = "balanced_accuracy"


# ---------------------------------------------------------------------------------------------
# collecting


def refresh_replicate(replicate: RunDir, n_resamples: int = REPLICATE_RESAMPLES,
                      seed: int = SEED) -> list[Entry]:
    """Bring a replicate's metrics.json files up to date and rewrite its results.csv.

    A metrics.json is recomputed only when it is stale (`entry_metrics_current`) and its values
    differ from those of the prediction files (`entry_metrics_match`).

    Args:
        replicate: one replicate's run directory.
        n_resamples: bootstrap resamples for the intervals of a recomputed metrics.json.
        seed: bootstrap seed.

    Returns:
        The replicate's entries with their metrics loaded.

    Raises:
        PredictionFileError: a prediction file breaks the contract.
    """
    entries = discover_entries(replicate)
    for entry in entries:
        has_predictions = entry.has_split("test") or entry.has_split("val")
        if (has_predictions and not entry_metrics_current(entry.directory)
                and not entry_metrics_match(entry.directory)):
            entry.refresh_metrics(n_resamples, seed)
    write_results_csv(replicate)
    return entries


def collect_jobs(
    run: RunDir, rank_by: str = RANK_BY, n_resamples: int = REPLICATE_RESAMPLES,
    seed: int = SEED,
) -> tuple[GridLayout, pd.DataFrame]:
    """Refresh every replicate and build the completed job table.

    Args:
        run: the grid root.
        rank_by: the ranking metric (added as a column when it is not a summary metric).
        n_resamples: bootstrap resamples for a recomputed replicate metrics.json (at most
            `REPLICATE_RESAMPLES` are used).
        seed: bootstrap seed.

    Returns:
        (layout, jobs): the replicates and the job table, with a "missing" row for every entry of
        the grid that a replicate lacks (missing replicates included).

    Raises:
        RunDirError: no replicate, or no entry in any replicate.
    """
    layout = grid_layout(run)
    extra = [] if rank_by in SUMMARY_METRICS else [rank_by]
    rows = []
    for fold, seed_, replicate in layout.found:
        entries = refresh_replicate(replicate, min(n_resamples, REPLICATE_RESAMPLES), seed)
        rows += job_rows(fold, seed_, entries, extra)
    if not rows:
        raise RunDirError(
            f"{run.root}: no replicate holds a result (expected {run.replicates_dir.name}/"
            "fold<f>-seed<s>/models/<name>/predictions_test.csv or metrics.json); train the grid "
            "first"
        )
    return layout, complete_grid(jobs_frame(rows), layout.replicates)


def results_frame(aggregated: pd.DataFrame, rank_by: str = RANK_BY) -> pd.DataFrame:
    """The grid's results.csv from `aggregate_jobs` output.

    Args:
        aggregated: per entry and split statistics.
        rank_by: the ranking metric (its min/max are kept; also its mean/sd when it is not a
            summary metric). Rows follow the test ranking, val before test per entry.

    Returns:
        Columns entry, kind, split, n_jobs, n_failed, <metric>_mean, <metric>_sd for the summary
        metrics (and rank_by), then <metric>_min, <metric>_max for balanced accuracy and rank_by.
    """
    means = list(dict.fromkeys([*AGGREGATE_METRICS, rank_by]))
    ranges = list(dict.fromkeys([RANGE_METRIC, rank_by]))
    columns = ["entry", "kind", "split", "n_jobs", "n_failed",
               *(f"{m}_{s}" for m in means for s in ("mean", "sd")),
               *(f"{m}_{s}" for m in ranges for s in ("min", "max"))]
    order = list(rank_aggregate(aggregated, rank_by)["entry"])
    order += [e for e in dict.fromkeys(aggregated["entry"]) if e not in order]
    split_order = {s: i for i, s in enumerate(SPLITS)}
    frame = aggregated.assign(
        _entry=aggregated["entry"].map({e: i for i, e in enumerate(order)}),
        _split=aggregated["split"].map(split_order),
    ).sort_values(["_entry", "_split"], kind="stable")
    return frame.reindex(columns=columns).reset_index(drop=True)


def write_grid_results(
    run: RunDir, rank_by: str = RANK_BY, n_resamples: int = REPLICATE_RESAMPLES,
    seed: int = SEED,
) -> tuple[GridLayout, pd.DataFrame, pd.DataFrame]:
    """Refresh the replicates, then write the grid's jobs.csv and results.csv atomically.

    Args:
        run: the grid root.
        rank_by: the ranking metric.
        n_resamples: see `collect_jobs`.
        seed: bootstrap seed.

    Returns:
        (layout, jobs, aggregated).

    Raises:
        RunDirError: see `collect_jobs`.
    """
    layout, jobs = collect_jobs(run, rank_by, n_resamples, seed)
    return layout, jobs, _write_tables(run, jobs, rank_by)


def _write_tables(run: RunDir, jobs: pd.DataFrame, rank_by: str) -> pd.DataFrame:
    aggregated = aggregate_jobs(jobs, list(dict.fromkeys([*AGGREGATE_METRICS, rank_by])))
    atomic_write_csv(run.jobs_csv, jobs)
    atomic_write_csv(run.results_csv, results_frame(aggregated, rank_by))
    return aggregated


def write_grid_results_csv(run: RunDir) -> Path:
    """`write_results_csv` on a grid root: jobs.csv and the aggregated results.csv.

    Args:
        run: the grid root.

    Returns:
        The path of results.csv.
    """
    write_grid_results(run)
    return run.results_csv


# ---------------------------------------------------------------------------------------------
# the comparisons


def reference_comparisons(
    run: RunDir, layout: GridLayout, jobs: pd.DataFrame, rank_by: str,
    reference: str = REFERENCE, n_resamples: int = BOOTSTRAP, seed: int = SEED,
) -> tuple[pd.DataFrame | None, GridDesign]:
    """The reference entry against every other entry over the paired jobs (reports.grid_stats).

    Args:
        run: the grid root.
        layout: its replicates.
        jobs: the job table.
        rank_by: the ranking metric (compared first, with balanced accuracy, accuracy, AUC).
        reference: the reference entry.
        n_resamples: lesion resamples for jobs that share one test set.
        seed: seed of those resamples.

    Returns:
        (rows, design): the comparisons (None when the reference has no job in the grid) and
        the folds' test sets and n_test/n_train.

    Raises:
        PredictionFileError: a test prediction file breaks the contract.
    """
    design = read_design(layout.found, layout.folds, jobs, read_context(run).dataset_json)
    if reference not in set(jobs["entry"]):
        log.warning("the reference entry %s has no job in %s; no comparison", reference,
                    run.root)
        return None, design
    cache: dict[tuple[str, int, int], Predictions | None] = {}

    def load(entry: str, fold: int, seed_: int) -> Predictions | None:
        key = (entry, fold, seed_)
        if key not in cache:
            path = _test_predictions(run.replicate(fold, seed_), entry)
            cache[key] = read_predictions(path) if path is not None else None
        return cache[key]

    bootstrap = SharedTestBootstrap(load, n_resamples=n_resamples, seed=seed)
    rows = grid_comparisons(jobs, reference, compared_metrics(rank_by), design, bootstrap)
    return rows, design


def _test_predictions(replicate: RunDir, name: str) -> Path | None:
    for folder in (replicate.model_dir(name), replicate.ensemble_dir(name)):
        path = RunDir.predictions_file(folder, "test")
        if path.is_file():
            return path
    return None


# ---------------------------------------------------------------------------------------------
# the report


def check_grid_report(
    run: RunDir, rank_by: str = RANK_BY, reference: str = REFERENCE,
    replaced: Mapping[str, Collection[str]] | None = None, figures: bool = True,
) -> None:
    """Every check of `build_grid_report` before it writes, without writing anything.

    Args:
        run: the grid root.
        rank_by: the ranking metric.
        reference: the entry every other is compared with.
        replaced: replicate folder name -> ensembles the caller rewrites first (refit): not
            checked for staleness.
        figures: whether figures/ will be written.

    Raises:
        See `build_grid_report`.
    """
    check_rank_by(rank_by)
    layout = grid_layout(run)
    check_ensemble_consistency(run, layout.found)
    replaced = replaced or {}
    tested: set[str] = set()
    for _, _, replicate in layout.found:
        entries = [e for e in discover_entries(replicate)
                   if e.has_split("test") or e.has_split("val")]
        check_entries(replicate, entries, replaced.get(replicate.root.name, ()))
        tested.update(e.name for e in entries
                      if e.has_split("test") and e.metrics.get("status") not in FAILED_STATUSES)
        check_writable_dir(replicate.root, "replicate folder")
        for entry in entries:
            check_writable_dir(entry.directory, f"the folder of entry {entry.name}")
    if reference != REFERENCE and reference not in tested:
        # the default may be absent (e.g. --models without it): then there is no comparison
        raise ReportError(
            f"--reference {reference!r} has no finished job with test predictions in "
            f"{run.replicates_dir}; choose one of: {', '.join(sorted(tested)) or 'none'}")
    check_writable_dir(run.root, "run directory")
    if figures:
        check_writable_dir(run.figures_dir, "the figures folder")


def build_grid_report(
    run_dir: str | os.PathLike,
    rank_by: str = RANK_BY,
    n_resamples: int = BOOTSTRAP,
    seed: int = SEED,
    figures: bool = True,
    reference: str = REFERENCE,
) -> Path:
    """Refresh the replicates, write jobs.csv, results.csv, comparisons.csv, the figure and
    report.md of a grid.

    Args:
        run_dir: the grid root (holding replicates/fold<f>-seed<s>/).
        rank_by: the ranking metric.
        n_resamples: lesion resamples of the comparisons on a shared test set (grids without
            folds), and of a stale replicate metrics.json (capped at `REPLICATE_RESAMPLES`).
        seed: bootstrap seed.
        figures: draw the per-job figure.
        reference: the entry every other entry is compared with.

    Returns:
        The path of report.md.

    Raises:
        ReportError: unknown `rank_by`, or a `reference` other than the default without a
            finished test job.
        MixedEnsembleError: an ensemble name whose replicates differ in members or fit source
            (nothing is written then).
        RunDirError: no replicate, or no result in any replicate.
        PredictionFileError: a prediction file breaks the contract.
        IntegrityError: a stale ensemble, leaked lesions, or entries of one replicate on
            different test sets (nothing is written then).
        FileSystemError: a folder of the grid cannot be written.
    """
    run = RunDir(run_dir)
    check_grid_report(run, rank_by, reference, figures=figures)
    layout, jobs = collect_jobs(run, rank_by, n_resamples, seed)
    tested = set(jobs.loc[(jobs["split"] == "test") & (jobs["status"] == OK), "entry"])
    if reference != REFERENCE and reference not in tested:
        # the default may be absent (e.g. --models without it): then there is no comparison
        raise ReportError(
            f"--reference {reference!r} has no finished job with test predictions in "
            f"{run.replicates_dir}; choose one of: {', '.join(sorted(tested)) or 'none'}")
    aggregated = _write_tables(run, jobs, rank_by)
    ranked = rank_aggregate(aggregated, rank_by)
    comparisons, design = reference_comparisons(run, layout, jobs, rank_by, reference,
                                                n_resamples, seed)
    if comparisons is not None:
        position = {entry: i for i, entry in enumerate(ranked["entry"])}
        order = comparisons["other"].map(lambda e: position.get(e, len(position)))
        comparisons = comparisons.assign(_order=order).sort_values(
            "_order", kind="stable").drop(columns="_order").reset_index(drop=True)
        atomic_write_csv(run.comparisons_csv, comparisons)
    elif (run.comparisons_csv).is_file():
        (run.comparisons_csv).unlink()
    report = GridReport(
        run=run, context=read_context(run), layout=layout, jobs=jobs, aggregated=aggregated,
        ranked=ranked, comparisons=comparisons, rank_by=rank_by, reference=reference,
        ratio_source=design.ratio_source,
    )
    if figures:
        from reports.figures import figure_name, jobs_chart  # matplotlib: only to draw

        order = [e for e, r in zip(ranked["entry"], ranked["rank"], strict=True)
                 if not math.isnan(r)]
        if order:
            path = run.figures_dir / figure_name("jobs", rank_by)
            finished = jobs[(jobs["split"] == "test") & (jobs["status"] == OK)]
            report.figure = jobs_chart(finished, order, rank_by, path, highlight=reference)
        remove_stale_files(run.figures_dir, "*.png", [report.figure] if report.figure else [])
    atomic_write_text(run.report_md, render_grid_report(report))
    log.info("grid report written to %s", run.report_md)
    return run.report_md
