"""Checks on metadata tables, each raising a `DataError` that names the file, row and value.

Row numbers count the way a spreadsheet shows them: the header is row 1, so the first data row is
row 2. Every table passed here carries a `_row` column with that number (see `number_rows`).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Sequence

import pandas as pd

from core.classes import CLASSES
from core.errors import DataError

ROW = "_row"
MAX_LISTED = 5


def number_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Return `frame` with a `_row` column: the spreadsheet row number (header = row 1)."""
    frame = frame.reset_index(drop=True)
    frame[ROW] = frame.index + 2
    return frame


def _first(values: Sequence[object], limit: int = MAX_LISTED) -> str:
    shown = ", ".join(str(v) for v in list(values)[:limit])
    more = len(values) - limit
    return f"{shown}, ... ({more} more)" if more > 0 else shown


def check_columns(frame: pd.DataFrame, required: Iterable[str], source: str) -> None:
    """Check that every required column is present; suggest the closest existing name.

    Args:
        frame: the table as read.
        required: column names that must be present.
        source: the file name, for the message.

    Raises:
        DataError: naming each missing column and, where one is close, the misspelled one.
    """
    present = [str(c) for c in frame.columns if c != ROW]
    problems = []
    for name in required:
        if name in frame.columns:
            continue
        close = difflib.get_close_matches(name, present, n=1, cutoff=0.6)
        if not close:
            close = [c for c in present if c.strip().lower() == name]
        hint = f" (found {close[0]!r}: did you mean {name!r}?)" if close else ""
        problems.append(f"{name!r}{hint}")
    if problems:
        raise DataError(
            f"{source}: missing column(s) {', '.join(problems)}; the header has "
            f"{', '.join(present) or 'no columns'}. Rename the column(s) in the header row."
        )


def check_not_empty(frame: pd.DataFrame, columns: Iterable[str], source: str) -> None:
    """Check that the given columns have a value in every row.

    Raises:
        DataError: naming the first empty cell's row and column.
    """
    for column in columns:
        empty = frame[column].isna() | (frame[column].astype(str).str.strip() == "")
        if empty.any():
            rows = frame.loc[empty, ROW].tolist()
            raise DataError(
                f"{source}: row {rows[0]}: empty {column!r} ({int(empty.sum())} row(s) in all: "
                f"rows {_first(rows)}). Fill in the value or delete the row."
            )


def normalise_labels(frame: pd.DataFrame, source: str, column: str = "dx") -> pd.DataFrame:
    """Lower-case and strip the class labels, and check each is one of the seven classes.

    Args:
        frame: table with a `_row` column.
        source: file name for the message.
        column: the label column.

    Returns:
        The frame with normalised labels.

    Raises:
        DataError: for the first unknown label (row, value, closest valid class).
    """
    labels = frame[column].astype(str).str.strip().str.lower()
    unknown = ~labels.isin(CLASSES)
    if unknown.any():
        i = unknown.idxmax()
        value = frame.at[i, column]
        close = difflib.get_close_matches(labels[i], CLASSES, n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise DataError(
            f"{source}: row {frame.at[i, ROW]}: unknown class label {value!r} in column "
            f"{column!r}{hint}; {int(unknown.sum())} row(s) have unknown labels. Valid labels: "
            f"{', '.join(CLASSES)}. Correct the label or remove the row."
        )
    frame = frame.copy()
    frame[column] = labels
    return frame


def check_plain_names(frame: pd.DataFrame, source: str, column: str = "image_id") -> None:
    """Check that every id is a plain file name: no path separators, no '..', not absolute.

    Ids become file names (and are looked up on disk), so a path in an id could read files
    outside the dataset folder.

    Raises:
        DataError: naming the row and the offending id.
    """
    for value, row in zip(frame[column].astype(str), frame[ROW], strict=True):
        bad = (
            "/" in value
            or "\\" in value
            or "\x00" in value
            or value in ("", ".")
            or ".." in value
            or os.path.isabs(value)
            or (len(value) > 1 and value[1] == ":")
        )
        if bad:
            raise DataError(
                f"{source}: row {row}: {column} {value!r} is not a plain file name (it contains "
                f"a path separator, '..' or a drive/absolute path). Use the bare image name, "
                f"e.g. 'ISIC_0024306', and keep the images in the dataset folder."
            )


def check_unique(frame: pd.DataFrame, source: str, column: str = "image_id") -> None:
    """Check that `column` has no duplicates.

    Raises:
        DataError: naming the duplicated value and both rows.
    """
    duplicated = frame[column].duplicated(keep=False)
    if duplicated.any():
        value = frame.loc[duplicated, column].iloc[0]
        rows = frame.loc[frame[column] == value, ROW].tolist()
        n = int(frame[column].duplicated().sum())
        raise DataError(
            f"{source}: duplicate {column} {value!r} in rows {_first(rows)} ({n} duplicate "
            f"row(s) in all). Each image must be listed once: delete the extra rows."
        )


def check_lesion_labels(frame: pd.DataFrame, source: str) -> None:
    """Check that all images of one lesion carry the same class label.

    Raises:
        DataError: naming the lesion, its labels and the rows that disagree.
    """
    per_lesion = frame.groupby("lesion_id", sort=True)["dx"].nunique()
    conflicted = per_lesion[per_lesion > 1]
    if len(conflicted):
        lesion = conflicted.index[0]
        rows = frame[frame["lesion_id"] == lesion]
        detail = ", ".join(
            f"row {r} {img}={dx}"
            for r, img, dx in zip(rows[ROW], rows["image_id"], rows["dx"], strict=True)
        )
        raise DataError(
            f"{source}: lesion_id {lesion!r} has different labels ({detail}); "
            f"{len(conflicted)} lesion(s) in all. All images of one lesion must share its "
            f"diagnosis: correct the label or the lesion_id."
        )


def missing_images_error(source: str, missing: Sequence[str], searched: str) -> DataError:
    """The error for images listed in the metadata but absent on disk."""
    return DataError(
        f"{source} lists {len(missing)} image(s) not found under {searched}: {_first(missing)}. "
        f"Restore them (e.g. rerun --download), or pass --allow-missing to proceed without them."
    )
