"""The console of `--all` without training: the progress events drawn as a bar on a terminal or as
plain lines in a pipe, the summary lines, the logging filter, the captured native output and the
final summary with its pipeline-check note."""

from __future__ import annotations

import io
import logging
import os
import re

import pytest

from core.atomic import atomic_write_json
from core.rundir import RunDir
from pipeline import console as console_module
from pipeline.all_action import summary
from pipeline.console import (
    PRINTED,
    RunConsole,
    boxed,
    captured_native_output,
    configure_logging,
)
from pipeline.outcome import RunOutcome
from training.jobs import EntryOutcome
from training.worker_process import format_event, split_event


class _Terminal(io.StringIO):
    """A text stream that says it is a terminal (tqdm draws into it)."""

    def isatty(self) -> bool:
        return True


def _events(entry: str = "xception") -> list[dict]:
    """What a worker emits for a two-phase entry, one epoch of three batches per phase."""
    out = [{"event": "status", "entry": entry, "text": "building the model"}]
    for index, phase in enumerate(("frozen", "finetune"), start=1):
        out.append({"event": "phase", "entry": entry, "phase": phase, "index": index,
                    "phases": 2, "epochs": 1, "steps": 3, "initial_epoch": 0})
        out += [{"event": "batch", "entry": entry, "phase": phase, "epoch": 1, "epochs": 1,
                 "step": step, "steps": 3, "loss": 1.95} for step in (1, 2, 3)]
        out.append({"event": "epoch", "entry": entry, "phase": phase, "epoch": 1, "epochs": 1,
                    "loss": 1.9459, "val_balanced_accuracy": 0.1667, "seconds": 5.4})
    out.append({"event": "status", "entry": entry, "text": "predicting"})
    return out


def _run_entry(console: RunConsole, events: list[dict]) -> None:
    console.entry_started(1, 2, "xception")
    for event in events:
        console.event(event)
    console.entry_finished(1, 2, EntryOutcome("xception", "ok", seconds=29.44,
                                              best_val_balanced_accuracy=0.1667, batch_size=32))


def test_an_event_line_round_trips_and_survives_text_before_it():
    line = format_event("batch", entry="x", step=2, loss=float("nan"))
    text, event = split_event(line)
    assert text == "" and event["event"] == "batch" and event["step"] == 2
    assert event["loss"] != event["loss"]  # NaN comes back as NaN
    text, event = split_event("E0000 partial " + line)
    assert text == "E0000 partial " and event["entry"] == "x"


@pytest.mark.parametrize("line", ["plain output", "@@dermbench-event@@ {not json",
                                  '@@dermbench-event@@ ["a list"]', '@@dermbench-event@@ {"a": 1}'])
def test_lines_without_a_valid_event_are_output(line):
    assert split_event(line) == (line, None)


def test_in_a_pipe_each_epoch_and_the_summary_is_one_plain_line():
    stream = io.StringIO()
    _run_entry(RunConsole(stream, plain_interval=0), _events())
    assert stream.getvalue().splitlines() == [
        "      xception frozen epoch 1/1: loss 1.9459, val balanced accuracy 0.167 (5.4 s)",
        "      xception finetune epoch 1/1: loss 1.9459, val balanced accuracy 0.167 (5.4 s)",
        "[1/2] xception: ok  29.4 s  best val balanced accuracy 0.167  batch 32",
    ]
    assert "\r" not in stream.getvalue()


def test_in_a_pipe_frequent_epochs_are_thinned_but_a_phase_s_last_epoch_is_shown():
    stream = io.StringIO()
    console = RunConsole(stream, plain_interval=3600)
    console.entry_started(2, 2, "paper_cnn")
    for epoch in range(1, 51):
        console.event({"event": "epoch", "phase": "scratch", "epoch": epoch, "epochs": 50,
                       "loss": 1.0, "val_balanced_accuracy": 0.5, "seconds": 1.0})
    console.event({"event": "note", "text": "SVM: C=1 chosen"})
    lines = stream.getvalue().splitlines()
    assert [line.split(":")[0].strip() for line in lines] == [
        "paper_cnn scratch epoch 1/50", "paper_cnn scratch epoch 50/50", "paper_cnn"]
    assert lines[-1] == "      paper_cnn: SVM: C=1 chosen"


def test_on_a_terminal_the_entry_has_a_live_bar_that_gives_way_to_its_summary_line():
    stream = _Terminal()
    console = RunConsole(stream, redraw_interval=0)
    assert console.live
    _run_entry(console, _events())
    frames = [f for f in re.split(r"[\r\n]", stream.getvalue()) if f.strip()]
    assert "[1/2] xception: building the model [00:00]" in frames
    bars = [f for f in frames if "batches" in f]
    assert any(f.startswith("[1/2] xception: frozen (1/2) epoch 1/1:") and "2/3 batches" in f
               and "loss 1.950" in f for f in bars)
    assert any(f.startswith("[1/2] xception: finetune (2/2) epoch 1/1:")
               and "val BA 0.167" in f for f in bars)
    # the bar is cleared (leave=False) and the summary line stays
    assert stream.getvalue().endswith(
        "[1/2] xception: ok  29.4 s  best val balanced accuracy 0.167  batch 32\n")


