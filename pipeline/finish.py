"""After training: the downstream stages of `--all`, run on the files the jobs left behind.

- Both first run the test-time-augmentation stage (`--tta N`, pipeline/tta_action.py): derived
  entries `<entry>+tta<N>` from the finished CNN entries' best weights, in every replicate of a
  grid; they are no ensemble members, so a new one rebuilds results and report only.
- A single run (`finish_run`): the ensembles (ensembles stage, when at least two backbones
  finished), results.csv and the report (reports stage), rebuilt only when this invocation changed
  a model or one of them is missing.
- A grid (`finish_grid`): the out-of-fold predictions of every entry (training/oof.py), the
  ensembles of every replicate with one member set for the whole grid, refit where their fit is
  stale (pipeline/grid_ensembles.py), then the grid's aggregated report.

The trained models are safe on disk by now, so an error in one of these stages is recorded as a
failure of that stage (`run_stage`: traceback in train.log) instead of ending the command. Each
stage says in one console line what it did (`pipeline.console.RunConsole.stage`).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from core.defaults import option
from core.errors import BenchmarkError
from core.rundir import RunDir
from ensembles.build import build_ensembles
from ensembles.fitfile import recorded_calibration
from ensembles.registry import resolve_names
from pipeline.console import RunConsole
from pipeline.failure_gallery import refresh_failure_gallery
from pipeline.grid_ensembles import grid_members, stale_ensembles
from pipeline.outcome import RunOutcome
from pipeline.replicates import Replicate
from pipeline.tta_action import tta_stage
from reports import build as reports_build
from training.entries import backbone_entries
from training.jobs import entry_is_finished
from training.oof import write_oof_predictions
from training.settings import RunConfig

logger = logging.getLogger(__name__)

T = TypeVar("T")


def finish_run(run: RunDir, args: argparse.Namespace, config: RunConfig,
               outcome: RunOutcome, console: RunConsole | None = None) -> None:
    """Ensembles, results.csv and the report of a single run, rebuilt only when needed.

    They are derived from the entries' prediction files; when every entry was skipped (a rerun
    of a finished run) the existing ones are kept untouched, and only missing ones are made.

    Args:
        run: the run directory.
        args: the parsed command line (rank_by, bootstrap, reference; calibrated: build the
            ensembles from temperature-scaled members, rebuilding unscaled ones).
        config: the run's resolved config (its seed seeds the report's bootstrap).
        outcome: this invocation's outcome; its ensembles, results_csv, report and failures are
            filled in.
        console: where each stage's line is shown (None: train.log only).
    """
    console = console or RunConsole(None)
    changed = any(not entry.skipped for entry in outcome.entries)
    derived = tta_stage(args, [("", run, config.seed)], console,
                        lambda name, action: run_stage(outcome, name, action))
    backbones = [name for name in backbone_entries()
                 if entry_is_finished(run.model_dir(name))]
    if len(backbones) < 2:
        console.stage(f"ensembles skipped: they need at least two finished backbones, the run "
                      f"has {len(backbones)} ({', '.join(backbones) or 'none'})")
    elif not changed and run.ensemble_names() and not _uncalibrated(run, args,
                                                                   run.ensemble_names()):
        outcome.ensembles = run.ensemble_names()
        console.stage(f"ensembles up to date: {', '.join(outcome.ensembles)}")
    else:
        built = run_stage(outcome, "ensembles",
                          lambda: list(build_ensembles(run.root, ("all",),
                                                       calibrated=_calibrated(args))))
        if built is not None:
            outcome.ensembles = built
            console.stage(f"ensembles built from {', '.join(backbones)}: "
                          f"{', '.join(built) or 'none'}")
            changed = True

    changed = changed or bool(derived)  # new derived entries change results, not ensembles
    if not changed and run.results_csv.is_file():
        outcome.results_csv = run.results_csv
        console.stage(f"results up to date: {outcome.results_csv}")
    else:
        outcome.results_csv = run_stage(outcome, "results.csv",
                                        lambda: reports_build.refresh_results_csv(run))
        if outcome.results_csv is not None:
            console.stage(f"results: {outcome.results_csv}")
    gallery = run_stage(outcome, "failure gallery", lambda: refresh_failure_gallery(
        run.root, option(args, "reference"), option(args, "rank_by"),
        getattr(args, "cache_dir", None), getattr(args, "workers", None)))
    if gallery is not None:  # reports.failures_section shows it
        console.stage(gallery.summary())
        changed = changed or gallery.changed
    if not run.model_names() and not run.ensemble_names():
        console.stage("report skipped: no entry of the run has predictions yet")
    elif not changed and run.report_md.is_file():
        outcome.report = run.report_md
        console.stage(f"report up to date: {outcome.report}")
    else:
        outcome.report = run_stage(outcome, "report", lambda: _build_report(run, args, config))
        if outcome.report is not None:
            console.stage(f"report: {outcome.report}")


def finish_grid(run: RunDir, args: argparse.Namespace, config: RunConfig,
                outcome: RunOutcome, replicates: Sequence[Replicate],
                console: RunConsole | None = None) -> None:
    """Out-of-fold predictions and ensembles per replicate, then the grid's aggregated report.

    Every replicate's ensembles use one member set, the backbones finished in every replicate
    (a backbone missing in one replicate is dropped from all, logged), and are refit wherever
    their fit.json is stale: other members, or member files that changed or appeared since the
    fit (e.g. out-of-fold predictions written after the others finished). Current ensembles are
    kept untouched. The grid's results.csv, jobs.csv and report are rebuilt when anything
    changed or one is missing.

    Args:
        run: the grid's run directory.
        args: the parsed command line (rank_by, bootstrap, reference; calibrated: as for
            `finish_run`, per replicate).
        config: the grid's resolved config.
        outcome: this invocation's outcome (one entry per job, named "REPLICATE/ENTRY"); its
            ensembles, results_csv, report and failures are filled in.
        replicates: the grid's replicates (pipeline.replicates.write_replicates).
        console: where each stage's line is shown (None: train.log only).
    """
    console = console or RunConsole(None)
    ran = {result.name.split("/", 1)[0] for result in outcome.entries if not result.skipped}
    ran |= tta_stage(args, [(rep.name, rep.run, rep.seed) for rep in replicates], console,
                     lambda name, action: run_stage(outcome, name, action))
    if config.folds:
        written = [name for name in config.entries
                   if run_stage(outcome, f"out-of-fold predictions of {name}",
                                lambda name=name: write_oof_predictions(run, config, replicates,
                                                                        name)) is not None]
        if written:
            console.stage(f"out-of-fold predictions of {', '.join(written)}")
    members, dropped = grid_members(replicates, backbone_entries())
    for name, lacking in dropped.items():
        logger.warning("%s is not finished in %s; it is left out of the ensembles of every "
                       "replicate, so that each ensemble has the same members in the whole grid",
                       name, ", ".join(lacking))
    built: set[str] = set()
    if len(members) < 2:
        console.stage(f"ensembles skipped: they need at least two backbones finished in every "
                      f"replicate, the grid has {len(members)} ({', '.join(members) or 'none'})")
    else:
        names = resolve_names(("all",))
        for replicate in replicates:
            stale = stale_ensembles(replicate.run, names, members)
            stale.update({n: "built from unscaled members; --calibrated asks for scaled ones"
                          for n in _uncalibrated(replicate.run, args, names) if n not in stale})
            if not stale:
                built.update(names)
                continue
            for name, why in stale.items():
                logger.info("%s/%s is (re)fit: %s", replicate.name, name, why)
            fitted = run_stage(outcome, f"ensembles of {replicate.name}",
                               lambda rep=replicate: list(build_ensembles(
                                   rep.run.root, ("all",), members=members,
                                   n_resamples=option(args, "bootstrap"),
                                   seed=rep.seed, calibrated=_calibrated(args))))
            if fitted is not None:
                built.update(fitted)
                ran.add(replicate.name)
    outcome.ensembles = sorted(built)
    if outcome.ensembles:
        console.stage(f"ensembles per replicate (members {', '.join(members)}): "
                      f"{', '.join(outcome.ensembles)}")

    if not ran and run.report_md.is_file() and run.results_csv.is_file():
        outcome.results_csv, outcome.report = run.results_csv, run.report_md
        console.stage(f"results and report up to date: {run.results_csv}, {run.report_md}")
        return
    if not any(rep.run.model_names() for rep in replicates):
        console.stage("report skipped: no job of the grid has predictions yet")
        return
    outcome.report = run_stage(outcome, "report", lambda: _build_report(run, args, config))
    if outcome.report is not None:
        outcome.results_csv = run.results_csv if run.results_csv.is_file() else None
        if outcome.results_csv is not None:
            console.stage(f"results: {outcome.results_csv}")
        console.stage(f"report: {outcome.report}")


def _calibrated(args: argparse.Namespace) -> bool:
    """--calibrated: the ensembles are built from temperature-scaled members."""
    return bool(getattr(args, "calibrated", False))


def _uncalibrated(run: RunDir, args: argparse.Namespace, names: Sequence[str]) -> list[str]:
    """With --calibrated, the ensembles of `names` built from unscaled members (to rebuild);
    without it, none (ensembles built with --calibrated are kept as they are)."""
    if not _calibrated(args):
        return []
    return [n for n in names if not recorded_calibration(run.ensemble_dir(n))]


def _build_report(run: RunDir, args: argparse.Namespace, config: RunConfig) -> Path:
    return reports_build.build_report(
        run.root, rank_by=option(args, "rank_by"), n_resamples=option(args, "bootstrap"),
        seed=config.seed, reference=option(args, "reference"))


def run_stage(outcome: RunOutcome, name: str, action: Callable[[], T]) -> T | None:
    """Run one after-training stage; on an error record it in outcome.failures, return None.

    Args:
        outcome: where a failure is recorded, as "NAME (ERROR)".
        name: the stage, as the failure names it.
        action: the stage.

    Returns:
        What `action` returned, or None when it raised.
    """
    try:
        return action()
    except BenchmarkError as exc:
        logger.error("%s failed: %s", name, exc)
        outcome.failures.append(f"{name} ({exc})")
    except Exception as exc:  # noqa: BLE001 - a bug in a later stage must not hide the models
        logger.exception("%s failed", name)
        outcome.failures.append(f"{name} ({type(exc).__name__}: {exc}; traceback in train.log)")
    return None
