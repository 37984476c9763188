"""The reference entry against every other entry, per metric: comparisons.csv and the verdict.

One procedure gives both the interval and the p-value: the paired lesion bootstrap. Each
comparison uses the test images both entries predicted; every resample draws lesions with
replacement (all images of a drawn lesion kept), the same draws for both entries, and the
difference reference - other is recomputed in each. The 95 % percentile interval and the p-value
of inverting it come from those replicates (reports.stats.paired_bootstrap_test), so "interval
excludes 0" and "p < 0.05" always agree. The unit of independence is the lesion. Holm's
correction runs per metric over the comparisons of the reference with the others (NaN p-values,
e.g. AUC of an entry without probabilities, are left out of the family); a comparison is
significant when its Holm-adjusted p-value is below 0.05.

comparisons.csv has one row per (reference, other, metric), columns `COLUMNS` (then `note`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.atomic import atomic_write_csv
from core.bootstrap import LesionBootstrap
from core.classes import CLASS_INDEX, CLASSES
from core.defaults import ALPHA, BOOTSTRAP, SEED
from core.metrics import (
    LOWER_IS_BETTER,
    PROBABILITY_METRICS,
    calibration_probabilities,
    compute_metrics,
    per_image_brier,
    per_image_log_loss,
)
from core.predictions import Predictions
from reports.stats import align, holm, paired_bootstrap_test

log = logging.getLogger(__name__)

COLUMNS = ("reference", "other", "metric", "n_images", "n_lesions", "value_reference",
           "value_other", "difference", "ci_low", "ci_high", "p_value", "p_holm", "significant",
           "test")
# Always compared; the --rank-by metric is added when the lesion bootstrap can compute it.
DEFAULT_METRICS = ("balanced_accuracy", "accuracy", "macro_auc")
TEST_NAME = "paired lesion bootstrap"


@dataclass(frozen=True)
class Contender:
    """One entry as the comparisons see it.

    Attributes:
        name: the entry's name.
        predictions: its test predictions.
        probabilities: False when its probability columns are not probabilities (hard voting).
        prior: (7,) training class frequencies for the calibration metrics, or None.
    """

    name: str
    predictions: Predictions
    probabilities: bool = True
    prior: np.ndarray | None = None


@dataclass(frozen=True)
class ComparisonRow:
    """One row of comparisons.csv (`COLUMNS`, then `note`).

    `difference` = value_reference - value_other; [ci_low, ci_high] is its interval;
    `significant` is p_holm < ALPHA (False when untested); `note` says why a row is n/a.
    """

    reference: str
    other: str
    metric: str
    n_images: int
    n_lesions: int
    value_reference: float
    value_other: float
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    p_holm: float
    significant: bool
    test: str
    note: str = ""

    @property
    def reference_better(self) -> bool:
        """Significant, and in the reference's favour (lower values win for losses)."""
        if not self.significant:
            return False
        return self.difference < 0 if self.metric in LOWER_IS_BETTER else self.difference > 0


