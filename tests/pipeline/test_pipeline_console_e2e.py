"""What a user sees on a real tiny `--all` run (the real worker and frameworks): our own lines only,
a live bar on a terminal, plain lines in a pipe, no "error" or "failed" on a run that succeeded,
the frameworks' output in the logs, and everything with -v."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from core.rundir import RunDir

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
COMMAND = ["--all", "--preset", "smoke", "--synthetic-images", "100", "--epochs", "1",
           "--bootstrap", "20", "--models", "paper_cnn"]
ALARMING = re.compile(r"error|failed", re.IGNORECASE)
# What TensorFlow, XLA and Keras print on their own; none of it belongs on the default console.
FRAMEWORK_NOISE = ("absl::InitializeLog", "oneDNN", "cuInit", "cuda_platform", "I0000", "E0000",
                   "step - accuracy")


def _command(out: Path, *extra: str) -> list[str]:
    return [sys.executable, str(REPO / "benchmark.py"), *COMMAND, "--out", str(out), *extra]


def _in_a_pipe(out: Path, *extra: str) -> str:
    proc = subprocess.run(_command(out, *extra), cwd=out.parent, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def _on_a_terminal(out: Path) -> str:
    """The bytes a 100-column terminal receives (stdout and stderr), decoded."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    proc = subprocess.Popen(_command(out), cwd=out.parent, stdin=slave, stdout=slave,
                            stderr=slave, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=600) == 0, b"".join(chunks).decode()[-3000:]
    return b"".join(chunks).decode("utf-8", errors="replace")


def _lines(text: str) -> list[str]:
    return [line for line in re.split(r"[\r\n]", text) if line.strip()]


@pytest.fixture(scope="module")
def piped(tmp_path_factory):
    out = tmp_path_factory.mktemp("console") / "piped"
    return out, _in_a_pipe(out)


def test_a_piped_run_shows_our_plain_lines_only(piped):
    out, text = piped
    assert "\r" not in text
    lines = text.splitlines()
    assert lines[:3] == [
        f"run directory {out} (new)",
        "preparing the data: synthetic (100 generated images), image size(s) 64",
        "training 1 entry, one at a time (output: train.log and models/<entry>/train.log)"]
    assert re.fullmatch(r" +paper_cnn scratch epoch 1/1: loss \d\.\d{4}, val balanced accuracy "
                        r"\d\.\d{3} \(\d+\.\d s\)", lines[3])
    assert re.fullmatch(r"\[1/1\] paper_cnn: ok  \d+\.\d s  best val balanced accuracy \d\.\d{3}"
                        r"  batch 32", lines[4])
    assert f"report: {out / 'report.md'}" in lines
    assert "| NOTE: This run checks that the pipeline works (generated synthetic images, |" in lines
    assert not [line for line in lines if ALARMING.search(line)]
    assert not [line for line in lines if any(noise in line for noise in FRAMEWORK_NOISE)]


def test_the_frameworks_output_is_in_the_logs(piped):
    out, _ = piped
    run = RunDir(out)
    entry_log = (run.model_dir("paper_cnn") / "train.log").read_text()
    assert "-m training.worker" in entry_log and "paper_cnn scratch epoch 1/1" in entry_log
    run_log = run.train_log.read_text()
    assert entry_log.strip() in run_log  # a serial run's log holds every worker's output too
    assert "[1/1] paper_cnn: ok" in run_log and "the frameworks' start-up output" in run_log
    assert "@@dermbench-event@@" not in run_log + entry_log


def test_verbose_shows_what_the_logs_hold(piped):
    out, _ = piped
    text = _in_a_pipe(out, "-v")  # finished: nothing trains, the rest runs again
    assert "INFO data_utils.cache: image cache hit" in text
    assert "the frameworks' start-up output in this process" in text
    assert "[1/1] paper_cnn: ok  (finished earlier, not retrained)" in text


def test_a_terminal_shows_a_live_bar_per_entry(tmp_path):
    text = _on_a_terminal(tmp_path / "terminal")
    frames = _lines(re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text))
    assert "[1/1] paper_cnn: starting [00:00]" in frames
    assert any(re.match(r"\[1/1\] paper_cnn: scratch epoch 1/1: +\d+%\|.*\| [0-3]/3 batches "
                        r"\[\d\d:\d\d<", frame) for frame in frames)
    assert any(re.fullmatch(r"\[1/1\] paper_cnn: ok  \d+\.\d s  best val balanced accuracy "
                            r"\d\.\d{3}  batch 32", frame) for frame in frames)
    assert not [frame for frame in frames if ALARMING.search(frame)]
    assert not [frame for frame in frames if any(noise in frame for noise in FRAMEWORK_NOISE)]
