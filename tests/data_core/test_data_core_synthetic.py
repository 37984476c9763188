"""The synthetic dataset: deterministic, HAM10000 layout, every class, near-duplicate lesion views."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.classes import CLASSES
from core.errors import DataError
from data_utils.readers import read_dataset
from data_utils.synthetic import (
    MARKER,
    _plan,
    class_image_counts,
    default_synthetic_dir,
    generate_synthetic,
)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("syn") / "n140", n_images=140, seed=3)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes(tmp_path):
    first = generate_synthetic(tmp_path / "first", n_images=14, seed=3)
    again = generate_synthetic(tmp_path / "again", n_images=14, seed=3)
    assert len(_files(first)) == 14 + 2  # images, metadata, marker
    assert _files(again) == _files(first)
    other = generate_synthetic(tmp_path / "other", n_images=14, seed=4)
    assert _files(other) != _files(first)


def test_layout_and_reader(small):
    assert (small / "HAM10000_metadata.csv").is_file()
    table = read_dataset("synthetic", small)
    assert len(table) == 140
    assert set(table["dx"]) == set(CLASSES)
    assert {Path(p).parent.name for p in table["path"]} == {"HAM10000_images_part_1",
                                                           "HAM10000_images_part_2"}
    assert list(table.columns[4:]) == ["dx_type", "age", "sex", "localization"]
    with Image.open(table["path"].iloc[0]) as image:
        assert image.format == "JPEG" and image.size == (600, 450) and image.mode == "RGB"


def test_class_mix_like_ham10000():
    counts = class_image_counts(700)
    assert sum(counts.values()) == 700
    assert max(counts, key=counts.get) == "nv" and counts["nv"] > 0.55 * 700
    assert min(counts.values()) >= 25
    assert counts["mel"] > counts["bcc"] > counts["df"]
    tiny = class_image_counts(14)
    assert tiny == dict.fromkeys(CLASSES, 2)


def test_lesion_multiplicity_at_default_size():
    plan = _plan(700, np.random.default_rng(0))
    per_lesion = plan.groupby("lesion_id").size()
    assert 1.2 <= len(plan) / len(per_lesion) <= 1.4
    assert per_lesion.max() <= 3 and (per_lesion > 1).sum() > 50
    assert plan.groupby("lesion_id")["dx"].nunique().max() == 1
    assert plan.groupby("lesion_id")["age"].nunique().max() == 1
    assert plan["image_id"].is_unique


def _thumb(path: str) -> np.ndarray:
    """A 20x15 thumbnail, mean-removed and unit-norm (dot product = correlation)."""
    with Image.open(path) as image:
        image.draft("RGB", (150, 112))
        x = np.asarray(image.resize((20, 15), Image.Resampling.BOX), dtype=np.float64).ravel()
    x -= x.mean()
    return x / np.linalg.norm(x)


def test_views_of_a_lesion_are_near_duplicates(small):
    table = read_dataset("synthetic", small)
    sizes = table.groupby("lesion_id").size()
    multi = sizes[sizes > 1].index
    assert len(multi) >= 3
    thumbs = {i: _thumb(p) for i, p in zip(table["image_id"], table["path"], strict=True)}
    for lesion in multi:
        rows = table[table["lesion_id"] == lesion]
        others = table[(table["dx"] == rows["dx"].iloc[0]) & (table["lesion_id"] != lesion)]
        if len(others) < 3:
            continue
        a, b = (thumbs[i] for i in rows["image_id"].iloc[:2])
        assert Path(rows["path"].iloc[0]).read_bytes() != Path(rows["path"].iloc[1]).read_bytes()
        # Two views of one lesion correlate more than typical pairs of different lesions.
        assert a @ b > np.median([a @ thumbs[i] for i in others["image_id"]])


def test_reuse_and_marker(small):
    before = {p: p.stat().st_mtime_ns for p in small.rglob("*.jpg")}
    assert generate_synthetic(small, n_images=140, seed=3) == small
    assert {p: p.stat().st_mtime_ns for p in small.rglob("*.jpg")} == before
    marker = json.loads((small / MARKER).read_text())
    assert marker["n_images"] == 140 and marker["seed"] == 3
    assert not [p for p in small.parent.iterdir() if p.name.startswith(".")]


def test_regenerates_when_parameters_differ(tmp_path):
    root = generate_synthetic(tmp_path / "d", n_images=14, seed=0)
    generate_synthetic(root, n_images=21, seed=0)
    assert len(read_dataset("synthetic", root)) == 21


def test_refuses_foreign_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not a generated synthetic dataset"):
        generate_synthetic(tmp_path / "mine", n_images=14)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_too_few_images(tmp_path):
    with pytest.raises(DataError, match="at least 14"):
        generate_synthetic(tmp_path / "x", n_images=10)


def test_default_dir_under_cache_root(monkeypatch, tmp_path):
    monkeypatch.setenv("DERMBENCH_CACHE", str(tmp_path))
    assert default_synthetic_dir(700, 2).parent == tmp_path
    assert default_synthetic_dir(700, 2) != default_synthetic_dir(700, 3)


def _colour_histogram(path: str) -> np.ndarray:
    """64-bin RGB histogram of the central region (where the lesion is)."""
    with Image.open(path) as image:
        image.draft("RGB", (150, 112))
        pixels = np.asarray(image.resize((64, 48)), dtype=np.int64)[8:40, 12:52] // 64
    bins = pixels[..., 0] * 16 + pixels[..., 1] * 4 + pixels[..., 2]
    return np.sqrt(np.bincount(bins.ravel(), minlength=64) / bins.size)


def test_classes_are_learnable(small):
    """Classes differ visibly: even a linear model on colour histograms separates them."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict

    table = read_dataset("synthetic", small)
    features = np.stack([_colour_histogram(p) for p in table["path"]])
    predicted = cross_val_predict(
        LogisticRegression(max_iter=1000, C=10.0), features, table["dx"],
        groups=table["lesion_id"], cv=StratifiedGroupKFold(n_splits=3),
    )
    assert balanced_accuracy_score(table["dx"], predicted) > 0.6  # chance: 1/7
