"""Readers: the real HAM10000 sample, folder-name variants, and the ISIC 2018 Task 3 layout."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from core.classes import ISIC_COLUMNS
from core.errors import DataError
from data_utils.readers import index_images, read_dataset
from data_utils.splits import make_splits

SAMPLE_COUNTS = {"akiec": 27, "bcc": 30, "bkl": 30, "df": 16, "mel": 30, "nv": 30, "vasc": 17}


def test_real_sample(sample_dir):
    table = read_dataset("ham10000", sample_dir)
    assert len(table) == 180
    assert table["dx"].value_counts().to_dict() == SAMPLE_COUNTS
    assert list(table.columns) == ["image_id", "lesion_id", "dx", "path", "dx_type", "age", "sex",
                                   "localization"]
    assert all(Path(p).name == f"{i}.jpg" for i, p in zip(table["image_id"], table["path"], strict=True))
    assert {Path(p).parent.name for p in table["path"]} == {"HAM10000_images_part_1",
                                                           "HAM10000_images_part_2"}
    assert table["lesion_id"].nunique() < 180  # some lesions have two images
    assert table["age"].dtype == float


def _link_sample(sample_dir: Path, root: Path, folder_for) -> None:
    """Rebuild the sample in `root` with symlinked images: folder_for(part_name) -> folder."""
    root.mkdir()
    shutil.copy(sample_dir / "HAM10000_metadata.csv", root / "HAM10000_metadata.csv")
    for part in ("HAM10000_images_part_1", "HAM10000_images_part_2"):
        target = root / folder_for(part)
        target.mkdir(exist_ok=True)
        for image in (sample_dir / part).iterdir():
            os.symlink(image, target / image.name.replace(".jpg", ".JPG"))


def test_parts_in_other_case(sample_dir, tmp_path):
    root = tmp_path / "lower"
    _link_sample(sample_dir, root, lambda part: part.lower() if part.endswith("1") else part.upper())
    table = read_dataset("ham10000", root)
    assert len(table) == 180
    assert {Path(p).parent.name for p in table["path"]} == {"ham10000_images_part_1",
                                                           "HAM10000_IMAGES_PART_2"}


def test_flat_folder(sample_dir, tmp_path):
    root = tmp_path / "flat"
    _link_sample(sample_dir, root, lambda part: "images")
    table = read_dataset("ham10000", root)
    assert len(table) == 180 and table["path"].map(lambda p: Path(p).parent.name).eq("images").all()
    expected = read_dataset("ham10000", sample_dir)
    assert table["image_id"].tolist() == expected["image_id"].tolist()


def test_images_directly_in_data_dir(make_ham):
    root = make_ham(parts=None)
    for image in (root / "images").iterdir():
        image.rename(root / image.name)
    (root / "images").rmdir()
    table = read_dataset("ham10000", root)
    assert len(table) == 28 and all(Path(p).parent == root for p in table["path"])


def test_kaggle_duplicate_parts_prefer_official_names(make_ham):
    root = make_ham()
    for part in ("HAM10000_images_part_1", "HAM10000_images_part_2"):
        shutil.copytree(root / part, root / part.lower())
    table = read_dataset("ham10000", root)
    assert len(table) == 28
    assert all(Path(p).parent.name.startswith("HAM10000") for p in table["path"])


def test_index_images_ignores_other_files(tmp_path, jpeg_writer):
    jpeg_writer(tmp_path / "a.jpg")
    jpeg_writer(tmp_path / "b.JPEG")
    (tmp_path / "c.txt").write_text("x")
    (tmp_path / "d.jpg").mkdir()
    assert sorted(index_images([tmp_path])) == ["a", "b"]


# --------------------------------------------------------------------------- ISIC 2018


def _onehot(rows: list[tuple[str, str]]) -> pd.DataFrame:
    frame = pd.DataFrame({"image": [r[0] for r in rows]})
    for column in ISIC_COLUMNS:
        frame[column] = [1.0 if dx.upper() == column else 0.0 for _, dx in rows]
    return frame


@pytest.fixture
def isic_dir(tmp_path, ham_rows, jpeg_writer):
    """A small ISIC 2018 Task 3 layout: 28 training images, 3 validation, 7 test images."""
    root = tmp_path / "isic"
    train = [(image, dx) for _, image, dx in ham_rows]
    val = [(f"ISIC_1{i:06d}", dx) for i, dx in enumerate(("nv", "mel", "bkl"))]
    test = [(f"ISIC_2{i:06d}", dx) for i, dx in enumerate(("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"))]
    for folder, rows in (("Training", train), ("Validation", val), ("Test", test)):
        for image, dx in rows:
            jpeg_writer(root / f"ISIC2018_Task3_{folder}_Input" / f"{image}.jpg", dx)
        gt = root / f"ISIC2018_Task3_{folder}_GroundTruth" / f"ISIC2018_Task3_{folder}_GroundTruth.csv"
        gt.parent.mkdir(parents=True)
        _onehot(rows).to_csv(gt, index=False)
    groupings = pd.DataFrame({"image": [r[1] for r in ham_rows], "lesion_id": [r[0] for r in ham_rows],
                              "diagnosis_confirm_type": "histopathology"})
    groupings.to_csv(root / "ISIC2018_Task3_Training_LesionGroupings.csv", index=False)
    return root


def test_isic2018_split_protocol(isic_dir, ham_rows):
    table = read_dataset("isic2018", isic_dir)
    assert len(table) == 28
    assert "official_split" not in table.columns
    expected = {image: (lesion, dx) for lesion, image, dx in ham_rows}
    assert all(expected[i] == (les, dx) for i, les, dx in
               zip(table["image_id"], table["lesion_id"], table["dx"], strict=True))
    assert set(table["dx_type"]) == {"histopathology"}


def test_isic2018_official_test_protocol(isic_dir):
    table = read_dataset("isic2018", isic_dir, test_set="official")
    assert len(table) == 28 + 7  # the 3 official validation images are not used
    test = table[table["official_split"] == "test"]
    assert test["image_id"].str.startswith("ISIC_2").all()
    assert (test["lesion_id"] == test["image_id"]).all()
    assert sorted(test["dx"]) == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    assert "3 images not used" in table.attrs["source"]["official_validation"]

    split = make_splits(table, ratios=(0.8, 0.1, 0.1), seed=0)
    assert (split.loc[split["official_split"] == "test", "split"] == "test").all()
    train_val = split[split["official_split"] == "train"]
    assert set(train_val["split"]) == {"train", "val"}
    # Renormalised 8/9 : 1/9, grouped by lesion and stratified: one lesion of each class to val.
    assert train_val.groupby("dx")["split"].apply(lambda s: (s == "val").sum()).between(1, 2).all()
    assert train_val.groupby("lesion_id")["split"].nunique().max() == 1


def test_isic2018_bad_onehot_row(isic_dir):
    gt = isic_dir / "ISIC2018_Task3_Training_GroundTruth" / "ISIC2018_Task3_Training_GroundTruth.csv"
    frame = pd.read_csv(gt)
    frame.loc[4, "NV"] = 1.0  # now two classes in row 6
    frame.to_csv(gt, index=False)
    with pytest.raises(DataError, match=r"GroundTruth\.csv: row 6: .* has 2 classes set"):
        read_dataset("isic2018", isic_dir)


def test_isic2018_misspelled_onehot_column(isic_dir):
    gt = isic_dir / "ISIC2018_Task3_Training_GroundTruth" / "ISIC2018_Task3_Training_GroundTruth.csv"
    gt.write_text(gt.read_text().replace("AKIEC", "AKEIC", 1))
    with pytest.raises(DataError, match=r"missing column\(s\) 'AKIEC' \(found 'AKEIC'"):
        read_dataset("isic2018", isic_dir)


def test_isic2018_missing_groupings(isic_dir):
    (isic_dir / "ISIC2018_Task3_Training_LesionGroupings.csv").unlink()
    with pytest.raises(DataError, match=r"LesionGroupings\.csv not found.*--download --dataset isic2018"):
        read_dataset("isic2018", isic_dir)


def test_isic2018_image_without_lesion(isic_dir, ham_rows):
    path = isic_dir / "ISIC2018_Task3_Training_LesionGroupings.csv"
    frame = pd.read_csv(path)
    frame.drop(index=3).to_csv(path, index=False)
    with pytest.raises(DataError, match=rf"no lesion_id for 1 image\(s\).*{ham_rows[3][1]}"):
        read_dataset("isic2018", isic_dir)


def test_isic2018_official_missing_test_image(isic_dir):
    (isic_dir / "ISIC2018_Task3_Test_Input" / "ISIC_2000003.jpg").unlink()
    with pytest.raises(DataError, match=r"Test_GroundTruth\.csv lists 1 image\(s\) not found.*ISIC_2000003"):
        read_dataset("isic2018", isic_dir, test_set="official")
    table = read_dataset("isic2018", isic_dir, test_set="official", allow_missing=True)
    assert table.attrs["missing_images"] == 1 and len(table) == 34


def test_prepare_official_protocol_records_test_source(isic_dir, tmp_path):
    from data_utils.prepare import format_card, prepare

    prepared = prepare("isic2018", isic_dir, tmp_path / "run", test_set="official", image_sizes=())
    card = prepared.card
    assert card["test_source"] == "official ISIC 2018 Task 3 test set"
    assert card["images"]["test"] == 7 and card["images"]["total"] == 35
    assert "3 images not used" in card["source"]["official_validation"]
    assert card["leakage"]["shared_lesions_total"] == 0
    assert "Official validation set: 3 images not used" in format_card(card)
    splits = pd.read_csv(tmp_path / "run" / "splits.csv")
    assert set(splits.loc[splits["image_id"].str.startswith("ISIC_2"), "split"]) == {"test"}
