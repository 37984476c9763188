"""`python benchmark.py --ensemble NAME|all [--members a,b,c] --out RUNDIR`: the ensembles stage.

`build_from_args` builds the ensembles in the run directory (every replicate of a grid) and
prints their table; refreshing results.csv and the report afterwards is the orchestration's
(pipeline.ensemble_action), since stages never import each other.
"""

from __future__ import annotations

import argparse
import logging
import warnings

from sklearn.metrics import accuracy_score, balanced_accuracy_score
from tabulate import tabulate

from core import defaults
from core.errors import BenchmarkError
from core.rundir import RunDir, find_run_dir
from ensembles.build import EnsembleResult, fit_ensembles, write_ensemble_results
from ensembles.errors import EnsembleError

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
        rows.append([r.name, ", ".join(r.members), fit, accuracy_score(y_true, y_pred), balanced])
    return tabulate(
        rows,
        headers=["ensemble", "members", "fit on", "test accuracy", "test balanced acc."],
        floatfmt=".4f",
    )


def build_from_args(args: argparse.Namespace) -> RunDir:
    """Build the ensemble(s) named by args.ensemble ("all" for the four) and print their table.

    On a grid root every replicate is fitted before anything is written, so a refusal in one
    replicate leaves all of them as they were.

    Args:
        args: parsed CLI arguments: ensemble, members (list or None), out; optionally
            dataset/preset (default run directory), bootstrap, seed.

    Returns:
        The run directory (a grid root for a grid).

    Raises:
        BenchmarkError: any refusal (the CLI prints it in one line and exits non-zero); nothing
            is written then.
    """
    run = default_run_dir(args)
    members = getattr(args, "members", None)
    if run.is_grid:
        _build_grid(run, args.ensemble, members, defaults.option(args, "bootstrap"))
        return run
    results = fit_ensembles(run.root, [args.ensemble], members)
    write_ensemble_results(run.root, results, n_resamples=defaults.option(args, "bootstrap"),
                           seed=defaults.option(args, "seed"))
    print(summary_table(results))
    print(f"written to {run.ensembles_dir}")
    return run


def _build_grid(grid: RunDir, ensemble: str, members: list[str] | None, n_resamples: int) -> None:
    """--ensemble on a grid run: fit it in every replicate first, then write them all.

    Raises:
        EnsembleError: no replicate folders, or one replicate refuses (its name is in the
            message).
    """
    replicates = grid.replicates()
    if not replicates:
        raise EnsembleError(f"{grid.replicates_dir} has no replicate folders; run --all first")
    fitted = []
    for _fold, seed, replicate in replicates:
        try:
            fitted.append((replicate, seed, fit_ensembles(replicate.root, [ensemble], members)))
        except BenchmarkError as exc:
            raise EnsembleError(f"replicate {replicate.root.name}: {exc}") from None
    for replicate, seed, results in fitted:
        write_ensemble_results(replicate.root, results, n_resamples=n_resamples, seed=seed)
        print(f"{replicate.root.name}:")
        print(summary_table(results))
    print(f"written to {len(fitted)} replicates under {grid.replicates_dir}")
