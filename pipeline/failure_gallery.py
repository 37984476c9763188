"""The failure gallery of a single run, drawn after training for the report's "Where the models
fail" (reports.failures_section, which defines the files and reads them).

For the reference entry and the best CNN entry on the validation split (`gallery_entries`), the
most confident errors on the test split (up to `PER_CLASS` per true class, `most_confident_errors`)
are drawn in one figure per entry, each image with the Grad-CAM map of the predicted class over
it (training.gradcam), and described in figures/failures/index.json together with the SHA-256 of
the predictions_test.csv they came from. A current gallery is kept as it is; a stale one (the
entry's predictions changed) is drawn again; an entry without weights or images gets a record
saying why instead of a figure.

Keras is imported only when a figure is drawn: `--report` imports the pipeline modules and stays
free of TensorFlow.
"""

from __future__ import annotations

import io
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.atomic import atomic_write_bytes, atomic_write_json_if_changed
from core.classes import CLASSES, NUM_CLASSES
from core.defaults import RANK_BY, REFERENCE
from core.errors import BenchmarkError
from core.predictions import Predictions, read_predictions
from core.provenance import file_sha256
from core.rundir import RunDir
from pipeline.console import captured_native_output
from reports.cleanup import remove_stale_files
from reports.failures_section import (
    INDEX_VERSION,
    PER_CLASS,
    gallery_dir,
    gallery_entries,
    gallery_figure_path,
    gallery_index_path,
    read_gallery_index,
    record_problem,
)
from reports.results import discover_entries
from training.resume_state import BEST_WEIGHTS

logger = logging.getLogger(__name__)

CELL_INCHES = 2.3
GALLERY_DPI = 110


@dataclass
class GalleryResult:
    """What `refresh_failure_gallery` did.

    Attributes:
        drawn: entries whose figure was drawn (again) now -> their number of test errors.
        current: entries whose gallery was already current.
        unavailable: entry -> why it has no gallery (no weights, no images).
        changed: whether any file of the gallery changed (the report must be rebuilt).
    """

    drawn: dict[str, int] = field(default_factory=dict)
    current: list[str] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)
    changed: bool = False

    def summary(self) -> str:
        """The stage's console line."""
        # no "error" on the console of a run that went well (tests/pipeline: ALARMING)
        parts = [f"drew {name} (the most confident of its {wrong} wrong test predictions)"
                 for name, wrong in self.drawn.items()]
        parts += [f"{name} up to date" for name in self.current]
        parts += [f"none of {name} ({why})" for name, why in self.unavailable.items()]
        if not parts:
            return "failure gallery skipped: no CNN entry of the run has test predictions"
        return "failure gallery: " + "; ".join(parts)


def most_confident_errors(preds: Predictions, per_class: int = PER_CLASS) -> np.ndarray:
    """The rows of the most confident errors: per true class (canonical order) up to `per_class`
    wrongly predicted images, by the probability of their prediction, highest first (ties by
    image id).

    Args:
        preds: an entry's test predictions.
        per_class: the most rows per true class.

    Returns:
        Row indices into `preds`.
    """
    y_true, y_pred = preds.y_true, preds.y_pred
    confidence = preds.proba[np.arange(len(preds)), y_pred]
    rows: list[int] = []
    for cls in range(NUM_CLASSES):
        wrong = np.flatnonzero((y_true == cls) & (y_pred != cls))
        order = sorted(wrong, key=lambda row: (-confidence[row], str(preds.image_id[row])))
        rows += [int(row) for row in order[:per_class]]
    return np.array(rows, dtype=np.int64)


def refresh_failure_gallery(run_dir: str | os.PathLike, reference: str | None = REFERENCE,
                            rank_by: str | None = RANK_BY, cache_dir: str | None = None,
                            workers: int | None = None) -> GalleryResult:
    """Draw the failure gallery of a single run where it is missing or stale.

    Args:
        run_dir: a single run's directory.
        reference: the reference entry (None: the default).
        rank_by: the metric of the validation ranking (None: the default).
        cache_dir: the decoded-image cache root (`--cache-dir`; None: the default).
        workers: image-decoding processes, should the cache need building.

    Returns:
        What was drawn, kept and left out.

    Raises:
        FileSystemError: the gallery folder cannot be written.
    """
    run = RunDir(run_dir)
    entries = discover_entries(run)
    wanted = gallery_entries(run, entries, reference or REFERENCE, rank_by or RANK_BY)
    index = read_gallery_index(run) or {}
    result = GalleryResult()
    records: dict[str, dict[str, Any]] = {}
    for name in wanted:
        record = index.get(name)
        if (record is not None and not record.get("unavailable")
                and record.get("per_class") == PER_CLASS
                and record_problem(run, name, record) is None):
            records[name] = record
            result.current.append(name)
            continue
        # TensorFlow prints its device probes straight to the file descriptors when the first
        # model is built here: to train.log, not the console (as pipeline.run_all does).
        with captured_native_output() as native:
            records[name] = _draw_entry(run, name, cache_dir, workers)
        if native and native[0].strip():
            logger.info("native output while drawing the gallery of %s:\n%s", name, native[0])
        if records[name].get("unavailable"):
            result.unavailable[name] = records[name]["unavailable"]
        else:
            result.drawn[name] = int(records[name]["errors"])
    if not wanted and not gallery_dir(run).is_dir():
        return result
    keep = [gallery_dir(run) / r["figure"] for r in records.values() if r.get("figure")]
    removed = remove_stale_files(gallery_dir(run), "*.png", keep)
    changed = atomic_write_json_if_changed(
        gallery_index_path(run), {"version": INDEX_VERSION, "entries": records})
    result.changed = bool(result.drawn or removed or changed)
    return result


