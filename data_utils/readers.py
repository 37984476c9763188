"""Readers for the HAM10000 and ISIC 2018 Task 3 layouts, producing one validated table.

Every reader returns a DataFrame with the columns image_id, lesion_id, dx, path, followed by the
metadata columns the release has (dx_type, age, sex, localization for HAM10000), and for ISIC 2018
with the official test protocol an `official_split` column ("train" / "test"). Facts that belong in
dataset.json but not in the table ride along in `table.attrs`:

    missing_images    int, images listed but absent and dropped (only with allow_missing)
    missing_examples  list[str], the first few of them
    source            dict, which files/sets were used (e.g. the official test set)
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from core import defaults
from core.classes import CLASSES, ISIC_COLUMNS, ISIC_TO_CLASS
from core.errors import DataError
from core.facts import DATASETS, HAM10000, ISIC2018, SYNTHETIC
from data_utils import validation as v
from data_utils.layout import (
    HAM_METADATA,
    HAM_PART_PREFIX,
    ISIC_GROUPINGS,
    ISIC_TEST_GT,
    ISIC_TEST_GT_DIR,
    ISIC_TEST_INPUT,
    ISIC_TRAIN_GT,
    ISIC_TRAIN_GT_DIR,
    ISIC_TRAIN_INPUT,
    ISIC_VAL_GT,
    ISIC_VAL_GT_DIR,
)

logger = logging.getLogger(__name__)

TEST_SETS: tuple[str, ...] = ("split", "official")
IMAGE_SUFFIXES: frozenset[str] = frozenset({".jpg", ".jpeg"})
BASE_COLUMNS: tuple[str, ...] = ("image_id", "lesion_id", "dx", "path")
HAM_COLUMNS: tuple[str, ...] = ("lesion_id", "image_id", "dx")


def read_dataset(
    name: str,
    data_dir: str | os.PathLike,
    allow_missing: bool = False,
    test_set: str = defaults.TEST_SET,
) -> pd.DataFrame:
    """Read and validate a dataset into one table.

    Args:
        name: "ham10000", "isic2018" or "synthetic" (a generated folder in the HAM10000 layout).
        data_dir: the dataset folder.
        allow_missing: drop images listed in the metadata but missing on disk (their count is
            kept in `table.attrs["missing_images"]`) instead of failing.
        test_set: isic2018 only. "split": only the training set is read (the test split is carved
            from it later); "official": the official test images are added with
            `official_split == "test"`, the training images get "train", and the official
            validation images are not used.

    Returns:
        The table (columns image_id, lesion_id, dx, path, metadata...), in metadata order.

    Raises:
        DataError: missing folders/files, bad metadata (see validation.py), missing images.
        ValueError: an unknown dataset name or test_set.
    """
    if test_set not in TEST_SETS:
        raise ValueError(f"test_set must be one of {TEST_SETS}, got {test_set!r}")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(
            f"dataset folder {root} does not exist; pass the folder that holds the {name} files "
            f"with --data-dir (or fetch them with --download --dataset {name} --data-dir DIR)"
        )
    if name in (HAM10000, SYNTHETIC):
        if test_set != "split":
            raise DataError(
                f"--test-set {test_set} needs --dataset isic2018 (the official test set is part "
                f"of the ISIC 2018 release); use --test-set split with {name}"
            )
        return read_ham10000(root, allow_missing=allow_missing)
    if name == ISIC2018:
        return read_isic2018(root, allow_missing=allow_missing, test_set=test_set)
    raise ValueError(f"unknown dataset {name!r}; expected one of {DATASETS}")


# --------------------------------------------------------------------------- file system helpers


def find_child(parent: Path, name: str) -> Path | None:
    """The entry of `parent` named `name`, compared case-insensitively (exact match first)."""
    exact = parent / name
    if exact.exists():
        return exact
    wanted = name.lower()
    try:
        with os.scandir(parent) as entries:
            for entry in entries:
                if entry.name.lower() == wanted:
                    return Path(entry.path)
    except FileNotFoundError:
        return None
    return None


def index_images(folders: list[Path]) -> dict[str, Path]:
    """Map image id (file name without extension) -> path for the .jpg/.jpeg files in `folders`.

    One `os.scandir` per folder (fast on 10k files). When the same id appears in two folders (the
    Kaggle release ships each part twice, in two cases), the first folder wins.
    """
    index: dict[str, Path] = {}
    for folder in folders:
        with os.scandir(folder) as entries:
            for entry in entries:
                stem, suffix = os.path.splitext(entry.name)
                if suffix.lower() in IMAGE_SUFFIXES and entry.is_file():
                    index.setdefault(stem, Path(entry.path))
    return index


def _subfolders(root: Path) -> list[Path]:
    with os.scandir(root) as entries:
        return sorted(Path(e.path) for e in entries if e.is_dir() and not e.name.startswith("."))


def ham_image_folders(root: Path) -> list[Path]:
    """The folders that hold HAM10000 images under `root`.

    `HAM10000_images_part_1/` and `_part_2/` (any case) when present; otherwise one flat folder:
    `root` itself if it holds .jpg files, else its subfolders that do.
    """
    subfolders = _subfolders(root)
    parts = [p for p in subfolders if p.name.lower().startswith(HAM_PART_PREFIX)]
    if parts:
        # Official names first, so their files win over same-named copies elsewhere.
        return sorted(parts, key=lambda p: (not p.name.startswith("HAM10000"), p.name))
    return [root, *subfolders]


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(
            f"{path}: not a readable CSV file ({exc}); replace it with the original file"
        ) from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return v.number_rows(frame)


def _attach_paths(
    table: pd.DataFrame, index: dict[str, Path], source: str, searched: str, allow_missing: bool
) -> pd.DataFrame:
    paths = table["image_id"].map(index)
    missing_mask = paths.isna().to_numpy()
    missing = table.loc[missing_mask, "image_id"].tolist()
    if missing and not allow_missing:
        raise v.missing_images_error(source, missing, searched)
    if missing:
        logger.warning(
            "%s: %d image(s) missing on disk, proceeding without them (--allow-missing): %s",
            source, len(missing), ", ".join(missing[:v.MAX_LISTED]),
        )
    table = table.assign(path=paths.map(lambda p: os.fspath(p) if isinstance(p, Path) else p))
    table = table.loc[~missing_mask]
    table.attrs["missing_images"] = table.attrs.get("missing_images", 0) + len(missing)
    table.attrs["missing_examples"] = (table.attrs.get("missing_examples", []) + missing)[
        : v.MAX_LISTED
    ]
    return table


def _finish(table: pd.DataFrame, attrs: dict) -> pd.DataFrame:
    """Drop the row numbers, put the base columns first, keep attrs."""
    metadata = [c for c in table.columns if c not in BASE_COLUMNS and c != v.ROW]
    out = table[[*BASE_COLUMNS, *metadata]].reset_index(drop=True)
    if "age" in out.columns:
        out["age"] = pd.to_numeric(out["age"], errors="coerce")
    out.attrs = dict(attrs)
    return out


def _validate_ids(table: pd.DataFrame, source: str) -> pd.DataFrame:
    for column in ("image_id", "lesion_id"):
        if column in table.columns:
            table[column] = table[column].astype(str).str.strip()
    v.check_not_empty(table, [c for c in ("image_id", "lesion_id", "dx") if c in table], source)
    v.check_plain_names(table, source)
    table = v.normalise_labels(table, source)
    v.check_unique(table, source)
    return table


# --------------------------------------------------------------------------- HAM10000


def read_ham10000(root: Path, allow_missing: bool = False) -> pd.DataFrame:
    """Read the official HAM10000 layout (metadata CSV + part_1/part_2 or one flat folder).

    Args:
        root: folder holding HAM10000_metadata.csv and the image folder(s).
        allow_missing: see `read_dataset`.

    Returns:
        The validated table.

    Raises:
        DataError: see `read_dataset`.
    """
    root = Path(root)
    metadata = find_child(root, HAM_METADATA)
    if metadata is None or not metadata.is_file():
        raise DataError(
            f"{root}: no {HAM_METADATA} found; --data-dir must be the folder of the HAM10000 "
            f"release (metadata CSV plus HAM10000_images_part_1/ and _part_2/), or fetch it with "
            f"--download --dataset ham10000 --data-dir {root}"
        )
    source = str(metadata)
    table = _read_csv(metadata)
    v.check_columns(table, HAM_COLUMNS, source)
    table = _validate_ids(table, source)
    v.check_lesion_labels(table, source)

    folders = ham_image_folders(root)
    index = index_images(folders)
    if not index:
        raise DataError(
            f"{root}: no .jpg images found (looked in {', '.join(str(f) for f in folders)}); "
            f"expected HAM10000_images_part_1/ and HAM10000_images_part_2/ or one folder of .jpg "
            f"files next to {HAM_METADATA}"
        )
    searched = ", ".join(str(f) for f in folders if f != root or len(folders) == 1)
    table = _attach_paths(table, index, source, searched or str(root), allow_missing)
    attrs = dict(table.attrs)
    attrs["source"] = {"metadata": source, "image_folders": [str(f) for f in folders]}
    return _finish(table, attrs)


# --------------------------------------------------------------------------- ISIC 2018 Task 3


def _require(parent: Path, *names: str, what: str) -> Path:
    path = parent
    for name in names:
        found = find_child(path, name)
        if found is None:
            raise DataError(
                f"{parent}: {'/'.join(names)} not found ({what}); --data-dir must be the folder "
                f"holding the extracted ISIC 2018 Task 3 files, or fetch them with "
                f"--download --dataset isic2018 --data-dir {parent}"
            )
        path = found
    return path


def read_isic_ground_truth(path: Path) -> pd.DataFrame:
    """Read a one-hot ISIC 2018 ground-truth CSV (image,MEL,NV,BCC,AKIEC,BKL,DF,VASC).

    Returns:
        A table with image_id, dx and `_row`.

    Raises:
        DataError: missing columns, a value that is not a number, or a row that does not have
            exactly one class set to 1.
    """
    source = str(path)
    frame = _read_csv(path)
    v.check_columns(frame, ("image", *ISIC_COLUMNS), source)
    try:
        onehot = frame[list(ISIC_COLUMNS)].astype(float).to_numpy()
    except ValueError:
        for column in ISIC_COLUMNS:
            numeric = pd.to_numeric(frame[column], errors="coerce")
            if numeric.isna().any():
                i = numeric.isna().idxmax()
                raise DataError(
                    f"{source}: row {frame.at[i, v.ROW]}: {column}={frame.at[i, column]!r} is "
                    f"not a number; ground-truth cells must be 0 or 1"
                ) from None
        raise
    hot = onehot > 0.5
    bad = hot.sum(axis=1) != 1
    if bad.any():
        i = int(np.argmax(bad))
        cells = ",".join(frame.loc[i, list(ISIC_COLUMNS)])
        raise DataError(
            f"{source}: row {frame.at[i, v.ROW]}: image {frame.at[i, 'image']!r} has "
            f"{int(hot[i].sum())} classes set ({','.join(ISIC_COLUMNS)} = {cells}); exactly one "
            f"must be 1. Replace the file with the official ground truth."
        )
    classes = np.array([ISIC_TO_CLASS[c] for c in ISIC_COLUMNS])
    return pd.DataFrame(
        {"image_id": frame["image"].str.strip(), "dx": classes[hot.argmax(axis=1)], v.ROW: frame[v.ROW]}
    )


def _read_isic_extra_set(root: Path, input_dir: str, gt_dir: str, gt_file: str, what: str,
                         allow_missing: bool, official_split: str) -> pd.DataFrame:
    gt_path = _require(root, gt_dir, gt_file, what=f"{what} ground truth")
    images = _require(root, input_dir, what=f"{what} images")
    table = read_isic_ground_truth(gt_path)
    source = str(gt_path)
    table = _validate_ids(table, source)
    # The official validation/test images come without lesion groupings: each is its own lesion.
    table["lesion_id"] = table["image_id"]
    table["official_split"] = official_split
    return _attach_paths(table, index_images([images]), source, str(images), allow_missing)


def read_isic2018(root: Path, allow_missing: bool = False,
                  test_set: str = defaults.TEST_SET) -> pd.DataFrame:
    """Read the ISIC 2018 Task 3 layout.

    Training images take their lesion_id from the lesion groupings file and dx_type from its
    diagnosis_confirm_type column. With test_set="official" the official test images are appended
    (lesion_id = image id, official_split = "test") and the official validation images are left
    out (recorded in `attrs["source"]`).

    Args:
        root: folder with the extracted ISIC2018_Task3_* folders and the groupings CSV.
        allow_missing: see `read_dataset`.
        test_set: "split" or "official", see `read_dataset`.

    Returns:
        The validated table.

    Raises:
        DataError: missing files, bad ground truth or groupings, missing images.
    """
    root = Path(root)
    gt_path = _require(root, ISIC_TRAIN_GT_DIR, ISIC_TRAIN_GT, what="training ground truth")
    groupings_path = _require(root, ISIC_GROUPINGS, what="lesion groupings")
    images = _require(root, ISIC_TRAIN_INPUT, what="training images")

    table = read_isic_ground_truth(gt_path)
    source = str(gt_path)
    table = _validate_ids(table, source)

    groupings = _read_csv(groupings_path)
    g_source = str(groupings_path)
    v.check_columns(groupings, ("image", "lesion_id"), g_source)
    groupings = groupings.rename(columns={"image": "image_id", "diagnosis_confirm_type": "dx_type"})
    groupings["image_id"] = groupings["image_id"].str.strip()
    groupings["lesion_id"] = groupings["lesion_id"].str.strip()
    v.check_not_empty(groupings, ("image_id", "lesion_id"), g_source)
    v.check_unique(groupings, g_source)
    extra = [c for c in groupings.columns if c not in ("image_id", v.ROW)]
    table = table.merge(groupings[["image_id", *extra]], on="image_id", how="left")
    ungrouped = table["lesion_id"].isna()
    if ungrouped.any():
        ids = table.loc[ungrouped, "image_id"].tolist()
        raise DataError(
            f"{g_source} has no lesion_id for {len(ids)} image(s) of {source}: "
            f"{', '.join(ids[:v.MAX_LISTED])}. Replace it with the official groupings file."
        )
    v.check_lesion_labels(table, f"{source} + {g_source.rsplit(os.sep, 1)[-1]}")
    table = _attach_paths(table, index_images([images]), source, str(images), allow_missing)

    attrs = dict(table.attrs)
    attrs["source"] = {
        "ground_truth": source,
        "lesion_groupings": g_source,
        "test_set": test_set,
        "official_validation": "not used",
        "official_test": "not used",
    }
    if test_set == "official":
        table["official_split"] = "train"
        test = _read_isic_extra_set(root, ISIC_TEST_INPUT, ISIC_TEST_GT_DIR, ISIC_TEST_GT,
                                    "official test", allow_missing, "test")
        attrs["missing_images"] = attrs.get("missing_images", 0) + test.attrs["missing_images"]
        attrs["missing_examples"] = (attrs.get("missing_examples", [])
                                     + test.attrs["missing_examples"])[: v.MAX_LISTED]
        attrs["source"]["official_test"] = f"{len(test)} images used as the test split"
        val_gt = find_child(root, ISIC_VAL_GT_DIR)
        val_gt = val_gt and find_child(val_gt, ISIC_VAL_GT)
        if val_gt is not None:
            n_val = len(read_isic_ground_truth(val_gt))
            attrs["source"]["official_validation"] = (
                f"{n_val} images not used (validation is carved from the training set by lesion)"
            )
        table = pd.concat([table, test], ignore_index=True)
        v.check_unique(table, f"{source} + {ISIC_TEST_GT}")
    return _finish(table, attrs)


def class_counts(table: pd.DataFrame) -> dict[str, int]:
    """Images per class, in canonical class order (zeros included)."""
    counts = table["dx"].value_counts()
    return {c: int(counts.get(c, 0)) for c in CLASSES}
