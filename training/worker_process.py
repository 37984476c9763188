"""The training worker as a subprocess: its command line, its environment, and its output.

`run_worker` starts `python -m training.worker` for one entry (see training/worker.py) and waits
for it. The worker's output is echoed to a console as it comes (through a pseudo-terminal when
the console is one, so progress bars stay live) and appended to a log file as finished lines
(`_OutputSink` keeps the last carriage-return segment of each line). On Linux the worker is killed
when this process dies, so an interrupted run never leaves an orphan training behind that a rerun
would race with. The policy around one worker (skip, out-of-memory retry, restarts) is
`training.jobs.run_job`'s.
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import errno
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import TextIO

# Set in the worker's environment when its output is copied to train.log here, so the worker does
# not log to that file itself (training/worker.py reads it).
RUNNER_LOG_ENV = "DERMBENCH_RUNNER_LOGS"


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
        env[RUNNER_LOG_ENV] = "1"  # this process copies the worker's output to train.log itself
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
    # Runs in the child before exec: ask Linux to SIGKILL it when this process dies.
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
