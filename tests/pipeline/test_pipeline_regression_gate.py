"""The regression gate (README: "Regression gate"): the shared deterministic smoke run
(`trained_smoke_run`, tests/conftest.py SMOKE_RUN_ARGS) checked against the committed baseline
tests/baselines/smoke_gate.json with the real CLI, as a user runs `--check`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from core.atomic import read_json

REPO = Path(__file__).resolve().parents[2]
BASELINE = REPO / "tests" / "baselines" / "smoke_gate.json"


def test_the_smoke_run_passes_the_regression_gate(trained_smoke_run):
    proc = subprocess.run([sys.executable, str(REPO / "benchmark.py"), "--check", str(BASELINE),
                           "--out", str(trained_smoke_run)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    total = len(read_json(BASELINE)["metrics"])
    assert f"check passed: {total} metrics" in proc.stdout


def test_the_gate_fails_a_run_that_got_worse(trained_smoke_run, copy_run, tmp_path):
    """The gate can fail: a baseline whose numbers are better than the run's by more than
    their tolerance is reported metric by metric, with exit code 1."""
    import json

    baseline = read_json(BASELINE)
    worse = {key: float(value) + 0.5 for key, value in baseline["metrics"].items()}
    path = tmp_path / "better_baseline.json"
    path.write_text(json.dumps({**baseline, "metrics": worse}))
    proc = subprocess.run([sys.executable, str(REPO / "benchmark.py"), "--check", str(path),
                           "--out", str(trained_smoke_run)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "check FAILED" in proc.stdout
