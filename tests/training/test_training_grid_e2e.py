"""A real 2-fold x 2-seed smoke grid through `python benchmark.py --all` with the local executor
running two jobs at a time (the real worker in subprocesses, training the two tiny plug-in
backbones of tests/plugins: the grid's orchestration is under test here, not the Keras
applications, which the shared smoke run trains): the replicate folders, the shared fold splits, out-of-fold
predictions, stacking fit on them, ensembles per replicate, the aggregated report, a rerun that
skips everything, and `--ensemble stacking` on the grid."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.atomic import read_json
from core.predictions import read_predictions
from core.rundir import RunDir

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
MODELS = ("tiny_plugin_a", "tiny_plugin_b")  # tests/plugins/dermbench_tiny_backbones.py
GRID = ["--all", "--preset", "smoke", "--synthetic-images", "100", "--epochs", "1",
        "--bootstrap", "50", "--models", *MODELS, "--seeds", "0,1", "--folds", "2",
        "--reference", MODELS[0]]
REPLICATES = ("fold0-seed0", "fold0-seed1", "fold1-seed0", "fold1-seed1")


@pytest.fixture(scope="module")
def bench(tiny_backbones_env):
    def run(out: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(REPO / "benchmark.py"), *args, "--out",
                               str(out)], cwd=out.parent, capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, **tiny_backbones_env})
    return run


@pytest.fixture(scope="module")
def grid(tmp_path_factory, bench):
    out = tmp_path_factory.mktemp("grid") / "run"
    proc = bench(out, *GRID, "--jobs", "2")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return RunDir(out), proc.stdout


def test_every_job_has_its_own_folder_and_files(grid):
    run, stdout = grid
    assert [r.root.name for _, _, r in run.replicates()] == list(REPLICATES)
    for _, _, replicate in run.replicates():
        for model in MODELS:
            folder = replicate.model_dir(model)
            for name in ("metrics.json", "predictions_val.csv", "predictions_test.csv",
                         "train.log"):
                assert (folder / name).is_file(), folder / name
            assert read_json(folder / "metrics.json")["status"] == "ok"
    log = run.train_log.read_text()
    assert "= 8 jobs" in log and "[8/8]" in log
    assert f"fold1-seed1/{MODELS[1]}: ok" in stdout


def test_replicates_share_their_folds_split_and_differ_in_training_seed(grid):
    run, _ = grid
    folds = pd.read_csv(run.splits_csv, dtype={"image_id": str}).set_index("image_id")["fold"]
    for fold in (0, 1):
        a, b = run.replicate(fold, 0), run.replicate(fold, 1)
        assert a.splits_csv.read_bytes() == b.splits_csv.read_bytes()
        test = read_predictions(a.model_dir(MODELS[0]) / "predictions_test.csv")
        assert set(folds[test.image_id]) == {fold}
        meta = read_json(b.run_json)
        assert (meta["config"]["seed"], meta["config"]["data_seed"]) == (1, 0)
        assert meta["config"]["fold"] == fold and meta["replicate"] == {"fold": fold, "seed": 1}
    # Same fold, same images, another training seed: other probabilities.
    p0 = read_predictions(run.replicate(0, 0).model_dir(MODELS[0]) / "predictions_test.csv")
    p1 = read_predictions(run.replicate(0, 1).model_dir(MODELS[0]) / "predictions_test.csv")
    assert np.array_equal(p0.image_id, p1.image_id)
    assert not np.allclose(p0.proba, p1.proba)


def test_out_of_fold_predictions_come_from_the_replicate_that_held_the_fold_out(grid):
    run, _ = grid
    for seed in (0, 1):
        oof = read_predictions(run.replicate(0, seed).model_dir(MODELS[0])
                               / "predictions_oof.csv")
        source = read_predictions(run.replicate(1, seed).model_dir(MODELS[0])
                                  / "predictions_test.csv")
        assert np.array_equal(oof.image_id, np.sort(source.image_id))
        order = np.argsort(source.image_id, kind="stable")
        np.testing.assert_array_equal(oof.proba, source.proba[order])


def test_ensembles_per_replicate_with_stacking_fit_out_of_fold(grid):
    run, _ = grid
    for _, _, replicate in run.replicates():
        assert replicate.ensemble_names() == ["hard_voting", "soft_voting", "stacking",
                                              "weighted_voting"]
        fit = read_json(replicate.ensemble_dir("stacking") / "fit.json")
        assert fit["fit_split"] == "oof"


def test_the_report_aggregates_the_jobs(grid):
    run, _ = grid
    report = run.report_md.read_text()
    assert "fold" in report and "seed" in report
    jobs = pd.read_csv(run.jobs_csv)
    assert {"entry", "fold", "seed"} <= set(jobs.columns)
    assert len(jobs[(jobs["entry"] == MODELS[0]) & (jobs["split"] == "test")]) == 4
    results = pd.read_csv(run.results_csv)
    assert any(c.endswith("_mean") for c in results.columns)
    assert any(c.endswith("_sd") for c in results.columns)
    # the reference against the rest over the 4 paired jobs, with the corrected k-fold t-test
    comparisons = pd.read_csv(run.root / "comparisons.csv")
    assert set(comparisons["reference"]) == {MODELS[0]}
    assert set(comparisons["other"]) == {MODELS[1], "soft_voting", "hard_voting",
                                         "weighted_voting", "stacking"}
    ba = comparisons[comparisons["metric"] == "balanced_accuracy"]
    assert (ba["n_jobs"] == 4).all()
    assert ba["test"].str.startswith("corrected repeated k-fold t-test").all()
    assert f"## 5. `{MODELS[0]}` vs the rest" in report
    # one member set and one fit source per ensemble in the whole grid
    for name in ("stacking", "weighted_voting"):
        fits = [read_json(r.ensemble_dir(name) / "fit.json") for _, _, r in run.replicates()]
        assert len({(tuple(f["members"]), f["fit_split"]) for f in fits}) == 1


def test_a_rerun_skips_every_job_and_touches_no_model(grid, bench):
    run, _ = grid
    weights = {p: p.stat().st_mtime_ns for p in run.replicates_dir.rglob("predictions_*.csv")}
    proc = bench(run.root, *GRID, "--jobs", "2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("finished earlier, not retrained") >= 8
    assert {p: p.stat().st_mtime_ns
            for p in run.replicates_dir.rglob("predictions_*.csv")} == weights


def test_ensemble_stacking_rebuilds_it_in_every_replicate(grid, bench):
    run, _ = grid
    before = {r.root.name: (r.ensemble_dir("stacking") / "predictions_test.csv").read_bytes()
              for _, _, r in run.replicates()}
    proc = bench(run.root, "--ensemble", "stacking", timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "written to 4 replicates" in proc.stdout
    after = {r.root.name: (r.ensemble_dir("stacking") / "predictions_test.csv").read_bytes()
             for _, _, r in run.replicates()}
    assert after == before  # the same saved predictions give the same ensemble, bit for bit
