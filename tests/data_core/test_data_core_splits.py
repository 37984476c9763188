"""Splits: stratification and zero leakage at the real scale, folds, determinism, image split."""

from __future__ import annotations

import pandas as pd
import pytest

from core.classes import CLASSES
from core.errors import BenchmarkError
from data_utils.splits import (
    SplitError,
    assign_groups,
    leakage_report,
    lesions_per_split,
    make_splits,
    max_share_deviation,
    split_counts,
    split_for_fold,
)


@pytest.fixture(scope="module")
def full(full_metadata) -> pd.DataFrame:
    return pd.read_csv(full_metadata)


def _worst_share_gap(table: pd.DataFrame, column: str = "split") -> float:
    overall = table["dx"].value_counts(normalize=True)
    gaps = [
        (part["dx"].value_counts(normalize=True).reindex(CLASSES, fill_value=0) - overall.reindex(CLASSES)).abs().max()
        for _, part in table.groupby(column)
    ]
    return float(max(gaps))


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_full_scale_lesion_split_bound_and_no_leakage(full, seed):
    table = make_splits(full, seed=seed)
    assert len(full) == 10015 and full["lesion_id"].nunique() == 7470
    assert _worst_share_gap(table) < 0.02
    assert max_share_deviation(table) == pytest.approx(_worst_share_gap(table))
    assert table.groupby("lesion_id")["split"].nunique().max() == 1
    report = leakage_report(table)
    assert report["shared_lesions_total"] == 0 and report["ok"]
    assert report["shared_lesions"] == {"train/val": 0, "train/test": 0, "val/test": 0}
    images = table["split"].value_counts()
    assert abs(images["test"] - 1001.5) <= 7 and abs(images["val"] - 1001.5) <= 7
    lesions = lesions_per_split(table)
    assert abs(lesions["test"] / 7470 - 0.1) < 0.01  # multi-image lesions spread too


def test_full_scale_other_ratios(full):
    table = make_splits(full, ratios=(0.7, 0.2, 0.1), seed=3)
    counts = table["split"].value_counts(normalize=True)
    assert counts["val"] == pytest.approx(0.2, abs=0.003)
    assert counts["test"] == pytest.approx(0.1, abs=0.003)
    assert _worst_share_gap(table) < 0.02
    assert leakage_report(table)["shared_lesions_total"] == 0


def test_full_scale_folds(full):
    table = make_splits(full, folds=5, seed=0)
    assert sorted(table["fold"].unique()) == [0, 1, 2, 3, 4]
    assert table.groupby("lesion_id")["fold"].nunique().max() == 1
    assert _worst_share_gap(table, "fold") < 0.02
    assert (table["split"] == "test").eq(table["fold"] == 0).all()
    for k in (0, 3):
        split = split_for_fold(table, k, seed=0)
        assert (split == "test").eq(table["fold"] == k).all()
        with_split = table.assign(split=split)
        assert leakage_report(with_split)["shared_lesions_total"] == 0
        assert _worst_share_gap(with_split) < 0.02
        share_val = (split == "val").sum() / (split != "test").sum()
        assert share_val == pytest.approx(1 / 9, abs=0.005)  # val / (train + val)
    assert leakage_report(table)["fold_shared_lesions"] == 0


def test_deterministic_and_order_independent(full):
    a = make_splits(full, seed=5)
    b = make_splits(full, seed=5)
    shuffled = make_splits(full.sample(frac=1, random_state=1), seed=5)
    c = make_splits(full, seed=6)
    assert a["split"].tolist() == b["split"].tolist()
    assert shuffled.set_index("image_id")["split"].reindex(a["image_id"]).tolist() == a["split"].tolist()
    assert a["split"].tolist() != c["split"].tolist()


def test_image_split_paper_protocol(full):
    table = make_splits(full, split="image", seed=0)
    counts = table["split"].value_counts()
    assert counts["test"] == pytest.approx(1001.5, abs=2)
    assert _worst_share_gap(table) < 0.01
    report = leakage_report(table)
    # Image-level: many lesions straddle splits; the count matches a direct computation.
    train_lesions = set(table.loc[table["split"] == "train", "lesion_id"])
    test = table[table["split"] == "test"]
    direct = int(test["lesion_id"].isin(train_lesions).sum())
    assert report["test_images_sharing_lesion_with_train"] == direct > 100
    assert not report["ok"]


def test_image_split_leakage_hand_made():
    # Lesion L1 has images in train (a1) and test (a2); L2 only in test; L3 in val and test.
    table = pd.DataFrame({
        "image_id": ["a1", "a2", "b1", "c1", "c2", "d1", "d2"],
        "lesion_id": ["L1", "L1", "L2", "L3", "L3", "L4", "L4"],
        "dx": ["mel", "mel", "nv", "nv", "nv", "bkl", "bkl"],
        "split": ["train", "test", "test", "val", "test", "train", "test"],
    })
    report = leakage_report(table)
    assert report["shared_lesions"] == {"train/val": 0, "train/test": 2, "val/test": 1}
    assert report["shared_lesions_total"] == 3
    assert report["test_images_sharing_lesion_with_train"] == 2
    assert report["test_images_sharing_lesion_with_train_share"] == pytest.approx(2 / 4)
    assert report["test_images_sharing_lesion_with_train_per_class"] == {
        "akiec": 0, "bcc": 0, "bkl": 1, "df": 0, "mel": 1, "nv": 0, "vasc": 0}
    assert split_counts(table)["test"]["nv"] == 2
    assert lesions_per_split(table) == {"train": 2, "val": 1, "test": 4}


def test_assign_groups_hand_case():
    # One class, lesions of sizes 2, 1, 1: targets 50/50 -> the pair alone in one bin.
    mapping = assign_groups(["A", "A", "B", "C"], ["nv"] * 4, [0.5, 0.5], seed=0)
    assert mapping["B"] == mapping["C"] != mapping["A"]


def test_small_class_reaches_every_split():
    # 3 lesions of df among many nv: the 10% targets are 0.3 images, still one lesion each.
    table = pd.DataFrame({
        "image_id": [f"i{i}" for i in range(53)],
        "lesion_id": [f"l{i}" for i in range(50)] + ["d0", "d1", "d2"],
        "dx": ["nv"] * 50 + ["df"] * 3,
    })
    split = make_splits(table, seed=0)
    assert sorted(split.loc[split["dx"] == "df", "split"]) == ["test", "train", "val"]


@pytest.mark.parametrize("kwargs, message", [
    ({"ratios": (0.8, 0.3, 0.1)}, "summing to 1"),
    ({"split": "patient"}, "split must be one of"),
    ({"folds": 1}, "folds must be an integer >= 2"),
    ({"folds": 3, "split": "image"}, "--folds needs --split lesion"),
])
def test_bad_split_settings(kwargs, message):
    table = pd.DataFrame({"image_id": ["a", "b"], "lesion_id": ["a", "b"], "dx": ["nv", "nv"]})
    with pytest.raises(SplitError, match=message) as info:
        make_splits(table, **kwargs)
    assert isinstance(info.value, BenchmarkError) and isinstance(info.value, ValueError)


def test_image_split_too_small_class_is_a_clear_error():
    table = pd.DataFrame({"image_id": list("abcdefghij"), "lesion_id": list("abcdefghij"),
                          "dx": ["nv"] * 9 + ["df"]})
    with pytest.raises(SplitError, match="stratified image-level split of 10 images"):
        make_splits(table, split="image")
