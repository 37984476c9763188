"""Registering a backbone in the zoo is the only step needed to train, ensemble and report it.

Two tiny backbones live in a module outside the package (in tmp_path), registered through
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
MODULE = "tiny_plugin_backbones"
TINY = ("tiny_plugin_a", "tiny_plugin_b")
SOURCE = '''
"""Two tiny backbones registered from outside dermbench (a test plug-in)."""

import zoo


def _base(filters):
    def build(input_shape):
        import keras  # inside the builder: `import zoo` stays free of Keras

        inputs = keras.Input(input_shape)
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu")(inputs)
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu")(x)
        return keras.Model(inputs, x, name="backbone")

    return build


for name, filters in (("tiny_plugin_a", 8), ("tiny_plugin_b", 12)):
    zoo.register(
        zoo.BackboneConfig(
            name=name, display_name=name, input_size=64, min_size=32, preprocessing="unit",
            weights_url=None, weights_file=None, weights_hash=None, hash_algorithm=None,
            weights_format=None, params_1000=0, paper="a test plug-in", licence="test",
            pretrained=True),
        zoo.Builder(base=_base(filters)))
'''


@pytest.fixture(scope="module")
def plugin_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("plugin")
    (root / f"{MODULE}.py").write_text(SOURCE, encoding="utf-8")
    out = root / "run"
    env = {**os.environ, "DERMBENCH_BACKBONES": MODULE,
           "PYTHONPATH": os.pathsep.join([str(root), str(REPO), os.environ.get("PYTHONPATH", "")])}
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
