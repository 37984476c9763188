"""The statistical parts of report.md: the reference against the rest (built from the same rows
as comparisons.csv), calibration (before and after temperature scaling), the melanoma operating
point chosen on validation, and the method notes. Text generation from the entries' metrics.json;
the calibration section only looks up whether the diagram after scaling was drawn
(reports.calibration_figures)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from core.calibration import CONVENTION, SOURCE_NONE, CalibrationPrior
from core.defaults import ALPHA
from core.metrics import LOWER_IS_BETTER
from core.numbers import as_float
from core.temperature import TEMPERATURE_KEY
from reports.calibration_figures import current_scaled_reliability
from reports.comparisons import DEFAULT_METRICS, TEST_NAME, ComparisonRow
from reports.formatting import fmt, fmt_p, table
from reports.results import Entry
from reports.sections import md_image, reference_short, reference_title

METRIC_TITLES = {"balanced_accuracy": "balanced accuracy", "accuracy": "accuracy",
                 "macro_auc": "macro AUC"}
NO_PROBABILITIES = "no probabilities"
TEMPERATURE_NOTE = (
    "**Temperature scaling.** Each entry with probabilities also gets one temperature T, fitted "
    "on its validation predictions by minimising their log loss (after the same prior shift): "
    "p → softmax(log(p)/T); T > 1 softens over-confident probabilities, T < 1 sharpens "
    "under-confident ones, and no T changes a predicted class. T stays 1 unless it lowers the "
    "validation log loss, so scaling never raises it; the test split is only scored. T is "
    "searched in [0.05, 20]; a T at an end of that range means the validation log loss is nearly "
    "flat in T (probabilities close to uniform). Cells read unscaled → scaled; every other "
    "metric of this report uses the unscaled probabilities."
)


def verdict_metric(rows: Sequence[ComparisonRow], rank_by: str) -> str:
    """The metric the verdict is on: `rank_by` when it was compared, else balanced accuracy."""
    return rank_by if any(r.metric == rank_by for r in rows) else DEFAULT_METRICS[0]


def _names(names: Sequence[str]) -> str:
    return ", ".join(f"`{n}`" for n in names)


def _difference(row: ComparisonRow) -> str:
    if math.isnan(row.ci_low):
        text = "n/a" if math.isnan(row.difference) else f"{row.difference:+.3f}"
        return f"{text} ({row.note})" if row.note else text
    return f"{row.difference:+.3f} [{row.ci_low:+.3f}, {row.ci_high:+.3f}]"


def _significant(row: ComparisonRow) -> str:
    if math.isnan(row.p_value):
        return "n/a"
    return "yes" if row.significant else "no"


def reference_section(
    rows: list[ComparisonRow] | None,
    reference: str,
    rank_by: str,
    ranked: Sequence[Entry],
    n_resamples: int,
    csv_link: str,
) -> str:
    """Section 3: the verdict and the comparison tables, from the comparisons.csv rows.

    Args:
        rows: `reports.comparisons.compare_entries` rows; None when the reference has no test
            predictions.
        reference: the reference entry.
        rank_by: the ranking metric.
        ranked: the ranked entries, best first.
        n_resamples: bootstrap resamples (for the method sentence).
        csv_link: markdown link to comparisons.csv.

    Returns:
        Markdown text.
    """
    title = reference_title(reference)
    head = f"## 3. {title} vs the rest"
    if rows is None:
        return (f"{head}\n\n{title} (entry `{reference}`) has no test predictions in this run "
                "directory, so there is no comparison.")
    if not rows:
        return f"{head}\n\nNo other entry to compare with `{reference}`."
    kinds = {e.name: e.kind for e in ranked}
    names = [e.name for e in ranked]
    rank = names.index(reference) + 1
    metric = verdict_metric(rows, rank_by)
    main = [r for r in rows if r.metric == metric]
    better = [r.other for r in main if r.reference_better]
    worse = [r.other for r in main if r.significant and not r.reference_better]
    same = [r.other for r in main if not r.significant and not math.isnan(r.p_value)]
    untested = [f"`{r.other}` ({r.note})" for r in main if math.isnan(r.p_value)]
    verdict = [f"**Verdict.** In this run, {title} ranks **{rank} of {len(names)}** by "
               f"`{rank_by}`"
               + (" (first)." if rank == 1 else f"; `{names[0]}` ranks first.")]
    if metric != rank_by:
        verdict.append(f"`{rank_by}` has no paired lesion-bootstrap test, so the verdict is on "
                       f"`{metric}`.")
    verdict.append(f"On `{metric}` it is significantly better than: {_names(better) or 'none'}; "
                   f"significantly worse than: {_names(worse) or 'none'}; not significantly "
                   f"different from: {_names(same) or 'none'}"
                   + (f"; not tested: {', '.join(untested)}" if untested else "") + ".")
    family = sum(not math.isnan(r.p_value) for r in main)
    verdict.append(
        f"Test: {TEST_NAME} ({n_resamples} resamples; the unit is the lesion, drawn with all its "
        "images, the same draws for both entries), 95 % percentile interval of the difference "
        "and the p-value of inverting it from the same resamples; Holm-corrected per metric over "
        f"the {family} comparison{'s' if family != 1 else ''} with {title}; significant means "
        f"Holm p < {ALPHA}."
    )
    direction = "lower is better" if metric in LOWER_IS_BETTER else "higher is better"
    main_rows = [[r.other, kinds.get(r.other, ""), r.n_images, r.n_lesions,
                  fmt(r.value_reference), fmt(r.value_other), _difference(r), fmt_p(r.p_value),
                  fmt_p(r.p_holm), _significant(r)] for r in main]
    short = reference_short(reference)
    headers = ["Other entry", "Kind", "Images", "Lesions", f"{short}", "Other",
               "Difference [95 % CI]", "p", "Holm p", f"Significant (alpha {ALPHA})"]
    out = [head, " ".join(verdict), f"`{metric}` ({direction}):", table(main_rows, headers)]
    rest = [r for r in rows if r.metric != metric]
    if rest:
        out.append("The other metrics, tested the same way (Holm per metric):")
        out.append(table(([r.other, METRIC_TITLES.get(r.metric, r.metric), fmt(r.value_reference),
                           fmt(r.value_other), _difference(r), fmt_p(r.p_value), fmt_p(r.p_holm),
                           _significant(r)] for r in rest),
                         ["Other entry", "Metric", short, "Other", "Difference [95 % CI]", "p",
                          "Holm p", "Significant"]))
    out.append(f"Differences are {title} minus the other entry on the test images both "
               "predicted (for log loss and Brier score lower is better, so a negative difference "
               f"favours {title}). Every row: {csv_link}.")
    return "\n\n".join(out)


def _prior(entry: Entry) -> CalibrationPrior | None:
    return CalibrationPrior.from_json(entry.metrics.get("calibration_prior"))


def prior_sentence(ranked: Sequence[Entry]) -> str:
    """Which class frequencies calibration was measured against, from the entries' metrics.json."""
    priors = {p.to_json()["source"]: p for e in ranked if (p := _prior(e)) is not None}
    if not priors:
        return "The calibration prior was not recorded (metrics.json written by an older version)."
    if len(priors) > 1:
        return f"The entries' calibration priors come from different sources: {', '.join(priors)}."
    source, prior = next(iter(priors.items()))
    if source == SOURCE_NONE:
        return ("No training class frequencies were found (no splits.csv, dataset.json or "
                "validation predictions): calibration is measured on the probabilities as they are.")
    values = ", ".join(f"{k} {v:.3f}" for k, v in prior.to_json()["prior"].items())
    smoothing = (" (add-one smoothed: a class had no image)" if prior.smoothed else "")
    origin = {"splits.csv": "the training rows of splits.csv",
              "dataset.json": "dataset.json's training counts",
              "validation labels": "the validation labels (no training split recorded)"}
    return f"π from {origin.get(source, source)}{smoothing}: {values}."


