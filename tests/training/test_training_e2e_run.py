"""`python benchmark.py --all` for real (subprocesses, the real worker) on small synthetic data:
outputs, skipping finished work, SIGKILL + resume, protocol refusal, --force-new, simulated
out-of-memory, a failing entry and a NaN loss."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from core.atomic import read_json
from core.rundir import RunDir

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
COMMON = ["--all", "--preset", "smoke", "--synthetic-images", "100", "--epochs", "1",
          "--bootstrap", "50"]
ENTRY_FILES = ("history.csv", "predictions_val.csv", "predictions_test.csv", "metrics.json")


def _command(out: Path, *extra: str) -> list[str]:
    return [sys.executable, str(REPO / "benchmark.py"), *COMMON, "--out", str(out), *extra]


def _bench(out: Path, *extra: str, env: dict | None = None, timeout: float = 500):
    return subprocess.run(_command(out, *extra), cwd=out.parent, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def _snapshot(root: Path, same_bytes: tuple[str, ...] = ()) -> dict[str, tuple[bytes, int | None]]:
    """Bytes and mtimes of every file; for names in `same_bytes` only the bytes."""
    return {str(p.relative_to(root)): (
        p.read_bytes(), None if p.name in same_bytes else p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*")) if p.is_file()}


# Rebuilding the report recomputes every entry's metrics.json (same bytes); the training outputs
# (weights, history, predictions) keep their mtimes too.
REPORT_REWRITES = ("metrics.json",)


def _copy(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)  # copy2 keeps the mtimes
    return copy


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """One finished smoke run with paper_cnn (the other tests copy it)."""
    out = tmp_path_factory.mktemp("e2e") / "base"
    proc = _bench(out, "--models", "paper_cnn")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc


def test_a_smoke_run_writes_the_run_directory_contract(base_run):
    out, proc = base_run
    run = RunDir(out)
    for path in (run.run_json, run.dataset_json, run.splits_csv, run.results_csv, run.report_md,
                 run.train_log):
        assert path.is_file(), path
    for name in ENTRY_FILES:
        assert (run.model_dir("paper_cnn") / name).is_file(), name
    metrics = read_json(run.model_dir("paper_cnn") / "metrics.json")
    meta = read_json(run.run_json)
    assert metrics["status"] == "ok"
    assert metrics["fingerprint"] == meta["fingerprint"]
    assert metrics["batch_size"] == 32
    assert "balanced_accuracy" in metrics["test"]
    history = pd.read_csv(run.model_dir("paper_cnn") / "history.csv")
    assert list(history.columns[:2]) == ["epoch", "phase"] and len(history) == 1
    results = pd.read_csv(run.results_csv)
    assert set(results["entry"]) == {"paper_cnn"} and set(results["status"]) == {"ok"}
    assert "paper_cnn: ok" in proc.stdout and "best val balanced accuracy" in proc.stdout
    log = run.train_log.read_text()
    assert "[1/1] paper_cnn" in log and "-m training.worker" in log


def test_a_rerun_skips_finished_entries_and_touches_nothing(base_run, tmp_path):
    out = _copy(base_run[0], tmp_path)
    before = _snapshot(out)
    proc = _bench(out, "--models", "paper_cnn")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "finished earlier, not retrained" in proc.stdout
    after = _snapshot(out)
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert changed == {"run.json", "train.log", ".lock"}


def _worker_processes(marker: str) -> list[int]:
    pids = []
    for proc_dir in Path("/proc").iterdir():
        if proc_dir.name.isdigit():
            try:
                cmdline = (proc_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "training.worker" in cmdline and marker in cmdline:
                pids.append(int(proc_dir.name))
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and PDEATHSIG")
def test_sigkill_mid_entry_then_the_same_command_resumes(base_run, tmp_path):
    out = _copy(base_run[0], tmp_path)
    run = RunDir(out)
    finished = _snapshot(run.model_dir("paper_cnn"), REPORT_REWRITES)
    progress = run.model_dir("xception") / "state" / "progress.json"
    command = _command(out, "--models", "paper_cnn", "xception")
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen(command, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 400
        while not progress.is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert progress.is_file(), (tmp_path / "first.log").read_text()[-3000:]
        # Kill the runner only: its worker must die with it (no orphan racing the rerun).
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 20
        while _worker_processes(str(out)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _worker_processes(str(out)), "the worker outlived the killed runner"
    finally:
        with contextlib.suppress(ProcessLookupError):  # safety net; zombies may linger in it
            os.killpg(proc.pid, signal.SIGKILL)
    epochs_done = read_json(progress)["global_epoch"]
    assert epochs_done >= 1
    assert not (run.model_dir("xception") / "predictions_test.csv").exists()
    history_before = pd.read_csv(run.model_dir("xception") / "history.csv")

    rerun = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=500)
    output = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, output[-3000:]
    # the worker's lines are in the logs (the console shows them only with -v)
    assert f"xception: resuming after epoch {epochs_done}" in (
        run.model_dir("xception") / "train.log").read_text()
    assert _snapshot(run.model_dir("paper_cnn"), REPORT_REWRITES) == finished
    history = pd.read_csv(run.model_dir("xception") / "history.csv")
    assert len(history) == 2  # one epoch per phase, counted once
    pd.testing.assert_frame_equal(history.iloc[:len(history_before)], history_before)
    metrics = read_json(run.model_dir("xception") / "metrics.json")
    assert metrics["status"] == "ok"
    assert (run.model_dir("xception") / "predictions_test.csv").is_file()


def test_another_protocol_is_refused_and_force_new_runs_beside_it(base_run, tmp_path,
                                                                tiny_backbones_env):
    out = _copy(base_run[0], tmp_path)
    before = _snapshot(out)
    for extra, named in ((["--seed", "1"], "seed: 0 -> 1"),
                         (["--epochs", "2"], "training.phase1_epochs: 1 -> 2")):
        proc = subprocess.run([*_command(out, "--models", "paper_cnn"), *extra], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert named in proc.stderr and "--force-new" in proc.stderr
        assert "Traceback" not in proc.stderr
    assert _snapshot(out) == before

    # --force-new: a sibling directory; a failing entry (unreadable weights) does not stop the
    # next one, which runs out of memory (simulated) at batch 16 and succeeds at 8.
    bad = tmp_path / "bad.weights.h5"
    bad.write_bytes(b"not an HDF5 file")
    # (the failing backbone is a tiny plug-in: a Keras application fails the same way, slower)
    proc = _bench(out, "--seed", "1", "--force-new", "--weights", str(bad), "--batch-size", "16",
                  "--models", "tiny_plugin_a", "paper_cnn",
                  env={"DERMBENCH_SIMULATE_OOM_ABOVE_BATCH": "8", **tiny_backbones_env})
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "failed: tiny_plugin_a (failed" in proc.stderr
    assert _snapshot(out) == before
    new = RunDir(tmp_path / "run-2")
    assert read_json(new.run_json)["config"]["seed"] == 1
    failed = read_json(new.model_dir("tiny_plugin_a") / "metrics.json")
    assert failed["status"] == "failed" and failed["error"]
    ok = read_json(new.model_dir("paper_cnn") / "metrics.json")
    assert ok["status"] == "ok" and ok["batch_size"] == 8
    assert "retrying with batch size 8" in new.train_log.read_text()
    results = pd.read_csv(new.results_csv).drop_duplicates("entry").set_index("entry")
    assert results.loc["tiny_plugin_a", "status"] == "failed"
    assert results.loc["paper_cnn", "status"] == "ok"


def test_a_nan_loss_is_recorded_as_nan(tmp_path):
    out = tmp_path / "nan"
    proc = _bench(out, "--models", "paper_cnn", env={"DERMBENCH_SIMULATE_NAN": "1"})
    assert proc.returncode == 1
    assert "failed: paper_cnn (nan" in proc.stderr
    run = RunDir(out)
    assert read_json(run.model_dir("paper_cnn") / "metrics.json")["status"] == "nan"
    assert pd.read_csv(run.results_csv, keep_default_na=False)["status"].tolist()[0] == "nan"
