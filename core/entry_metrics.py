"""One entry's metrics.json: metrics per split (intervals on test) plus what the trainer recorded.

Besides the per-split maps ("val", "test") and the trainer's facts, metrics.json records the
conventions its numbers follow:

- "calibration_prior": {"source", "prior": {class: frequency}, "smoothing"}: the training class
  frequencies the calibration metrics were measured against (core.calibration).
- "probabilities": false for an entry whose probability columns are vote shares (hard voting:
  `extra["probabilities"]` false, an earlier metrics.json saying so, or a fit.json with
  "ensemble": "hard_voting"); its AUC, log loss, Brier, ECE and melanoma operating points are
  NaN (JSON null) and "probabilities_note" says why. true otherwise.
- "test_set": {"sha256", "images"}: the identity of the images the test metrics were measured on
  (core.provenance.record_of_test_set), for entries with test predictions.
- "temperature": the entry's temperature, fitted on its validation predictions
  (core.temperature: {"value", "fit_on": "val", "val_images", "val_log_loss_before",
  "val_log_loss_after", "method"}) and "test_after": the test split's log loss, Brier score and
  ECE after scaling. Only for entries with probabilities and validation predictions; the
  per-split metrics stay those of the unscaled probabilities.

`entry_metrics_record` computes the object without writing (so an action can check every entry
before it writes any); `write_entry_metrics` computes and writes it.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.atomic import atomic_write_json_if_changed, read_json
from core.calibration import CalibrationPrior, entry_run_root, training_prior
from core.errors import RunDirError
from core.metrics import bootstrap_intervals, compute_metrics, metric_names
from core.predictions import Predictions, read_predictions
from core.provenance import TEST_SET_KEY, record_of_test_set
from core.rundir import SPLITS, RunDir
from core.temperature import TEMPERATURE_KEY, entry_temperature

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
FIT_FILE = "fit.json"
FAILED_STATUSES = ("failed", "nan")
HARD_VOTING = "hard_voting"
PROBABILITIES_NOTE = (
    "hard voting outputs vote shares, not probabilities: AUC, log loss, Brier score, ECE, the "
    "melanoma operating points, ROC and reliability curves are undefined for it"
)
# Files whose change makes metrics.json stale besides the prediction files (run root / entry).
_RUN_INPUTS = ("splits.csv", "dataset.json")


def infer_kind(entry_dir: Path, stored: dict[str, Any] | None = None) -> str | None:
    """The entry's kind when the folder tells it: "ensemble" under ensembles/, else the recorded one.

    The kind of a trained entry ("backbone" or "baseline") comes from the zoo registry and is
    recorded in metrics.json by the trainer; this layer does not know the registry, so a model
    folder that records no kind (hand-made prediction files) gets None: callers above the zoo
    fall back to it.

    Args:
        entry_dir: models/<name> or ensembles/<name>.
        stored: its metrics.json (default: read from `entry_dir`).

    Returns:
        "ensemble", the recorded "kind", or None.
    """
    entry_dir = Path(entry_dir)
    if entry_dir.parent.name == "ensembles":
        return "ensemble"
    stored = read_entry_metrics(entry_dir) if stored is None else stored
    kind = stored.get("kind")
    return kind if isinstance(kind, str) and kind else None


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
            an existing metrics.json, whose other keys are kept. "probabilities": False marks an
            entry without probabilities (hard voting).
        n_resamples: lesion-bootstrap resamples for the test-split intervals.
        seed: bootstrap seed.

    Returns:
        The written object (see `entry_metrics_record`).

    Raises:
        RunDirError: no prediction file and no failed/nan status in `extra`.
        PredictionFileError: a prediction file breaks the contract.
        FileSystemError: metrics.json cannot be written.
    """
    entry_dir = Path(entry_dir)
    result = entry_metrics_record(entry_dir, extra, n_resamples, seed)
    atomic_write_json_if_changed(entry_dir / METRICS_FILE, result)
    log.debug("wrote %s", entry_dir / METRICS_FILE)
    return result


