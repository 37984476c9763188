"""`--all`: prepare the data, train every entry in its own subprocess, then ensembles and report.

The runner owns the run directory's life cycle:

1. resolve the config (`training.config`) and pick the run directory: an existing one is resumed
   only when its protocol fingerprint matches (`training.fingerprint`); otherwise it is refused,
   or with `--force-new` the first free (or matching) sibling `RUNDIR-2`, `RUNDIR-3`, ... is used.
   The old directory is never touched.
2. prepare the data (`data_utils.prepare.prepare`) at the image sizes the entries need, and
   write run.json (config, fingerprint, versions, git sha, command line, seeds, date).
3. for each entry: skip it when it already finished (metrics.json status "ok" and both
   prediction files); otherwise run `python -m training.worker` in a subprocess (accelerator
   memory is released between models, a crash takes only that model down), streaming its output
   to the console and to train.log. Exit code 3 (out of memory) retries with half the batch size
   down to the preset's floor; 4 (NaN loss) and 1 (failure) are recorded and the run goes on.
   An interrupted entry is resumed by the worker itself from its state/ folder.
4. build the ensembles (when at least two backbones succeeded), results.csv and the report.

The caller (`training.cli`) prints the per-entry summary and turns failures into the exit code.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import ctypes
import datetime as dt
import errno
import fcntl
import importlib.metadata
import logging
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

from core import exitcodes
from core.atomic import atomic_write_json, read_json
from core.defaults import option
from core.entry_metrics import read_entry_metrics
from core.errors import BenchmarkError, RunDirError
from core.rundir import RunDir
from training import config as config_mod
from training.entries import backbone_entries, entry_kind
from training.fingerprint import (
    diff_configs,
    file_sha256,
    fingerprint_view,
    format_differences,
    is_weights_file,
    protocol_fingerprint,
)
from training.settings import ConfigError, RunConfig

logger = logging.getLogger(__name__)

# Packages whose versions go into run.json.
VERSIONED_PACKAGES: tuple[str, ...] = (
    "dermbench", "tensorflow", "keras", "jax", "jaxlib", "numpy", "scipy", "scikit-learn",
    "pandas", "pillow", "matplotlib", "seaborn",
)
LOCK_NAME = ".lock"
# The worker's resume state inside an entry folder (training.protocol).
STATE_DIR = "state"
PROGRESS_FILE = "progress.json"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@dataclass
class EntryOutcome:
    """What happened to one entry in this invocation.

    Attributes:
        name: the entry (backbone or baseline).
        status: "ok", "failed" or "nan" (as in its metrics.json).
        skipped: True when it had finished in an earlier invocation and was not run again.
        seconds: training seconds (metrics.json train_seconds), else this attempt's wall time.
        best_val_balanced_accuracy: validation balanced accuracy of the best checkpoint.
        batch_size: the batch size it trained with (after out-of-memory retries).
        error: the recorded error for a failed entry.
    """

    name: str
    status: str
    skipped: bool = False
    seconds: float | None = None
    best_val_balanced_accuracy: float | None = None
    batch_size: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def summary_line(self) -> str:
        """One human line: name, status, time, best val balanced accuracy, batch size."""
        parts = [f"{self.name}: {self.status}"]
        if self.skipped:
            parts.append("(finished earlier, not retrained)")
        if self.seconds is not None:
            parts.append(f"{self.seconds:.1f} s")
        if self.best_val_balanced_accuracy is not None:
            parts.append(f"best val balanced accuracy {self.best_val_balanced_accuracy:.3f}")
        if self.batch_size is not None:
            parts.append(f"batch {self.batch_size}")
        if self.error and not self.ok:
            parts.append(f"- {self.error}")
        return "  ".join(parts)


@dataclass
class RunOutcome:
    """The result of `run_all`.

    Attributes:
        run_dir: the run directory used (a `--force-new` sibling where one was started).
        entries: one outcome per requested entry, in config order.
        ensembles: names of the ensembles built.
        failures: human descriptions of what failed (entries, ensembles, report); empty when
            everything succeeded.
        results_csv: path of results.csv, or None when it could not be written.
        report: path of report.md, or None.
    """

    run_dir: Path
    entries: list[EntryOutcome] = field(default_factory=list)
    ensembles: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    results_csv: Path | None = None
    report: Path | None = None


def run_all(args: argparse.Namespace, console: TextIO | None = None) -> RunOutcome:
    """Prepare, train every entry, ensemble and report (see the module docstring).

    Args:
        args: the parsed command line of benchmark.py.
        console: where the workers' output is echoed (the CLI passes sys.stdout); None: nowhere
            (it still goes to train.log).

    Returns:
        The outcome; `failures` lists what failed.

    Raises:
        RunDirError: the run directory belongs to a different protocol (without --force-new), or
            another process is using it.
        BenchmarkError: bad configuration or data (from config resolution or data preparation).
    """
    from training.executors import check_options

    check_options(getattr(args, "executor", None), getattr(args, "jobs", None),
                  getattr(args, "ray_address", None))
    config = config_mod.resolve_config(args)
    signatures = _weights_signature(config)
    out = config_mod.resolve_out(args, config)
    for candidate in _candidate_dirs(out, args.force_new):
        try:
            # Read-only check first, so a refused directory is not touched at all (no lock file,
            # no log); the check is repeated under the lock.
            _check_existing(candidate, config, signatures)
            with _locked(candidate), _file_logging(RunDir(candidate).train_log):
                return _run_in(candidate, args, config, signatures, console)
        except _ProtocolMismatch as exc:
            if not args.force_new:
                raise RunDirError(
                    f"{candidate} holds a run with a different protocol ({exc.description}); "
                    f"rerun with the same options to resume it, pass --force-new to start a new "
                    f"run in a sibling folder (the old one is kept), or choose another --out"
                ) from None
            logger.warning("%s holds a run with a different protocol (%s); trying the next "
                           "sibling folder", candidate, exc.description)
    raise AssertionError("_candidate_dirs is endless")


class _ProtocolMismatch(Exception):
    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


def _candidate_dirs(out: Path, force_new: bool) -> Iterator[Path]:
    yield out
    if not force_new:
        return
    number = 2
    while True:
        yield out.with_name(f"{out.name}-{number}")
        number += 1


def _check_existing(root: Path, config: RunConfig,
                    signatures: dict[str, Any]) -> dict[str, Any] | None:
    """The existing run.json of `root` (None if there is none); _ProtocolMismatch if it differs."""
    run_json = RunDir(root).run_json
    if not run_json.is_file():
        return None
    try:
        previous = read_json(run_json)
    except (OSError, ValueError) as exc:
        raise RunDirError(f"cannot read {run_json} ({exc}); it is not a run directory this "
                          f"program can resume: choose another --out") from None
    _check_same_protocol(previous, config, signatures, include_data=False)
    return previous


def _run_in(root: Path, args: argparse.Namespace, config: RunConfig,
            signatures: dict[str, Any], console: TextIO | None) -> RunOutcome:
    run = RunDir(root)
    previous = _check_existing(root, config, signatures)
    had_splits = run.splits_csv.is_file()

    logger.info("run directory %s (%s)", root, "resuming" if previous else "new")
    # The workers read splits.csv and open the cache themselves; nothing is handed over here.
    _prepare(run, args, config, had_splits)
    signatures = {**signatures, "splits_sha256": file_sha256(run.splits_csv)}
    if previous is not None:
        _check_same_protocol(previous, config, signatures, include_data=True)
    fingerprint = protocol_fingerprint(config.to_dict(), signatures)
    _write_run_json(run, config, signatures, fingerprint, previous)

    outcome = RunOutcome(run_dir=root)
    replicates = None
    if config.is_grid:
        from training.grid import write_replicates

        replicates = write_replicates(run, config, signatures)
        specs = [_job_spec(rep.run, name, rep.config, args, label=f"{rep.name}/{name}")
                 for rep in replicates for name in config.entries]
        logger.info("grid: %d replicate(s) (folds %s, seeds %s) x %d entries = %d jobs",
                    len(replicates), ",".join(str(f) for f in config.grid_folds),
                    ",".join(str(s) for s in config.seeds or ()), len(config.entries),
                    len(specs))
    else:
        specs = [_job_spec(run, name, config, args) for name in config.entries]
    outcome.entries = _execute(specs, args, console)
    for result in outcome.entries:
        if not result.ok:
            error = _shorten(result.error or "", 300)
            outcome.failures.append(f"{result.name} ({result.status}"
                                    + (f": {error}" if error else "") + ")")
    if replicates is None:
        _finish(run, args, config, outcome)
    else:
        _finish_grid(run, args, config, outcome, replicates)
    return outcome


def _serial(args: argparse.Namespace) -> bool:
    return option(args, "executor") == "local" and option(args, "jobs") == 1


def _job_spec(run: RunDir, name: str, config: RunConfig, args: argparse.Namespace,
              label: str = "") -> JobSpec:
    # A serial run appends every worker's output to the run's train.log, in order; parallel jobs
    # each get their own log beside their files, so their lines never interleave.
    log = run.train_log if _serial(args) else run.model_dir(name) / "train.log"
    cache_dir = getattr(args, "cache_dir", None)
    return JobSpec(
        run_root=os.fspath(run.root.resolve()), entry=name, config=config,
        cache_dir=os.fspath(Path(cache_dir).resolve()) if cache_dir else None,
        devices=getattr(args, "devices", None), log_path=os.fspath(log.resolve()),
        retries=int(option(args, "retries")), label=label or name)


def _execute(specs: list[JobSpec], args: argparse.Namespace,
             console: TextIO | None) -> list[EntryOutcome]:
    """Run the jobs with the executor the command line chose."""
    from training import executors

    total = len(specs)
    serial = _serial(args)

    def started(index: int, spec: JobSpec) -> None:
        logger.info("[%d/%d] %s", index, total, spec.name)

    def done(index: int, count: int, result: EntryOutcome) -> None:
        logger.info("[%d/%d] %s", index, count, result.summary_line())

    if option(args, "executor") == "ray":
        return executors.run_ray(specs, address=getattr(args, "ray_address", None),
                                 devices=getattr(args, "devices", None),
                                 cpus_per_job=getattr(args, "cpus_per_job", None), on_done=done)
    return executors.run_local(specs, jobs=int(option(args, "jobs")),
                               devices=getattr(args, "devices", None),
                               cpus_per_job=getattr(args, "cpus_per_job", None),
                               console=console if serial else None,
                               on_start=started if serial else None, on_done=done)


def _shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _check_same_protocol(previous: dict[str, Any], config: RunConfig,
                         signatures: dict[str, Any], include_data: bool) -> None:
    """Raise _ProtocolMismatch naming the differing keys when the existing run differs.

    The existing run.json is compared as written (a dict), so a run of another version is named
    by its differing keys rather than refused as unreadable.
    """
    old_config = previous.get("config", {})
    new_config = config.to_dict()
    old_signatures = dict(previous.get("signatures", {}))
    new_signatures = dict(signatures)
    if not include_data:
        old_signatures.pop("splits_sha256", None)
        new_signatures.pop("splits_sha256", None)
    differences = diff_configs(fingerprint_view(old_config, old_signatures),
                               fingerprint_view(new_config, new_signatures))
    if include_data and not differences and previous.get("fingerprint") != protocol_fingerprint(
            new_config, signatures):
        # Same view, different hash: run.json was written by another fingerprint definition.
        raise _ProtocolMismatch(f"fingerprint {previous.get('fingerprint')} -> "
                                f"{protocol_fingerprint(new_config, signatures)}")
    if differences:
        raise _ProtocolMismatch(format_differences(differences))


def _weights_signature(config: RunConfig) -> dict[str, Any]:
    weights = config.weights
    if not is_weights_file(weights):
        return {}
    try:
        return {"weights_sha256": file_sha256(weights)}
    except OSError as exc:
        raise ConfigError(
            f"cannot read the weights file {weights}: {exc.strerror}; pass --weights imagenet, "
            f"--weights none or the path of a readable weights file"
        ) from None


def _prepare(run: RunDir, args: argparse.Namespace, config: RunConfig,
             had_splits: bool) -> Any:
    from data_utils.prepare import prepare

    sizes = config.image_sizes()
    logger.info("preparing %s at image size(s) %s", config.dataset,
                ", ".join(str(s) for s in sizes))
    try:
        return prepare(
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
            raise _ProtocolMismatch(f"the data split differs from splits.csv: {exc}") from None
        raise


def _write_run_json(run: RunDir, config: RunConfig, signatures: dict[str, Any],
                    fingerprint: str, previous: dict[str, Any] | None) -> None:
    """Write run.json; a resumed run keeps its creation record and gains this invocation."""
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    invocation = {"command": _command_line(), "date": now, "cwd": os.getcwd()}
    if previous is not None:
        # A later command may train more entries: the run's entries are the union, in order.
        known = list(previous.get("config", {}).get("entries", []))
        config = replace(config, entries=tuple(known + [e for e in config.entries
                                                        if e not in known]))
        if config.seeds is not None:  # a grid's training seeds: likewise a union, in order
            seen = list(previous.get("config", {}).get("seeds", []))
            config = replace(config, seeds=tuple(seen + [s for s in config.seeds
                                                         if s not in seen]))
    document = {
        "config": config.to_dict(),
        "fingerprint": fingerprint,
        "signatures": signatures,
        "seeds": {"split": config.seed,
                  "training": list(config.seeds) if config.seeds is not None else config.seed,
                  "synthetic": config.seed},
        "command": previous.get("command") if previous else invocation["command"],
        "created": previous.get("created") if previous else now,
        "invocations": [*(previous or {}).get("invocations", []), invocation],
        "versions": package_versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git": git_info(),
    }
    atomic_write_json(run.run_json, document)


def package_versions(names: tuple[str, ...] = VERSIONED_PACKAGES) -> dict[str, str]:
    """Installed versions of `names` (importlib.metadata); packages not installed are left out."""
    versions = {}
    for name in names:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    return versions


def git_info(repo: Path | None = None) -> dict[str, Any] | None:
    """{"sha": ..., "dirty": bool} of the source checkout, or None outside git.

    Reads only: GIT_OPTIONAL_LOCKS=0 keeps `git status` from refreshing the index.
    """
    repo = repo or Path(__file__).resolve().parents[1]
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, env=env, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=repo, env=env, capture_output=True, text=True, timeout=10,
                                check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"sha": sha, "dirty": bool(status.strip())}


def _command_line() -> str:
    return shlex.join([Path(sys.executable).name, *sys.argv])


# ---------------------------------------------------------------------------------------------
# One entry


def entry_is_finished(entry_dir: Path) -> bool:
    """True when metrics.json says status "ok" and both prediction files exist."""
    metrics = read_entry_metrics(entry_dir)
    return (metrics.get("status") == "ok"
            and all(RunDir.predictions_file(entry_dir, s).is_file() for s in ("val", "test")))


@dataclass(frozen=True)
class JobSpec:
    """One job: an entry of one run directory (a single run, or a replicate of a grid run).

    Plain, picklable data: the Ray executor ships it to a task on another machine.

    Attributes:
        run_root: the run directory (absolute; on shared storage for a Ray cluster).
        entry: the entry name.
        config: that run directory's resolved config (`RunConfig`: picklable).
        cache_dir: --cache-dir, or None.
        devices: GPUs for this job (data parallel; the worker's --devices), or None for one.
        log_path: where the worker's output is appended (None: nowhere).
        env: extra environment for the worker (device pinning, thread counts).
        retries: restarts of a worker killed by a signal (it resumes from its saved state).
        label: how the job is named in messages, e.g. "fold0-seed1/xception".
    """

    run_root: str
    entry: str
    config: RunConfig
    cache_dir: str | None = None
    devices: int | None = None
    log_path: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    retries: int = 1
    label: str = ""

    @property
    def name(self) -> str:
        return self.label or self.entry


def run_job(spec: JobSpec, console: TextIO | None = None) -> EntryOutcome:
    """Run one job to its end: skip it when finished, else run the worker (resuming its state).

    Out of memory (exit 3) retries at half the batch size down to the preset's floor; a worker
    killed by a signal is restarted up to `spec.retries` times and resumes from its last finished
    epoch; NaN (exit 4) and failures (exit 1) are recorded in the entry's metrics.json.

    Args:
        spec: the job.
        console: where the worker's live output is echoed, or None.

    Returns:
        The entry's outcome (name = spec.name).
    """
    run, name, config = RunDir(spec.run_root), spec.entry, spec.config
    entry_dir = run.model_dir(name)
    if entry_is_finished(entry_dir):
        return _outcome_from_metrics(spec.name, entry_dir, skipped=True)
    previous = read_entry_metrics(entry_dir)
    if previous.get("status") not in (None, "ok"):
        logger.info("%s: retrying (previous status %s)", spec.name, previous.get("status"))

    from training.policies import next_batch_size

    floor = int(config.training.min_batch_size or 1)
    batch_size = _resume_batch_size(entry_dir, int(config.training.batch_size), floor)
    oom_retries = 0
    restarts = 0
    started = time.monotonic()
    while True:
        attempt_start = time.time()
        code = run_worker(run.root, name, batch_size, console=console, cache_dir=spec.cache_dir,
                          log_path=Path(spec.log_path) if spec.log_path else None,
                          devices=spec.devices, extra_env=spec.env)
        if code < 0 and restarts < spec.retries:
            restarts += 1
            message = (f"{spec.name}: {_describe_exit(code).split(' (')[0]}; restarting it "
                       f"({restarts} of {spec.retries}), it resumes from its last finished epoch")
            logger.warning("%s", message)
            _append_line(spec.log_path, f"[{message}]")
            continue
        if code != exitcodes.WORKER_OUT_OF_MEMORY:
            break
        smaller = next_batch_size(batch_size, floor)
        if smaller is None or smaller >= batch_size:
            _record_failure(entry_dir, name, "failed",
                            f"out of memory at batch size {batch_size}, the floor "
                            f"({floor}); lower --image-size or use an accelerator with more memory",
                            batch_size)
            return _outcome_from_metrics(spec.name, entry_dir, wall=time.monotonic() - started)
        logger.warning("%s: out of memory at batch size %d; retrying with batch size %d",
                       spec.name, batch_size, smaller)
        batch_size = smaller
        oom_retries += 1

    fresh = _metrics_written_since(entry_dir, attempt_start)
    if code == exitcodes.OK and entry_is_finished(entry_dir):
        metrics = read_entry_metrics(entry_dir)
        if metrics.get("batch_size") != batch_size or oom_retries or restarts:
            _update_metrics(entry_dir, {"batch_size": batch_size, "oom_retries": oom_retries,
                                        "restarts": restarts})
    elif not fresh or read_entry_metrics(entry_dir).get("status") in (None, "ok"):
        # The worker died without recording why (a signal, or an exit before writing).
        status = "nan" if code == exitcodes.WORKER_NAN else "failed"
        _record_failure(entry_dir, name, status, _describe_exit(code), batch_size)
    return _outcome_from_metrics(spec.name, entry_dir, wall=time.monotonic() - started)


def _append_line(path: str | None, line: str) -> None:
    """Append one line to a job's log (the runner's own notes between worker attempts)."""
    if path is None:
        return
    with contextlib.suppress(OSError), open(path, "a", encoding="utf-8") as log:
        log.write(line + "\n")


def _resume_batch_size(entry_dir: Path, configured: int, floor: int) -> int:
    """The batch size to start with: the interrupted attempt's, if it had to go smaller.

    The worker's resume state (state/progress.json) only matches the batch size it was written
    with; after an out-of-memory retry and an interruption, starting again at the configured size
    would run out of memory once more and throw the saved epochs away.
    """
    progress = entry_dir / STATE_DIR / PROGRESS_FILE
    try:
        saved = int(read_json(progress).get("batch_size"))
    except (OSError, ValueError, TypeError, AttributeError):
        return configured
    if floor <= saved < configured:
        logger.info("%s: continuing at batch size %d, the size its saved state was trained with",
                    entry_dir.name, saved)
        return saved
    return configured


def _describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return (f"the worker was killed by signal {signal.Signals(-code).name} "
                    f"(see train.log)")
        return f"the worker was killed by signal {-code} (see train.log)"
    if code == exitcodes.OK:
        return "the worker exited without writing its predictions and metrics (see train.log)"
    if code == exitcodes.WORKER_NAN:
        return "the loss became NaN or infinite (see train.log)"
    return f"the worker exited with code {code} (see train.log)"


def _record_failure(entry_dir: Path, name: str, status: str, error: str,
                    batch_size: int) -> None:
    from core.entry_metrics import write_entry_metrics

    run_json = read_json(entry_dir.parents[1] / "run.json")
    write_entry_metrics(entry_dir, extra={
        "status": status, "error": error, "batch_size": batch_size,
        "kind": entry_kind(name), "fingerprint": run_json.get("fingerprint"),
    })


def _update_metrics(entry_dir: Path, extra: dict[str, Any]) -> None:
    from core.entry_metrics import write_entry_metrics

    write_entry_metrics(entry_dir, extra=extra)


def _metrics_written_since(entry_dir: Path, since: float) -> bool:
    try:
        # One second of slack for file systems with coarse timestamps.
        return (entry_dir / "metrics.json").stat().st_mtime >= since - 1.0
    except FileNotFoundError:
        return False


def _outcome_from_metrics(name: str, entry_dir: Path, skipped: bool = False,
                          wall: float | None = None) -> EntryOutcome:
    metrics = read_entry_metrics(entry_dir)
    val = metrics.get("val") if isinstance(metrics.get("val"), dict) else {}
    seconds = metrics.get("train_seconds")
    return EntryOutcome(
        name=name,
        status=str(metrics.get("status") or "failed"),
        skipped=skipped,
        seconds=float(seconds) if isinstance(seconds, (int, float)) else wall,
        best_val_balanced_accuracy=val.get("balanced_accuracy"),
        batch_size=metrics.get("batch_size"),
        error=metrics.get("error") or (None if metrics else "no metrics.json was written"),
    )


# ---------------------------------------------------------------------------------------------
# The worker subprocess


def worker_command(run_dir: Path, name: str, batch_size: int | None,
                   devices: int | None = None) -> list[str]:
    """The worker's command line (`python -m training.worker`, see its docstring)."""
    command = [sys.executable, "-m", "training.worker", "--out", os.fspath(run_dir),
               "--entry", name]
    if batch_size is not None:
        command += ["--batch-size", str(batch_size)]
    if devices is not None and devices > 1:
        command += ["--devices", str(devices)]
    return command