def _draw_entry(run: RunDir, name: str, cache_dir: str | None,
                workers: int | None) -> dict[str, Any]:
    """Draw the gallery figure of one entry; its index record (or one saying why not)."""
    predictions_file = RunDir.predictions_file(run.model_dir(name), "test")
    sha = file_sha256(predictions_file)
    weights = run.model_dir(name) / BEST_WEIGHTS
    if not weights.is_file():
        return {"predictions_test_sha256": sha,
                "unavailable": f"models/{name}/{BEST_WEIGHTS} is missing (the run kept no "
                               "trained weights of it)"}
    from training.gradcam import cam_model, gradcam_maps
    from training.trained import load_trained_entry

    started = time.perf_counter()
    preds = read_predictions(predictions_file)
    rows = most_confident_errors(preds)
    errors = int(np.sum(preds.y_true != preds.y_pred))
    try:
        trained = load_trained_entry(run.root, name)
        images = _test_images(run, name, preds, rows, cache_dir, workers) if len(rows) else None
    except BenchmarkError as exc:
        return {"predictions_test_sha256": sha, "unavailable": str(exc)}
    target = cam_model(trained)
    record: dict[str, Any] = {
        "figure": None, "predictions_test_sha256": sha, "layer": target.layer,
        "grid": list(target.grid), "image_size": trained.image_size, "errors": errors,
        "test_images": len(preds), "per_class": PER_CLASS, "shown": [],
    }
    if images is None:
        return record
    y_pred = preds.y_pred[rows]
    maps = gradcam_maps(trained, images, y_pred)
    shown = [{"image_id": str(preds.image_id[row]), "true": str(preds.label[row]),
              "predicted": CLASSES[int(y_pred[i])],
              "probability": float(preds.proba[row, y_pred[i]])} for i, row in enumerate(rows)]
    figure = gallery_figure_path(run, name)
    atomic_write_bytes(figure, _gallery_png(name, target.layer, images, maps, shown))
    record.update(figure=figure.name, shown=shown)
    logger.info("failure gallery of %s: %d of %d errors drawn in %.1f s (Grad-CAM on %s)",
                name, len(rows), errors, time.perf_counter() - started, target.layer)
    return record


def _test_images(run: RunDir, name: str, preds: Predictions, rows: np.ndarray,
                 cache_dir: str | None, workers: int | None) -> np.ndarray:
    """The test images of `rows` of `preds`, at the entry's size and resize mode.

    Raises:
        RunDirError: images missing from the run's test split (the predictions are of another
            split than splits.csv's).
    """
    from core.errors import RunDirError
    from training.trained import split_images

    ids, images = split_images(run.root, name, cache_dir=cache_dir, workers=workers)["test"]
    position = {str(image_id): i for i, image_id in enumerate(ids)}
    wanted = [str(preds.image_id[row]) for row in rows]
    missing = [image_id for image_id in wanted if image_id not in position]
    if missing:
        raise RunDirError(f"models/{name}/predictions_test.csv has images that are not in the "
                          f"run's test split ({', '.join(missing[:3])}); train the entry again")
    return np.asarray(images[[position[image_id] for image_id in wanted]])


def _gallery_png(name: str, layer: str, images: np.ndarray, maps: np.ndarray,
                 shown: list[dict[str, Any]]) -> bytes:
    """One row per true class with errors, up to `PER_CLASS` overlays each."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    from training.gradcam import HEAT_CMAP, draw_overlay

    classes = list(dict.fromkeys(row["true"] for row in shown))
    height = CELL_INCHES * len(classes) + 0.9
    fig = Figure(figsize=(CELL_INCHES * PER_CLASS + 1.2, height))
    FigureCanvasAgg(fig)
    axes = np.asarray(fig.subplots(len(classes), PER_CLASS, squeeze=False))
    for ax in axes.ravel():
        ax.set_axis_off()
    column = dict.fromkeys(classes, 0)
    for image, heat, row in zip(images, maps, shown, strict=True):
        r, c = classes.index(row["true"]), column[row["true"]]
        column[row["true"]] += 1
        ax = axes[r, c]
        ax.set_axis_on()
        draw_overlay(ax, image, heat, f"{row['image_id']}\npredicted {row['predicted']} "
                                      f"{row['probability']:.2f}")
        if c == 0:
            ax.set_ylabel(f"true {row['true']}", fontsize=10, fontweight="bold")
    fig.suptitle(f"{name}: most confident test errors per true class\n"
                 f"Grad-CAM of the predicted class on {layer}", fontsize=11)
    # the two title lines keep the top 0.9 inches, clear of the first row's image titles
    fig.subplots_adjust(top=1.0 - 0.9 / height, hspace=0.35, wspace=0.08)
    fig.colorbar(ScalarMappable(Normalize(0.0, 1.0), cmap=HEAT_CMAP), ax=axes.ravel().tolist(),
                 fraction=0.03, pad=0.02, shrink=min(1.0, 2.0 / len(classes)),
                 label="Grad-CAM (share of the map's maximum)")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=GALLERY_DPI, bbox_inches="tight")
    return buffer.getvalue()

