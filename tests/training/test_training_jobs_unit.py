"""A job's pieces without training: worker streaming, exit codes, OOM retry, restarts, skips."""

from __future__ import annotations

import io
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from core.atomic import atomic_write_json, read_json
from core.classes import CLASSES
from core.entry_metrics import write_entry_metrics
from core.predictions import make_predictions, write_predictions
from core.rundir import RunDir
from training import jobs, worker_process
from training.jobs import EntryOutcome, JobSpec, _resume_batch_size, entry_is_finished, run_job
from training.settings import RunConfig, SvmSettings, TrainingSettings

CONFIG = RunConfig(
    dataset="synthetic", synthetic_images=80, preset="smoke", entries=("paper_cnn",),
    training=TrainingSettings(batch_size=32, min_batch_size=4, image_size={"paper_cnn": 64},
                              phase1_epochs=1),
    svm=SvmSettings(feature_size=75),
)


def _spec(run: RunDir, retries: int = 0) -> JobSpec:
    return JobSpec(run_root=str(run.root), entry="paper_cnn", config=CONFIG, retries=retries)


def _run_dir(tmp_path: Path) -> RunDir:
    run = RunDir(tmp_path / "run")
    atomic_write_json(run.run_json, {"config": CONFIG.to_dict(), "fingerprint": "f" * 64,
                                     "signatures": {"splits_sha256": "0" * 64}})
    return run


def _write_ok_entry(entry_dir: Path, batch_size: int | None = None) -> None:
    rng = np.random.default_rng(0)
    for split in ("val", "test"):
        proba = rng.dirichlet(np.ones(len(CLASSES)), size=len(CLASSES))
        preds = make_predictions([f"{split}{i}" for i in range(len(CLASSES))],
                                 [f"L{split}{i}" for i in range(len(CLASSES))], list(CLASSES),
                                 proba)
        write_predictions(RunDir.predictions_file(entry_dir, split), preds)
    extra = {"status": "ok", "train_seconds": 1.5, "kind": "baseline"}
    if batch_size is not None:
        extra["batch_size"] = batch_size
    write_entry_metrics(entry_dir, extra=extra, n_resamples=20)


# --------------------------------------------------------------------------- output streaming


def test_output_sink_echoes_and_logs_finished_lines():
    console, log = io.StringIO(), io.StringIO()
    sink = worker_process._OutputSink(console, [log])
    data = "epoch 1\r 10%\r 50%\r100%\r\nnext line\nw\u00e9ird\ntail".encode()
    # Split inside the two-byte UTF-8 "é" to check incremental decoding.
    cut = data.index("\u00e9".encode()) + 1
    sink.write(data[:cut])
    sink.write(data[cut:])
    sink.close()
    assert log.getvalue() == "100%\nnext line\nw\u00e9ird\ntail\n"
    assert console.getvalue() == log.getvalue()


def _script_worker(monkeypatch, tmp_path: Path, script: str) -> None:
    path = tmp_path / "fake_worker.py"
    path.write_text(script)
    monkeypatch.setattr(worker_process, "worker_command",
                        lambda run_dir, name, batch_size, devices=None, **options: [
                            sys.executable, str(path), str(batch_size)])


def test_run_worker_streams_to_console_and_log_and_returns_the_exit_code(tmp_path, monkeypatch):
    _script_worker(monkeypatch, tmp_path, (
        "import os, sys\n"
        "sys.stdout.write('bar 1/2\\rbar 2/2\\n'); sys.stdout.flush()\n"
        "print('cache', os.environ.get('DERMBENCH_CACHE'))\n"
        "print('batch', sys.argv[1], file=sys.stderr)\n"
        "sys.exit(3)\n"))
    console = io.StringIO()
    log = tmp_path / "train.log"
    code = worker_process.run_worker(tmp_path, "paper_cnn", 16, console=console,
                                     cache_dir=str(tmp_path / "c"), log_path=log)
    assert code == 3
    assert "bar 2/2\n" in console.getvalue() and "bar 1/2" not in console.getvalue()
    text = log.read_text()
    assert "bar 2/2\n" in text and "bar 1/2" not in text
    assert f"cache {(tmp_path / 'c').resolve()}" in text
    assert "batch 16" in text
    assert "[worker paper_cnn exited with code 3]" in text