RUNNER_LOG_ENV = "DERMBENCH_RUNNER_LOGS"


def run_worker(run_dir: Path, name: str, batch_size: int | None, *,
               console: TextIO | None = None, cache_dir: str | None = None,
               log_path: Path | None = None, devices: int | None = None,
               extra_env: dict[str, str] | None = None) -> int:
    """Run one worker to completion, echoing its output to `console` and appending to the log.

    When `console` is a terminal the worker writes to a pseudo-terminal, so its progress bars
    stay live; train.log gets the finished lines only (carriage-return updates collapsed).
    The worker is killed when this process dies (Linux), so an interrupted run never leaves an
    orphan training behind that a rerun would race with.

    Args:
        run_dir: the run directory (with run.json).
        name: the entry.
        batch_size: passed as --batch-size (None: the config's).
        console: text stream for the live output, or None.
        cache_dir: --cache-dir, handed on as $DERMBENCH_CACHE so the worker finds the cache.
        log_path: train.log (appended), or None.
        devices: GPUs for data parallel training (the worker's --devices), or None for one.
        extra_env: variables added to the worker's environment (e.g. CUDA_VISIBLE_DEVICES).

    Returns:
        The worker's exit code (negative: killed by that signal).
    """
    env = dict(os.environ)
    env.update(extra_env or {})
    env["PYTHONUNBUFFERED"] = "1"
    if log_path is not None:
        env[RUNNER_LOG_ENV] = "1"  # the runner copies the worker's output to train.log itself
    if cache_dir:
        env["DERMBENCH_CACHE"] = os.fspath(Path(cache_dir).resolve())
    project_root = os.fspath(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (project_root, env.get("PYTHONPATH")) if p)
    command = worker_command(run_dir, name, batch_size, devices)
    use_pty = console is not None and _isatty(console)
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "a", encoding="utf-8") if log_path is not None else None  # noqa: SIM115
    try:
        if log is not None:
            log.write(f"$ {shlex.join(command)}\n")
            log.flush()
        sink = _OutputSink(console, log)
        if use_pty:
            import pty

            master, slave = pty.openpty()
            try:
                process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=slave,
                                           stderr=slave, env=env, preexec_fn=_die_with_parent)
            finally:
                os.close(slave)
            source = master
        else:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       env=env, bufsize=0, preexec_fn=_die_with_parent)
            source = process.stdout.fileno()  # type: ignore[union-attr]
        try:
            _pump(source, sink)
            code = process.wait()
        except BaseException:
            # Ctrl-C or an error here: stop the worker too; its state/ lets a rerun resume.
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            raise
        finally:
            if use_pty:
                os.close(source)
            elif process.stdout is not None:
                process.stdout.close()
            sink.close()
        if log is not None:
            log.write(f"[worker {name} exited with code {code}]\n")
        return code
    finally:
        if log is not None:
            log.close()


