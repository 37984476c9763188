"""The report's test-time-augmentation section: per CNN entry, the gain of `<entry>+tta<N>`.

A derived entry (metrics.json "kind": "tta", written by `--tta N`, training.tta) predicts with its
entry's best weights, averaging the softmax over N dihedral views of each image. The gain is its
balanced accuracy minus the plain entry's, on the test images both predicted, with the paired
lesion bootstrap of reports.comparisons (the same lesion draws for both; interval and p-value from
the same replicates, reports.stats.paired_bootstrap_test) and Holm's correction over the TTA
comparisons of the run. The lesion is the unit of independence, as in every single-run test.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from core.bootstrap import LesionBootstrap
from core.defaults import ALPHA
from core.metrics import balanced_accuracy
from core.numbers import as_float
from core.predictions import Predictions
from reports.comparisons import SAMPLERS, TEST_NAME
from reports.formatting import fmt, fmt_p, table
from reports.results import Entry
from reports.stats import align, holm, paired_bootstrap_test

TTA_KIND = "tta"  # training.entries.TTA_KIND (reports do not import training)
METRIC = "balanced_accuracy"


class ReportInputs(Protocol):
    """What the section reads of reports.markdown.ReportData (not imported: markdown imports
    this module)."""

    ranked: Sequence[Entry]
    n_resamples: int
    seed: int


@dataclass(frozen=True)
class TtaGain:
    """One derived entry against its plain entry (gain = TTA minus plain).

    Attributes:
        entry: the derived entry ("xception+tta8").
        source: the plain entry it derives from ("" when not recorded).
        views: the number of views (0 when not recorded).
        plain, tta: balanced accuracy of each on the shared test images (NaN: not compared).
        gain, ci_low, ci_high, p_value: the difference, its 95 % interval and two-sided p-value.
        p_holm: Holm-adjusted over the run's TTA comparisons.
        n_images, n_lesions: the shared test images and their lesions.
        note: why a row is not tested ("" when it is).
    """

    entry: str
    source: str
    views: int
    plain: float
    tta: float
    gain: float
    ci_low: float
    ci_high: float
    p_value: float
    p_holm: float
    n_images: int
    n_lesions: int
    note: str = ""

    @property
    def significant(self) -> bool:
        """Holm p below alpha."""
        return bool(self.p_holm < ALPHA)


def is_tta(entry: Entry) -> bool:
    """Whether the entry is a test-time-augmentation entry (metrics.json "kind": "tta")."""
    return entry.kind == TTA_KIND


def tta_gains(ranked: Sequence[Entry], n_resamples: int, seed: int) -> list[TtaGain]:
    """Every derived entry of `ranked` against its plain entry, Holm-corrected together.

    Args:
        ranked: the run's entries with test predictions, best first.
        n_resamples: lesion-bootstrap resamples per comparison.
        seed: the bootstrap seed.

    Returns:
        One row per derived entry, in the order of their plain entries in `ranked` (then views);
        a derived entry whose plain entry is not ranked gets an untested row with a note.
    """
    by_name = {e.name: e for e in ranked}
    order = {e.name: i for i, e in enumerate(ranked)}
    derived = [e for e in ranked if is_tta(e)]
    derived.sort(key=lambda e: (order.get(_source(e), len(order)), _views(e), e.name))
    rows: list[dict] = []
    for entry in derived:
        source = _source(entry)
        base = {"entry": entry.name, "source": source, "views": _views(entry)}
        plain = by_name.get(source)
        if plain is None:
            rows.append({**base, **_untested(f"its entry {source or '(not recorded)'} has no "
                                             "test predictions in this run")})
            continue
        rows.append({**base, **_compare(plain, entry, n_resamples, seed)})
    adjusted = holm([r["p_value"] for r in rows])
    return [TtaGain(**row, p_holm=p) for row, p in zip(rows, adjusted, strict=True)]


def tta_gain_of(plain: Predictions, tta: Predictions, n_resamples: int, seed: int) -> dict:
    """The gain of `tta` over `plain` in balanced accuracy (TTA minus plain), before any
    correction: the paired lesion bootstrap of reports.comparisons on the test images both
    predicted (the same lesion draws for both; `paired_bootstrap_test` on the replicates).

    Args:
        plain, tta: the two entries' test predictions.
        n_resamples: lesion-bootstrap resamples.
        seed: the bootstrap seed.

    Returns:
        {"plain", "tta", "gain", "ci_low", "ci_high", "p_value", "n_images", "n_lesions",
        "note"}.
    """
    ours, theirs = align(tta, plain)
    if len(ours.image_id) == 0:
        return _untested("no test image in common with its entry")
    y_true = ours.y_true
    values = {"tta": balanced_accuracy(y_true, ours.y_pred),
              "plain": balanced_accuracy(y_true, theirs.y_pred)}
    boot = LesionBootstrap(ours.lesion_id, n_resamples=n_resamples, seed=seed)
    sample = SAMPLERS[METRIC]
    result = paired_bootstrap_test(sample(boot, y_true, ours.y_pred, ours.proba, ours.proba)
                                   - sample(boot, y_true, theirs.y_pred, theirs.proba,
                                            theirs.proba))
    return {**values, "gain": values["tta"] - values["plain"], "ci_low": result.ci_low,
            "ci_high": result.ci_high, "p_value": result.p_value,
            "n_images": len(ours.image_id), "n_lesions": len(set(ours.lesion_id.tolist())),
            "note": "" if result.n_valid else "undefined in every resample"}


def tta_section(data: ReportInputs) -> str:
    """The section's markdown ("" when the run has no test-time-augmentation entry).

    Args:
        data: the report's data (ranked entries with metrics.json loaded, bootstrap settings).

    Returns:
        Markdown text.
    """
    gains = tta_gains(data.ranked, data.n_resamples, data.seed)
    if not gains:
        return ""
    family = sum(not math.isnan(g.p_value) for g in gains)
    rows = [[g.source or "n/a", g.entry, g.views or "n/a", g.n_images, g.n_lesions, fmt(g.plain),
             fmt(g.tta), _gain(g), fmt_p(g.p_value), fmt_p(g.p_holm), _significant(g)]
            for g in gains]
    headers = ["Entry", "TTA entry", "Views", "Images", "Lesions", "Plain BA", "TTA BA",
               "Gain [95 % CI]", "p", "Holm p", f"Significant (alpha {ALPHA})"]
    intro = (
        "Each `<entry>+tta<N>` predicts with the entry's best weights (nothing retrained), "
        "averaging the softmax over N dihedral views of each image: the image, its horizontal "
        "flip, its vertical flip and both flips, then (N = 8) the transposes of those four. The "
        "gain is its balanced accuracy (BA) minus the plain entry's on the test images both "
        "predicted."
    )
    method = (
        f"Test: {TEST_NAME} ({data.n_resamples} resamples, seed {data.seed}; the unit is the "
        "lesion, drawn with all its images, the same draws for both entries), 95 % percentile "
        "interval of the gain and the p-value of inverting it from the same resamples; "
        f"Holm-corrected over the {family} TTA comparison{'s' if family != 1 else ''}; "
        f"significant means Holm p < {ALPHA}. A gain on the test split is a measurement, not a "
        "choice: whether to use TTA is decided on validation (each TTA entry's validation "
        "metrics are in its metrics.json and results.csv)."
    )
    notes = [f"`{g.entry}`: {g.note}" for g in gains if g.note]
    out = ["### Test-time augmentation (test split)", intro, table(rows, headers), method]
    if notes:
        out.append("Not tested: " + "; ".join(notes) + ".")
    return "\n\n".join(out)


def _compare(plain: Entry, tta: Entry, n_resamples: int, seed: int) -> dict:
    return tta_gain_of(plain.predictions("test"), tta.predictions("test"), n_resamples, seed)


def _untested(note: str) -> dict:
    return {"plain": math.nan, "tta": math.nan, "gain": math.nan, "ci_low": math.nan,
            "ci_high": math.nan, "p_value": math.nan, "n_images": 0, "n_lesions": 0,
            "note": note}


def _source(entry: Entry) -> str:
    source = entry.metrics.get("derived_from")
    if isinstance(source, str) and source:
        return source
    name, sep, _ = entry.name.rpartition("+tta")
    return name if sep else ""


def _views(entry: Entry) -> int:
    views = as_float(entry.metrics.get("tta_views"))
    if not math.isnan(views):
        return int(views)
    _, sep, tail = entry.name.rpartition("+tta")
    return int(tail) if sep and tail.isdigit() else 0


def _gain(gain: TtaGain) -> str:
    if math.isnan(gain.gain):
        return "n/a"
    text = f"{gain.gain:+.3f}"
    if not (math.isnan(gain.ci_low) or math.isnan(gain.ci_high)):
        text += f" [{gain.ci_low:+.3f}, {gain.ci_high:+.3f}]"
    return text


def _significant(gain: TtaGain) -> str:
    if math.isnan(gain.p_value):
        return "not tested"
    if not gain.significant:
        return "no"
    return "yes, TTA better" if gain.gain > 0 else "yes, TTA worse"
