"""One entry's metrics.json: metrics per split (intervals on test) plus what the trainer recorded."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from data_utils.atomic import atomic_write_json_if_changed, read_json
from data_utils.errors import RunDirError
from data_utils.predictions import read_predictions
from data_utils.rundir import BASELINES, SPLITS, RunDir
from reports.metrics import bootstrap_intervals, compute_metrics

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
FAILED_STATUSES = ("failed", "nan")
# Entries that are baselines rather than fine-tuned backbones, when metrics.json has no "kind".


def infer_kind(entry_dir: Path) -> str:
    """The entry's kind from where it lives: "ensemble", "baseline" or "backbone".

    Used only when metrics.json does not record a "kind". Folders under ensembles/ are ensembles;
    paper_cnn and any name containing "svm" (e.g. inception_resnet_v2+svm) are baselines.
    """
    entry_dir = Path(entry_dir)
    if entry_dir.parent.name == "ensembles":
        return "ensemble"
    if entry_dir.name in BASELINES or "svm" in entry_dir.name.lower():
        return "baseline"
    return "backbone"


def read_entry_metrics(entry_dir: Path) -> dict[str, Any]:
    """The entry's metrics.json, or {} when absent or unreadable (logged).

    Args:
        entry_dir: models/<name> or ensembles/<name>.

    Returns:
        The parsed JSON object.
    """
    path = Path(entry_dir) / METRICS_FILE
    if not path.is_file():
        return {}
    try:
        data = read_json(path)
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        log.warning("%s is unreadable (%s); it will be rewritten", path, exc)
        return {}
    if not isinstance(data, dict):
        log.warning("%s is not a JSON object; it will be rewritten", path)
        return {}
    return data


def write_entry_metrics(
    entry_dir: str | Path,
    extra: dict[str, Any] | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """(Re)compute an entry's metrics from its prediction files and write metrics.json atomically.

    Args:
        entry_dir: models/<name> or ensembles/<name>, holding predictions_val.csv and/or
            predictions_test.csv.
        extra: entry-level facts to record (params, flops_per_image, train_seconds, batch_size,
            inference_images_per_s, status, error, fingerprint, kind, ...); they override keys of
            an existing metrics.json, whose other keys are kept.
        n_resamples: lesion-bootstrap resamples for the test-split intervals.
        seed: bootstrap seed.

    Returns:
        The written object: {"val": {...}, "test": {...}, <extra keys>}; per split a flat map
        metric -> number, intervals on test as "<metric>_ci": [low, high].

    Raises:
        RunDirError: no prediction file and no failed/nan status in `extra`.
        PredictionFileError: a prediction file breaks the contract.
    """
    entry_dir = Path(entry_dir)
    extra = dict(extra or {})
    result = read_entry_metrics(entry_dir)
    splits = [s for s in SPLITS if RunDir.predictions_file(entry_dir, s).is_file()]
    if not splits:
        if extra.get("status") in FAILED_STATUSES:
            result = {k: v for k, v in result.items() if k not in SPLITS}
            result.update(extra)
            atomic_write_json_if_changed(entry_dir / METRICS_FILE, result)
            return result
        raise RunDirError(
            f"{entry_dir}: holds neither predictions_val.csv nor predictions_test.csv; train or "
            "ensemble this entry first (or remove the folder)"
        )
    for split in splits:
        preds = read_predictions(RunDir.predictions_file(entry_dir, split))
        metrics = compute_metrics(preds)
        if split == "test":
            metrics.update(bootstrap_intervals(preds, n_resamples=n_resamples, seed=seed))
        result[split] = metrics
    result.update(extra)
    result.setdefault("status", "ok")
    result.setdefault("kind", infer_kind(entry_dir))
    atomic_write_json_if_changed(entry_dir / METRICS_FILE, result)
    log.debug("wrote %s", entry_dir / METRICS_FILE)
    return result
