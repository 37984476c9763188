"""Leakage checks wherever two splits meet: no image, and no lesion, in both.

Images of one lesion are near-duplicates, so a lesion with images in the validation (or
out-of-fold, or training) split and in the test split leaks into the test results, and into any
ensemble fit on validation. `check_no_leakage` refuses it (a `LeakageError` naming the first few
shared lesions or images and the files), comparing the test split with every other split given
and, where the run has splits.csv, with its training split.

A run declared an image-level split (`--split image`, the source paper's protocol: run.json's
config "split" or dataset.json's "split" says "image") shares lesions by design: then only shared
images are refused, and the report carries its leakage warning instead.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.atomic import read_json_object
from core.errors import IntegrityError
from core.rundir import RunDir

log = logging.getLogger(__name__)

IMAGE_SPLIT = "image"
SHOWN = 5


class LeakageError(IntegrityError):
    """A lesion or an image in two splits that must be disjoint."""


@dataclass(frozen=True)
class SplitIds:
    """The images of one split as one file lists them.

    Attributes:
        split: "train", "val", "oof" or "test".
        source: the file they come from (named in messages).
        image_id: (n,) image ids.
        lesion_id: (n,) their lesion ids.
    """

    split: str
    source: str
    image_id: np.ndarray
    lesion_id: np.ndarray

    @classmethod
    def of(cls, preds, split: str) -> SplitIds:
        """The ids of a `core.predictions.Predictions` (its source names the file)."""
        return cls(split, preds.source or f"the {split} predictions",
                   np.asarray(preds.image_id).astype(str), np.asarray(preds.lesion_id).astype(str))


def declared_split(run_root: str | os.PathLike | None) -> str | None:
    """The split kind a run declares: run.json's config "split", else dataset.json's "split"
    (a string or a mapping with "type"); None when neither says."""
    if run_root is None:
        return None
    run = RunDir(run_root)
    config = read_json_object(run.run_json).get("config")
    if isinstance(config, dict) and isinstance(config.get("split"), str):
        return config["split"]
    split = read_json_object(run.dataset_json).get("split")
    if isinstance(split, dict):
        split = split.get("type")
    return split if isinstance(split, str) and split else None


def image_level_split(run_root: str | os.PathLike | None) -> bool:
    """Whether the run declares the source paper's image-level split (lesions may be shared)."""
    return declared_split(run_root) == IMAGE_SPLIT


def train_ids(run_root: str | os.PathLike | None) -> SplitIds | None:
    """The training split of the run's splits.csv (None without a readable one)."""
    if run_root is None:
        return None
    path = RunDir(run_root).splits_csv
    if not path.is_file():
        return None
    try:
        table = pd.read_csv(path, dtype=str, usecols=lambda c: c in ("image_id", "lesion_id",
                                                                    "split"))
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        log.warning("%s is unreadable (%s); the train/test leakage check is skipped", path, exc)
        return None
    if not {"image_id", "lesion_id", "split"} <= set(table.columns):
        return None
    train = table[table["split"] == "train"]
    return SplitIds("train", str(path), train["image_id"].to_numpy(dtype=str),
                    train["lesion_id"].to_numpy(dtype=str))


def _show(values: Iterable[str]) -> str:
    ordered = sorted(values)
    more = f" (+{len(ordered) - SHOWN} more)" if len(ordered) > SHOWN else ""
    return ", ".join(ordered[:SHOWN]) + more


def shared_ids(test: SplitIds, other: SplitIds) -> tuple[set[str], set[str]]:
    """(shared image ids, shared lesion ids) of two splits."""
    images = set(test.image_id.tolist()) & set(other.image_id.tolist())
    lesions = set(test.lesion_id.tolist()) & set(other.lesion_id.tolist())
    return images, lesions


def check_no_leakage(run_root: str | os.PathLike | None, test: SplitIds,
                     others: Sequence[SplitIds], *, with_train: bool = True) -> None:
    """Refuse a test split sharing an image, or a lesion, with another split.

    Args:
        run_root: the run directory (its declared split; its splits.csv's training split when
            `with_train`); None: nothing declared, no splits.csv.
        test: the test split.
        others: the other splits that meet it (validation, out-of-fold predictions).
        with_train: also compare with splits.csv's training split.

    Raises:
        LeakageError: one line naming both files, the count and the first few shared lesions
            (or images), and the fix.
    """
    image_level = image_level_split(run_root)
    compared = list(others)
    if with_train and (train := train_ids(run_root)) is not None:
        compared.append(train)
    for other in compared:
        images, lesions = shared_ids(test, other)
        pair = f"{other.source} ({other.split}) and {test.source} ({test.split})"
        if images:
            raise LeakageError(
                f"{pair} share {len(images)} image(s) ({_show(images)}); an image must never be "
                f"in both splits: regenerate the predictions from one split of the data, or leave "
                "these files out")
        if lesions and not image_level:
            raise LeakageError(
                f"{pair} share {len(lesions)} lesion(s) ({_show(lesions)}): images of one lesion "
                f"in both splits leak it into the {test.split} results. Split by lesion and "
                "predict again (a run made with --split image, the source paper's leaky "
                "protocol, is accepted and its report carries a leakage warning)")
        if lesions:
            log.warning("%s share %d lesion(s): the declared image-level split leaks (the report "
                        "says so)", pair, len(lesions))

