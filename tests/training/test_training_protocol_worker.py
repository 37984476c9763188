"""The worker's contract: exit codes 0/1/3/4 and metrics.json in every case.

Most cases call `training.worker.main` in-process (same code path as the subprocess, without
the TensorFlow import per test); one test runs the real `python -m training.worker`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.atomic import atomic_write_json, read_json
from core.predictions import read_predictions
from data_utils.prepare import prepare
from training import presets, worker
from training.callbacks import SIMULATE_NAN_ENV
from training.out_of_memory import SIMULATE_OOM_ENV
from training.settings import RunConfig

N_IMAGES = 42
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def rundir(tmp_path_factory) -> Path:
    """A prepared run directory on a tiny synthetic set, paper_cnn at 64 px for 1 epoch."""
    out = tmp_path_factory.mktemp("worker") / "run"
    data_dir = Path(os.environ["DERMBENCH_CACHE"]) / f"training-synth-{N_IMAGES}"
    prepared = prepare("synthetic", data_dir, out, synthetic_images=N_IMAGES, image_sizes=(),
                       ratios=(0.6, 0.2, 0.2), seed=0)
    resolved = presets.resolve_preset("smoke", ["paper_cnn"], epochs=1, batch_size=8)
    keys = ("dataset", "data_dir", "split", "ratios", "folds", "seed", "test_set",
            "allow_missing", "synthetic_images")
    config = RunConfig(preset="smoke", entries=("paper_cnn",), training=resolved.training,
                       svm=resolved.svm).to_dict()
    config.update({k: prepared.card[k] for k in keys})  # the prepared data, as run.json has it
    atomic_write_json(out / "run.json", {"config": config, "fingerprint": "fp-worker"})
    return out


def _fresh(rundir: Path, tmp_path: Path, **training) -> Path:
    """A copy of the run directory (run.json + splits.csv) with training overrides."""
    meta = read_json(rundir / "run.json")
    meta["config"]["training"].update(training)
    atomic_write_json(tmp_path / "run.json", meta)
    (tmp_path / "splits.csv").write_bytes((rundir / "splits.csv").read_bytes())
    return tmp_path


def test_worker_trains_an_entry(rundir, tmp_path):
    out = _fresh(rundir, tmp_path)
    assert worker.main(["--out", str(out), "--entry", "paper_cnn", "--verbose", "0"]) == 0
    entry = out / "models" / "paper_cnn"
    metrics = read_json(entry / "metrics.json")
    assert metrics["status"] == "ok" and metrics["fingerprint"] == "fp-worker"
    assert metrics["batch_size"] == 8 and metrics["image_size"] == 64
    read_predictions(entry / "predictions_test.csv")
    log = (out / "train.log").read_text()
    assert "paper_cnn: ok in" in log and "best val balanced accuracy" in log


def test_worker_nan_exits_4(rundir, tmp_path, monkeypatch):
    out = _fresh(rundir, tmp_path)
    monkeypatch.setenv(SIMULATE_NAN_ENV, "1")
    assert worker.main(["--out", str(out), "--entry", "paper_cnn", "--verbose", "0"]) == 4
    metrics = read_json(out / "models" / "paper_cnn" / "metrics.json")
    assert metrics["status"] == "nan" and "NaN" in metrics["error"]
    assert not (out / "models" / "paper_cnn" / "predictions_test.csv").exists()


def test_worker_out_of_memory_exits_3(rundir, tmp_path, monkeypatch):
    out = _fresh(rundir, tmp_path)
    monkeypatch.setenv(SIMULATE_OOM_ENV, "4")
    code = worker.main(["--out", str(out), "--entry", "paper_cnn", "--batch-size", "8",
                        "--verbose", "0"])
    assert code == 3
    metrics = read_json(out / "models" / "paper_cnn" / "metrics.json")
    assert metrics["status"] == "failed" and metrics["batch_size"] == 8
    assert "out of memory" in metrics["error"]


def test_worker_failure_exits_1_and_records_the_error(rundir, tmp_path):
    out = _fresh(rundir, tmp_path, optimizer="sgd")
    assert worker.main(["--out", str(out), "--entry", "paper_cnn", "--verbose", "0"]) == 1
    metrics = read_json(out / "models" / "paper_cnn" / "metrics.json")
    assert metrics["status"] == "failed" and "'sgd'" in metrics["error"]
    assert metrics["fingerprint"] == "fp-worker" and metrics["kind"] == "baseline"
    assert "paper_cnn: failed" in (out / "train.log").read_text()


def test_worker_subprocess_entry_point(rundir, tmp_path):
    """The real `python -m training.worker`: an entry missing from the config fails with 1."""
    meta = read_json(rundir / "run.json")
    del meta["config"]["training"]["image_size"]["paper_cnn"]
    atomic_write_json(tmp_path / "run.json", meta)
    (tmp_path / "splits.csv").write_bytes((rundir / "splits.csv").read_bytes())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-m", "training.worker", "--out", str(tmp_path), "--entry", "paper_cnn"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    metrics = read_json(tmp_path / "models" / "paper_cnn" / "metrics.json")
    assert metrics["status"] == "failed" and "image_size" in metrics["error"]


def test_a_config_of_another_version_fails_naming_run_json_and_the_key(rundir, tmp_path):
    meta = read_json(rundir / "run.json")
    meta["config"]["training"]["warmup"] = 2
    atomic_write_json(tmp_path / "run.json", meta)
    (tmp_path / "splits.csv").write_bytes((rundir / "splits.csv").read_bytes())
    assert worker.main(["--out", str(tmp_path), "--entry", "paper_cnn", "--verbose", "0"]) == 1
    metrics = read_json(tmp_path / "models" / "paper_cnn" / "metrics.json")
    assert metrics["status"] == "failed" and "run.json" in metrics["error"]
    assert "'training.warmup'" in metrics["error"] and metrics["kind"] == "baseline"
