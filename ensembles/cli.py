"""`python benchmark.py --ensemble NAME|all [--members a,b,c] --out RUNDIR`: the ensembles stage.

`fit_from_args` fits the requested ensembles in memory (in every replicate of a grid, and, in
each run, the other ensembles whose member files changed since their fit: `ensembles.stale`);
`write_fitted` writes them all as one set and prints their table; `build_from_args` does both.
Refreshing results.csv and the report afterwards is the orchestration's
(pipeline.ensemble_action), since stages never import each other.
"""

from __future__ import annotations

import argparse
import logging
import warnings
from dataclasses import dataclass, field

from sklearn.metrics import accuracy_score, balanced_accuracy_score
from tabulate import tabulate

from core import defaults
from core.errors import BenchmarkError
from core.filesystem import check_writable_dir
from core.rundir import RunDir, find_run_dir
from ensembles.build import EnsembleResult, fit_ensembles, write_ensemble_sets
from ensembles.errors import EnsembleError
from ensembles.registry import resolve_names
from ensembles.stale import refit_stale

logger = logging.getLogger(__name__)


def default_run_dir(args: argparse.Namespace) -> RunDir:
    """The run directory: --out, else the default one (see `core.rundir.find_run_dir`).

    Raises:
        RunDirError: no --out and no run directory at the default place.
    """
    return find_run_dir(getattr(args, "out", None), getattr(args, "dataset", None),
                        getattr(args, "preset", None))


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
        if r.calibrated:
            fit += ", temperature-scaled members"
        state = r.record.get("state", {})
        if state.get("fallback"):
            fit += ", nothing learned: members' mean"
        elif state.get("unlearned_classes"):
            fit += f", not learned: {' '.join(state['unlearned_classes'])}"
        rows.append([r.name, ", ".join(r.members), fit, accuracy_score(y_true, y_pred), balanced])
    return tabulate(
        rows,
        headers=["ensemble", "members", "fit on", "test accuracy", "test balanced acc."],
        floatfmt=".4f",
    )


@dataclass
class FittedRun:
    """The ensembles fitted for one run directory (a single run or one replicate), not written.

    Attributes:
        run: the run directory.
        seed: the bootstrap seed of its metrics.
        results: the requested ensembles.
        refits: other ensembles of the run refit because their member files changed.
    """

    run: RunDir
    seed: int
    results: list[EnsembleResult]
    refits: list[EnsembleResult] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        """Every ensemble this run gets written."""
        return [r.name for r in (*self.results, *self.refits)]


def fit_from_args(args: argparse.Namespace) -> tuple[RunDir, list[FittedRun]]:
    """Fit what `--ensemble NAME|all` writes, in memory: the requested ensembles, and the other
    ensembles of the run (of each replicate of a grid) that are stale (`ensembles.stale`).

    Args:
        args: parsed CLI arguments: ensemble, members (list or None), out; optionally
            calibrated (--calibrated: temperature-scaled members), dataset/preset (default run
            directory), seed. Stale ensembles are refit as their fit.json records (calibrated
            or not), whatever --calibrated says.

    Returns:
        (the run directory, one FittedRun per run directory written: one, or one per replicate).

    Raises:
        BenchmarkError: any refusal (nothing is written): in a grid the message names the
            replicate.
    """
    run = default_run_dir(args)
    members = getattr(args, "members", None)
    names = resolve_names([args.ensemble])
    calibrated = bool(getattr(args, "calibrated", False))
    if not run.is_grid:
        fitted = FittedRun(run, defaults.option(args, "seed"),
                           fit_ensembles(run.root, names, members, calibrated=calibrated))
        fitted.refits = refit_stale(run.root, exclude=names)
        check_writable_dir(run.ensembles_dir, "the ensembles folder")
        return run, [fitted]
    replicates = run.replicates()
    if not replicates:
        raise EnsembleError(f"{run.replicates_dir} has no replicate folders; run --all first")
    runs = []
    for _fold, seed, replicate in replicates:
        try:
            fitted = FittedRun(replicate, seed, fit_ensembles(replicate.root, names, members,
                                                              calibrated=calibrated))
            fitted.refits = refit_stale(replicate.root, exclude=names)
            check_writable_dir(replicate.ensembles_dir, "the ensembles folder")
        except BenchmarkError as exc:
            raise type(exc)(f"replicate {replicate.root.name}: {exc}") from None
        runs.append(fitted)
    return run, runs


def write_fitted(run: RunDir, fitted: list[FittedRun], n_resamples: int) -> None:
    """Write every fitted ensemble of `fit_from_args` as one set, then print their tables.

    Args:
        run: the run directory (a grid root for a grid).
        fitted: from `fit_from_args`.
        n_resamples: lesion-bootstrap resamples of the metrics' intervals.

    Raises:
        FileSystemError: a folder cannot be written (no ensemble folder changed then).
    """
    write_ensemble_sets([(f.run.root, [*f.results, *f.refits], f.seed) for f in fitted],
                        n_resamples=n_resamples)
    for f in fitted:
        if run.is_grid:
            print(f"{f.run.root.name}:")
        print(summary_table([*f.results, *f.refits]))
        if f.refits:
            print(f"refit because their member files changed since their fit: "
                  f"{', '.join(r.name for r in f.refits)}")
    if run.is_grid:
        print(f"written to {len(fitted)} replicates under {run.replicates_dir}")
    else:
        print(f"written to {run.ensembles_dir}")


def build_from_args(args: argparse.Namespace) -> RunDir:
    """Build the ensemble(s) named by args.ensemble ("all" for the four) and print their table.

    Everything is fitted (in every replicate of a grid, stale ensembles included) before
    anything is written, and written as one set, so a refusal or an interruption leaves every
    ensemble folder as it was.

    Args:
        args: parsed CLI arguments: ensemble, members (list or None), out; optionally
            dataset/preset (default run directory), bootstrap, seed.

    Returns:
        The run directory (a grid root for a grid).

    Raises:
        BenchmarkError: any refusal (the CLI prints it in one line and exits non-zero); nothing
            is written then.
    """
    run, fitted = fit_from_args(args)
    write_fitted(run, fitted, defaults.option(args, "bootstrap"))
    return run
