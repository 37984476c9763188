"""Batches of uint8 images served from the decoded-image cache, for Keras `fit`/`predict`.

No augmentation and no preprocessing here: both are layers of the model the training stage
builds (docs/ARCHITECTURE.md), so a batch is only a gather of rows from the memory-mapped cache.

The order of every epoch is a pure function of (seed, epoch): the dataset shuffles itself, so
pass `shuffle=False` to `model.fit` (Keras would otherwise reorder whole batches with Python's
global `random`). Keras calls `on_epoch_end` after every epoch, and once more when `fit` starts;
to tie the order to Keras's own epoch number (and so make a run resumed with `initial_epoch=k`
see exactly the orders of an uninterrupted run), pass `SetEpoch(dataset)` in `callbacks`.
"""

from __future__ import annotations

import os

import keras
import numpy as np

__all__ = ["CacheBatches", "SetEpoch"]


class CacheBatches(keras.utils.PyDataset):
    """A `keras.utils.PyDataset` of uint8 image batches gathered from an (N, H, W, 3) array.

    Batch i of an epoch is `x` (b, H, W, 3) uint8, then `y` (b,) int32 when labels were given,
    then `w` (b,) float32 when sample weights were given.
    """

    def __init__(self, images: np.ndarray, rows, labels=None, batch_size: int = 32,
                 shuffle: bool = False, seed: int = 0, balanced: bool = False,
                 sample_weight=None, drop_remainder: bool = False, **pydataset_kwargs) -> None:
        """Create the dataset.

        Args:
            images: (N, H, W, 3) uint8 array or memmap, e.g. `ImageCache.images`.
            rows: int array, the rows of `images` that form this split (in the order served when
                not shuffled).
            labels: int class indices aligned with `rows`, or None (prediction: batches are x).
            batch_size: images per batch.
            shuffle: a new random order every epoch, drawn from (seed, epoch).
            seed: non-negative int seed.
            balanced: class-balanced sampling (needs labels): each epoch draws len(rows) samples
                with every class present equally likely, in random order; rows of a class are
                drawn without repeats until the class is used up, then cycled.
            sample_weight: float weights aligned with `rows` (needs labels), served as the third
                element of each batch.
            drop_remainder: drop the last partial batch (for training); otherwise it is served.
            **pydataset_kwargs: `workers`, `use_multiprocessing`, `max_queue_size` of PyDataset.

        Raises:
            ValueError: shapes or arguments that do not fit together.
        """
        super().__init__(**pydataset_kwargs)
        if getattr(images, "ndim", 0) < 2:
            raise ValueError(f"images must be an (N, H, W, C) array, got {type(images).__name__}")
        rows = np.asarray(rows)
        if rows.ndim != 1 or (rows.size and not np.issubdtype(rows.dtype, np.integer)):
            raise ValueError("rows must be a 1-D integer array of positions in images")
        rows = rows.astype(np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= len(images)):
            raise ValueError(f"rows must lie in [0, {len(images)}): images has {len(images)} rows")
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if isinstance(seed, bool) or int(seed) != seed or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        if labels is not None:
            labels = np.asarray(labels)
            if labels.shape != rows.shape or (labels.size and not np.issubdtype(labels.dtype,
                                                                               np.integer)):
                raise ValueError(f"labels must be {len(rows)} integer class indices, one per row")
            labels = labels.astype(np.int32)
        if sample_weight is not None:
            if labels is None:
                raise ValueError("sample_weight needs labels")
            sample_weight = np.asarray(sample_weight, dtype=np.float32)
            if sample_weight.shape != rows.shape:
                raise ValueError(f"sample_weight must have {len(rows)} values, one per row")
        if balanced and labels is None:
            raise ValueError("balanced sampling needs labels")
        self._images = images
        self._rows = rows
        self._labels = labels
        self._weights = sample_weight
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.balanced = bool(balanced)
        self.drop_remainder = bool(drop_remainder)
        if self.balanced:
            self._members = [np.flatnonzero(labels == c) for c in np.unique(labels)]
        self.set_epoch(0)

    @property
    def epoch(self) -> int:
        """The epoch whose order is being served (0-based)."""
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Serve the order of `epoch` (e.g. before resuming training at that epoch).

        Args:
            epoch: non-negative epoch number.
        """
        if int(epoch) != epoch or epoch < 0:
            raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
        self._epoch = int(epoch)
        self._order = self.epoch_order(self._epoch)

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Positions into `rows` served in `epoch`, in order (a pure function of seed and epoch).

        Args:
            epoch: non-negative epoch number.

        Returns:
            (len(rows),) int64 array.
        """
        n = len(self._rows)
        if not (self.shuffle or self.balanced):
            return np.arange(n, dtype=np.int64)
        rng = np.random.default_rng([self.seed, int(epoch)])
        if not self.balanced:
            return rng.permutation(n)
        # Equal share per class; the remainder goes to randomly chosen classes.
        k = len(self._members)
        counts = np.full(k, n // k)
        counts[rng.choice(k, n % k, replace=False)] += 1
        drawn = []
        for members, count in zip(self._members, counts, strict=True):
            cycles = -(-count // len(members))
            drawn.append(np.concatenate([rng.permutation(members) for _ in range(cycles)])[:count])
        return rng.permutation(np.concatenate(drawn)).astype(np.int64)

    def on_epoch_end(self) -> None:
        """Called by Keras after each epoch: switch to the next epoch's order."""
        self.set_epoch(self._epoch + 1)

    def __len__(self) -> int:
        n = len(self._rows)
        return n // self.batch_size if self.drop_remainder else -(-n // self.batch_size)

    def __getitem__(self, index: int):
        """Batch `index` of the current epoch: x, (x, y) or (x, y, w)."""
        length = len(self)
        if index < 0:
            index += length
        if not 0 <= index < length:
            raise IndexError(f"batch index {index} out of range for {length} batches")
        positions = self._order[index * self.batch_size:(index + 1) * self.batch_size]
        x = self._gather(self._rows[positions])
        if self._labels is None:
            return x
        y = self._labels[positions]
        if self._weights is None:
            return x, y
        return x, y, self._weights[positions]

    def _gather(self, rows: np.ndarray) -> np.ndarray:
        """Copy these rows of `images` into a new array, reading the cache in ascending order."""
        images = self._images
        if len(rows) and rows[-1] - rows[0] == len(rows) - 1 and np.all(np.diff(rows) == 1):
            return np.array(images[rows[0]:rows[-1] + 1])  # one contiguous read
        out = np.empty((len(rows),) + images.shape[1:], dtype=images.dtype)
        for position in np.argsort(rows, kind="stable"):
            out[position] = images[rows[position]]
        return out

    def __getstate__(self) -> dict:
        # Workers started with 'spawn' pickle the dataset: send a memory-mapped cache as a
        # reference to its file, not as a copy of every image.
        state = self.__dict__.copy()
        images = state["_images"]
        if _whole_file_memmap(images):
            state["_images"] = ("memmap", os.fspath(images.filename), images.offset,
                                images.dtype.str, images.shape)
        return state

    def __setstate__(self, state: dict) -> None:
        images = state["_images"]
        if isinstance(images, tuple) and images and images[0] == "memmap":
            _, filename, offset, dtype, shape = images
            state["_images"] = np.memmap(filename, dtype=np.dtype(dtype), mode="r",
                                         offset=offset, shape=shape)
        self.__dict__.update(state)


def _whole_file_memmap(images) -> bool:
    """True for a C-contiguous memmap that spans its file from its offset to the end."""
    if not isinstance(images, np.memmap) or not getattr(images, "filename", None):
        return False
    try:
        file_size = os.path.getsize(images.filename)
    except OSError:
        return False
    return bool(images.flags.c_contiguous) and images.offset + images.nbytes == file_size


class SetEpoch(keras.callbacks.Callback):
    """Keras callback: at the start of Keras epoch k, serve `dataset.epoch_order(offset + k)`.

    Keras calls it before it fetches the epoch's first batch, so the order depends only on
    (seed, offset + k): a run resumed with `fit(initial_epoch=k)` sees the same orders as an
    uninterrupted one, whatever `on_epoch_end` calls Keras made before (it makes one extra call
    when `fit` starts).
    """

    def __init__(self, dataset: CacheBatches, offset: int = 0) -> None:
        """Args:
            dataset: the training dataset passed to `model.fit`.
            offset: added to Keras's epoch number, e.g. the epochs of earlier training phases so
                that every phase sees new orders.
        """
        super().__init__()
        self.dataset = dataset
        self.offset = int(offset)

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self.dataset.set_epoch(self.offset + epoch)
