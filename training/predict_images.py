"""New images for a trained entry: find the files, decode them as training did, predict in batches.

`--predict` (pipeline.predict_action) classifies images that are not in the run. Each file is
decoded by the image cache's own decoder (`data_utils.imaging.decode_image`: the same EXIF
orientation, RGB/grayscale/RGBA conversion, JPEG draft mode and resize), at the entry's input
size and resize mode read from the run (`training.trained`), so an image of the run predicted
here gets exactly the pixels its cache row had. Nothing is cached: images of a folder are decoded
batch by batch, predicted and dropped, so memory stays one batch whatever the folder's size.

A file that cannot be decoded is not fatal: it is returned with its reason (`UnreadableImage`)
and the others are still predicted.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.classes import NUM_CLASSES
from core.errors import DataError
from data_utils.imaging import decode_image
from training.trained import DEFAULT_PREDICT_BATCH

logger = logging.getLogger(__name__)

# Files a folder contributes (case-insensitive); a file named on the command line is always tried.
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".tif", ".tiff",
                                   ".webp")


@dataclass(frozen=True)
class UnreadableImage:
    """A file that was skipped, and why.

    Attributes:
        path: the file as found (a command-line path, or a folder's path joined with the file).
        reason: why it could not be read, in a few words.
    """

    path: str
    reason: str


@dataclass(frozen=True)
class FileProbabilities:
    """One entry's probabilities for a list of files.

    Attributes:
        proba: (n_files, 7) float64 probabilities in canonical class order; NaN rows for the
            files that could not be read.
        readable: (n_files,) bool, the files that were decoded and predicted.
        unreadable: the files skipped, with their reasons, in file order.
    """

    proba: np.ndarray
    readable: np.ndarray
    unreadable: tuple[UnreadableImage, ...]


def find_images(paths: Iterable[str | os.PathLike]) -> tuple[list[Path], list[UnreadableImage]]:
    """The image files named by `--predict`: files as given, folders searched recursively.

    A file named directly is always tried, whatever its suffix (a corrupt one is then reported
    like any other). In a folder, only files with an image suffix (`IMAGE_SUFFIXES`) count, so
    a metadata CSV beside the images is not reported as a failure; hidden files and folders are
    skipped; files are sorted by path. A file reached twice is predicted once.

    Args:
        paths: the command line's paths.

    Returns:
        (the files in order, the paths that do not exist as UnreadableImage).
    """
    files: list[Path] = []
    missing: list[UnreadableImage] = []
    seen: set[Path] = set()

    def add(path: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            files.append(path)

    for given in paths:
        path = Path(given).expanduser()
        if path.is_dir():
            found = []
            for root, dirs, names in os.walk(path):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                found += [Path(root) / name for name in names if not name.startswith(".")
                          and Path(name).suffix.lower() in IMAGE_SUFFIXES]
            if not found:
                logger.warning("%s holds no image file (%s)", path, ", ".join(IMAGE_SUFFIXES))
            for file in sorted(found):
                add(file)
        elif path.is_file():
            add(path)
        else:
            missing.append(UnreadableImage(os.fspath(given), "no such file or folder"))
    return files, missing


def unreadable_reason(error: DataError) -> str:
    """The decoder's own reason for a file it refused (the exception it caught), in one line."""
    cause = error.__cause__ or error.__context__
    if isinstance(cause, FileNotFoundError):
        return "no such file"
    if cause is not None:
        return f"{type(cause).__name__}: {cause}".splitlines()[0]
    return str(error)


def decode_batch(files: Sequence[Path], size: int,
                 resize_mode: str) -> tuple[np.ndarray, list[int], list[UnreadableImage]]:
    """Decode files as the image cache does, skipping the ones that cannot be read.

    Args:
        files: image files.
        size: the entry's square input size.
        resize_mode: "square" or "crop" (the run's).

    Returns:
        (uint8 images (k, size, size, 3) of the readable files, their indices in `files`, the
        unreadable files with their reasons).
    """
    images, kept, failed = [], [], []
    for i, file in enumerate(files):
        try:
            images.append(decode_image(file, size, resize_mode))
        except DataError as exc:
            failed.append(UnreadableImage(os.fspath(file), unreadable_reason(exc)))
            continue
        kept.append(i)
    stacked = np.stack(images) if images else np.zeros((0, size, size, 3), dtype=np.uint8)
    return stacked, kept, failed


def predict_files(
    predict: Callable[[np.ndarray], np.ndarray],
    files: Sequence[Path],
    size: int,
    resize_mode: str,
    batch_size: int = DEFAULT_PREDICT_BATCH,
    on_batch: Callable[[int], None] | None = None,
    on_images: Callable[[np.ndarray, list[Path], np.ndarray], None] | None = None,
) -> FileProbabilities:
    """Decode and predict files batch by batch.

    Args:
        predict: uint8 images (k, size, size, 3) -> (k, 7) probabilities (e.g.
            `TrainedEntry.predict`).
        files: the image files.
        size: the input size the entry was trained at.
        resize_mode: the run's resize mode.
        batch_size: files decoded and predicted at a time.
        on_batch: called after each batch with the number of files it covered (progress).
        on_images: called after each batch with (its readable images, their files, their
            probabilities), e.g. to draw Grad-CAM overlays while the images are in memory.

    Returns:
        The probabilities, which files were readable, and why the others were not.

    Raises:
        ValueError: a batch size below 1.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    n = len(files)
    proba = np.full((n, NUM_CLASSES), np.nan)
    readable = np.zeros(n, dtype=bool)
    unreadable: list[UnreadableImage] = []
    for start in range(0, n, batch_size):
        chunk = files[start:start + batch_size]
        images, kept, failed = decode_batch(chunk, size, resize_mode)
        unreadable += failed
        if kept:
            rows = np.asarray(kept) + start
            out = np.asarray(predict(images), dtype=np.float64)
            proba[rows] = out
            readable[rows] = True
            if on_images is not None:
                on_images(images, [files[i] for i in rows], out)
        if on_batch is not None:
            on_batch(len(chunk))
    return FileProbabilities(proba=proba, readable=readable, unreadable=tuple(unreadable))
