"""`--all` on a grid with a stand-in worker: one ensemble member set for the whole grid, stale
replicates refit, current ones untouched, and the reference handed to the report."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from benchmark import build_parser
from core.atomic import atomic_write_json, read_json
from core.entry_metrics import write_entry_metrics
from core.rundir import RunDir
from pipeline.run_all import run_all
from training import jobs

MODELS = ("xception", "inception_v3", "resnext101")
REPLICATES = ("fold0-seed0", "fold0-seed1", "fold1-seed0", "fold1-seed1")


def _args(out: Path, *extra: str):
    return build_parser().parse_args(
        ["--all", "--preset", "smoke", "--synthetic-images", "100", "--bootstrap", "20",
         "--seeds", "0,1", "--folds", "2", "--models", *MODELS, "--out", str(out), *extra])


def _worker(failing: set[tuple[str, str]], write_predictions_of):
    """A stand-in for the training worker: predictions and metrics.json, or a failure."""
    def run_worker(run_dir, name, batch_size, **kwargs):
        run = RunDir(run_dir)
        if (run.root.name, name) in failing:
            write_entry_metrics(run.model_dir(name), extra={"status": "failed",
                                                            "error": "CUDA out of memory"})
            return 1
        rng = np.random.default_rng(abs(hash((run.root.name, name))) % 2**32)
        write_predictions_of(run_dir, name, rng, 1.0, 1.0)
        write_entry_metrics(run.model_dir(name), n_resamples=20, extra={
            "status": "ok", "train_seconds": 1.0, "batch_size": batch_size})
        return 0
    return run_worker


@pytest.fixture
def reports_called(monkeypatch):
    import reports.build

    calls = []

    def record(run_dir, **kwargs):
        calls.append(kwargs)
        run = RunDir(run_dir)
        run.report_md.write_text("report\n")
        run.results_csv.write_text("entry\n")
        return run.report_md

    monkeypatch.setattr(reports.build, "build_report", record)
    return calls


def _ensemble_files(run: RunDir) -> dict[str, int]:
    return {str(p.relative_to(run.root)): p.stat().st_mtime_ns
            for p in sorted(run.replicates_dir.glob("*/ensembles/*/*")) if p.is_file()}


def _members(run: RunDir) -> dict[str, tuple[list[str], str]]:
    fits = {name: read_json(run.root / "replicates" / name / "ensembles" / "stacking" / "fit.json")
            for name in REPLICATES}
    return {name: (fit["members"], fit["fit_split"]) for name, fit in fits.items()}


def test_one_member_set_for_the_grid_and_stale_replicates_refit(
        tmp_path, monkeypatch, reports_called, caplog, stand_in_predictions):
    failing = {("fold1-seed1", "resnext101")}
    monkeypatch.setattr(jobs, "run_worker", _worker(failing, stand_in_predictions))
    out = tmp_path / "grid"
    run = RunDir(out)
    with caplog.at_level(logging.INFO):
        outcome = run_all(_args(out, "--reference", "xception"))
    # resnext101 failed in one replicate: left out of every replicate's ensembles
    assert "resnext101 is not finished in fold1-seed1; it is left out" in caplog.text
    assert _members(run) == dict.fromkeys(REPLICATES, (["inception_v3", "xception"], "oof"))
    assert outcome.ensembles == ["hard_voting", "soft_voting", "stacking", "weighted_voting"]
    assert [call["reference"] for call in reports_called] == ["xception"]

    # the rerun trains it: every replicate is refit with the three members
    failing.clear()
    run_all(_args(out))
    assert _members(run) == dict.fromkeys(
        REPLICATES, (["inception_v3", "resnext101", "xception"], "oof"))
    assert [call["reference"] for call in reports_called] == ["xception", "inception_resnet_v2"]

    # nothing new: every ensemble and the report are kept
    before = _ensemble_files(run)
    run_all(_args(out))
    assert _ensemble_files(run) == before and len(reports_called) == 2

    # one replicate's stacking fit without out-of-fold predictions (as before they existed):
    # only that replicate is refit, and the report is rebuilt
    stale = run.root / "replicates" / "fold0-seed1" / "ensembles" / "stacking" / "fit.json"
    record = read_json(stale)
    for files in record["member_files"].values():
        files.pop("oof")
    atomic_write_json(stale, {**record, "fit_split": "val"})
    caplog.clear()
    with caplog.at_level(logging.INFO):
        run_all(_args(out))
    assert "fold0-seed1/stacking is (re)fit: fit with inception_v3's test, val predictions" \
        in caplog.text
    after = _ensemble_files(run)
    changed = {path for path in after if after[path] != before[path]}
    assert changed and all(path.startswith("replicates/fold0-seed1/") for path in changed)
    assert _members(run)["fold0-seed1"] == (["inception_v3", "resnext101", "xception"], "oof")
    assert len(reports_called) == 3