def _pump(fd: int, sink: _OutputSink) -> None:
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError as exc:
            if exc.errno == errno.EIO:  # pty: the child closed its end
                return
            raise
        if not chunk:
            return
        sink.write(chunk)


class _OutputSink:
    """Echo raw output to the console; write whole lines (last \\r segment) to the log."""

    def __init__(self, console: TextIO | None, log: TextIO | None) -> None:
        self._console = console
        self._log = log
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""

    def write(self, chunk: bytes) -> None:
        text = self._decoder.decode(chunk)
        if self._console is not None:
            self._console.write(text)
            self._console.flush()
        if self._log is None:
            return
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._log.write(_last_segment(line) + "\n")
        self._log.flush()

    def close(self) -> None:
        tail = self._pending + self._decoder.decode(b"", final=True)
        if self._log is not None and tail.strip("\r"):
            self._log.write(_last_segment(tail) + "\n")
            self._log.flush()
        self._pending = ""


def _last_segment(line: str) -> str:
    # A progress bar redraws its line with \r; a pty ends lines with \r\n.
    return line.rstrip("\r").rsplit("\r", 1)[-1]


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _die_with_parent() -> None:
    # Runs in the child before exec: ask Linux to SIGKILL it when the runner dies.
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


# ---------------------------------------------------------------------------------------------
# After training


