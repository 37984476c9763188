"""The reliability diagram after temperature scaling: its entries, their probabilities, its file.

Each entry with probabilities is drawn with its test probabilities scaled by the temperature its
metrics.json records (fitted on validation, core.temperature) and then prior-shifted like every
calibration measure (core.calibration), beside its test ECE after scaling. An entry without a
temperature (no validation predictions) is drawn unscaled and labelled so. The panels are drawn
by reports.figures.reliability_grid, the drawing of the diagram before scaling, so the two
figures read the same; this module needs no matplotlib (reports.single runs the drawing job).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from core.calibration import CalibrationPrior, entry_run_root
from core.entry_metrics import METRICS_FILE
from core.metrics import calibration_probabilities
from core.numbers import as_float
from core.predictions import Predictions
from core.rundir import RunDir
from core.temperature import TEMPERATURE_KEY, apply_temperature
from reports.results import Entry

SCALED_RELIABILITY = "reliability_temperature_scaled.png"
TITLE = ("Reliability diagrams after temperature scaling, test split (T fitted on validation; "
         "probabilities mapped to the training class frequencies)")


def recorded_temperature(entry: Entry) -> float | None:
    """The temperature in the entry's metrics.json (None when it records none or a bad one)."""
    record = entry.metrics.get(TEMPERATURE_KEY)
    value = as_float(record.get("value")) if isinstance(record, dict) else math.nan
    return value if math.isfinite(value) and value > 0 else None


def scaled_calibration_view(entry: Entry) -> Predictions:
    """The entry's test predictions scaled by its recorded temperature (unscaled without one),
    then prior-shifted as its metrics.json records; the prediction is then the argmax."""
    preds = entry.predictions("test")
    temperature = recorded_temperature(entry)
    proba = preds.proba if temperature is None else apply_temperature(preds.proba, temperature)
    prior = CalibrationPrior.from_json(entry.metrics.get("calibration_prior"))
    proba = calibration_probabilities(proba, None if prior is None else prior.vector)
    return Predictions(image_id=preds.image_id, lesion_id=preds.lesion_id, label=preds.label,
                       proba=proba, prediction=None, source=preds.source)


def _panel(entry: Entry) -> tuple[str, Predictions, float]:
    temperature = recorded_temperature(entry)
    record = entry.metrics.get(TEMPERATURE_KEY)
    after = record.get("test_after") if isinstance(record, dict) else None
    if temperature is None or not isinstance(after, dict):
        return (f"{entry.name} (no T: unscaled)", scaled_calibration_view(entry),
                as_float(entry.split_metrics("test").get("ece")))
    return (f"{entry.name} (T = {temperature:.2f})", scaled_calibration_view(entry),
            as_float(after.get("ece")))


def scaled_reliability_path(figures_dir: Path) -> Path:
    """Where the diagram after scaling is drawn: figures/reliability_temperature_scaled.png."""
    return Path(figures_dir) / SCALED_RELIABILITY


def scaled_reliability_job(figures_dir: Path, scored: Sequence[Entry]) -> tuple[str, tuple]:
    """The drawing job of reports.single.make_figures for the diagram after scaling.

    Args:
        figures_dir: the run's figures/ folder.
        scored: the entries with probabilities (metrics.json loaded), in report order.

    Returns:
        ("reliability_grid", its arguments): a function of reports.figures and what it draws.
    """
    return ("reliability_grid", ([_panel(e) for e in scored],
                                 scaled_reliability_path(figures_dir), TITLE))


def current_scaled_reliability(ranked: Sequence[Entry]) -> Path | None:
    """The run's diagram after scaling, when it was drawn for the entries' current metrics.

    reports.single writes every metrics.json (only when its content changed), then draws the
    figures, then report.md: a figure at least as new as every entry's metrics.json shows the
    temperatures and probabilities the report lists. An older one (figures switched off after the
    metrics changed) is not shown.

    Args:
        ranked: the report's entries.

    Returns:
        The figure's path, or None when it is missing or older than an entry's metrics.json.
    """
    roots = {entry_run_root(e.directory) for e in ranked}
    if len(roots) != 1 or None in roots:
        return None
    path = scaled_reliability_path(RunDir(next(iter(roots))).figures_dir)
    if not path.is_file():
        return None
    stamp = path.stat().st_mtime_ns
    for entry in ranked:
        metrics = entry.directory / METRICS_FILE
        if metrics.is_file() and metrics.stat().st_mtime_ns > stamp:
            return None
    return path
