"""Grid-run policies without training: replicate configs, the shared fold splits, replicate
folders written once and checked on resume, and out-of-fold predictions from fabricated files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data_utils.atomic import atomic_write_json, read_json
from data_utils.classes import CLASSES
from data_utils.errors import RunDirError
from data_utils.predictions import make_predictions, read_predictions, write_predictions
from data_utils.rundir import RunDir, parse_replicate_name, replicate_name
from data_utils.splits import make_splits
from training.grid import (
    OOF_FILE,
    fold_split,
    replicate_config,
    write_oof_predictions,
    write_replicates,
)

CONFIG = {
    "dataset": "synthetic", "data_dir": None, "split": "lesion", "ratios": [0.8, 0.1, 0.1],
    "folds": 2, "seed": 7, "test_set": "split", "synthetic_images": 80, "resize_mode": "square",
    "allow_missing": False, "preset": "smoke", "entries": ["xception"], "deterministic": False,
    "weights": None, "weights_dir": None, "grid": True, "seeds": [0, 1],
    "training": {"batch_size": 8, "image_size": {"xception": 71}}, "svm": {},
}


def _table(n: int = 70) -> pd.DataFrame:
    labels = [CLASSES[i % len(CLASSES)] for i in range(n)]
    return pd.DataFrame({"image_id": [f"img{i:03d}" for i in range(n)],
                         "lesion_id": [f"les{i // 2:03d}" for i in range(n)], "dx": labels})


@pytest.fixture
def grid_run(tmp_path) -> RunDir:
    run = RunDir(tmp_path / "grid")
    table = make_splits(_table(), split="lesion", ratios=(0.8, 0.1, 0.1), folds=2, seed=7)
    run.root.mkdir(parents=True)
    table[["image_id", "lesion_id", "dx", "split", "fold"]].to_csv(run.splits_csv, index=False)
    atomic_write_json(run.dataset_json, {"n_images": 70})
    return run


def test_replicate_names_round_trip():
    assert replicate_name(3, 12) == "fold3-seed12"
    assert parse_replicate_name("fold3-seed12") == (3, 12)
    assert parse_replicate_name("fold3-seed") is None and parse_replicate_name("models") is None


def test_replicate_config_sets_training_seed_and_keeps_the_data_seed():
    rep = replicate_config(CONFIG, 1, 5)
    assert (rep["seed"], rep["data_seed"], rep["fold"]) == (5, 7, 1)
    assert "grid" not in rep and "seeds" not in rep
    assert replicate_config({**CONFIG, "folds": None}, 0, 5)["fold"] is None


def test_fold_split_makes_fold_k_the_test_split(grid_run):
    splits = pd.read_csv(grid_run.splits_csv, dtype={"image_id": str})
    for fold in (0, 1):
        table = fold_split(splits, CONFIG, fold)
        assert set(table.loc[table["split"] == "test", "fold"]) == {fold}
        assert set(table["split"]) == {"train", "val", "test"}
    # Without folds the grid's split is used as it is.
    assert fold_split(splits, {**CONFIG, "folds": None}, 0) is splits


def test_replicates_are_written_once_and_checked_on_resume(grid_run):
    replicates = write_replicates(grid_run, CONFIG, {})
    assert [r.name for r in replicates] == ["fold0-seed0", "fold0-seed1", "fold1-seed0",
                                            "fold1-seed1"]
    first = {p: p.stat().st_mtime_ns for p in grid_run.replicates_dir.rglob("*")}
    meta = read_json(grid_run.replicate(1, 1).run_json)
    assert meta["replicate"] == {"fold": 1, "seed": 1} and meta["config"]["seed"] == 1
    assert (grid_run.replicate(1, 1).dataset_json.read_text()
            == grid_run.dataset_json.read_text())

    write_replicates(grid_run, CONFIG, {})  # a resume: nothing rewritten
    assert {p: p.stat().st_mtime_ns for p in grid_run.replicates_dir.rglob("*")} == first

    changed = {**CONFIG, "training": {**CONFIG["training"], "batch_size": 16}}
    with pytest.raises(RunDirError, match="fold0-seed0 holds a replicate of a different protocol"):
        write_replicates(grid_run, changed, {})


def _write_job(run: RunDir, entry: str, rng) -> None:
    splits = pd.read_csv(run.splits_csv, dtype={"image_id": str, "lesion_id": str})
    for split in ("val", "test"):
        part = splits[splits["split"] == split]
        proba = rng.dirichlet(np.ones(len(CLASSES)), size=len(part))
        write_predictions(run.model_dir(entry) / f"predictions_{split}.csv", make_predictions(
            part["image_id"], part["lesion_id"], part["dx"], proba))
    atomic_write_json(run.model_dir(entry) / "metrics.json", {"status": "ok"})


def test_out_of_fold_predictions_are_the_other_folds_held_out_rows(grid_run):
    replicates = write_replicates(grid_run, CONFIG, {})
    rng = np.random.default_rng(0)
    for replicate in replicates:
        if replicate.seed == 0:
            _write_job(replicate.run, "xception", rng)
    _write_job(grid_run.replicate(0, 1), "xception", rng)  # seed 1 lacks fold 1: no OOF there

    written = write_oof_predictions(grid_run, CONFIG, replicates, "xception")
    assert written == ["fold0-seed0", "fold1-seed0"]
    assert not (grid_run.replicate(0, 1).model_dir("xception") / OOF_FILE).exists()
    oof = read_predictions(grid_run.replicate(0, 0).model_dir("xception") / OOF_FILE)
    held_out = read_predictions(grid_run.replicate(1, 0).model_dir("xception")
                                / "predictions_test.csv")
    order = np.argsort(held_out.image_id)
    np.testing.assert_array_equal(oof.image_id, held_out.image_id[order])
    np.testing.assert_array_equal(oof.proba, held_out.proba[order])
    folds = pd.read_csv(grid_run.splits_csv, dtype={"image_id": str}).set_index("image_id")
    assert set(folds.loc[oof.image_id, "fold"]) == {1}

    before = (grid_run.replicate(0, 0).model_dir("xception") / OOF_FILE).stat().st_mtime_ns
    write_oof_predictions(grid_run, CONFIG, replicates, "xception")
    assert (grid_run.replicate(0, 0).model_dir("xception") / OOF_FILE).stat().st_mtime_ns \
        == before


def test_no_out_of_fold_predictions_without_folds(grid_run):
    assert write_oof_predictions(grid_run, {**CONFIG, "folds": None}, [], "xception") == []