def _finish(run: RunDir, args: argparse.Namespace, config: RunConfig,
            outcome: RunOutcome) -> None:
    """Ensembles, results.csv and the report, rebuilt only when this invocation changed a model.

    They are derived from the entries' prediction files; when every entry was skipped (a rerun
    of a finished run) the existing ones are kept untouched, and only missing ones are made.
    The trained models are safe on disk by now, so an error in one of these stages is recorded
    as a failure of that stage (traceback in train.log) instead of ending the command.
    """
    changed = any(not entry.skipped for entry in outcome.entries)
    backbones = [name for name in backbone_entries()
                 if entry_is_finished(run.model_dir(name))]
    if len(backbones) < 2:
        logger.info("ensembles skipped: they need at least two finished backbones, the run has "
                    "%d (%s)", len(backbones), ", ".join(backbones) or "none")
    elif not changed and run.ensemble_names():
        outcome.ensembles = run.ensemble_names()
        logger.info("ensembles up to date: %s", ", ".join(outcome.ensembles))
    else:
        from ensembles.build import build_ensembles

        built = _stage(outcome, "ensembles", lambda: list(build_ensembles(run.root, ("all",))))
        if built is not None:
            outcome.ensembles = built
            logger.info("ensembles built from %s: %s", ", ".join(backbones),
                        ", ".join(built) or "none")
            changed = True

    from reports.build import build_report
    from reports.results import write_results_csv

    if not changed and run.results_csv.is_file():
        outcome.results_csv = run.results_csv
    else:
        outcome.results_csv = _stage(outcome, "results.csv", lambda: write_results_csv(run))
        if outcome.results_csv is not None:
            logger.info("results: %s", outcome.results_csv)
    if not run.model_names() and not run.ensemble_names():
        logger.info("report skipped: no entry of the run has predictions yet")
    elif not changed and run.report_md.is_file():
        outcome.report = run.report_md
    else:
        outcome.report = _stage(outcome, "report", lambda: build_report(
            run.root, rank_by=option(args, "rank_by"), n_resamples=option(args, "bootstrap"),
            seed=config.seed, reference=option(args, "reference")))
        if outcome.report is not None:
            logger.info("report: %s", outcome.report)


