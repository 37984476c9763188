"""What `--all` shows on the console: our lines only, the rest goes to the logs.

- `RunConsole` writes the run's own lines: one per stage (`stage`), a live progress bar per entry
  on a terminal (tqdm: phase, epoch and batch with the time left, drawn from the worker's progress
  events, `training.worker_process`) or plain lines elsewhere (a pipe, CI: no redraws, one line
  per finished epoch at most every `PLAIN_EPOCH_INTERVAL` seconds and per SVM step), and one
  summary line per entry (`[i/N] entry: status time metric`, the time being the entry's wall time
  as the runner measured it). The bar shows the running loss and the last epoch's validation
  balanced accuracy ("val BA"). Every line also goes to the run's train.log. With `-v` the workers'
  own output is echoed as well (`echo`).
- `configure_logging` is the console's logging for `--all` (benchmark.py): library records go to
  train.log only; the console shows warnings and errors (everything with -v) and never repeats a
  line `RunConsole` printed.
- `import_keras_quietly` imports Keras (and with it TensorFlow) in the runner with the native
  start-up banners captured, so that they reach train.log instead of the console.
- `boxed` frames the pipeline-check note of a smoke or synthetic run for the final summary.

Parallel jobs (`--jobs N`, Ray) get start and finish lines, never interleaved bars.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from typing import Any, TextIO

from training.jobs import EntryOutcome

logger = logging.getLogger(__name__)

# Set on the log records of lines RunConsole printed itself: the console handler skips them.
PRINTED = "dermbench_printed"
# Plain (non-terminal) output: the fewest seconds between two epoch lines of one entry (the
# last epoch of a phase is always shown).
PLAIN_EPOCH_INTERVAL = 10.0
INDENT = "      "
# The entry's bar while it trains (batches of the phase, time left) and while it does anything
# else (starting, building the model, predicting: the time spent).
BAR_FORMAT = ("{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} batches "
              "[{elapsed}<{remaining}]{postfix}")
STATUS_FORMAT = "{desc} [{elapsed}]"


class RunConsole:
    """The console of one `--all` run (see the module docstring).

    Args:
        stream: where the lines go (the CLI passes sys.stdout); None: nowhere (train.log only).
        verbose: echo the workers' output lines too (-v).
        live: draw progress bars; default: when `stream` is a terminal.
        plain_interval: seconds between two plain epoch lines of an entry.
        redraw_interval: the fewest seconds between two redraws of a bar.
    """

    def __init__(self, stream: TextIO | None = None, *, verbose: bool = False,
                 live: bool | None = None, plain_interval: float = PLAIN_EPOCH_INTERVAL,
                 redraw_interval: float = 0.1) -> None:
        self.stream = stream
        self.verbose = verbose
        self.live = stream is not None and (_isatty(stream) if live is None else live)
        self.plain_interval = plain_interval
        self.redraw_interval = redraw_interval
        self._bar: Any = None
        self._entry: tuple[int, int, str] | None = None
        self._phase: dict[str, Any] = {}
        self._val = ""
        self._last_plain = -math.inf

    # --- lines -----------------------------------------------------------------------------

    def line(self, text: str) -> None:
        """Print one line (above the progress bar, if one is drawn) and log it to train.log."""
        if self.stream is not None:
            self._write(text)
        logger.info("%s", text, extra={PRINTED: self.stream is not None})

    stage = line

    @property
    def echo(self) -> TextIO | None:
        """The stream a worker's output lines are echoed to: with -v only (else None)."""
        return _Echo(self) if self.verbose and self.stream is not None else None

    def _write(self, text: str) -> None:
        if self.stream is None:
            return
        if self._bar is not None:
            from tqdm import tqdm

            tqdm.write(text, file=self.stream)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    # --- one entry at a time (serial jobs) -------------------------------------------------

    def entry_started(self, index: int, total: int, name: str) -> None:
        """An entry starts: its progress bar (on a terminal) begins at "starting"."""
        self._entry = (index, total, name)
        self._phase, self._val = {}, ""
        self._last_plain = -math.inf
        if self.live:
            from tqdm import tqdm

            self._bar = tqdm(total=None, desc=f"{self._prefix()}: starting", file=self.stream,
                             leave=False, dynamic_ncols=True,
                             mininterval=self.redraw_interval, miniters=1,
                             bar_format=STATUS_FORMAT)

    def event(self, event: dict[str, Any]) -> None:
        """A progress event of the running entry's worker (`training.callbacks.ProgressEvents`;
        "status" and "note" from the protocol and the SVM baseline)."""
        kind = event.get("event")
        if kind == "phase":
            self._phase = dict(event)
            if self._bar is not None:
                steps, epochs = _int(event.get("steps")), _int(event.get("epochs"))
                done = _int(event.get("initial_epoch")) * steps
                self._bar.set_description_str(self._label(done // max(steps, 1) + 1),
                                              refresh=False)
                self._bar.set_postfix_str(self._val, refresh=False)
                self._bar.bar_format = BAR_FORMAT
                self._bar.reset(total=max(steps * epochs, 1))
                self._bar.initial = self._bar.n = done
                self._bar.refresh()
        elif kind == "batch":
            if self._bar is not None and self._phase:
                steps = _int(event.get("steps"))
                n = (_int(event.get("epoch")) - 1) * steps + _int(event.get("step"))
                self._bar.set_description_str(self._label(_int(event.get("epoch"))),
                                              refresh=False)
                self._bar.set_postfix_str(", ".join(filter(None, [_loss(event.get("loss"), 3),
                                                                  self._val])), refresh=False)
                self._bar.update(max(n - self._bar.n, 0))
        elif kind == "epoch":
            text = (f"{self._name()} {event.get('phase')} epoch {event.get('epoch')}/"
                    f"{event.get('epochs')}: {_loss(event.get('loss'))}, val balanced accuracy "
                    f"{_fmt(event.get('val_balanced_accuracy'))} ({_fmt(event.get('seconds'), 1)} s)")
            self._val = f"val BA {_fmt(event.get('val_balanced_accuracy'))}"
            if self._bar is not None:
                self._bar.set_postfix_str(f"{_loss(event.get('loss'), 3)}, {self._val}")
            elif self.stream is not None:
                last = _int(event.get("epoch")) >= _int(event.get("epochs"))
                now = time.monotonic()
                if last or now - self._last_plain >= self.plain_interval:
                    self._last_plain = now
                    self._write(INDENT + text)
        elif kind == "status":
            if self._bar is not None:
                self._status(str(event.get("text", "")))
        elif kind == "note":
            text = f"{self._name()}: {event.get('text', '')}"
            if self._bar is not None:
                self._status(str(event.get("text", "")))
            elif self.stream is not None:
                self._write(INDENT + text)

    def entry_finished(self, index: int, total: int, outcome: EntryOutcome) -> None:
        """An entry is done: its bar goes, its summary line stays."""
        self._close_bar()
        self._entry = None
        self.line(f"[{index}/{total}] {outcome.summary_line()}")

    # --- parallel jobs ---------------------------------------------------------------------

    def job_started(self, index: int, total: int, name: str) -> None:
        """A parallel job starts (no bar: several run at once)."""
        self.line(f"{INDENT}started {name} ({index} of {total})")

    def job_finished(self, count: int, total: int, outcome: EntryOutcome) -> None:
        """A parallel job is done; `count` jobs are done now."""
        self.line(f"[{count}/{total}] {outcome.summary_line()}")

    def close(self) -> None:
        """Remove a progress bar left drawn (an interrupted run)."""
        self._close_bar()

    # --- helpers ---------------------------------------------------------------------------

    def _name(self) -> str:
        return self._entry[2] if self._entry else ""

    def _prefix(self) -> str:
        if self._entry is None:
            return ""
        index, total, name = self._entry
        return f"[{index}/{total}] {name}"

    def _label(self, epoch: int) -> str:
        """"[1/7] xception: frozen (1/2) epoch 3/10": the entry, its phase and epoch."""
        phase = self._phase
        count = _int(phase.get("phases"))
        which = f" ({_int(phase.get('index'))}/{count})" if count > 1 else ""
        epochs = _int(phase.get("epochs"))
        return (f"{self._prefix()}: {phase.get('phase')}{which} epoch "
                f"{min(max(epoch, 1), max(epochs, 1))}/{epochs}")

    def _status(self, text: str) -> None:
        if self._bar is None:
            return
        self._bar.set_description_str(f"{self._prefix()}: {text}", refresh=False)
        self._bar.bar_format = STATUS_FORMAT
        self._bar.refresh()

    def _close_bar(self) -> None:
        if self._bar is not None:
            bar, self._bar = self._bar, None
            bar.close()


class _Echo:
    """A text stream that echoes a worker's output lines through the console (-v)."""

    def __init__(self, console: RunConsole) -> None:
        self._console = console

    def write(self, text: str) -> int:
        for line in text.splitlines():
            self._console._write(line)
        return len(text)

    def flush(self) -> None:
        return None


# --- logging ----------------------------------------------------------------------------------


class _ConsoleFilter(logging.Filter):
    def __init__(self, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, PRINTED, False):
            return False
        return self.verbose or record.levelno >= logging.WARNING


class _ConsoleFormatter(logging.Formatter):
    def __init__(self, verbose: bool) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s" if verbose else "%(message)s")
        self.verbose = verbose

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if not self.verbose and record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {text}"
        return text


class _ConsoleHandler(logging.StreamHandler):
    """The handler `configure_logging` installs (found again and replaced on a second call)."""


def configure_logging(verbose: bool, stream: TextIO | None = None) -> None:
    """The console's logging during `--all`: warnings and errors only, everything with -v.

    The run's train.log gets every record at INFO (`pipeline.rundir_lifecycle.file_logging`);
    lines `RunConsole` printed are not repeated here.

    Args:
        verbose: -v: every record, with its level and logger name.
        stream: where the records go (default sys.stderr).
    """
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _ConsoleHandler)]:
        root.removeHandler(handler)
    handler = _ConsoleHandler(stream or sys.stderr)
    handler.addFilter(_ConsoleFilter(verbose))
    handler.setFormatter(_ConsoleFormatter(verbose))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


