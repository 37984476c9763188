"""Grid runs without training: replicate configs, the shared fold splits, replicate folders
written once and checked on resume (pipeline.replicates), and one ensemble variant per grid:
members finished everywhere, stale fits found (pipeline.grid_ensembles)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from core.atomic import atomic_write_json, read_json
from core.classes import CLASSES
from core.errors import RunDirError
from core.predictions import make_predictions, write_predictions
from core.rundir import RunDir, parse_replicate_name, replicate_name
from data_utils.splits import make_splits
from pipeline.grid_ensembles import grid_members, stale_ensembles
from pipeline.replicates import fold_split, replicate_config, write_replicates
from training.oof import write_oof_predictions
from training.settings import RunConfig, TrainingSettings

CONFIG = RunConfig(
    dataset="synthetic", folds=2, seed=7, synthetic_images=80, preset="smoke",
    entries=("xception",), seeds=(0, 1),
    training=TrainingSettings(batch_size=8, image_size={"xception": 71}),
)


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
    assert (rep.seed, rep.data_seed, rep.fold) == (5, 7, 1)
    written = rep.to_dict()
    assert (written["seed"], written["data_seed"], written["fold"]) == (5, 7, 1)
    assert "grid" not in written and "seeds" not in written and not rep.is_grid
    assert replicate_config(replace(CONFIG, folds=None), 0, 5).to_dict()["fold"] is None


def test_fold_split_makes_fold_k_the_test_split(grid_run):
    splits = pd.read_csv(grid_run.splits_csv, dtype={"image_id": str})
    for fold in (0, 1):
        table = fold_split(splits, CONFIG, fold)
        assert set(table.loc[table["split"] == "test", "fold"]) == {fold}
        assert set(table["split"]) == {"train", "val", "test"}
    # Without folds the grid's split is used as it is.
    assert fold_split(splits, replace(CONFIG, folds=None), 0) is splits


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

    changed = CONFIG.with_training(batch_size=16)
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


# ---------------------------------------------------------------------------------------------
# one ensemble variant per grid


ENSEMBLE_NAMES = ["soft_voting", "hard_voting", "weighted_voting", "stacking"]
CANDIDATES = ["inception_resnet_v2", "xception", "inception_v3", "resnext101"]


@pytest.fixture
def members_grid(grid_run):
    """xception and inception_v3 finished in every replicate, resnext101 only in fold0-seed0."""
    config = replace(CONFIG, entries=("xception", "inception_v3", "resnext101"))
    replicates = write_replicates(grid_run, config, {})
    rng = np.random.default_rng(1)
    for replicate in replicates:
        for entry in ("xception", "inception_v3"):
            _write_job(replicate.run, entry, rng)
    _write_job(replicates[0].run, "resnext101", rng)
    return grid_run, config, replicates


def test_grid_members_are_the_backbones_finished_in_every_replicate(members_grid):
    _, _, replicates = members_grid
    members, dropped = grid_members(replicates, CANDIDATES)
    assert members == ["inception_v3", "xception"]  # sorted, as ensembles.members sorts them
    assert dropped == {"resnext101": ["fold0-seed1", "fold1-seed0", "fold1-seed1"]}


def test_stale_ensembles_are_the_ones_fit_on_other_members_or_files(members_grid):
    from ensembles.build import build_ensembles

    grid_run, config, replicates = members_grid
    members, _ = grid_members(replicates, CANDIDATES)
    first = replicates[0].run
    assert stale_ensembles(first, ENSEMBLE_NAMES, members) == dict.fromkeys(ENSEMBLE_NAMES,
                                                                             "no fit.json")
    seed0 = [r for r in replicates if r.seed == 0]  # fold0-seed0, fold1-seed0
    for replicate in seed0:
        build_ensembles(replicate.run.root, ("all",), members=members, n_resamples=10)
        assert stale_ensembles(replicate.run, ENSEMBLE_NAMES, members) == {}
    # resnext101 joined fold0-seed0's default members in an earlier build: stale for the grid
    build_ensembles(first.root, ("stacking",), n_resamples=10)
    assert stale_ensembles(first, ["stacking"], members) == {"stacking": (
        "fit on members inception_v3, resnext101, xception, the grid's are inception_v3, "
        "xception")}
    build_ensembles(first.root, ("stacking",), members=members, n_resamples=10)
    # the out-of-fold predictions appear after the fit: every ensemble is stale
    for entry in members:
        write_oof_predictions(grid_run, config, replicates, entry)
    for replicate in seed0:
        stale = stale_ensembles(replicate.run, ENSEMBLE_NAMES, members)
        assert sorted(stale) == sorted(ENSEMBLE_NAMES)
        assert stale["stacking"] == ("fit with inception_v3's test, val predictions, the "
                                     "replicate now has oof, test, val")
        build_ensembles(replicate.run.root, ("all",), members=members, n_resamples=10)
        assert read_json(replicate.run.ensemble_dir("stacking") / "fit.json")["fit_split"] \
            == "oof"
        assert stale_ensembles(replicate.run, ENSEMBLE_NAMES, members) == {}
    # a member retrained since the fit
    _write_job(first, "xception", np.random.default_rng(9))
    reason = stale_ensembles(first, ["soft_voting"], members)["soft_voting"]
    assert reason.startswith("xception's predictions_") and reason.endswith("changed since the fit")
    (first.ensemble_dir("soft_voting") / "fit.json").write_text("{not json")
    assert stale_ensembles(first, ["soft_voting"], members)["soft_voting"].startswith(
        "unreadable fit.json")