def entry_metrics_record(
    entry_dir: str | Path,
    extra: dict[str, Any] | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """What `write_entry_metrics` writes, computed without writing anything.

    Args:
        entry_dir, extra, n_resamples, seed: see `write_entry_metrics`.

    Returns:
        {"val": {...}, "test": {...}, "calibration_prior": {...}, "probabilities": bool,
        "test_set": {"sha256", "images"}, "temperature": {...}, <extra keys>}; per split a flat map metric -> number,
        intervals on test as "<metric>_ci": [low, high]; "probabilities_note" when there are no
        probabilities. A failed entry without prediction files keeps only its other keys.

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
            result = {k: v for k, v in result.items() if k not in (*SPLITS, TEST_SET_KEY)}
            result.update(extra)
            return result
        raise RunDirError(
            f"{entry_dir}: holds neither predictions_val.csv nor predictions_test.csv; train or "
            "ensemble this entry first (or remove the folder)"
        )
    inputs = entry_inputs(entry_dir, extra, result)
    for split, metrics in inputs.split_metrics().items():
        if split == "test":
            metrics.update(bootstrap_intervals(inputs.predictions["test"], n_resamples=n_resamples,
                                               seed=seed, probabilities=inputs.probabilities))
        result[split] = metrics
    result.update(extra)
    result.update(inputs.convention_keys())
    if inputs.probabilities:
        result.pop("probabilities_note", None)
    temperature = inputs.temperature()
    if temperature is None:
        result.pop(TEMPERATURE_KEY, None)
    else:
        result[TEMPERATURE_KEY] = temperature
    if "test" in inputs.predictions:
        result[TEST_SET_KEY] = record_of_test_set(inputs.predictions["test"])
    else:
        result.pop(TEST_SET_KEY, None)
    result.setdefault("status", "ok")
    if "kind" not in result and (kind := infer_kind(entry_dir, result)) is not None:
        result["kind"] = kind
    return result


@dataclass
class EntryInputs:
    """What an entry's metrics are computed from.

    Attributes:
        predictions: split -> predictions, for the splits with a prediction file.
        prior: the calibration prior (core.calibration).
        probabilities: False when the probability columns are vote shares (hard voting).
    """

    predictions: dict[str, Predictions]
    prior: CalibrationPrior
    probabilities: bool

    def split_metrics(self) -> dict[str, dict[str, float]]:
        """Point estimates per split (`compute_metrics`, the test split with the validation
        operating point)."""
        return {
            split: compute_metrics(preds, self.prior.vector, self.probabilities,
                                   val=self.predictions.get("val") if split == "test" else None)
            for split, preds in self.predictions.items()
        }

    def temperature(self) -> dict[str, Any] | None:
        """The temperature record (core.temperature.entry_temperature), fitted on validation;
        None without probabilities or without validation predictions."""
        if not self.probabilities:
            return None
        return entry_temperature(self.predictions, self.prior.vector)

    def convention_keys(self) -> dict[str, Any]:
        """The top-level keys recording the conventions ("calibration_prior", "probabilities",
        and "probabilities_note" when there are none)."""
        keys: dict[str, Any] = {"calibration_prior": self.prior.to_json(),
                                "probabilities": self.probabilities}
        if not self.probabilities:
            keys["probabilities_note"] = PROBABILITIES_NOTE
        return keys


def entry_inputs(
    entry_dir: str | Path, extra: dict[str, Any] | None = None,
    stored: dict[str, Any] | None = None,
) -> EntryInputs:
    """Read an entry's prediction files and resolve its calibration prior and probability flag.

    Args:
        entry_dir: models/<name> or ensembles/<name>.
        extra: the `extra` of `write_entry_metrics` (its "probabilities" counts first).
        stored: the current metrics.json (default: read from `entry_dir`).

    Returns:
        The inputs.

    Raises:
        PredictionFileError: a prediction file breaks the contract.
    """
    entry_dir = Path(entry_dir)
    stored = read_entry_metrics(entry_dir) if stored is None else stored
    predictions = {split: read_predictions(RunDir.predictions_file(entry_dir, split))
                   for split in SPLITS if RunDir.predictions_file(entry_dir, split).is_file()}
    val = predictions.get("val")
    prior = training_prior(entry_run_root(entry_dir), None if val is None else val.label)
    return EntryInputs(predictions, prior, has_probabilities(entry_dir, extra, stored))


def has_probabilities(
    entry_dir: str | Path, extra: dict[str, Any] | None = None,
    stored: dict[str, Any] | None = None,
) -> bool:
    """False for an entry whose probability columns are not probabilities (hard voting).

    False when `extra["probabilities"]` is false (or, without that key, the stored metrics.json
    says false), or when the folder's fit.json names the ensemble "hard_voting".

    Args:
        entry_dir: models/<name> or ensembles/<name>.
        extra: what the caller records in metrics.json.
        stored: the current metrics.json (default: read from `entry_dir`).

    Returns:
        Whether the entry has probabilities.
    """
    extra = extra or {}
    stored = read_entry_metrics(entry_dir) if stored is None else stored
    flag = extra["probabilities"] if "probabilities" in extra else stored.get("probabilities")
    if flag is False:
        return False
    return _fit_ensemble(Path(entry_dir)) != HARD_VOTING


def _fit_ensemble(entry_dir: Path) -> str | None:
    path = entry_dir / FIT_FILE
    if not path.is_file():
        return None
    try:
        data = read_json(path)
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        log.warning("%s is unreadable (%s)", path, exc)
        return None
    value = data.get("ensemble") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def entry_metrics_current(entry_dir: str | Path) -> bool:
    """Whether an entry's metrics.json is up to date with its inputs (a cheap check).

    Args:
        entry_dir: models/<name> or ensembles/<name>.

    Returns:
        True when metrics.json exists, is not older than any prediction file, the entry's
        fit.json or the run's splits.csv / dataset.json (the calibration prior's sources), holds
        every metric of `metric_names()` for each split that has predictions, records its
        "calibration_prior", records its "temperature" when it has probabilities and validation
        predictions, and says "probabilities": false when fit.json names hard voting (an entry
        without prediction files, e.g. a failed one, is current when it has metrics.json).
    """
    entry_dir = Path(entry_dir)
    path = entry_dir / METRICS_FILE
    if not path.is_file():
        return False
    data = read_entry_metrics(entry_dir)
    if not data:
        return False
    stamp = path.stat().st_mtime_ns
    wanted = set(metric_names())
    has_predictions = False
    for split in SPLITS:
        predictions = RunDir.predictions_file(entry_dir, split)
        if not predictions.is_file():
            continue
        has_predictions = True
        metrics = data.get(split)
        if not isinstance(metrics, dict) or not wanted <= set(metrics):
            return False
        if predictions.stat().st_mtime_ns > stamp:
            return False
    if not has_predictions:
        return True
    if CalibrationPrior.from_json(data.get("calibration_prior")) is None:
        return False
    if _fit_ensemble(entry_dir) == HARD_VOTING and data.get("probabilities") is not False:
        return False
    if (data.get("probabilities") is not False and RunDir.predictions_file(entry_dir, "val").is_file()
            and not isinstance(data.get(TEMPERATURE_KEY), dict)):
        return False
    root = entry_run_root(entry_dir)
    inputs = [entry_dir / FIT_FILE, *((root / n) for n in _RUN_INPUTS if root is not None)]
    return all(not p.is_file() or p.stat().st_mtime_ns <= stamp for p in inputs)


def entry_metrics_match(entry_dir: str | Path) -> bool:
    """Whether metrics.json holds the metrics its prediction files give now (point estimates).

    For prediction files rewritten with the same content (a deterministic rerun): metrics.json is
    then older than them but still right, and keeps its intervals. The metrics are recomputed
    with the current conventions (calibration prior, probability flag, validation operating
    point), and the recorded prior and flag must equal the current ones.

    Args:
        entry_dir: models/<name> or ensembles/<name>.

    Returns:
        True when every split with a prediction file has, in metrics.json, every metric of
        `compute_metrics` equal to the recomputed one (NaN equal to NaN or null), and the
        recorded temperature (core.temperature) equals the refitted one.

    Raises:
        PredictionFileError: a prediction file breaks the contract.
    """
    data = read_entry_metrics(entry_dir)
    inputs = entry_inputs(entry_dir, stored=data)
    stored_prior = CalibrationPrior.from_json(data.get("calibration_prior"))
    if stored_prior is None or stored_prior.source != inputs.prior.source or not all(
        math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
        for a, b in zip(stored_prior.prior, inputs.prior.prior, strict=True)
    ):
        return False
    if data.get("probabilities", True) is not inputs.probabilities:
        return False
    for split, metrics in inputs.split_metrics().items():
        stored = data.get(split)
        if not isinstance(stored, dict):
            return False
        for name, value in metrics.items():
            if not _same_number(stored.get(name), value):
                return False
    return _same_temperature(data.get(TEMPERATURE_KEY), inputs.temperature())


def _same_temperature(old: Any, new: dict[str, Any] | None) -> bool:
    if new is None:
        return old is None
    if not isinstance(old, dict):
        return False
    keys = ("value", "val_log_loss_before", "val_log_loss_after")
    if not all(_same_number(old.get(k), new[k]) for k in keys):
        return False
    old_test, new_test = old.get("test_after"), new.get("test_after")
    if new_test is None or not isinstance(old_test, dict):
        return new_test is None and old_test is None
    return all(_same_number(old_test.get(k), v) for k, v in new_test.items())


def _same_number(old: Any, value: float) -> bool:
    old = math.nan if old is None else old
    if not isinstance(old, (int, float)) or isinstance(old, bool):
        return False
    if math.isnan(value) or math.isnan(old):
        return math.isnan(value) and math.isnan(old)
    return math.isclose(value, old, rel_tol=1e-9, abs_tol=1e-12)