def _before_after(before: Any, after: Any) -> str:
    """'0.812 → 0.754', or the value before alone when there is no value after."""
    if math.isnan(as_float(after)):
        return fmt(before)
    return f"{fmt(before)} → {fmt(after)}"


def _temperature_row(entry: Entry) -> list[str]:
    """Entry, T, validation log loss, then test log loss, Brier score and ECE before → after."""
    m = entry.split_metrics("test")
    record = entry.metrics.get(TEMPERATURE_KEY)
    if entry.metrics.get("probabilities") is False:
        return [entry.name, f"n/a ({NO_PROBABILITIES})", "n/a", "n/a", "n/a", "n/a"]
    if not isinstance(record, dict) or math.isnan(as_float(record.get("value"))):
        return [entry.name, "n/a (no validation predictions)", "n/a", fmt(m.get("log_loss")),
                fmt(m.get("brier")), fmt(m.get("ece"))]
    after = record.get("test_after") if isinstance(record.get("test_after"), dict) else {}
    bound = " (at the search bound)" if record.get("at_bound") is True else ""
    return [entry.name, fmt(record.get("value")) + bound,
            _before_after(record.get("val_log_loss_before"), record.get("val_log_loss_after")),
            *(_before_after(m.get(k), after.get(k)) for k in ("log_loss", "brier", "ece"))]


def calibrated_ensembles_sentence(ranked: Sequence[Entry]) -> str:
    """Which ensembles were built from temperature-scaled members (--calibrated), "" if none."""
    names = [e.name for e in ranked if e.metrics.get("calibrated") is True and e.kind == "ensemble"]
    if not names:
        return ""
    return (f"Built from temperature-scaled members (`--calibrated`; each member's T fitted on "
            f"its validation predictions, recorded in fit.json): {_names(names)}.")


