"""`python benchmark.py --ensemble NAME|all [--members a,b,c] --out RUNDIR`."""

from __future__ import annotations

import argparse
import logging
import warnings
from pathlib import Path

from sklearn.metrics import accuracy_score, balanced_accuracy_score
from tabulate import tabulate

from core.rundir import find_run_dir
from ensembles.build import EnsembleResult, fit_ensembles, write_ensemble_results

logger = logging.getLogger(__name__)


def default_run_dir(args: argparse.Namespace) -> Path:
    """The run directory: --out, else the default one (see `core.rundir.find_run_dir`).

    Raises:
        RunDirError: no --out and no run directory at the default place.
    """
    return find_run_dir(getattr(args, "out", None), getattr(args, "dataset", None),
                        getattr(args, "preset", None)).root


def _refresh_reports(run_dir: Path, args: argparse.Namespace) -> None:
    """Rewrite results.csv and the report when the reports package is available."""
    try:
        from reports.build import build_report
        from reports.results import write_results_csv
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("reports"):
            raise
        logger.warning("reports package not available (%s); results.csv and report.md not "
                       "updated", exc)
        return
    from core.rundir import RunDir

    if not RunDir(run_dir).is_grid:  # a grid's aggregated results.csv is written by its report
        write_results_csv(RunDir(run_dir))
    report = build_report(
        run_dir,
        rank_by=getattr(args, "rank_by", "balanced_accuracy"),
        n_resamples=getattr(args, "bootstrap", 1000),
        seed=getattr(args, "seed", 0),
        reference=getattr(args, "reference", None),
    )
    logger.info("report: %s", report)


def summary_table(results: list[EnsembleResult]) -> str:
    """A plain-text table: ensemble, members, fit split, test accuracy and balanced accuracy."""
    rows = []
    for r in results:
        y_true, y_pred = r.test.y_true, r.test.y_pred
        with warnings.catch_warnings():
            # "y_pred contains classes not in y_true" on small test sets.
            warnings.simplefilter("ignore", UserWarning)
            balanced = balanced_accuracy_score(y_true, y_pred)
        fit = "none" if r.fit_split == "none" else f"{r.fit_split} (n={r.fit_size})"
        if r.val_in_sample:
            fit += ", val in-sample"
        rows.append([r.name, ", ".join(r.members), fit, accuracy_score(y_true, y_pred), balanced])
    return tabulate(
        rows,
        headers=["ensemble", "members", "fit on", "test accuracy", "test balanced acc."],
        floatfmt=".4f",
    )


def run_ensemble(args: argparse.Namespace) -> int:
    """Build the ensemble(s) named by args.ensemble ("all" for the four) in the run directory.

    Args:
        args: parsed CLI arguments: ensemble, members (list or None), out; optionally
            dataset/preset (default run directory), bootstrap, seed, rank_by.

    Returns:
        0 on success.

    Raises:
        BenchmarkError: any refusal (the CLI prints it in one line and exits non-zero); nothing
            is written then.
    """
    run_dir = default_run_dir(args)
    from core.rundir import RunDir

    grid = RunDir(run_dir)
    if grid.is_grid:
        return _run_grid_ensemble(grid, args)
    results = fit_ensembles(run_dir, [args.ensemble], getattr(args, "members", None))
    write_ensemble_results(
        run_dir, results, n_resamples=getattr(args, "bootstrap", 1000), seed=getattr(args, "seed", 0)
    )
    _refresh_reports(run_dir, args)
    print(summary_table(results))
    print(f"written to {run_dir / 'ensembles'}")
    return 0


def _run_grid_ensemble(grid, args: argparse.Namespace) -> int:
    """--ensemble on a grid run: rebuild it in every replicate, then the aggregated report.

    Every replicate is fitted before anything is written, so a refusal in one replicate leaves
    all of them as they were.

    Raises:
        EnsembleError: no replicate has finished members, or one replicate refuses (its name is
            in the message).
    """
    from core.errors import BenchmarkError
    from ensembles.errors import EnsembleError

    replicates = grid.replicates()
    if not replicates:
        raise EnsembleError(f"{grid.replicates_dir} has no replicate folders; run --all first")
    fitted = []
    for _fold, seed, replicate in replicates:
        try:
            fitted.append((replicate, seed, fit_ensembles(
                replicate.root, [args.ensemble], getattr(args, "members", None))))
        except BenchmarkError as exc:
            raise EnsembleError(f"replicate {replicate.root.name}: {exc}") from None
    for replicate, seed, results in fitted:
        write_ensemble_results(replicate.root, results,
                               n_resamples=getattr(args, "bootstrap", 1000), seed=seed)
        print(f"{replicate.root.name}:")
        print(summary_table(results))
    _refresh_reports(grid.root, args)
    print(f"written to {len(fitted)} replicates under {grid.replicates_dir}")
    return 0