@contextlib.contextmanager
def captured_native_output() -> Iterator[list[str]]:
    """Capture what is written to file descriptors 1 and 2 (native libraries included).

    Yields:
        A list that holds the captured text once the block is left.
    """
    captured: list[str] = []
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError, OSError):
            stream.flush()
    with tempfile.TemporaryFile() as sink:
        saved = [os.dup(1), os.dup(2)]
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            yield captured
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(AttributeError, ValueError, OSError):
                    stream.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            sink.seek(0)
            captured.append(sink.read().decode("utf-8", errors="replace"))


def import_keras_quietly() -> str:
    """Import Keras (and its backend) in this process with the native output captured.

    TensorFlow and XLA print their start-up banners (oneDNN, CUDA probes) straight to the file
    descriptors when they are first imported; Python's logging cannot hold them back.

    Returns:
        What they printed ("" when Keras was imported before, or printed nothing).

    Raises:
        Whatever the import raises; what was printed then goes to stderr first (it explains why).
    """
    if "keras" in sys.modules:
        return ""
    captured: list[str] = []
    try:
        with captured_native_output() as captured:
            import keras  # noqa: F401 - imported for its side effect: the backend starts here
    except BaseException:
        sys.stderr.write("".join(captured))
        raise
    return captured[0].strip()


def boxed(text: str, title: str = "NOTE", width: int = 78) -> str:
    """`text` in an ASCII frame headed by `title`, wrapped to `width` columns."""
    inner = width - 4
    lines = textwrap.wrap(f"{title}: {text}", inner)
    rule = "+" + "-" * (width - 2) + "+"
    return "\n".join([rule, *(f"| {line:<{inner}} |" for line in lines), rule])


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _fmt(value: Any, digits: int = 3) -> str:
    try:
        return f"{float(value):.{digits}f}"
    except (TypeError, ValueError):
        return "n/a"


def _loss(value: Any, digits: int = 4) -> str:
    return f"loss {_fmt(value, digits)}"