def _finish_grid(run: RunDir, args: argparse.Namespace, config: RunConfig,
                 outcome: RunOutcome, replicates: list[Any]) -> None:
    """Out-of-fold predictions and ensembles per replicate, then the grid's aggregated report.

    Every replicate's ensembles use one member set, the backbones finished in every replicate
    (a backbone missing in one replicate is dropped from all, logged), and are refit wherever
    their fit.json is stale: other members, or member files that changed or appeared since the
    fit (e.g. out-of-fold predictions written after the others finished). Current ensembles are
    kept untouched. The grid's results.csv, jobs.csv and report are rebuilt when anything
    changed or one is missing.
    """
    from training.grid import grid_members, stale_ensembles, write_oof_predictions

    ran = {result.name.split("/", 1)[0] for result in outcome.entries if not result.skipped}
    if config.folds:
        for name in config.entries:
            _stage(outcome, f"out-of-fold predictions of {name}",
                   lambda name=name: write_oof_predictions(run, config, replicates, name))
    members, dropped = grid_members(replicates, backbone_entries())
    for name, lacking in dropped.items():
        logger.warning("%s is not finished in %s; it is left out of the ensembles of every "
                       "replicate, so that each ensemble has the same members in the whole grid",
                       name, ", ".join(lacking))
    built: set[str] = set()
    if len(members) < 2:
        logger.info("ensembles skipped: they need at least two backbones finished in every "
                    "replicate, the grid has %d (%s)", len(members), ", ".join(members) or "none")
    else:
        from ensembles.build import build_ensembles
        from ensembles.registry import resolve_names

        names = resolve_names(("all",))
        for replicate in replicates:
            stale = stale_ensembles(replicate.run, names, members)
            if not stale:
                built.update(names)
                continue
            for name, why in stale.items():
                logger.info("%s/%s is (re)fit: %s", replicate.name, name, why)
            fitted = _stage(outcome, f"ensembles of {replicate.name}",
                            lambda rep=replicate: list(build_ensembles(
                                rep.run.root, ("all",), members=members,
                                n_resamples=option(args, "bootstrap"),
                                seed=rep.seed)))
            if fitted is not None:
                built.update(fitted)
                ran.add(replicate.name)
    outcome.ensembles = sorted(built)
    if outcome.ensembles:
        logger.info("ensembles per replicate (members %s): %s", ", ".join(members),
                    ", ".join(outcome.ensembles))

    from reports.build import build_report

    if not ran and run.report_md.is_file() and run.results_csv.is_file():
        outcome.results_csv, outcome.report = run.results_csv, run.report_md
        return
    if not any(rep.run.model_names() for rep in replicates):
        logger.info("report skipped: no job of the grid has predictions yet")
        return
    outcome.report = _stage(outcome, "report", lambda: build_report(
        run.root, rank_by=option(args, "rank_by"), n_resamples=option(args, "bootstrap"),
        seed=config.seed, reference=option(args, "reference")))
    if outcome.report is not None:
        outcome.results_csv = run.results_csv if run.results_csv.is_file() else None
        logger.info("report: %s", outcome.report)


def _stage(outcome: RunOutcome, name: str, action: Any) -> Any:
    """Run one after-training stage; on an error record it in outcome.failures, return None."""
    try:
        return action()
    except BenchmarkError as exc:
        logger.error("%s failed: %s", name, exc)
        outcome.failures.append(f"{name} ({exc})")
    except Exception as exc:  # noqa: BLE001 - a bug in a later stage must not hide the models
        logger.exception("%s failed", name)
        outcome.failures.append(f"{name} ({type(exc).__name__}: {exc}; traceback in train.log)")
    return None


# ---------------------------------------------------------------------------------------------
# Run-directory lock and train.log


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Hold an exclusive lock on the run directory (released by the OS even on SIGKILL)."""
    root.mkdir(parents=True, exist_ok=True)
    handle = open(root / LOCK_NAME, "a+", encoding="utf-8")  # noqa: SIM115
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RunDirError(
                f"{root} is in use by {holder}; wait for it to finish (or stop it) before "
                f"rerunning, or choose another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        yield
    finally:
        handle.close()


@contextlib.contextmanager
def _file_logging(path: Path) -> Iterator[None]:
    """Copy this process's log records to train.log while the run lasts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8", delay=True)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
