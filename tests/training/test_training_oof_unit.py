"""Out-of-fold predictions of a K-fold grid (training.oof) from fabricated replicate files: each
replicate gets the other folds' held-out rows once its seed has every fold finished, and an
unchanged file is not rewritten."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import pytest

from core.atomic import atomic_write_json
from core.classes import CLASSES
from core.predictions import make_predictions, read_predictions, write_predictions
from core.rundir import RunDir
from data_utils.splits import make_splits, split_for_fold
from training.oof import OOF_FILE, write_oof_predictions
from training.settings import RunConfig, TrainingSettings

CONFIG = RunConfig(
    dataset="synthetic", folds=2, seed=7, synthetic_images=80, preset="smoke",
    entries=("xception",), seeds=(0, 1),
    training=TrainingSettings(batch_size=8, image_size={"xception": 71}),
)


@dataclass(frozen=True)
class _Replicate:
    """A grid replicate as training.oof sees it (training.oof.GridReplicate)."""

    fold: int
    seed: int
    run: RunDir

    @property
    def name(self) -> str:
        return self.run.root.name


def _table(n: int = 70) -> pd.DataFrame:
    labels = [CLASSES[i % len(CLASSES)] for i in range(n)]
    return pd.DataFrame({"image_id": [f"img{i:03d}" for i in range(n)],
                         "lesion_id": [f"les{i // 2:03d}" for i in range(n)], "dx": labels})


@pytest.fixture
def grid(tmp_path) -> tuple[RunDir, list[_Replicate]]:
    """A 2-fold x 2-seed grid: the grid's splits.csv and each replicate's fold split."""
    run = RunDir(tmp_path / "grid")
    table = make_splits(_table(), split="lesion", ratios=(0.8, 0.1, 0.1), folds=2, seed=7)
    table = table[["image_id", "lesion_id", "dx", "split", "fold"]]
    run.root.mkdir(parents=True)
    table.to_csv(run.splits_csv, index=False)
    replicates = []
    for fold in (0, 1):
        fold_table = table.copy()
        fold_table["split"] = split_for_fold(table, fold, ratios=(0.8, 0.1, 0.1), seed=7
                                             ).to_numpy()
        for seed in (0, 1):
            replicate = run.replicate(fold, seed)
            replicate.root.mkdir(parents=True)
            fold_table.to_csv(replicate.splits_csv, index=False)
            replicates.append(_Replicate(fold, seed, replicate))
    return run, replicates


def _write_job(run: RunDir, entry: str, rng) -> None:
    splits = pd.read_csv(run.splits_csv, dtype={"image_id": str, "lesion_id": str})
    for split in ("val", "test"):
        part = splits[splits["split"] == split]
        proba = rng.dirichlet(np.ones(len(CLASSES)), size=len(part))
        write_predictions(run.model_dir(entry) / f"predictions_{split}.csv", make_predictions(
            part["image_id"], part["lesion_id"], part["dx"], proba))
    atomic_write_json(run.model_dir(entry) / "metrics.json", {"status": "ok"})


def test_out_of_fold_predictions_are_the_other_folds_held_out_rows(grid):
    grid_run, replicates = grid
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


def test_no_out_of_fold_predictions_without_folds(grid):
    grid_run, _ = grid
    assert write_oof_predictions(grid_run, replace(CONFIG, folds=None), [], "xception") == []
