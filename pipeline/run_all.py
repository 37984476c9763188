"""`--all`: prepare the data, train every entry in its own subprocess, then ensembles and report.

The flow, one step per module:

1. resolve the config once (`training.config.resolve_config`) and pick the run directory: an
   existing one is resumed only when its protocol fingerprint matches; otherwise it is refused,
   or with `--force-new` the first free (or matching) sibling is used; the directory is locked
   and this process logs to its train.log while the run lasts (pipeline/rundir_lifecycle.py).
2. prepare the data (`data_utils.prepare.prepare`) at the image sizes the entries need, and
   write run.json (config, fingerprint, versions, git sha, command line, seeds, date:
   pipeline/provenance.py); a grid also gets its replicate folders (pipeline/replicates.py).
3. build one job per entry (per replicate and entry in a grid) and run them with the executor the
   command line chose (training/executors.py); each job skips finished work, retries out of
   memory at half the batch size and records failures (training/jobs.py), and the run goes on.
4. the downstream stages: ensembles, results.csv and the report (pipeline/finish.py).

The console (pipeline/console.py) shows one line per stage, the entries' progress and one summary
line per entry; everything else (the libraries' records, the workers' and the frameworks' output)
goes to train.log and to each entry's models/<entry>/train.log. `--tensorboard` adds TensorBoard
logs under RUNDIR/tensorboard/<job> without changing the config or the fingerprint. The caller
(pipeline/all_action.py) prints the final summary and turns failures into the exit code.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from core.defaults import option
from core.errors import RunDirError
from core.rundir import RunDir
from data_utils.prepare import prepare
from pipeline.console import RunConsole, import_keras_quietly
from pipeline.finish import finish_grid, finish_run
from pipeline.outcome import RunOutcome
from pipeline.provenance import write_run_json
from pipeline.replicates import write_replicates
from pipeline.rundir_lifecycle import (
    ProtocolMismatch,
    candidate_dirs,
    check_existing,
    check_same_protocol,
    file_logging,
    locked,
    weights_signature,
)
from training import executors
from training.config import resolve_config, resolve_out, tensorboard_enabled
from training.fingerprint import file_sha256, protocol_fingerprint
from training.jobs import EntryOutcome, JobSpec
from training.settings import RunConfig

logger = logging.getLogger(__name__)

# RUNDIR/tensorboard/<job>: the TensorBoard logs of --tensorboard (`tensorboard --logdir` it).
TENSORBOARD_DIR = "tensorboard"


def run_all(args: argparse.Namespace, console: RunConsole | None = None) -> RunOutcome:
    """Prepare, train every entry, ensemble and report (see the module docstring).

    Args:
        args: the parsed command line of benchmark.py.
        console: the run's console (the CLI's writes to sys.stdout); None: nothing is printed
            (the lines still go to train.log).

    Returns:
        The outcome; `failures` lists what failed.

    Raises:
        RunDirError: the run directory belongs to a different protocol (without --force-new), or
            another process is using it.
        BenchmarkError: bad configuration or data (from config resolution or data preparation).
    """
    console = console or RunConsole(None)
    executors.check_options(getattr(args, "executor", None), getattr(args, "jobs", None),
                            getattr(args, "ray_address", None))
    tensorboard = tensorboard_enabled(args)
    # The frameworks' start-up banners go to train.log (with -v also to the console, as a record).
    banner = import_keras_quietly()
    config = resolve_config(args)
    signatures = weights_signature(config)
    out = resolve_out(args, config)
    for candidate in candidate_dirs(out, args.force_new):
        try:
            # Read-only check first, so a refused directory is not touched at all (no lock file,
            # no log); the check is repeated under the lock.
            check_existing(candidate, config, signatures)
            with locked(candidate), file_logging(RunDir(candidate).train_log):
                if banner:
                    logger.info("the frameworks' start-up output in this process:\n%s", banner)
                    banner = ""
                try:
                    return _run_in(candidate, args, config, signatures, console, tensorboard)
                finally:
                    console.close()
        except ProtocolMismatch as exc:
            if not args.force_new:
                raise RunDirError(
                    f"{candidate} holds a run with a different protocol ({exc.description}); "
                    f"rerun with the same options to resume it, pass --force-new to start a new "
                    f"run in a sibling folder (the old one is kept), or choose another --out"
                ) from None
            logger.warning("%s holds a run with a different protocol (%s); trying the next "
                           "sibling folder", candidate, exc.description)
    raise AssertionError("candidate_dirs is endless")


def _run_in(root: Path, args: argparse.Namespace, config: RunConfig,
            signatures: dict[str, Any], console: RunConsole, tensorboard: bool) -> RunOutcome:
    run = RunDir(root)
    previous = check_existing(root, config, signatures)
    had_splits = run.splits_csv.is_file()

    console.stage(f"run directory {root} ({'resuming it' if previous else 'new'})")
    # The workers read splits.csv and open the cache themselves; nothing is handed over here.
    _prepare(run, args, config, had_splits, console)
    signatures = {**signatures, "splits_sha256": file_sha256(run.splits_csv)}
    if previous is not None:
        check_same_protocol(previous, config, signatures, include_data=True)
    fingerprint = protocol_fingerprint(config.to_dict(), signatures)
    write_run_json(run, config, signatures, fingerprint, previous)

    outcome = RunOutcome(run_dir=root)
    boards = run.root / TENSORBOARD_DIR if tensorboard else None
    replicates = None
    if config.is_grid:
        replicates = write_replicates(run, config, signatures)
        specs = [_job_spec(rep.run, name, rep.config, args, label=f"{rep.name}/{name}",
                           tensorboard=boards)
                 for rep in replicates for name in config.entries]
        what = (f"grid: {len(replicates)} replicate(s) (folds "
                f"{','.join(str(f) for f in config.grid_folds)}, seeds "
                f"{','.join(str(s) for s in config.seeds or ())}) x {len(config.entries)} "
                f"entries = {len(specs)} jobs")
    else:
        specs = [_job_spec(run, name, config, args, tensorboard=boards)
                 for name in config.entries]
        what = f"{len(specs)} entr{'y' if len(specs) == 1 else 'ies'}"
    console.stage(f"training {what}, {_how(args)}"
                  + (f"; TensorBoard logs in {boards}" if boards is not None else ""))
    outcome.entries = _execute(specs, args, console)
    for result in outcome.entries:
        if not result.ok:
            error = _shorten(result.error or "", 300)
            outcome.failures.append(f"{result.name} ({result.status}"
                                    + (f": {error}" if error else "") + ")")
    if replicates is None:
        finish_run(run, args, config, outcome, console)
    else:
        finish_grid(run, args, config, outcome, replicates, console)
    return outcome


def _how(args: argparse.Namespace) -> str:
    """How the jobs run, and where their output goes, for the training stage line."""
    if option(args, "executor") == "ray":
        return "each a Ray task (output: models/<entry>/train.log)"
    jobs = int(option(args, "jobs"))
    if jobs > 1:
        return f"{jobs} at a time (output: models/<entry>/train.log)"
    return "one at a time (output: train.log and models/<entry>/train.log)"


def _prepare(run: RunDir, args: argparse.Namespace, config: RunConfig,
             had_splits: bool, console: RunConsole) -> None:
    sizes = config.image_sizes()
    source = (f"{config.synthetic_images} generated images" if config.dataset == "synthetic"
              else config.data_dir)
    console.stage(f"preparing the data: {config.dataset} ({source}), image size(s) "
                  f"{', '.join(str(s) for s in sizes)}")
    try:
        prepare(
            config.dataset, config.data_dir, run.root,
            split=config.split, ratios=tuple(config.ratios), folds=config.folds,
            seed=config.seed, allow_missing=config.allow_missing,
            test_set=config.test_set, synthetic_images=config.synthetic_images,
            image_sizes=sizes, resize_mode=config.resize_mode,
            cache_root=getattr(args, "cache_dir", None), workers=getattr(args, "workers", None),
        )
    except RunDirError as exc:
        if had_splits:
            # prepare refuses an existing, different splits.csv: the data or split changed.
            raise ProtocolMismatch(f"the data split differs from splits.csv: {exc}") from None
        raise


def _serial(args: argparse.Namespace) -> bool:
    return option(args, "executor") == "local" and option(args, "jobs") == 1


def _job_spec(run: RunDir, name: str, config: RunConfig, args: argparse.Namespace,
              label: str = "", tensorboard: Path | None = None) -> JobSpec:
    # Every worker's output goes to its entry's own train.log; a serial run appends it to the
    # run's train.log as well, in order (parallel jobs' lines would interleave there).
    log = run.model_dir(name) / "train.log"
    cache_dir = getattr(args, "cache_dir", None)
    return JobSpec(
        run_root=os.fspath(run.root.resolve()), entry=name, config=config,
        cache_dir=os.fspath(Path(cache_dir).resolve()) if cache_dir else None,
        devices=getattr(args, "devices", None), log_path=os.fspath(log.resolve()),
        run_log_path=os.fspath(run.train_log.resolve()) if _serial(args) else None,
        retries=int(option(args, "retries")), label=label or name,
        tensorboard_dir=(os.fspath((tensorboard / (label or name)).resolve())
                         if tensorboard is not None else None))


def _execute(specs: list[JobSpec], args: argparse.Namespace,
             console: RunConsole) -> list[EntryOutcome]:
    """Run the jobs with the executor the command line chose."""
    total = len(specs)
    if option(args, "executor") == "ray":
        return executors.run_ray(specs, address=getattr(args, "ray_address", None),
                                 devices=getattr(args, "devices", None),
                                 cpus_per_job=getattr(args, "cpus_per_job", None),
                                 on_done=console.job_finished)
    if _serial(args):
        return executors.run_local(
            specs, jobs=1, devices=getattr(args, "devices", None),
            cpus_per_job=getattr(args, "cpus_per_job", None), console=console.echo,
            on_start=lambda index, spec: console.entry_started(index, total, spec.name),
            on_done=console.entry_finished, on_event=console.event)
    return executors.run_local(
        specs, jobs=int(option(args, "jobs")), devices=getattr(args, "devices", None),
        cpus_per_job=getattr(args, "cpus_per_job", None),
        on_start=lambda index, spec: console.job_started(index, total, spec.name),
        on_done=console.job_finished)


def _shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."
