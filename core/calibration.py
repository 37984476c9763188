"""One prior convention: calibration is measured after mapping probabilities to the training prior.

Every entry's probabilities target a class-balanced (uniform) prior: the CNNs train with a
class-weighted loss, and the SVM, weighted voting and stacking are fit class-balanced too. Those
probabilities are right for ranking and thresholds (discrimination metrics use them unchanged),
but a reliability diagram or a log loss of them against a test set with HAM10000's natural class
mix would measure the prior choice, not the model. Calibration (log loss, Brier, ECE, reliability
diagrams) is therefore measured on probabilities mapped to the training split's class
frequencies by the prior-shift correction (Saerens et al. 2002):

    p'_k = p_k * pi_k / sum_j p_j * pi_j

where pi are the training-split class frequencies. Nothing is fit on the test split.

Where pi comes from, first found wins: the training rows of the run's splits.csv
(`split == "train"`), dataset.json's `counts["train"]`, else (a prediction-only run directory)
the class frequencies of the entry's validation labels; with none of them the correction is the
identity (uniform prior, source "none").

Zero frequencies: a class without a training image would get pi_k = 0, which sets p'_k = 0 and
makes the log loss of a test image of that class infinite (and a row whose mass lies on such
classes 0/0). So when any class count is zero, every class gets one pseudo-image (add-one
smoothing: pi_k = (n_k + 1) / (n + 7)); with all classes present the frequencies are used as they
are. pi is then strictly positive and the correction maps every valid probability row to a valid
probability row.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.atomic import read_json
from core.classes import CLASS_INDEX, CLASSES, NUM_CLASSES

log = logging.getLogger(__name__)

SOURCE_SPLITS = "splits.csv"
SOURCE_DATASET = "dataset.json"
SOURCE_VALIDATION = "validation labels"
SOURCE_NONE = "none"
CONVENTION = (
    "Every entry's probabilities target a class-balanced (uniform) prior; discrimination metrics "
    "use them as they are, while calibration (log loss, Brier, ECE, reliability diagrams) is "
    "measured after the prior-shift correction p'_k ∝ p_k·π_k to the training split's class "
    "frequencies π (nothing fit on test)."
)


@dataclass(frozen=True)
class CalibrationPrior:
    """The class prior calibration is measured against.

    Attributes:
        source: "splits.csv", "dataset.json", "validation labels" or "none".
        prior: 7 strictly positive class frequencies summing to 1, canonical class order.
        smoothed: True when add-one smoothing was applied (a class had no image).
    """

    source: str
    prior: tuple[float, ...]
    smoothed: bool = False

    @property
    def vector(self) -> np.ndarray:
        """The prior as a (7,) float array."""
        return np.asarray(self.prior, dtype=np.float64)

    def to_json(self) -> dict[str, Any]:
        """{"source": ..., "prior": {class: frequency}, "smoothing": "none" | "add-one"}."""
        return {
            "source": self.source,
            "prior": dict(zip(CLASSES, self.prior, strict=True)),
            "smoothing": "add-one" if self.smoothed else "none",
        }

    @classmethod
    def from_json(cls, data: Any) -> CalibrationPrior | None:
        """Read back `to_json`'s mapping (None when it is missing or malformed)."""
        if not isinstance(data, dict) or not isinstance(data.get("prior"), dict):
            return None
        try:
            prior = np.array([float(data["prior"][name]) for name in CLASSES])
        except (KeyError, TypeError, ValueError):
            return None
        if not np.all(np.isfinite(prior)) or np.any(prior <= 0):
            return None
        return cls(str(data.get("source", "")), tuple((prior / prior.sum()).tolist()),
                   data.get("smoothing") == "add-one")


UNIFORM = CalibrationPrior(SOURCE_NONE, (1.0 / NUM_CLASSES,) * NUM_CLASSES)