def test_a_line_printed_while_a_bar_is_drawn_goes_above_it():
    stream = _Terminal()
    console = RunConsole(stream, verbose=True)
    console.entry_started(1, 1, "x")
    console.echo.write("worker says hello\n")
    console.close()
    assert "worker says hello\n" in stream.getvalue()


def test_only_verbose_echoes_the_workers_output():
    assert RunConsole(io.StringIO()).echo is None
    assert RunConsole(None, verbose=True).echo is None
    assert RunConsole(io.StringIO(), verbose=True).echo is not None


def test_parallel_jobs_get_start_and_finish_lines():
    stream = _Terminal()
    console = RunConsole(stream)
    console.job_started(3, 8, "fold0-seed1/xception")
    console.job_finished(1, 8, EntryOutcome("fold0-seed1/xception", "ok", seconds=2.0))
    assert stream.getvalue() == ("      started fold0-seed1/xception (3 of 8)\n"
                                 "[1/8] fold0-seed1/xception: ok  2.0 s\n")


@pytest.fixture
def root_logging():
    """Restore the root logger's handlers and level after a test that configures them."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.mark.parametrize("verbose", [False, True])
def test_the_console_log_shows_warnings_and_never_repeats_a_printed_line(root_logging, verbose):
    err = io.StringIO()
    configure_logging(verbose, err)
    configure_logging(verbose, err)  # a second call replaces the handler, never doubles it
    log = logging.getLogger("test.console")
    log.info("image cache hit")
    log.warning("out of memory; retrying with batch size 8")
    RunConsole(io.StringIO()).line("[1/1] x: ok")
    lines = err.getvalue().splitlines()
    if verbose:
        assert lines == ["INFO test.console: image cache hit",
                         "WARNING test.console: out of memory; retrying with batch size 8"]
    else:
        assert lines == ["warning: out of memory; retrying with batch size 8"]


def test_printed_lines_still_reach_the_log_file(caplog):
    caplog.set_level(logging.INFO)
    RunConsole(io.StringIO()).line("results: r.csv")
    RunConsole(None).line("report: r.md")
    records = {r.getMessage(): getattr(r, PRINTED) for r in caplog.records}
    assert records == {"results: r.csv": True, "report: r.md": False}


def test_native_output_is_captured_at_the_file_descriptor(capfd):
    with captured_native_output() as captured:
        os.write(2, b"E0000 failed call to cuInit\n")
        os.write(1, b"oneDNN custom operations are on\n")
    assert captured == ["E0000 failed call to cuInit\noneDNN custom operations are on\n"]
    out, err = capfd.readouterr()
    assert "cuInit" not in out + err


def test_keras_imported_before_is_not_imported_again(monkeypatch):
    monkeypatch.setitem(console_module.sys.modules, "keras", object())
    assert console_module.import_keras_quietly() == ""


def test_boxed_wraps_the_note_in_a_frame():
    text = boxed("This run checks that the pipeline works; " * 3, width=40)
    lines = text.splitlines()
    assert lines[0] == lines[-1] == "+" + "-" * 38 + "+"
    assert all(len(line) == 40 and line.startswith("| ") and line.endswith(" |")
               for line in lines[1:-1])
    assert lines[1].startswith("| NOTE: This run")


@pytest.mark.parametrize("config, boxed_note", [
    ({"dataset": "synthetic", "preset": "smoke", "weights": None}, True),
    ({"dataset": "ham10000", "preset": "smoke", "weights": None}, True),
    ({"dataset": "ham10000", "preset": "native", "weights": "imagenet"}, False),
])
def test_the_final_summary_opens_with_the_note_of_a_pipeline_check(tmp_path, config, boxed_note):
    run = RunDir(tmp_path)
    atomic_write_json(run.run_json, {"config": config})
    outcome = RunOutcome(run_dir=tmp_path, entries=[
        EntryOutcome("paper_cnn", "ok", skipped=True, best_val_balanced_accuracy=0.5)],
        results_csv=run.results_csv, report=run.report_md)
    text = summary(outcome)
    assert ("NOTE: This run checks that the pipeline works" in text) is boxed_note
    assert text.splitlines()[-4:] == [
        f"run directory: {tmp_path}",
        "  paper_cnn: ok  (finished earlier, not retrained)  best val balanced accuracy 0.500",
        f"  results: {run.results_csv}", f"  report: {run.report_md}"]
