"""The test-time-augmentation stage of `--all` (`--tta N`), between training and the ensembles.

After the jobs, `tta_stage` adds to every run directory of the command (the run, or every
replicate of a grid) the derived entries `<entry>+tta<N>` of its finished CNN entries
(`training.tta.run_tta`: best weights, no retraining); entries whose derived entry is current are
kept, the SVM baseline and entries without weights are skipped with their reason in train.log.
The models are loaded in this (the orchestrating) process, whatever the executor, after the jobs
have ended. Without `--tta` nothing is computed, but derived entries whose source was retrained
since are named in a warning line. One console line says what the stage did.

Keras is imported only when a model is loaded (`--report` imports the pipeline modules).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

from core.defaults import option
from core.rundir import RunDir
from pipeline.console import RunConsole, captured_native_output

logger = logging.getLogger(__name__)

T = TypeVar("T")
# run_stage of pipeline.finish: runs an action, records its failure and returns None instead.
StageRunner = Callable[[str, Callable[[], T]], T | None]


def tta_stage(args: argparse.Namespace, runs: Sequence[tuple[str, RunDir, int]],
              console: RunConsole, run_stage: StageRunner) -> set[str]:
    """Add or refresh the derived `<entry>+tta<N>` entries of every run directory of `runs`.

    Args:
        args: the parsed command line (tta, bootstrap, cache_dir, workers).
        runs: (label, run directory, bootstrap seed) per run: ("", run, seed) for a single run,
            (replicate name, replicate run, its seed) per replicate of a grid.
        console: where the stage's line goes.
        run_stage: runs one computation, recording a failure as the failure of a stage (named
            "test-time augmentation of <label/entry>") and returning None instead.

    Returns:
        The labels of the runs where a derived entry was written (their report is rebuilt).
    """
    views = getattr(args, "tta", None)
    if views is None:
        _warn_stale(runs, console)
        return set()
    from training.tta import CURRENT, SKIPPED, WRITTEN, run_tta

    changed: set[str] = set()
    by_status: dict[str, list[str]] = {WRITTEN: [], CURRENT: [], SKIPPED: []}
    failed: list[str] = []
    for label, run, seed in runs:
        prefix = f"{label}/" if label else ""

        def guarded(name: str, action: Callable[[], T], prefix: str = prefix) -> T | None:
            result = run_stage(f"test-time augmentation of {prefix}{name}", action)
            if result is None:
                failed.append(f"{prefix}{name}")
            return result

        outcomes = run_stage(
            f"test-time augmentation of {label or run.root}",
            lambda run=run, seed=seed, guarded=guarded: _quietly(lambda: run_tta(
                run.root, int(views), n_resamples=int(option(args, "bootstrap")), seed=seed,
                cache_dir=getattr(args, "cache_dir", None), workers=getattr(args, "workers", None),
                on_error=guarded), verbose=bool(getattr(args, "verbose", False))))
        for outcome in outcomes or ():
            if outcome.status == SKIPPED:
                by_status[SKIPPED].append(f"{prefix}{outcome.source} ({outcome.reason})")
            else:
                by_status[outcome.status].append(f"{prefix}{outcome.entry}")
            if outcome.status == WRITTEN:
                changed.add(label)
    console.stage(_line(int(views), by_status, failed, grid=any(label for label, _, _ in runs),
                        written=WRITTEN, current=CURRENT, skipped=SKIPPED))
    return changed


def _quietly(action: Callable[[], T], verbose: bool) -> T:
    """Run `action` with the frameworks' native output (device probes when the first model is
    built in this process) kept off the console and logged to train.log; with -v it shows."""
    if verbose:
        return action()
    captured: list[str] = []
    try:
        with captured_native_output() as captured:
            return action()
    finally:
        text = "".join(captured).strip()
        if text:
            logger.info("the frameworks' output while predicting the views:\n%s", text)


def _line(views: int, by_status: dict[str, list[str]], failed: list[str], grid: bool, *,
          written: str, current: str, skipped: str) -> str:
    """The stage's console line: names for a single run, counts for a grid."""
    head = f"test-time augmentation, {views} view{'s' if views != 1 else ''} (no retraining)"
    parts = []
    for status, what in ((written, "added"), (current, "up to date"), (skipped, "skipped"),
                         ("failed", "failed")):
        names = failed if status == "failed" else by_status[status]
        if not names:
            continue
        if grid and status != skipped:
            parts.append(f"{what} {len(names)} derived entr{'y' if len(names) == 1 else 'ies'}")
        elif grid:
            reasons = sorted({name.split(" ", 1)[1] for name in names if " " in name})
            parts.append(f"{what} {len(names)} entr{'y' if len(names) == 1 else 'ies'} "
                         f"{'; '.join(reasons)}")
        else:
            parts.append(f"{what}: {', '.join(names)}")
    return f"{head}: {'; '.join(parts) if parts else 'no CNN entry in the run'}"


def _warn_stale(runs: Sequence[tuple[str, RunDir, int]], console: RunConsole) -> None:
    """Without --tta: name the derived entries computed from weights that changed since."""
    from training.tta import stale_tta_entries

    stale = []
    for label, run, _ in runs:
        try:
            stale += [f"{label}/{name}" if label else name for name in stale_tta_entries(run.root)]
        except OSError as exc:  # a weights file that cannot be read: not worth failing the run
            logger.warning("could not check the test-time-augmentation entries of %s: %s",
                           run.root, exc)
    if stale:
        views = sorted({name.rsplit("+tta", 1)[1] for name in stale})
        console.stage(f"test-time augmentation: {', '.join(stale)} predate the current weights "
                      f"of their entry; rerun with --tta {' / --tta '.join(views)} to refresh "
                      f"{'it' if len(stale) == 1 else 'them'}")