def test_run_worker_reports_a_killing_signal_as_a_negative_code(tmp_path, monkeypatch):
    _script_worker(monkeypatch, tmp_path, "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    assert worker_process.run_worker(tmp_path, "x", None) == -9


def test_progress_events_go_to_the_handler_and_never_to_the_logs(tmp_path, monkeypatch):
    line = worker_process.format_event("epoch", entry="x", epoch=1, loss=float("nan"))
    _script_worker(monkeypatch, tmp_path, (
        f"import sys\nprint({line!r})\nprint('E0000 half a line', end='')\nprint({line!r})\n"
        "print('after')\n"))
    events, console = [], io.StringIO()
    code = worker_process.run_worker(tmp_path, "x", None, console=console, on_event=events.append,
                                     log_path=[tmp_path / "a.log", tmp_path / "b.log"])
    assert code == 0
    assert [e["event"] for e in events] == ["epoch", "epoch"] and events[0]["epoch"] == 1
    for log in ("a.log", "b.log"):
        text = (tmp_path / log).read_text()
        assert "E0000 half a line\nafter\n" in text and worker_process.EVENT_MARKER not in text
    assert console.getvalue() == "E0000 half a line\nafter\n"


# --------------------------------------------------------------------------- one entry


def test_finished_entries_are_recognised(tmp_path):
    entry = tmp_path / "models" / "paper_cnn"
    assert not entry_is_finished(entry)
    _write_ok_entry(entry)
    assert entry_is_finished(entry)
    (entry / "predictions_val.csv").unlink()
    assert not entry_is_finished(entry)


def test_a_finished_entry_is_skipped_without_running_the_worker(tmp_path, monkeypatch):
    run = _run_dir(tmp_path)
    _write_ok_entry(run.model_dir("paper_cnn"), batch_size=32)
    before = {p.name: p.stat().st_mtime_ns for p in run.model_dir("paper_cnn").iterdir()}
    monkeypatch.setattr(jobs, "run_worker", lambda *a, **k: pytest.fail("worker started"))
    outcome = run_job(_spec(run), None)
    assert outcome.skipped and outcome.ok
    assert outcome.seconds is None  # no time spent on it in this invocation
    assert {p.name: p.stat().st_mtime_ns for p in run.model_dir("paper_cnn").iterdir()} == before


def test_out_of_memory_halves_the_batch_and_records_the_size_used(tmp_path, monkeypatch):
    run = _run_dir(tmp_path)
    tried = []

    def fake_worker(run_dir, name, batch_size, **kwargs):
        tried.append(batch_size)
        if batch_size > 8:
            return 3
        _write_ok_entry(run.model_dir(name))  # a worker that does not record its batch size
        return 0

    monkeypatch.setattr(jobs, "run_worker", fake_worker)
    outcome = run_job(_spec(run), None)
    assert tried == [32, 16, 8]
    assert outcome.ok and outcome.batch_size == 8
    metrics = read_json(run.model_dir("paper_cnn") / "metrics.json")
    assert metrics["batch_size"] == 8
    assert metrics["oom_retries"] == 2
    assert metrics["status"] == "ok"


def test_out_of_memory_at_the_floor_is_recorded_as_a_failure(tmp_path, monkeypatch):
    run = _run_dir(tmp_path)
    tried = []
    monkeypatch.setattr(jobs, "run_worker",
                        lambda run_dir, name, batch_size, **k: tried.append(batch_size) or 3)
    outcome = run_job(_spec(run), None)
    assert tried == [32, 16, 8, 4]
    assert outcome.status == "failed"
    assert "out of memory at batch size 4" in outcome.error
    metrics = read_json(run.model_dir("paper_cnn") / "metrics.json")
    assert metrics["status"] == "failed" and metrics["batch_size"] == 4
    assert metrics["fingerprint"] == "f" * 64 and metrics["kind"] == "baseline"


def test_a_worker_killed_without_metrics_is_recorded_with_its_signal(tmp_path, monkeypatch):
    run = _run_dir(tmp_path)
    monkeypatch.setattr(jobs, "run_worker", lambda *a, **k: -9)
    outcome = run_job(_spec(run), None)
    assert outcome.status == "failed"
    assert "killed by signal SIGKILL" in outcome.error
    assert read_json(run.model_dir("paper_cnn") / "metrics.json")["status"] == "failed"


def test_a_killed_worker_is_restarted_and_its_restart_recorded(tmp_path, monkeypatch):
    run = _run_dir(tmp_path)
    codes = [-9, 0]

    def worker(run_dir, name, batch_size, **kwargs):
        code = codes.pop(0)
        if code == 0:
            _write_ok_entry(run.model_dir(name), batch_size=batch_size)
        return code

    monkeypatch.setattr(jobs, "run_worker", worker)
    outcome = run_job(_spec(run, retries=1), None)
    assert outcome.ok and not codes
    assert read_json(run.model_dir("paper_cnn") / "metrics.json")["restarts"] == 1


def test_a_worker_killed_more_often_than_its_retries_fails(tmp_path, monkeypatch):
    run = _run_dir(tmp_path)
    calls = []
    monkeypatch.setattr(jobs, "run_worker", lambda *a, **k: calls.append(1) or -15)
    outcome = run_job(_spec(run, retries=2), None)
    assert len(calls) == 3
    assert outcome.status == "failed" and "SIGTERM" in outcome.error


def test_a_stale_failure_record_is_replaced_by_the_new_one(tmp_path, monkeypatch):
    run = _run_dir(tmp_path)
    entry = run.model_dir("paper_cnn")
    atomic_write_json(entry / "metrics.json", {"status": "failed", "error": "old error"})
    old = time.time() - 3600
    os.utime(entry / "metrics.json", (old, old))
    monkeypatch.setattr(jobs, "run_worker", lambda *a, **k: 1)
    outcome = run_job(_spec(run), None)
    assert outcome.error == "the worker exited with code 1 (see train.log)"


def test_the_workers_own_nan_record_is_kept(tmp_path, monkeypatch):
    run = _run_dir(tmp_path)

    def nan_worker(run_dir, name, batch_size, **kwargs):
        atomic_write_json(run.model_dir(name) / "metrics.json",
                          {"status": "nan", "error": "loss became nan in epoch 2"})
        return 4

    monkeypatch.setattr(jobs, "run_worker", nan_worker)
    outcome = run_job(_spec(run), None)
    assert (outcome.status, outcome.error) == ("nan", "loss became nan in epoch 2")


def test_exit_zero_without_predictions_is_a_failure(tmp_path, monkeypatch):
    run = _run_dir(tmp_path)
    monkeypatch.setattr(jobs, "run_worker", lambda *a, **k: 0)
    outcome = run_job(_spec(run), None)
    assert outcome.status == "failed"
    assert "without writing its predictions" in outcome.error


def test_summary_line_names_time_accuracy_and_status():
    line = EntryOutcome("xception", "ok", seconds=12.34, best_val_balanced_accuracy=0.8123,
                        batch_size=16).summary_line()
    assert line == "xception: ok  12.3 s  best val balanced accuracy 0.812  batch 16"
    failed = EntryOutcome("nasnet_large", "failed", error="boom").summary_line()
    assert failed == "nasnet_large: failed  - boom"


# --------------------------------------------------------------------------- resume


def test_an_interrupted_entry_continues_at_the_batch_size_of_its_saved_state(
        tmp_path, monkeypatch):
    run = _run_dir(tmp_path)
    atomic_write_json(run.model_dir("paper_cnn") / "state" / "progress.json",
                      {"batch_size": 8, "global_epoch": 1})
    tried = []

    def fake_worker(run_dir, name, batch_size, **kwargs):
        tried.append(batch_size)
        _write_ok_entry(run.model_dir(name), batch_size=batch_size)
        return 0

    monkeypatch.setattr(jobs, "run_worker", fake_worker)
    assert run_job(_spec(run), None).batch_size == 8
    assert tried == [8]


@pytest.mark.parametrize("saved, expected", [(64, 32), (2, 32), ("x", 32), (16, 16)])
def test_saved_batch_sizes_outside_the_floor_and_the_configured_size_are_ignored(
        tmp_path, saved, expected):
    entry = tmp_path / "e"
    atomic_write_json(entry / "state" / "progress.json", {"batch_size": saved})
    assert _resume_batch_size(entry, 32, 4) == expected
    assert _resume_batch_size(tmp_path / "absent", 32, 4) == 32