def prior_from_counts(counts, source: str) -> CalibrationPrior:
    """Class frequencies from per-class counts, add-one smoothed when a class count is zero.

    Args:
        counts: (7,) non-negative image counts per class, canonical order.
        source: where the counts come from (recorded).

    Returns:
        The prior (uniform when every count is zero).

    Raises:
        ValueError: counts of the wrong length, negative or not finite.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.shape != (NUM_CLASSES,) or not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise ValueError(f"expected 7 non-negative class counts, got {counts.tolist()}")
    smoothed = bool(np.any(counts == 0))
    if smoothed:
        counts = counts + 1.0
    return CalibrationPrior(source, tuple((counts / counts.sum()).tolist()), smoothed)


def prior_shift(proba: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Map class-balanced probabilities to a class prior: p'_k = p_k pi_k / sum_j p_j pi_j.

    Args:
        proba: (n, 7) probabilities targeting a uniform prior (rows sum to 1).
        prior: (7,) strictly positive target class frequencies (need not sum to 1).

    Returns:
        (n, 7) probabilities, rows summing to 1. A uniform `prior` returns `proba` unchanged.

    Raises:
        ValueError: a prior of the wrong shape, or with a zero, negative or non-finite entry.
    """
    prior = np.asarray(prior, dtype=np.float64)
    if prior.shape != (NUM_CLASSES,) or not np.all(np.isfinite(prior)) or np.any(prior <= 0):
        raise ValueError(f"the prior must be 7 positive finite numbers, got {prior.tolist()}")
    weighted = np.asarray(proba, dtype=np.float64) * (prior / prior.sum())[None, :]
    return weighted / weighted.sum(axis=1, keepdims=True)


def entry_run_root(entry_dir: str | Path) -> Path | None:
    """The run directory holding models/<name> or ensembles/<name> (None elsewhere)."""
    entry_dir = Path(entry_dir)
    if entry_dir.parent.name in ("models", "ensembles"):
        return entry_dir.parent.parent
    return None


def training_prior(run_root: str | Path | None, val_labels=None) -> CalibrationPrior:
    """The calibration prior of a run: training frequencies, by the sources of the module doc.

    Args:
        run_root: the run directory (None: only `val_labels` can give the prior).
        val_labels: the entry's validation labels (class names or indices), or None.

    Returns:
        The prior and its source. Unreadable or empty sources are logged and skipped.
    """
    if run_root is not None:
        root = Path(run_root)
        for reader in (_from_splits, _from_dataset):
            found = reader(root)
            if found is not None:
                return found
    if val_labels is not None and len(val_labels):
        return prior_from_counts(_count_labels(val_labels), SOURCE_VALIDATION)
    return UNIFORM


def _count_labels(labels) -> np.ndarray:
    values = np.asarray(labels)
    if values.dtype.kind in "iu":
        return np.bincount(values.astype(np.int64), minlength=NUM_CLASSES)[:NUM_CLASSES]
    counts = np.zeros(NUM_CLASSES)
    for name, n in zip(*np.unique(values.astype(str), return_counts=True), strict=True):
        if name in CLASS_INDEX:
            counts[CLASS_INDEX[name]] += n
    return counts


def _from_splits(root: Path) -> CalibrationPrior | None:
    path = root / "splits.csv"
    if not path.is_file():
        return None
    try:
        table = pd.read_csv(path, dtype=str, usecols=lambda c: c in ("dx", "split"))
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        log.warning("%s is unreadable (%s); the calibration prior comes from elsewhere", path, exc)
        return None
    if not {"dx", "split"} <= set(table.columns):
        log.warning("%s lacks the dx/split columns; the calibration prior comes from elsewhere",
                    path)
        return None
    train = table.loc[table["split"] == "train", "dx"]
    unknown = sorted(set(train) - set(CLASSES))
    if unknown:
        log.warning("%s: training rows with unknown classes %s are left out of the calibration "
                    "prior", path, unknown)
    counts = _count_labels(train.to_numpy())
    if counts.sum() == 0:
        return None
    return prior_from_counts(counts, SOURCE_SPLITS)


def _from_dataset(root: Path) -> CalibrationPrior | None:
    path = root / "dataset.json"
    if not path.is_file():
        return None
    try:
        data = read_json(path)
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        log.warning("%s is unreadable (%s); the calibration prior comes from elsewhere", path, exc)
        return None
    counts = data.get("counts") if isinstance(data, dict) else None
    train = counts.get("train") if isinstance(counts, dict) else None
    if not isinstance(train, dict):
        return None
    values = [train.get(name, 0) for name in CLASSES]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
               for v in values) or sum(values) == 0:
        log.warning("%s: counts.train is not a map of class -> count; the calibration prior "
                    "comes from elsewhere", path)
        return None
    return prior_from_counts(values, SOURCE_DATASET)
