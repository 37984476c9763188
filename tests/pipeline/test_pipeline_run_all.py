"""`--all` (pipeline.run_all) end to end with a stand-in worker: data preparation, per-entry
outcomes, ensembles, results.csv, report, refusals and --force-new (the real worker is exercised by
the e2e tests)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark import build_parser
from core.atomic import atomic_write_json, read_json
from core.entry_metrics import write_entry_metrics
from core.errors import RunDirError
from core.rundir import RunDir
from pipeline import all_action
from pipeline.run_all import run_all
from training import jobs
from training.entries import entry_kind

N_IMAGES = "80"


def _args(out: Path, *extra: str):
    return build_parser().parse_args(
        ["--all", "--preset", "smoke", "--synthetic-images", N_IMAGES, "--bootstrap", "20",
         "--out", str(out), *extra])


def _ok(write_predictions_of):
    """What a successful worker leaves behind: history, predictions, metrics."""
    def ok(run_dir: Path, name: str, batch_size: int) -> int:
        run = RunDir(run_dir)
        entry = run.model_dir(name)
        write_predictions_of(run_dir, name, np.random.default_rng(len(name)), 0.1, 1.0)
        pd.DataFrame([{"epoch": 1, "phase": "scratch", "val_balanced_accuracy": 0.9}]).to_csv(
            entry / "history.csv", index=False)
        write_entry_metrics(entry, n_resamples=20, extra={
            "status": "ok", "train_seconds": 2.0, "batch_size": batch_size,
            "kind": entry_kind(name), "fingerprint": read_json(run.run_json)["fingerprint"]})
        return 0
    return ok


def _nan(run_dir: Path, name: str, batch_size: int) -> int:
    atomic_write_json(RunDir(run_dir).model_dir(name) / "metrics.json",
                      {"status": "nan", "error": "loss became nan", "batch_size": batch_size,
                       "kind": entry_kind(name)})
    return 4


@pytest.fixture()
def workers(monkeypatch, stand_in_predictions):
    """behaviour[name] -> callable(run_dir, name, batch) -> exit code; records the calls."""
    behaviour: dict = {}
    calls: list[str] = []
    ok = _ok(stand_in_predictions)

    def fake_run_worker(run_dir, name, batch_size, **kwargs):
        calls.append(name)
        return behaviour.get(name, ok)(run_dir, name, batch_size)

    monkeypatch.setattr(jobs, "run_worker", fake_run_worker)
    return behaviour, calls


# Training outputs keep their bytes and mtimes; metrics.json may be rewritten with the same
# bytes when the report is rebuilt (reports.build recomputes every entry's metrics).
REWRITTEN_SAME = ("metrics.json",)


@pytest.fixture()
def fast_report(monkeypatch):
    """The real report takes ~10 s of figures; tests about the flow only need to see it called
    (test_a_failed_entry_... and the e2e tests build the real one)."""
    import reports.build

    calls: list[Path] = []

    def record(run_dir, **kwargs):
        calls.append(Path(run_dir))
        path = RunDir(run_dir).report_md
        path.write_text("report\n")
        return path

    monkeypatch.setattr(reports.build, "build_report", record)
    return calls


def _snapshot(root: Path) -> dict[str, tuple[bytes, int | None]]:
    return {str(p.relative_to(root)): (
        p.read_bytes(), None if p.name in REWRITTEN_SAME else p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_failed_entry_is_recorded_the_others_go_on_and_ensembles_are_built(
        tmp_path, workers, capsys, caplog):
    behaviour, calls = workers
    behaviour["paper_cnn"] = lambda *a: 1  # dies without recording anything
    out = tmp_path / "run"
    with caplog.at_level(logging.INFO):
        code = all_action.run_all_action(_args(out, "--models", "paper_cnn", "inception_v3",
                                               "xception"))
    assert code == 1
    assert calls == ["paper_cnn", "inception_v3", "xception"]
    captured = capsys.readouterr()
    assert "failed: paper_cnn (failed: the worker exited with code 1" in captured.err
    # the time is the entry's wall time as the runner measured it, not metrics.json's
    assert re.search(r"\[2/3\] inception_v3: ok  \d+\.\d s  best val balanced accuracy",
                     captured.out)

    run = RunDir(out)
    metrics = read_json(run.model_dir("paper_cnn") / "metrics.json")
    assert metrics["status"] == "failed" and "code 1" in metrics["error"]
    results = pd.read_csv(run.results_csv)
    status = results.drop_duplicates("entry").set_index("entry")["status"]
    assert status["paper_cnn"] == "failed"
    assert status["inception_v3"] == "ok" and status["xception"] == "ok"
    assert run.ensemble_names()  # two backbones finished: the ensembles exist
    assert run.report_md.is_file()
    meta = read_json(run.run_json)
    assert meta["config"]["entries"] == ["paper_cnn", "inception_v3", "xception"]
    assert len(meta["fingerprint"]) == 64 and meta["signatures"]["splits_sha256"]
    assert {"tensorflow", "keras", "numpy"} <= set(meta["versions"])
    assert meta["command"] and meta["created"] and meta["seeds"]["split"] == 0
    assert (out / "dataset.json").is_file()
    assert "[2/3] inception_v3" in run.train_log.read_text()



def test_a_rerun_retries_only_the_failed_entry(tmp_path, workers, fast_report):
    behaviour, calls = workers
    behaviour["paper_cnn"] = lambda *a: 1
    out = tmp_path / "run"
    args = ("--models", "paper_cnn", "inception_v3")
    assert all_action.run_all_action(_args(out, *args)) == 1
    calls.clear()
    behaviour.pop("paper_cnn")
    run = RunDir(out)
    finished = _snapshot(run.model_dir("inception_v3"))
    assert all_action.run_all_action(_args(out, *args)) == 0
    assert calls == ["paper_cnn"]
    assert _snapshot(run.model_dir("inception_v3")) == finished
    assert read_json(run.model_dir("paper_cnn") / "metrics.json")["status"] == "ok"
    assert len(read_json(run.run_json)["invocations"]) == 2
    assert len(fast_report) == 2  # the report is rebuilt because paper_cnn changed


def test_a_nan_entry_is_recorded_and_the_next_entry_still_trains(tmp_path, workers, caplog,
                                                                  fast_report):
    behaviour, calls = workers
    behaviour["inception_v3"] = _nan
    with caplog.at_level(logging.INFO):
        outcome = run_all(_args(tmp_path / "run", "--models", "inception_v3", "paper_cnn"))
    assert calls == ["inception_v3", "paper_cnn"]
    assert [(e.name, e.status) for e in outcome.entries] == [("inception_v3", "nan"),
                                                              ("paper_cnn", "ok")]
    assert outcome.failures == ["inception_v3 (nan: loss became nan)"]
    assert "ensembles skipped: they need at least two finished backbones" in caplog.text
    assert outcome.results_csv is not None and outcome.report is not None


def test_a_rerun_of_a_finished_run_changes_nothing(tmp_path, workers, fast_report, caplog):
    caplog.set_level(logging.INFO)
    _, calls = workers
    out = tmp_path / "run"
    assert all_action.run_all_action(_args(out, "--models", "paper_cnn")) == 0
    before = _snapshot(out)
    calls.clear()
    assert all_action.run_all_action(_args(out, "--models", "paper_cnn")) == 0
    assert calls == []
    after = _snapshot(out)
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert changed == {"run.json", "train.log", ".lock"}
    assert len(fast_report) == 1


def test_adding_models_resumes_the_same_run_directory(tmp_path, workers, fast_report):
    _, calls = workers
    out = tmp_path / "run"
    assert all_action.run_all_action(_args(out, "--models", "paper_cnn")) == 0
    fingerprint = read_json(RunDir(out).run_json)["fingerprint"]
    calls.clear()
    assert all_action.run_all_action(_args(out, "--models", "xception", "paper_cnn")) == 0
    assert calls == ["xception"]
    meta = read_json(RunDir(out).run_json)
    assert meta["fingerprint"] == fingerprint
    assert meta["config"]["entries"] == ["paper_cnn", "xception"]


def test_another_protocol_is_refused_and_force_new_uses_a_sibling(tmp_path, workers,
                                                                 fast_report):
    out = tmp_path / "run"
    assert all_action.run_all_action(_args(out, "--models", "paper_cnn")) == 0
    before = _snapshot(out)
    with pytest.raises(RunDirError) as info:
        run_all(_args(out, "--models", "paper_cnn", "--seed", "3", "--epochs", "2"))
    message = str(info.value)
    assert "seed: 0 -> 3" in message
    assert "training.phase1_epochs: 1 -> 2" in message
    assert "--force-new" in message
    assert _snapshot(out) == before

    outcome = run_all(_args(out, "--models", "paper_cnn", "--seed", "3", "--force-new"))
    assert outcome.run_dir == tmp_path / "run-2"
    assert read_json(RunDir(tmp_path / "run-2").run_json)["config"]["seed"] == 3
    assert _snapshot(out) == before
    # The same --force-new command again resumes run-2 instead of starting run-3.
    again = run_all(_args(out, "--models", "paper_cnn", "--seed", "3", "--force-new"))
    assert again.run_dir == tmp_path / "run-2"
    assert not (tmp_path / "run-3").exists()
    assert again.entries[0].skipped


def test_an_error_in_the_report_is_recorded_after_the_models_are_safe(
        tmp_path, workers, monkeypatch):
    import reports.build

    def broken(run_dir, **kwargs):
        raise ValueError("'xerr' must not contain negative values")

    monkeypatch.setattr(reports.build, "build_report", broken)
    outcome = run_all(_args(tmp_path / "run", "--models", "paper_cnn"))
    assert outcome.entries[0].ok
    assert outcome.results_csv is not None and outcome.report is None
    assert outcome.failures == [
        "report (ValueError: 'xerr' must not contain negative values; traceback in train.log)"]
