"""Registering a backbone in the zoo is the only step needed to train, ensemble and report it.

Two tiny backbones live in a module outside the package (tests/plugins/), registered through
$DERMBENCH_BACKBONES, and go through the real CLI (`benchmark.py --all --preset smoke`, real
worker subprocesses) beside paper_cnn.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from core.atomic import read_json
from core.rundir import RunDir

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TINY = ("tiny_plugin_a", "tiny_plugin_b")  # tests/plugins/dermbench_tiny_backbones.py


@pytest.fixture(scope="module")
def plugin_run(tmp_path_factory, tiny_backbones_env) -> Path:
    root = tmp_path_factory.mktemp("plugin")
    out = root / "run"
    env = {**os.environ, **tiny_backbones_env}
    command = [sys.executable, str(REPO / "benchmark.py"), "--all", "--preset", "smoke",
               "--models", *TINY, "paper_cnn", "--synthetic-images", "100", "--epochs", "1",
               "--bootstrap", "20", "--out", str(out)]
    proc = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def test_a_registered_backbone_is_trained_as_an_entry_of_kind_backbone(plugin_run):
    run = RunDir(plugin_run)
    for name in TINY:
        folder = run.model_dir(name)
        for split in ("val", "test"):
            assert RunDir.predictions_file(folder, split).is_file(), (name, split)
        metrics = read_json(folder / "metrics.json")
        assert metrics["status"] == "ok" and metrics["kind"] == "backbone", metrics.get("error")
        assert metrics["image_size"] == 32 and metrics["phases"] == ["frozen", "finetune"]
    assert read_json(run.model_dir("paper_cnn") / "metrics.json")["kind"] == "baseline"
    assert read_json(run.run_json)["config"]["entries"] == [*TINY, "paper_cnn"]


def test_it_is_an_ensemble_member_by_default_and_in_the_results_and_report(plugin_run):
    run = RunDir(plugin_run)
    fit = read_json(run.ensemble_dir("soft_voting") / "fit.json")
    assert fit["members"] == list(TINY)  # the backbones, not the paper_cnn baseline
    results = pd.read_csv(run.results_csv)
    rows = results[results["entry"].isin(TINY)]
    assert set(rows["entry"]) == set(TINY) and set(rows["kind"]) == {"backbone"}
    report = run.report_md.read_text(encoding="utf-8")
    for name in TINY:
        assert name in report
