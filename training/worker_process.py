"""The training worker as a subprocess: its command line, its environment, and its output.

`run_worker` starts `python -m training.worker` for one entry (see training/worker.py) and waits
for it. The worker's stdout and stderr come through one pipe, line by line:

- progress events: a line holding `EVENT_MARKER` and a JSON object (`format_event`), written by
  the worker's progress callbacks (`emit_event`: phase, batch, epoch, ...); each is parsed
  (`split_event`) and handed to `on_event`, never logged;
- everything else (our log records, TensorFlow's and JAX's start-up banners, warnings) is appended
  to the log files as finished lines (`_OutputSink` keeps the last carriage-return segment of a
  line) and echoed to `console` only when one is given (`--all -v`).

On Linux the worker is killed when this process dies, so an interrupted run never leaves an orphan
training behind that a rerun would race with. The policy around one worker (skip, out-of-memory
retry, restarts) is `training.jobs.run_job`'s.
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import errno
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

logger = logging.getLogger(__name__)

# Set in the worker's environment when its output is copied to train.log here, so the worker does
# not log to that file itself (training/worker.py reads it).
RUNNER_LOG_ENV = "DERMBENCH_RUNNER_LOGS"
# Starts the JSON of a progress event on the worker's stdout (unlikely in any other output).
EVENT_MARKER = "@@dermbench-event@@ "

EventHandler = Callable[[dict[str, Any]], None]


def format_event(kind: str, **fields: Any) -> str:
    """One progress event as the worker writes it: the marker, then {"event": kind, ...} as JSON.

    Args:
        kind: the event ("phase", "batch", "epoch", "step", "phase_end").
        **fields: JSON-ready values (NaN allowed).

    Returns:
        The line, without its newline.
    """
    return EVENT_MARKER + json.dumps({"event": kind, **fields}, separators=(",", ":"))


def emit_event(kind: str, **fields: Any) -> None:
    """Write one progress event to stdout (one write, so it is never split; see `format_event`)."""
    sys.stdout.write(format_event(kind, **fields) + "\n")
    sys.stdout.flush()


def split_event(line: str) -> tuple[str, dict[str, Any] | None]:
    """Separate a progress event from a line of the worker's output.

    The marker may follow other text when a native library wrote part of a line just before it.

    Args:
        line: one line, without its newline.

    Returns:
        (the text before the marker, the event); (line, None) when the line holds no valid event.
    """
    at = line.find(EVENT_MARKER)
    if at < 0:
        return line, None
    try:
        event = json.loads(line[at + len(EVENT_MARKER):].strip())
    except ValueError:
        return line, None
    if not isinstance(event, dict) or not isinstance(event.get("event"), str):
        return line, None
    return line[:at], event


def worker_command(run_dir: Path, name: str, batch_size: int | None,
                   devices: int | None = None, *, events: bool = False,
                   tensorboard_dir: Path | None = None) -> list[str]:
    """The worker's command line (`python -m training.worker`, see its docstring).

    Args:
        run_dir: the run directory.
        name: the entry.
        batch_size: --batch-size (None: the config's).
        devices: --devices (None or 1: one device).
        events: --events: progress events on stdout instead of Keras's own progress output.
        tensorboard_dir: --tensorboard DIR, or None.
    """
    command = [sys.executable, "-m", "training.worker", "--out", os.fspath(run_dir),
               "--entry", name]
    if batch_size is not None:
        command += ["--batch-size", str(batch_size)]
    if devices is not None and devices > 1:
        command += ["--devices", str(devices)]
    if events:
        command += ["--events"]
    if tensorboard_dir is not None:
        command += ["--tensorboard", os.fspath(tensorboard_dir)]
    return command


def run_worker(run_dir: Path, name: str, batch_size: int | None, *,
               console: TextIO | None = None, on_event: EventHandler | None = None,
               cache_dir: str | None = None,
               log_path: Path | Sequence[Path] | None = None, devices: int | None = None,
               extra_env: dict[str, str] | None = None,
               tensorboard_dir: Path | None = None) -> int:
    """Run one worker to completion: its events to `on_event`, its output to the logs.

    The worker writes progress events (`--events`) when `on_event` is given; every other line
    it or its frameworks print is appended to the log files (carriage-return updates collapsed)
    and echoed to `console` when one is given. The worker is killed when this process dies
    (Linux), so an interrupted run never leaves an orphan training behind that a rerun would race
    with.

    Args:
        run_dir: the run directory (with run.json).
        name: the entry.
        batch_size: passed as --batch-size (None: the config's).
        console: text stream the worker's output lines are echoed to (-v), or None.
        on_event: called with each progress event (a dict with "event"), or None.
        cache_dir: --cache-dir, handed on as $DERMBENCH_CACHE so the worker finds the cache.
        log_path: train.log file(s) the output is appended to, or None.
        devices: GPUs for data parallel training (the worker's --devices), or None for one.
        extra_env: variables added to the worker's environment (e.g. CUDA_VISIBLE_DEVICES).
        tensorboard_dir: where the worker writes TensorBoard logs (--tensorboard), or None.

    Returns:
        The worker's exit code (negative: killed by that signal).
    """
    env = dict(os.environ)
    env.update(extra_env or {})
    env["PYTHONUNBUFFERED"] = "1"
    paths = ([] if log_path is None else [Path(log_path)] if isinstance(log_path, (str, Path))
             else [Path(p) for p in log_path])
    if paths:
        env[RUNNER_LOG_ENV] = "1"  # this process copies the worker's output to train.log itself
    if cache_dir:
        env["DERMBENCH_CACHE"] = os.fspath(Path(cache_dir).resolve())
    project_root = os.fspath(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (project_root, env.get("PYTHONPATH")) if p)
    command = worker_command(run_dir, name, batch_size, devices, events=on_event is not None,
                             tensorboard_dir=tensorboard_dir)
    with contextlib.ExitStack() as stack:
        logs = []
        for path in dict.fromkeys(paths):
            path.parent.mkdir(parents=True, exist_ok=True)
            logs.append(stack.enter_context(open(path, "a", encoding="utf-8")))
        for log in logs:
            log.write(f"$ {shlex.join(command)}\n")
            log.flush()
        sink = _OutputSink(console, logs, on_event)
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, env=env, bufsize=0,
                                   preexec_fn=_die_with_parent)
        try:
            _pump(process.stdout.fileno(), sink)  # type: ignore[union-attr]
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
            if process.stdout is not None:
                process.stdout.close()
            sink.close()
        for log in logs:
            log.write(f"[worker {name} exited with code {code}]\n")
        return code


def _pump(fd: int, sink: _OutputSink) -> None:
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError as exc:
            if exc.errno == errno.EIO:  # the child closed its end
                return
            raise
        if not chunk:
            return
        sink.write(chunk)


class _OutputSink:
    """Split the worker's output into events (to `on_event`) and lines (logs, console echo)."""

    def __init__(self, console: TextIO | None, logs: Sequence[TextIO],
                 on_event: EventHandler | None = None) -> None:
        self._console = console
        self._logs = list(logs)
        self._on_event = on_event
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""

    def write(self, chunk: bytes) -> None:
        self._pending += self._decoder.decode(chunk)
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._line(line)
        self._flush()

    def close(self) -> None:
        tail = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        if tail.strip("\r"):
            self._line(tail)
            self._flush()

    def _line(self, line: str) -> None:
        text, event = split_event(line)
        if event is not None:
            if self._on_event is not None:
                try:
                    self._on_event(event)
                except Exception:  # noqa: BLE001 - a display problem must not stop the training
                    logger.debug("could not show the progress event %s", event, exc_info=True)
            if not text.strip():
                return
        text = _last_segment(text) + "\n"
        for log in self._logs:
            log.write(text)
        if self._console is not None:
            self._console.write(text)

    def _flush(self) -> None:
        for stream in (*self._logs, self._console):
            if stream is not None:
                stream.flush()


def _last_segment(line: str) -> str:
    # A progress bar redraws its line with \r; Windows-style output ends lines with \r\n.
    return line.rstrip("\r").rsplit("\r", 1)[-1]


def _die_with_parent() -> None:
    # Runs in the child before exec: ask Linux to SIGKILL it when this process dies.
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
