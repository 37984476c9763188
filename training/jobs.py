"""One training job: an entry of one run directory, run to its end under the failure policy.

A job (`JobSpec`) is an entry of a single run or of one replicate of a grid. `run_job`:

- skips it when it already finished (metrics.json status "ok" and both prediction files:
  `entry_is_finished`), touching nothing;
- otherwise runs the worker subprocess (`training.worker_process.run_worker`); an interrupted
  entry is resumed by the worker itself from its state/ folder, at the batch size that state was
  trained with;
- exit code 3 (out of memory) retries at half the batch size down to the preset's floor
  (`training.policies.next_batch_size`); a worker killed by a signal is restarted up to
  `JobSpec.retries` times; 4 (NaN loss) and 1 (failure) are recorded and the caller goes on;
- records what the worker could not record itself in the entry's metrics.json, through
  `core.entry_metrics.write_entry_metrics`.

It returns an `EntryOutcome`, whose time is the entry's wall time in this invocation as measured
here (every attempt, worker start to exit: start-up, model building, training, prediction). The
executors (`training.executors`) run many jobs; the run directory around them is prepared by the
orchestration (pipeline/run_all.py).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from core import exitcodes
from core.atomic import read_json
from core.entry_metrics import METRICS_FILE, read_entry_metrics, write_entry_metrics
from core.rundir import RunDir
from training.entries import entry_kind
from training.policies import next_batch_size
from training.resume_state import PROGRESS_FILE, STATE_DIR
from training.settings import RunConfig
from training.worker_process import EventHandler, run_worker

logger = logging.getLogger(__name__)


@dataclass
class EntryOutcome:
    """What happened to one entry in this invocation.

    Attributes:
        name: the entry (backbone or baseline).
        status: "ok", "failed" or "nan" (as in its metrics.json).
        skipped: True when it had finished in an earlier invocation and was not run again.
        seconds: the entry's wall time in this invocation, as the runner measured it (every
            attempt, worker start to exit); None when it was skipped. (The report's training
            time is metrics.json's train_seconds: the epochs alone.)
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
        log_path: where the worker's output is appended (the entry's own train.log; None:
            nowhere).
        run_log_path: a second log the output is appended to as well (a serial run: the run's
            train.log, so that it holds everything in order), or None.
        env: extra environment for the worker (device pinning, thread counts).
        retries: restarts of a worker killed by a signal (it resumes from its saved state).
        label: how the job is named in messages, e.g. "fold0-seed1/xception".
        tensorboard_dir: where the worker writes TensorBoard logs (`--tensorboard`), or None.
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
    run_log_path: str | None = None
    tensorboard_dir: str | None = None

    @property
    def name(self) -> str:
        return self.label or self.entry


def entry_is_finished(entry_dir: Path) -> bool:
    """True when metrics.json says status "ok" and both prediction files exist."""
    metrics = read_entry_metrics(entry_dir)
    return (metrics.get("status") == "ok"
            and all(RunDir.predictions_file(entry_dir, s).is_file() for s in ("val", "test")))


def run_job(spec: JobSpec, console: TextIO | None = None,
            on_event: EventHandler | None = None) -> EntryOutcome:
    """Run one job to its end: skip it when finished, else run the worker (resuming its state).

    Out of memory (exit 3) retries at half the batch size down to the preset's floor; a worker
    killed by a signal is restarted up to `spec.retries` times and resumes from its last finished
    epoch; NaN (exit 4) and failures (exit 1) are recorded in the entry's metrics.json.

    Args:
        spec: the job.
        console: where the worker's output lines are echoed (-v), or None (the logs only).
        on_event: called with each of the worker's progress events, or None.

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

    floor = int(config.training.min_batch_size or 1)
    batch_size = _resume_batch_size(entry_dir, int(config.training.batch_size), floor)
    oom_retries = 0
    restarts = 0
    logs = [Path(p) for p in (spec.log_path, spec.run_log_path) if p]
    started = time.monotonic()
    while True:
        attempt_start = time.time()
        code = run_worker(run.root, name, batch_size, console=console, on_event=on_event,
                          cache_dir=spec.cache_dir, log_path=logs, devices=spec.devices,
                          extra_env=spec.env,
                          tensorboard_dir=Path(spec.tensorboard_dir) if spec.tensorboard_dir
                          else None)
        if code < 0 and restarts < spec.retries:
            restarts += 1
            message = (f"{spec.name}: {_describe_exit(code).split(' (')[0]}; restarting it "
                       f"({restarts} of {spec.retries}), it resumes from its last finished epoch")
            logger.warning("%s", message)
            for log in logs:
                _append_line(log, f"[{message}]")
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
            write_entry_metrics(entry_dir, extra={"batch_size": batch_size,
                                                  "oom_retries": oom_retries,
                                                  "restarts": restarts})
    elif not fresh or read_entry_metrics(entry_dir).get("status") in (None, "ok"):
        # The worker died without recording why (a signal, or an exit before writing).
        status = "nan" if code == exitcodes.WORKER_NAN else "failed"
        _record_failure(entry_dir, name, status, _describe_exit(code), batch_size)
    return _outcome_from_metrics(spec.name, entry_dir, wall=time.monotonic() - started)


def _append_line(path: str | Path | None, line: str) -> None:
    """Append one line to a job's log (notes between worker attempts)."""
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
    # entry_dir is RUN/models/NAME: the run's fingerprint goes into the record.
    run_json = read_json(RunDir(entry_dir.parents[1]).run_json)
    write_entry_metrics(entry_dir, extra={
        "status": status, "error": error, "batch_size": batch_size,
        "kind": entry_kind(name), "fingerprint": run_json.get("fingerprint"),
    })


def _metrics_written_since(entry_dir: Path, since: float) -> bool:
    try:
        # One second of slack for file systems with coarse timestamps.
        return (entry_dir / METRICS_FILE).stat().st_mtime >= since - 1.0
    except FileNotFoundError:
        return False


def _outcome_from_metrics(name: str, entry_dir: Path, skipped: bool = False,
                          wall: float | None = None) -> EntryOutcome:
    metrics = read_entry_metrics(entry_dir)
    val = metrics.get("val") if isinstance(metrics.get("val"), dict) else {}
    return EntryOutcome(
        name=name,
        status=str(metrics.get("status") or "failed"),
        skipped=skipped,
        seconds=wall,
        best_val_balanced_accuracy=val.get("balanced_accuracy"),
        batch_size=metrics.get("batch_size"),
        error=metrics.get("error") or (None if metrics else "no metrics.json was written"),
    )
