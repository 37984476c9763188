"""The --report action: refit the ensembles whose members changed, then rebuild the report.

An ensemble is derived from its members' prediction files; when one of them changed since the
fit (a member retrained or replaced), the ensemble's files describe other predictions. The report
stage only refuses such an ensemble (reports never import ensembles), so this orchestration does
what a user means by "rebuild the report": it refits every stale ensemble from the members its
fit.json records (ensembles.stale; in every replicate of a grid), checks everything the report
will read (reports.build.check_report) and only then writes: the refitted ensembles as one set,
then the report. A stale ensemble whose members are gone is refused with a message naming it.
A refusal leaves the run directory as it was.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from core import defaults
from core.filesystem import check_writable_dir
from core.rundir import RunDir, find_run_dir
from ensembles.build import EnsembleResult, write_ensemble_sets
from ensembles.stale import refit_stale
from reports import build as reports_build
from reports.options import check_rank_by

logger = logging.getLogger(__name__)

RefitSet = tuple[RunDir, list[EnsembleResult], int]


def refit_stale_runs(run: RunDir, seed: int) -> list[RefitSet]:
    """The stale ensembles of a run (of every replicate of a grid), refit in memory.

    Args:
        run: the run directory (a grid root for a grid).
        seed: the bootstrap seed of a single run's metrics (a replicate uses its own seed).

    Returns:
        (run directory, refitted ensembles, bootstrap seed) for each run directory with some.

    Raises:
        IntegrityError: a stale ensemble that cannot be refit (its members are gone).
        BenchmarkError: a member file that breaks the contract, leaked lesions, ...
    """
    targets = ([(replicate, rep_seed) for _, rep_seed, replicate in run.replicates()]
               if run.is_grid else [(run, seed)])
    refits = []
    for target, target_seed in targets:
        results = refit_stale(target.root)
        if results:
            refits.append((target, results, target_seed))
    return refits


def replaced_names(run: RunDir, refits: list[RefitSet]) -> dict[str, list[str]]:
    """reports.build.check_report's `replaced`: "" (single run) or the replicate folder name ->
    the ensembles about to be rewritten."""
    return {(target.root.name if run.is_grid else ""): [r.name for r in results]
            for target, results, _ in refits}


def write_refits(refits: list[RefitSet], n_resamples: int) -> None:
    """Write the refitted ensembles of every run directory as one set (ensembles.build)."""
    if not refits:
        return
    for target, _results, _seed in refits:
        check_writable_dir(target.ensembles_dir, "the ensembles folder")
    write_ensemble_sets([(target.root, results, seed) for target, results, seed in refits],
                        n_resamples=n_resamples)
    for target, results, _ in refits:
        logger.info("refit %s in %s: their member files changed since the fit",
                    ", ".join(r.name for r in results), target.root)


def run_report(args: argparse.Namespace) -> int:
    """`python benchmark.py --report [--out RUNDIR]`: refit stale ensembles, rebuild the report.

    Args:
        args: the parsed command line: out (or dataset/preset), rank_by, bootstrap, seed,
            reference.

    Returns:
        0; prints the path of report.md.

    Raises:
        BenchmarkError: any refusal (benchmark.py prints it in one line and exits 2); nothing
            is written then.
    """
    rank_by = defaults.option(args, "rank_by")
    check_rank_by(rank_by)
    run = find_run_dir(getattr(args, "out", None), getattr(args, "dataset", None),
                       getattr(args, "preset", None))
    reference = getattr(args, "reference", None)
    n_resamples = defaults.option(args, "bootstrap")
    refits = refit_stale_runs(run, defaults.option(args, "seed")) if run.root.is_dir() else []
    reports_build.check_report(run.root, rank_by, reference, replaced_names(run, refits))
    write_refits(refits, n_resamples)
    path: Path = reports_build.build_report(run.root, rank_by=rank_by, n_resamples=n_resamples,
                                            seed=defaults.option(args, "seed"),
                                            reference=reference)
    for target, results, _ in refits:
        print(f"refit in {target.root}: {', '.join(r.name for r in results)} (their member "
              "files changed since the fit)")
    print(path)
    return 0