def calibration_section(ranked: Sequence[Entry]) -> str:
    """Calibration of every entry on the test split, after the prior-shift correction: log loss,
    Brier score and ECE before and after temperature scaling (T fitted on validation), and the
    reliability diagrams after scaling when they were drawn (reports.calibration_figures)."""
    out = ["### Calibration (test split)", CONVENTION + " " + prior_sentence(ranked),
           TEMPERATURE_NOTE]
    out.append(table((_temperature_row(e) for e in ranked),
                     ["Entry", "T (fit on validation)", "Validation log loss", "Log loss",
                      "Brier score", "ECE (15 bins)"]))
    for extra in (calibrated_ensembles_sentence(ranked), no_probability_notes(ranked)):
        if extra:
            out.append(extra)
    figure = current_scaled_reliability(ranked)
    if figure is not None:
        title = ("Reliability diagrams after temperature scaling (test, 15 confidence bins, "
                 "probabilities mapped to the training class frequencies; the diagrams "
                 "before scaling are with the other figures)")
        out.append(f"**{title}**\n\n{md_image(figure.parent.parent, figure, title)}")
    return "\n\n".join(out)


def no_probability_notes(ranked: Sequence[Entry]) -> str:
    """One line per entry without probabilities, saying why its AUC and calibration are n/a."""
    lines = [f"n/a for `{e.name}`: {e.metrics.get('probabilities_note') or NO_PROBABILITIES}."
             for e in ranked if e.metrics.get("probabilities") is False]
    return "\n".join(lines)


def melanoma_section(ranked: Sequence[Entry]) -> str:
    """The melanoma operating point chosen on validation, with its test sensitivity/specificity."""
    rows = []
    for entry in ranked:
        m = entry.split_metrics("test")
        rows.append([entry.name, fmt(m.get("mel_val_threshold_spec90")),
                     fmt(m.get("mel_sens_at_val_threshold_spec90")),
                     fmt(m.get("mel_spec_at_val_threshold_spec90")),
                     fmt(m.get("mel_sens_at_spec90"))])
    headers = ["Entry", "Threshold (chosen on validation)", "Test sensitivity",
               "Test specificity", "Sens. @ 90 % spec. read off the test ROC"]
    note = ("The threshold on the melanoma probability is the one with the highest validation "
            "sensitivity among those with at least 90 % validation specificity; the test split "
            "then gives its sensitivity and specificity. The last column picks its threshold on "
            "the test split itself, so it is optimistic. n/a: no validation predictions, or no "
            "probabilities.")
    return "\n\n".join(["### Melanoma operating point chosen on validation",
                        table(rows, headers), note])


def method_notes(ranked: Sequence[Entry], reference: str, n_resamples: int) -> str:
    """Section 8: how to read the statistics, two or three sentences per point."""
    val = _validation_sizes(ranked)
    title = reference_title(reference)
    notes = [
        ("Single-run test",
         f"{title} is compared with every other entry by a {TEST_NAME}: {n_resamples} times, "
         "lesions are drawn with replacement (all images of a drawn lesion kept, the same draws "
         "for both entries) and the difference is recomputed; the 95 % percentile interval and "
         "the p-value of inverting it (twice the smaller share of resampled differences at or "
         "beyond 0) come from the same resamples, so they never disagree. Holm's correction runs "
         "per metric over the comparisons with the reference. The unit of independence is the "
         "lesion, because images of one lesion tend to be right or wrong together; tests that "
         "count images (such as McNemar's) call equally good models different far too often."),
        ("What the intervals cover",
         "A single run's intervals cover test-set sampling only, not training randomness (seed, "
         "data order, augmentation); a grid run (`--seeds`, `--folds`) covers both."),
        ("The validation split",
         "Early stopping, the voting weights and the stacking meta-model are all chosen on the "
         "same validation split" + (f", whose small classes ({val}) make these choices noisy."
                                    if val else ", whose small classes make these choices noisy.")),
        ("One prior convention", CONVENTION),
        ("Melanoma operating point",
         "Sensitivity at 80/90 % specificity is read off the test ROC curve, which picks the "
         "threshold on the test split; the operating point chosen on validation (at least 90 % "
         "validation specificity) and applied to test is the honest counterpart."),
    ]
    return "## 8. Method notes\n\n" + "\n".join(f"- **{k}.** {v}" for k, v in notes)


def _validation_sizes(ranked: Sequence[Entry]) -> str:
    """'12 df and 14 vasc validation images' from the first entry with validation metrics."""
    for entry in ranked:
        m: dict[str, Any] = entry.split_metrics("val")
        df, vasc = as_float(m.get("support_df")), as_float(m.get("support_vasc"))
        if not (math.isnan(df) or math.isnan(vasc)):
            return f"{int(df)} df and {int(vasc)} vasc validation images in this run"
    return ""
