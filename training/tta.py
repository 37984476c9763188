"""Test-time augmentation: a finished CNN entry's best weights predicting dihedral views.

`--tta N` adds, beside each finished CNN entry of a run, the derived entry `<entry>+tta<N>`
(`training.entries.tta_entry_name`): its probabilities on validation and test are the mean of the
softmax over N dihedral views of each image, computed from the entry's saved best weights
(`training.trained.load_trained_entry`) without retraining. The views (`dihedral_views`), in order:

- N = 1: the image itself;
- N = 2: + the horizontal flip (left-right mirror);
- N = 4: + the vertical flip (upside down), + both flips (the 180 degree rotation);
- N = 8: + the transposes of those four (the transpose, the two 90 degree rotations and the
  anti-transpose): the eight symmetries of the square.

A derived entry's folder is models/<entry>+tta<N>/ with predictions_val.csv and
predictions_test.csv (the rows of the plain entry's files, in their order) and metrics.json
recording "kind": "tta" (never a default ensemble member), "derived_from", "tta_views" and
"source_weights_sha256", the SHA-256 of the weights file it was computed from: a derived entry
whose source weights still have that hash is current and kept (`tta_is_current`); one whose source
was retrained since is recomputed. The folder is written as one step (`core.atomic.staged_dirs`).

Keras is imported only when a model is loaded (`derive_tta_entry`), so that the pipeline modules
importing this one stay light for `--report`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.atomic import staged_dirs
from core.entry_metrics import read_entry_metrics, write_entry_metrics
from core.errors import DataError, RunDirError
from core.predictions import make_predictions, read_predictions, write_predictions
from core.rundir import SPLITS, RunDir, entry_folders
from training.entries import (
    TTA_KIND,
    TTA_VIEWS,
    all_entries,
    entry_description,
    entry_family,
    is_svm_entry,
    is_tta_entry,
    tta_entry_name,
    tta_source,
)
from training.errors import ConfigError
from training.fingerprint import file_sha256
from training.resume_state import BEST_WEIGHTS

logger = logging.getLogger(__name__)

# (horizontal flip, vertical flip, transpose) of each view, in the order views are added.
_VIEW_OPS: tuple[tuple[bool, bool, bool], ...] = (
    (False, False, False), (True, False, False), (False, True, False), (True, True, False),
    (False, False, True), (True, False, True), (False, True, True), (True, True, True),
)
VIEW_NAMES: tuple[str, ...] = (
    "identity", "horizontal flip", "vertical flip", "both flips (180 degree rotation)",
    "transpose", "transpose of the horizontal flip", "transpose of the vertical flip",
    "transpose of both flips (anti-transpose)",
)
SOURCE_HASH_KEY = "source_weights_sha256"

# The outcome of one source entry: "written" (derived entry (re)computed), "current" (kept),
# "skipped" (no derived entry possible: an SVM, an unfinished entry, missing weights).
WRITTEN, CURRENT, SKIPPED = "written", "current", "skipped"


def check_views(views: int) -> int:
    """Return `views` when it is a view count `--tta` takes (1, 2, 4 or 8).

    Raises:
        ConfigError: any other value.
    """
    if isinstance(views, bool) or not isinstance(views, (int, np.integer)) \
            or int(views) not in TTA_VIEWS:
        raise ConfigError(f"--tta takes {', '.join(map(str, TTA_VIEWS))} views, not {views!r}")
    return int(views)


def dihedral_views(images: np.ndarray, views: int) -> list[np.ndarray]:
    """The first `views` dihedral views of a batch of square images (see the module docstring).

    Args:
        images: (n, s, s, c) array (height and width equal: the transposes keep the shape).
        views: 1, 2, 4 or 8.

    Returns:
        `views` arrays of the shape of `images` (numpy views: nothing is copied).

    Raises:
        ConfigError: another view count.
        ValueError: not a batch of square images.
    """
    views = check_views(views)
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] != images.shape[2]:
        raise ValueError(f"expected square images (n, s, s, channels), got shape {images.shape}")
    out = []
    for flip_h, flip_v, transpose in _VIEW_OPS[:views]:
        view = images
        if flip_h:
            view = view[:, :, ::-1]
        if flip_v:
            view = view[:, ::-1]
        if transpose:
            view = view.transpose(0, 2, 1, 3)
        out.append(view)
    return out


def tta_probabilities(predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray,
                      views: int) -> np.ndarray:
    """The mean of `predict`'s probabilities over the first `views` dihedral views.

    Args:
        predict: images -> (n, classes) probabilities (e.g. `TrainedEntry.predict`).
        images: (n, s, s, c) images.
        views: 1, 2, 4 or 8.

    Returns:
        (n, classes) float64 probabilities, each row renormalised to sum to 1.

    Raises:
        DataError: the model gave NaN or infinite probabilities.
    """
    total = None
    for view in dihedral_views(images, views):
        proba = np.asarray(predict(view), dtype=np.float64)
        total = proba if total is None else total + proba
    mean = total / views
    if not np.isfinite(mean).all():
        raise DataError("the model produced NaN/infinite probabilities on an augmented view")
    return mean / mean.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class TtaOutcome:
    """What happened to one source entry.

    Attributes:
        source: the plain entry.
        entry: its derived entry's name.
        status: WRITTEN, CURRENT or SKIPPED.
        reason: why it was skipped or recomputed ("" otherwise).
    """

    source: str
    entry: str
    status: str
    reason: str = ""


def source_entries(run_dir: str | Path) -> list[str]:
    """The run's entries (folders under models/ that are entries of `all_entries`), in the
    order of `all_entries`; derived and unknown folders are left out."""
    present = {path.name for path in entry_folders(RunDir(run_dir).models_dir)}
    return [name for name in all_entries() if name in present]


def tta_is_current(run_dir: str | Path, entry: str, views: int,
                   weights_sha256: str | None = None) -> bool:
    """Whether models/<entry>+tta<views>/ is finished and was computed from the current weights.

    Args:
        run_dir: the run directory.
        entry: the plain entry.
        views: the view count.
        weights_sha256: the SHA-256 of the entry's weights (None: computed here).

    Returns:
        True when the derived entry has status "ok", both prediction files, the same view count
        and source, and a recorded source weights hash equal to that of the weights file now.
    """
    run = RunDir(run_dir)
    folder = run.model_dir(tta_entry_name(entry, views))
    metrics = read_entry_metrics(folder)
    if metrics.get("status") != "ok" or metrics.get("derived_from") != entry \
            or metrics.get("tta_views") != views:
        return False
    if not all(RunDir.predictions_file(folder, split).is_file() for split in SPLITS):
        return False
    weights = run.model_dir(entry) / BEST_WEIGHTS
    if weights_sha256 is None:
        if not weights.is_file():
            return False
        weights_sha256 = file_sha256(weights)
    return metrics.get(SOURCE_HASH_KEY) == weights_sha256


def stale_tta_entries(run_dir: str | Path) -> list[str]:
    """The derived entries of a run whose source weights changed since they were computed
    (for a warning when `--tta` is not given); sources without weights are not judged."""
    run = RunDir(run_dir)
    stale = []
    for folder in entry_folders(run.models_dir):
        if not is_tta_entry(folder.name):
            continue
        source = tta_source(folder.name)
        weights = run.model_dir(source) / BEST_WEIGHTS
        recorded = read_entry_metrics(folder).get(SOURCE_HASH_KEY)
        if weights.is_file() and recorded != file_sha256(weights):
            stale.append(folder.name)
    return stale


def plan_source(run_dir: str | Path, entry: str, views: int) -> TtaOutcome | None:
    """The outcome of `entry` when nothing needs computing (SKIPPED or CURRENT), else None.

    Args:
        run_dir: the run directory.
        entry: an entry of the run (`source_entries`).
        views: the view count.

    Returns:
        A SKIPPED outcome for an SVM entry, an unfinished one or one without weights; CURRENT
        when its derived entry is current (`tta_is_current`); None when it must be computed.
    """
    run = RunDir(run_dir)
    if is_svm_entry(entry):
        return TtaOutcome(entry, f"{entry}+tta{views}", SKIPPED,
                          "an SVM on frozen features has no Keras model to predict views with")
    name = tta_entry_name(entry, views)
    folder = run.model_dir(entry)
    metrics = read_entry_metrics(folder)
    if metrics.get("status") != "ok" or not all(
            RunDir.predictions_file(folder, split).is_file() for split in SPLITS):
        return TtaOutcome(entry, name, SKIPPED, "not finished")
    weights = folder / BEST_WEIGHTS
    if not weights.is_file():
        return TtaOutcome(entry, name, SKIPPED, f"no {BEST_WEIGHTS} (a run copied without its "
                                                "weights)")
    if tta_is_current(run.root, entry, views, file_sha256(weights)):
        return TtaOutcome(entry, name, CURRENT)
    return None


def derive_tta_entry(run_dir: str | Path, entry: str, views: int, *, n_resamples: int = 1000,
                     seed: int = 0, cache_dir: str | None = None,
                     workers: int | None = None) -> TtaOutcome:
    """Compute and write models/<entry>+tta<views>/ from the entry's best weights.

    Args:
        run_dir: a single run directory (a grid replicate's folder for a grid).
        entry: a finished CNN entry of the run.
        views: 1, 2, 4 or 8.
        n_resamples, seed: the lesion bootstrap of the test intervals in metrics.json.
        cache_dir: the decoded-image cache root (--cache-dir; None: the default).
        workers: image-decoding processes when the cache is built.

    Returns:
        A WRITTEN outcome.

    Raises:
        ConfigError: a bad view count or an SVM entry.
        RunDirError: no weights or run.json, or prediction files whose rows are not the run's
            images in splits.csv order (the message names the file).
        DataError: NaN/infinite probabilities.
        PredictionFileError: the plain entry's prediction file breaks the contract.
    """
    from training.trained import load_trained_entry, split_images

    views = check_views(views)
    name = tta_entry_name(entry, views)
    run = RunDir(run_dir)
    started = time.perf_counter()
    weights = run.model_dir(entry) / BEST_WEIGHTS
    if not weights.is_file():
        raise RunDirError(f"{weights} is missing: {entry} has no trained weights to derive "
                          f"{name} from (train it with --all --models {entry} --out {run.root})")
    digest = file_sha256(weights)
    trained = load_trained_entry(run.root, entry)
    size = trained.image_size
    try:
        images = split_images(run.root, entry, cache_dir=cache_dir, workers=workers)
        predictions = {}
        for split in SPLITS:
            ids, pixels = images[split]
            plain_file = RunDir.predictions_file(run.model_dir(entry), split)
            plain = read_predictions(plain_file)
            _check_rows(plain_file, plain.image_id, ids)
            proba = tta_probabilities(trained.predict, pixels, views)
            predictions[split] = make_predictions(plain.image_id, plain.lesion_id, plain.label,
                                                  proba, source=f"{name} {split}")
    finally:
        del trained
        _clear_keras_session()
    source_metrics = read_entry_metrics(run.model_dir(entry))
    extra = _metrics_extra(entry, name, views, digest, source_metrics, size,
                           time.perf_counter() - started)
    target = run.model_dir(name)
    with staged_dirs([target]) as (folder,):
        for split, preds in predictions.items():
            write_predictions(RunDir.predictions_file(folder, split), preds)
        write_entry_metrics(folder, extra=extra, n_resamples=n_resamples, seed=seed)
    logger.info("%s: %d views of %s's best weights (sha256 %s) on validation and test",
                name, views, entry, digest[:12])
    return TtaOutcome(entry, name, WRITTEN)


def run_tta(run_dir: str | Path, views: int, *, n_resamples: int = 1000, seed: int = 0,
            cache_dir: str | None = None, workers: int | None = None,
            on_error: Callable[[str, Callable[[], TtaOutcome]], TtaOutcome | None] | None = None,
            ) -> list[TtaOutcome]:
    """Add (or refresh) the derived entry of every entry of a run (see the module docstring).

    Args:
        run_dir: a single run directory (one replicate of a grid).
        views: 1, 2, 4 or 8.
        n_resamples, seed, cache_dir, workers: see `derive_tta_entry`.
        on_error: runs each computation, as on_error(derived name, action) -> outcome or None
            when it failed (the pipeline records the failure and goes on); None: errors raise.

    Returns:
        One outcome per entry of the run (`source_entries`), failed computations left out.

    Raises:
        ConfigError: a bad view count.
        Whatever `derive_tta_entry` raises, without `on_error`.
    """
    views = check_views(views)
    outcomes = []
    for entry in source_entries(run_dir):
        planned = plan_source(run_dir, entry, views)
        if planned is not None:
            if planned.status == SKIPPED:
                logger.info("%s: no test-time augmentation (%s)", entry, planned.reason)
            outcomes.append(planned)
            continue

        def action(entry: str = entry) -> TtaOutcome:
            return derive_tta_entry(run_dir, entry, views, n_resamples=n_resamples, seed=seed,
                                    cache_dir=cache_dir, workers=workers)

        result = action() if on_error is None else on_error(tta_entry_name(entry, views), action)
        if result is not None:
            outcomes.append(result)
    return outcomes


def _check_rows(path: Path, written: np.ndarray, ids: Sequence[str]) -> None:
    """Refuse prediction rows that are not the run's images of that split in splits.csv order."""
    written = [str(i) for i in written]
    ids = [str(i) for i in ids]
    if written != ids:
        first = next((i for i, (a, b) in enumerate(zip(written, ids, strict=False)) if a != b),
                     min(len(written), len(ids)))
        raise RunDirError(
            f"{path}: its rows are not the run's images of that split in splits.csv order "
            f"(first difference at data row {first + 1}, {len(written)} rows vs {len(ids)} "
            "images): the entry was predicted on other data; retrain it (--all) before adding "
            "test-time augmentation")


def _metrics_extra(entry: str, name: str, views: int, digest: str, source: dict[str, Any],
                   image_size: int, seconds: float) -> dict[str, Any]:
    """What a derived entry's metrics.json records besides its metrics."""
    extra: dict[str, Any] = {
        "entry": name, "kind": TTA_KIND, "status": "ok", "derived_from": entry,
        "tta_views": views, "tta_view_names": list(VIEW_NAMES[:views]),
        SOURCE_HASH_KEY: digest, "description": entry_description(name),
        "family": entry_family(name),
        "image_size": int(image_size),
        "tta_seconds": round(seconds, 3),
    }
    for key in ("fingerprint", "params"):
        if source.get(key) is not None:
            extra[key] = source[key]
    flops = source.get("flops_per_image")
    if isinstance(flops, (int, float)) and not isinstance(flops, bool):
        extra["flops_per_image"] = flops * views  # one forward pass per view
    return extra


def _clear_keras_session() -> None:
    """Free the loaded model (one per entry) before the next is built."""
    try:
        import keras

        keras.backend.clear_session()
    except Exception:  # noqa: BLE001 - freeing memory is best effort
        logger.debug("keras.backend.clear_session failed", exc_info=True)
