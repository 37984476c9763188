"""A real 2-fold smoke grid under the JAX backend through `python benchmark.py --all --executor ray`
(the README's test command's JAX grid): a local Ray instance (this machine's 2 CPUs, loopback
only) runs every job as a Ray task, Xception (a Keras application) beside a tiny plug-in backbone
(tests/plugins); one Xception job's worker is killed mid-run and the job is restarted and resumes
from its last finished epoch; the grid's ensembles and report follow. The 2 x 2 grid of the
local executor, with every grid output checked, is tests/training/test_training_grid_e2e.py."""

from __future__ import annotations

import contextlib
import os
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
pytest.importorskip("ray", reason="the Ray executor needs the optional extra: "
                                  "pip install 'dermbench[ray]'")
pytest.importorskip("jax", reason="the JAX backend needs the optional extra: "
                                  "pip install 'dermbench[jax]'")

REPO = Path(__file__).resolve().parents[2]
MODELS = ("xception", "tiny_plugin_a")
GRID = ["--all", "--preset", "smoke", "--synthetic-images", "100", "--epochs", "1",
        "--bootstrap", "50", "--models", *MODELS, "--seeds", "0", "--folds", "2",
        "--executor", "ray"]
VICTIM = ("fold1-seed0", "xception")


def _worker_pids(marker: str) -> list[int]:
    pids = []
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (proc_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            if "training.worker" in cmdline and marker in cmdline:
                pids.append(int(proc_dir.name))
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the worker in /proc")
def test_ray_grid_runs_every_job_and_a_killed_job_resumes(tmp_path, tiny_backbones_env):
    out = tmp_path / "run"
    run = RunDir(out)
    victim = run.replicates_dir / VICTIM[0] / "models" / VICTIM[1]
    log = tmp_path / "bench.log"
    env = {**os.environ, **tiny_backbones_env, "RAY_DEDUP_LOGS": "0", "KERAS_BACKEND": "jax"}
    with open(log, "w") as sink:
        proc = subprocess.Popen([sys.executable, str(REPO / "benchmark.py"), *GRID, "--out",
                                 str(out)], cwd=tmp_path, stdout=sink, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
    try:
        progress = victim / "state" / "progress.json"
        deadline = time.monotonic() + 600
        while not progress.is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert progress.is_file(), log.read_text()[-4000:]
        pids = _worker_pids(f"{VICTIM[0]} --entry {VICTIM[1]}")
        assert pids, "the victim's worker is not running"
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        code = proc.wait(timeout=900)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    output = log.read_text()
    assert code == 0, output[-4000:]

    assert [r.root.name for _, _, r in run.replicates()] == ["fold0-seed0", "fold1-seed0"]
    for _, _, replicate in run.replicates():
        for model in MODELS:
            metrics = read_json(replicate.model_dir(model) / "metrics.json")
            assert metrics["status"] == "ok", (replicate.root, model, metrics.get("error"))
    metrics = read_json(victim / "metrics.json")
    assert metrics["restarts"] == 1
    job_log = (victim / "train.log").read_text()
    assert "exited with code -9" in job_log
    assert "xception: resuming after epoch" in job_log
    history = pd.read_csv(victim / "history.csv")
    assert len(history) == 2  # one epoch per phase, each counted once
    assert "killed by signal SIGKILL; restarting it (1 of 1)" in job_log
    assert run.report_md.is_file() and run.jobs_csv.is_file()
    assert read_json(run.run_json)["config"].get("backend") == "jax"
    for _, _, replicate in run.replicates():
        assert {"soft_voting", "stacking"} <= set(replicate.ensemble_names()), replicate.root