# metric -> replicates from (bootstrap, y_true, y_pred, probabilities, calibration probabilities)
Sampler = Callable[[LesionBootstrap, np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _samplers() -> dict[str, Sampler]:
    samplers: dict[str, Sampler] = {
        "accuracy": lambda b, y, yp, p, c: b.accuracy(y, yp),
        "weighted_recall": lambda b, y, yp, p, c: b.accuracy(y, yp),
        "balanced_accuracy": lambda b, y, yp, p, c: b.balanced_accuracy(y, yp),
        "macro_recall": lambda b, y, yp, p, c: b.balanced_accuracy(y, yp),
        "macro_f1": lambda b, y, yp, p, c: b.macro_f1(y, yp),
        "macro_auc": lambda b, y, yp, p, c: b.macro_auc(y, p),
        "log_loss": lambda b, y, yp, p, c: b.image_mean(per_image_log_loss(y, c)),
        "brier": lambda b, y, yp, p, c: b.image_mean(per_image_brier(y, c)),
    }
    for name in CLASSES:
        k = CLASS_INDEX[name]
        samplers[f"recall_{name}"] = (
            lambda b, y, yp, p, c, k=k: b.class_recalls(y, yp)[:, k])
        samplers[f"auc_{name}"] = lambda b, y, yp, p, c, k=k: b.class_auc(y, p, k)
    return samplers


SAMPLERS = _samplers()


def comparable_metrics() -> list[str]:
    """Metrics the paired lesion bootstrap can compare."""
    return list(SAMPLERS)


def comparison_metrics(rank_by: str) -> list[str]:
    """The metrics compared: `DEFAULT_METRICS`, plus `rank_by` when comparable and not among them."""
    metrics = list(DEFAULT_METRICS)
    if rank_by in SAMPLERS and rank_by not in metrics:
        metrics.append(rank_by)
    return metrics


def describe_test(n_resamples: int, family: int) -> str:
    """The `test` column: the procedure, its resamples, interval and correction."""
    return (f"{TEST_NAME}, {n_resamples} resamples, percentile interval; "
            f"Holm over {family} comparison{'s' if family != 1 else ''}")


def compare_entries(
    reference: Contender,
    others: Sequence[Contender],
    metrics: Sequence[str] = DEFAULT_METRICS,
    n_resamples: int = BOOTSTRAP,
    seed: int = SEED,
) -> list[ComparisonRow]:
    """Compare the reference with every other entry on every metric, Holm-corrected per metric.

    Args:
        reference: the reference entry.
        others: the entries to compare it with.
        metrics: metric names from `comparable_metrics()`.
        n_resamples: lesion-bootstrap resamples per comparison.
        seed: resampling seed (the same lesion draws for both entries of a comparison, and for
            every comparison on the same images).

    Returns:
        Rows ordered by other entry, then metric (the order of `metrics`).

    Raises:
        ValueError: a metric the bootstrap cannot compare.
    """
    unknown = [m for m in metrics if m not in SAMPLERS]
    if unknown:
        raise ValueError(f"no lesion-bootstrap comparison for {unknown}; "
                         f"choose from {comparable_metrics()}")
    raw: list[dict] = []
    for other in others:
        raw.extend(_compare_pair(reference, other, metrics, n_resamples, seed))
    for metric in metrics:
        rows = [r for r in raw if r["metric"] == metric]
        adjusted = holm([r["p_value"] for r in rows])
        family = sum(not math.isnan(r["p_value"]) for r in rows)
        for row, p_holm in zip(rows, adjusted, strict=True):
            row["p_holm"] = p_holm
            row["significant"] = bool(p_holm < ALPHA)
            if not math.isnan(row["p_value"]):
                row["test"] = describe_test(n_resamples, family)
    return [ComparisonRow(**r) for r in raw]


def _compare_pair(
    reference: Contender, other: Contender, metrics: Sequence[str], n_resamples: int, seed: int
) -> list[dict]:
    ref, oth = align(reference.predictions, other.predictions)
    base = {"reference": reference.name, "other": other.name, "n_images": len(ref.image_id),
            "n_lesions": len(set(ref.lesion_id.tolist())), "p_holm": math.nan,
            "significant": False}
    if len(ref.image_id) == 0:
        log.warning("%s shares no test image with %s; not compared", other.name, reference.name)
        return [_untested(base, m, math.nan, math.nan, "no test image in common")
                for m in metrics]
    if len(ref.image_id) < max(len(reference.predictions), len(other.predictions)):
        log.warning("%s and %s predicted different test images; comparing on the %d they share",
                    other.name, reference.name, len(ref.image_id))
    values_ref = compute_metrics(ref, reference.prior, reference.probabilities)
    values_oth = compute_metrics(oth, other.prior, other.probabilities)
    boot = LesionBootstrap(ref.lesion_id, n_resamples=n_resamples, seed=seed)
    y_true = ref.y_true
    rows = []
    for metric in metrics:
        lacking = [c.name for c in (reference, other)
                   if metric in PROBABILITY_METRICS and not c.probabilities]
        if lacking:
            rows.append(_untested(base, metric, values_ref[metric], values_oth[metric],
                                  f"{' and '.join(lacking)} has no probabilities"))
            continue
        diff = (_samples(metric, boot, y_true, ref, reference.prior)
                - _samples(metric, boot, y_true, oth, other.prior))
        result = paired_bootstrap_test(diff)
        note = "" if result.n_valid else "undefined in every resample"
        rows.append({**base, "metric": metric, "value_reference": values_ref[metric],
                     "value_other": values_oth[metric],
                     "difference": values_ref[metric] - values_oth[metric],
                     "ci_low": result.ci_low, "ci_high": result.ci_high,
                     "p_value": result.p_value, "test": f"not tested: {note}" if note else "",
                     "note": note})
    return rows


def _samples(metric: str, boot: LesionBootstrap, y_true: np.ndarray, preds: Predictions,
             prior: np.ndarray | None) -> np.ndarray:
    calibrated = calibration_probabilities(preds.proba, prior)
    return SAMPLERS[metric](boot, y_true, preds.y_pred, preds.proba, calibrated)


def _untested(base: dict, metric: str, value_ref: float, value_oth: float, note: str) -> dict:
    return {**base, "metric": metric, "value_reference": value_ref, "value_other": value_oth,
            "difference": value_ref - value_oth, "ci_low": math.nan, "ci_high": math.nan,
            "p_value": math.nan, "test": f"not tested: {note}", "note": note}


def comparisons_frame(rows: Sequence[ComparisonRow]) -> pd.DataFrame:
    """comparisons.csv as a DataFrame: `COLUMNS` then `note`; `significant` as true/false."""
    frame = pd.DataFrame([asdict(r) for r in rows], columns=[*COLUMNS, "note"])
    frame["significant"] = ["true" if r.significant else "false" for r in rows]
    return frame


def write_comparisons_csv(path: str | Path, rows: Sequence[ComparisonRow]) -> Path:
    """Write the rows to `path` atomically (header only when there is no row).

    Args:
        path: usually <run>/comparisons.csv (`RunDir.comparisons_csv`).
        rows: from `compare_entries`.

    Returns:
        `path`.
    """
    path = Path(path)
    atomic_write_csv(path, comparisons_frame(rows))
    return path
