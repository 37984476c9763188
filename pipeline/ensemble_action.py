"""The --ensemble action: build the ensembles (ensembles stage), then refresh results.csv and
report.md (reports stage), so the report never lags behind the ensembles it lists.

Everything is checked before anything is written: the requested ensembles and the other stale
ones (whose member files changed since their fit) are fitted in memory (ensembles.cli), the
report's inputs are checked (reports.build.check_report), and only then are the ensembles
written, as one set, and the report rebuilt. A refusal leaves the run directory as it was."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from core import defaults
from core.rundir import RunDir
from ensembles.cli import fit_from_args, write_fitted
from reports import build as reports_build
from reports.options import check_rank_by
from reports.results import write_results_csv

logger = logging.getLogger(__name__)


def refresh_reports(run: RunDir, args: argparse.Namespace) -> Path:
    """Rewrite results.csv and report.md of a run after its ensembles changed.

    A single run's results.csv is written first, so it is current even when the report fails; a
    grid's aggregated results.csv is written by its report.

    Args:
        run: the run directory (a grid root for a grid).
        args: the parsed command line: rank_by, bootstrap, seed, reference (unset: the defaults
            of core.defaults).

    Returns:
        The path of report.md.
    """
    if not run.is_grid:
        write_results_csv(run)
    report = reports_build.build_report(
        run.root,
        rank_by=defaults.option(args, "rank_by"),
        n_resamples=defaults.option(args, "bootstrap"),
        seed=defaults.option(args, "seed"),
        reference=getattr(args, "reference", None),  # None: the default, which may be absent
    )
    logger.info("report: %s", report)
    return report


def run_ensemble(args: argparse.Namespace) -> int:
    """`python benchmark.py --ensemble NAME|all [--members a,b,c] [--calibrated] [--out RUNDIR]`.

    Fits the ensembles of the run directory (every replicate of a grid) in memory, with the
    other ensembles whose members changed since their fit (ensembles.cli.fit_from_args; with
    --calibrated the requested ones from temperature-scaled members, the stale ones as their
    fit.json records), checks
    what the report will read, then writes them and prints their table
    (ensembles.cli.write_fitted), then refreshes results.csv and the report.

    Args:
        args: the parsed command line.

    Returns:
        0 on success.

    Raises:
        BenchmarkError: any refusal (benchmark.py prints it in one line and exits 2); a refused
            ensemble writes nothing.
    """
    rank_by = defaults.option(args, "rank_by")
    check_rank_by(rank_by)
    run, fitted = fit_from_args(args)
    replaced = {(f.run.root.name if run.is_grid else ""): f.names for f in fitted}
    reports_build.check_report(run.root, rank_by, getattr(args, "reference", None), replaced)
    write_fitted(run, fitted, defaults.option(args, "bootstrap"))
    refresh_reports(run, args)
    return 0
