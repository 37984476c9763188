"""An entry's data: its splits over the decoded-image cache, the batches it trains on, the
predictions it writes.

`load_entry_data` cuts the cached images into train/val/test as splits.csv says;
`TrimmedBatches` serves training batches whose sizes split evenly over the devices (data
parallelism, `training.distribution`); `predict_rows` predicts in batches of one fixed shape;
`write_prediction_file` writes predictions_<split>.csv (`core.predictions`). Used by the protocol
(`training.protocol`) and the SVM baseline (`training.svm_baseline`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from core.classes import CLASS_INDEX, CLASSES
from core.errors import DataError
from core.predictions import make_predictions, write_predictions
from core.rundir import RunDir
from data_utils.pipeline import CacheBatches
from training.errors import ProtocolError


@dataclass(frozen=True)
class SplitData:
    """One split of an entry's data: cache rows, labels and the identity columns.

    Attributes:
        rows: (n,) int64 rows of the image cache.
        labels: (n,) int32 class indices (canonical order).
        image_id, lesion_id, label: (n,) str arrays for the prediction files.
    """

    rows: np.ndarray
    labels: np.ndarray
    image_id: np.ndarray
    lesion_id: np.ndarray
    label: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)


@dataclass(frozen=True)
class EntryData:
    """The cached images of an entry and its train/val/test splits."""

    images: np.ndarray
    train: SplitData
    val: SplitData
    test: SplitData

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1])


def load_entry_data(cache: Any, splits: pd.DataFrame) -> EntryData:
    """Split the cached images as `splits.csv` says.

    Args:
        cache: an `data_utils.cache.ImageCache` holding every image of the table.
        splits: the run's splits table (image_id, lesion_id, dx, split).

    Returns:
        The entry's data.

    Raises:
        ProtocolError: no "split" column, an unknown class, or an empty train/val/test split.
        DataError: image ids missing from the cache.
    """
    missing = [c for c in ("image_id", "lesion_id", "dx", "split") if c not in splits.columns]
    if missing:
        raise ProtocolError(
            f"splits.csv lacks the column(s) {', '.join(missing)}; prepare the run again"
        )
    bad = ~splits["dx"].isin(CLASSES)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise ProtocolError(
            f"splits.csv row {row + 1}: unknown class {splits['dx'].iloc[row]!r}; expected one of "
            f"{', '.join(CLASSES)}"
        )
    parts = {}
    for split in ("train", "val", "test"):
        part = splits[splits["split"] == split]
        if part.empty:
            raise ProtocolError(
                f"splits.csv has no '{split}' rows; every entry needs train, val and test images "
                "(use more images or other --ratios)"
            )
        parts[split] = SplitData(
            rows=cache.rows(part["image_id"].to_numpy()),
            labels=np.array([CLASS_INDEX[c] for c in part["dx"]], dtype=np.int32),
            image_id=part["image_id"].astype(str).to_numpy(),
            lesion_id=part["lesion_id"].astype(str).to_numpy(),
            label=part["dx"].astype(str).to_numpy(),
        )
    return EntryData(images=cache.images, **parts)


class TrimmedBatches(CacheBatches):
    """Training batches whose sizes are all multiples of `multiple` (data parallelism).

    Every batch is split evenly over the devices, so the last, partial batch of an epoch is cut
    to a multiple of `multiple` (left out when smaller). At most `multiple - 1` images sit out an
    epoch; which ones changes with the epoch's shuffled order.
    """

    def __init__(self, images: np.ndarray, rows, labels=None, *, batch_size: int,
                 multiple: int = 1, **kwargs: Any) -> None:
        """Like `CacheBatches`, plus `multiple` (a positive divisor of `batch_size`)."""
        super().__init__(images, rows, labels, batch_size=batch_size, **kwargs)
        if int(multiple) < 1 or int(batch_size) % int(multiple):
            raise ValueError(f"multiple must divide batch_size {batch_size}, got {multiple}")
        self.multiple = int(multiple)
        self.count = len(np.asarray(rows))

    def __len__(self) -> int:
        full, rest = divmod(self.count, self.batch_size)
        return full + (1 if rest >= self.multiple else 0)

    def __getitem__(self, index: int):
        batch = super().__getitem__(index)
        parts = batch if isinstance(batch, tuple) else (batch,)
        keep = len(parts[0]) // self.multiple * self.multiple
        if keep == len(parts[0]):
            return batch
        trimmed = tuple(part[:keep] for part in parts)
        return trimmed if isinstance(batch, tuple) else trimmed[0]


def predict_rows(model: keras.Model, images: np.ndarray, rows: np.ndarray,
                 batch_size: int) -> np.ndarray:
    """Predict `images[rows]` in batches of exactly `batch_size`.

    The last batch is padded by repeating its final image and the padded outputs are dropped:
    every call has one input shape, so XLA (JAX, or TensorFlow's jit) compiles the predict step
    once for validation and test alike, and a data-parallel batch always splits evenly over
    the devices. Prediction is in inference mode (no augmentation, BatchNorm moving
    statistics), so the padding does not change any image's output (beyond the rounding of
    kernels chosen per batch size).

    Args:
        model: the model (uint8 images in, probabilities out).
        images: (N, H, W, 3) uint8 array or memmap.
        rows: (n,) rows of `images`, n >= 1, in the order of the output.
        batch_size: images per forward pass.

    Returns:
        (n, classes) array of the model's outputs.
    """
    rows = np.asarray(rows, dtype=np.int64)
    n = len(rows)
    pad = (-n) % int(batch_size)
    padded = np.concatenate([rows, np.repeat(rows[-1:], pad)]) if pad else rows
    proba = model.predict(CacheBatches(images, padded, batch_size=int(batch_size)), verbose=0)
    return np.asarray(proba)[:n]


def write_prediction_file(entry_dir: Path, split: str, part: SplitData, proba: np.ndarray,
                          source: str = "") -> None:
    """Write predictions_<split>.csv from (n, 7) probabilities (rows renormalised in float64).

    Args:
        entry_dir: models/<entry>.
        split: "val" or "test".
        part: the split's identity columns (`SplitData`), in the order of `proba`'s rows.
        proba: (n, 7) probabilities in the canonical class order.
        source: names the entry and split in error messages.

    Raises:
        DataError: NaN or infinite probabilities.
    """
    proba = np.asarray(proba, dtype=np.float64)
    if not np.isfinite(proba).all():
        raise DataError(f"{source}: the model produced NaN/infinite probabilities")
    proba = proba / proba.sum(axis=1, keepdims=True)
    preds = make_predictions(part.image_id, part.lesion_id, part.label, proba, source=source)
    write_predictions(RunDir.predictions_file(entry_dir, split), preds)
