"""report.md: renders the collected results as GitHub-flavoured markdown (tabulate "github").

Pure text generation from `ReportData`; reading files and computing happen in reports.single.
Links are relative to the run directory, so the report renders on GitHub and on disk. The parts
the grid report shares (title, provenance, reproducibility, licence) are in reports.sections; the
ranking (grouped by kind and family) in reports.markdown_ranking, the figures section in
reports.markdown_figures, `ReportData` and `Figures` in reports.report_data (re-exported here).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.classes import CLASS_DESCRIPTIONS, CLASSES
from core.facts import DATASET_FACTS, REAL_DATASETS
from core.numbers import as_float
from reports.context import NOT_RECORDED
from reports.entry_groups import kind_counts
from reports.failures_section import failures_section
from reports.formatting import fmt, fmt_ci, fmt_count, table
from reports.markdown_figures import figures_section
from reports.markdown_ranking import ranking_section
from reports.markdown_stats import (
    calibration_section,
    melanoma_section,
    method_notes,
    reference_section,
)
from reports.references import REFERENCES, SOURCE_PAPER_ENTRY
from reports.report_data import Figures as Figures  # re-exported: reports.single builds it
from reports.report_data import ReportData
from reports.results import Entry
from reports.sections import (
    dataset_rows,
    md_image,
    md_link,
    provenance_rows,
    reference_short,
    reproducibility_section,
    title_lines,
)
from reports.tta_section import tta_section


def render_report(data: ReportData) -> str:
    """The complete report.md text.

    Args:
        data: the collected results.

    Returns:
        Markdown text.
    """
    sections = [
        _title(data),
        _header(data),
        ranking_section(data),
        _reference_vs_rest(data),
        _per_class(data),
        tta_section(data),
        calibration_section(data.ranked) if data.ranked else "",
        melanoma_section(data.ranked) if data.ranked else "",
        _ensembles(data),
        _baselines(data),
        _cost(data),
        _context(data),
        failures_section(data),
        figures_section(data),
        method_notes(data.ranked, data.reference, data.n_resamples),
        _reproducibility(data),
    ]
    return "\n\n".join(s.strip("\n") for s in sections if s) + "\n"


# ---------------------------------------------------------------------------------------------
# formatting helpers


def link(data: ReportData, path: Path, text: str | None = None) -> str:
    """A relative markdown link from report.md to `path` (URL-quoted)."""
    return md_link(data.run.root, path, text)


def image(data: ReportData, path: Path, alt: str) -> str:
    """A relative markdown image from report.md to `path` (URL-quoted)."""
    return md_image(data.run.root, path, alt)


def _test(entry: Entry) -> dict[str, Any]:
    return entry.split_metrics("test")


def _by_name(data: ReportData) -> dict[str, Entry]:
    return {e.name: e for e in data.ranked}


# ---------------------------------------------------------------------------------------------
# sections


def _title(data: ReportData) -> str:
    ctx = data.context
    lines = title_lines("dermbench report", data.run.root, ctx)
    if ctx.is_leaky:
        leaked = ctx.leaked_test_images
        share = ctx.leaked_share
        amount = (
            f"{leaked} test image(s){f' ({share:.1%})' if share is not None else ''} have another "
            "image of the same lesion in the training split"
            if leaked is not None else "the number of leaked test images was not recorded"
        )
        lines += [
            "",
            "> [!WARNING]",
            f"> **Image-level split: these numbers are inflated by lesion leakage.** {amount}; "
            "the model has seen those lesions during training. Use the default lesion-level "
            "split (`--split lesion`) for honest numbers.",
        ]
    return "\n".join(lines)


def _header(data: ReportData) -> str:
    ctx = data.context
    test_sizes = {int(_test(e).get("n_images", 0) or 0) for e in data.ranked}
    test_lesions = {int(_test(e).get("n_lesions", 0) or 0) for e in data.ranked}
    rows = [
        *dataset_rows(ctx),
        ("Leakage check", ctx.leakage_summary()),
        ("Test set", f"{', '.join(map(str, sorted(test_sizes)))} images of "
                     f"{', '.join(map(str, sorted(test_lesions)))} lesions" if test_sizes else "n/a"),
        *provenance_rows(ctx),
        ("Seeds", ctx.seeds),
        ("Bootstrap", f"{data.n_resamples} lesion resamples, seed {data.seed}, "
                      "95 % percentile intervals"),
        ("Entries", f"{len(data.ranked)} with test predictions"
                    + (f" ({kind_counts(data.ranked)})" if data.ranked else "")
                    + (f", {len(data.failed)} without" if data.failed else "")),
    ]
    return "## 1. Run\n\n" + table(rows, ["", ""])


def _reference_vs_rest(data: ReportData) -> str:
    csv_link = (link(data, data.comparisons_csv, data.comparisons_csv.name)
                if data.comparisons_csv is not None else "comparisons.csv")
    return reference_section(data.comparisons, data.reference, data.rank_by, data.ranked,
                             data.n_resamples, csv_link)


def _per_class(data: ReportData) -> str:
    out = ["## 4. Per class, ensembles and baselines", "### Per-class results (test split)"]
    if not data.ranked:
        out.append("No test predictions in this run directory.")
        return "\n\n".join(out)
    classes = [f"{c}" for c in CLASSES]
    out.append("Sensitivity (recall) per class:")
    out.append(table(([e.name, *(fmt(_test(e).get(f"recall_{c}")) for c in CLASSES)]
                      for e in data.ranked), ["Entry", *classes]))
    out.append("One-vs-rest ROC AUC per class:")
    out.append(table(([e.name, *(fmt(_test(e).get(f"auc_{c}")) for c in CLASSES)]
                      for e in data.ranked), ["Entry", *classes]))
    legend = "; ".join(f"`{c}` {CLASS_DESCRIPTIONS[c]}" for c in CLASSES)
    out.append(f"Classes: {legend}. n/a: the class is absent from the test split (undefined), or "
               "the entry has no probabilities (AUC).")
    for entry in data.ranked:
        m = _test(entry)
        rows = [[c, fmt(m.get(f"precision_{c}")), fmt(m.get(f"recall_{c}")),
                 fmt(m.get(f"specificity_{c}")), fmt(m.get(f"f1_{c}")),
                 fmt(m.get(f"support_{c}"), 0), fmt(m.get(f"auc_{c}"))] for c in CLASSES]
        body = table(rows, ["Class", "Precision", "Recall (sensitivity)", "Specificity", "F1",
                            "Support", "AUC"])
        out.append(f"<details><summary>All per-class metrics: {entry.name}</summary>\n\n{body}"
                   "\n\n</details>")
    return "\n\n".join(out)


def _ensembles(data: ReportData) -> str:
    head = "### Ensembles"
    ensembles = [e for e in data.ranked if e.kind == "ensemble"]
    if not ensembles:
        return f"{head}\n\nNo ensembles in this run directory."
    rows = []
    for entry in ensembles:
        fit = data.fits.get(entry.name, {})
        members = fit.get("members")
        members_text = ", ".join(map(str, members)) if isinstance(members, list) else "not recorded"
        method = str(fit.get("ensemble") or entry.name)
        rows.append([entry.name, entry.description or method, members_text,
                     _fit_summary(fit), _fit_split(fit),
                     fmt_ci(_test(entry), "balanced_accuracy"), fmt(_test(entry).get("macro_auc"))])
    headers = ["Ensemble", "Method", "Members", "Weights / meta-model", "Fit on",
               "Balanced accuracy [95 % CI]", "Macro AUC"]
    note = "Weights and meta-models are fit on the validation split only; the test split never."
    return "\n\n".join([head, table(rows, headers), note])


def _fit_value(fit: dict[str, Any], key: str) -> Any:
    """`key` at the top of fit.json, else under its "state" or "params" mapping."""
    if key in fit:
        return fit[key]
    for section in ("state", "params"):
        inner = fit.get(section)
        if isinstance(inner, dict) and key in inner:
            return inner[key]
    return None


def _fit_summary(fit: dict[str, Any]) -> str:
    weights = _fit_value(fit, "weights")
    members = fit.get("members")
    if isinstance(weights, dict):
        return ", ".join(f"{k} {fmt(v, 2)}" for k, v in weights.items())
    if isinstance(weights, list):
        if isinstance(members, list) and len(members) == len(weights):
            return ", ".join(f"{m} {fmt(w, 2)}" for m, w in zip(members, weights, strict=True))
        return ", ".join(fmt(w, 2) for w in weights)
    c_value = _fit_value(fit, "C")
    if c_value is not None:
        text = f"logistic regression, C = {c_value}"
        coef = _fit_value(fit, "coef")
        if isinstance(coef, list) and coef and isinstance(coef[0], list):
            text += f", {len(coef)} x {len(coef[0])} coefficients"
        return text
    return "none (fixed rule)" if fit else "not recorded"


def _fit_split(fit: dict[str, Any]) -> str:
    split = fit.get("fit_split")
    size = fit.get("fit_size")
    if not fit:
        return "not recorded (no fit.json)"
    if not split:
        return "not recorded"
    if split == "none":
        return "nothing (fixed rule)"
    names = {"val": "validation split", "oof": "out-of-fold validation predictions"}
    text = names.get(str(split), str(split))
    if not math.isnan(as_float(size)):
        text += f" ({int(size)} images)"
    if fit.get("val_in_sample"):
        text += "; its validation metrics are in-sample"
    return text


def _baselines(data: ReportData) -> str:
    head = "### Baselines"
    baselines = [e for e in data.ranked if e.kind == "baseline"]
    if not baselines:
        return f"{head}\n\nNo baselines in this run directory."
    reference = _by_name(data).get(data.reference)
    ref_ba = as_float(_test(reference).get("balanced_accuracy")) if reference else math.nan
    rows = []
    for entry in baselines:
        ba = as_float(_test(entry).get("balanced_accuracy"))
        diff = "n/a" if math.isnan(ref_ba - ba) else f"{ref_ba - ba:+.3f}"
        rows.append([entry.name, entry.description or "baseline",
                     fmt_ci(_test(entry), "balanced_accuracy"), fmt(_test(entry).get("accuracy")),
                     fmt(_test(entry).get("macro_auc")), diff])
    short = reference_short(data.reference)
    headers = ["Baseline", "What it is", "Balanced accuracy [95 % CI]", "Accuracy", "Macro AUC",
               f"{short} BA minus baseline BA"]
    return "\n\n".join([head, table(rows, headers)])


COST_KEYS = ("params", "flops_per_image", "train_seconds", "batch_size", "inference_images_per_s")


def _cost(data: ReportData) -> str:
    head = "## 5. Cost"
    entries = [e for e in data.ranked if any(k in e.metrics for k in COST_KEYS)]
    if not entries:
        return (f"{head}\n\nNo cost figures in this run directory: no metrics.json records params, "
                "FLOPs, training time, batch size or inference speed (the run directory holds "
                "predictions only).")
    rows = []
    for entry in entries:
        m = entry.metrics
        seconds = m.get("train_seconds")
        rows.append([entry.name, entry.kind, fmt_count(m.get("params")),
                     fmt_count(m.get("flops_per_image")),
                     _duration(seconds), fmt(m.get("batch_size"), 0),
                     fmt(m.get("inference_images_per_s"), 1)])
    headers = ["Entry", "Kind", "Parameters", "FLOPs per image", "Training time", "Batch size",
               "Inference images/s"]
    missing = [e.name for e in data.ranked if e not in entries]
    out = [head, table(rows, headers),
           "FLOPs count multiply and add separately (2 x MACs). Times depend on the machine."]
    if missing:
        out.append(f"No cost figures recorded for: {', '.join(f'`{n}`' for n in missing)}.")
    return "\n\n".join(out)


def _duration(value: Any) -> str:
    seconds = as_float(value)
    if math.isnan(seconds):
        return "n/a"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.0f} s"


def _context(data: ReportData) -> str:
    head = "## 6. Context: published numbers"
    ctx = data.context
    if ctx.is_pipeline_check:
        return (f"{head}\n\nNot shown: this run checks the pipeline (see the note at the top), "
                "so its numbers beside published results would read as a comparison they are "
                "not.")
    if not ctx.is_real_data:
        return (f"{head}\n\nNot shown: published numbers are set beside runs on the official "
                f"datasets ({', '.join(REAL_DATASETS)}) only, and this run's dataset is "
                f"{'not recorded' if ctx.dataset == NOT_RECORDED else f'`{ctx.dataset}`'}.")
    by_name = _by_name(data)
    reference = by_name.get(SOURCE_PAPER_ENTRY)
    best = data.ranked[0] if data.ranked else None
    split = data.context.split_type
    note = (
        f"This run used a **{split}-level** split"
        + (" (leaky: inflated numbers)" if data.context.is_leaky else "")
        + f" on dataset `{data.context.dataset}`. Most published numbers below come from other "
        "splits or test sets, so they are context, not a head-to-head comparison; the last column "
        "says why."
    )

    def ours(entry: Entry | None, metrics: Sequence[str]) -> str:
        if entry is None:
            return "n/a"
        return " / ".join(fmt(_test(entry).get(m)) for m in metrics)

    rows = []
    for ref in REFERENCES:
        rows.append([ref.source, ref.split, ref.metric, ref.value, " / ".join(ref.ours),
                     ours(reference, ref.ours), ours(best, ref.ours), ref.comparability])
    headers = ["Reference", "Split / test set", "Metric", "Published", "Our metric",
               f"Ours: {SOURCE_PAPER_ENTRY}",
               f"Ours: best ({best.name})" if best else "Ours: best entry", "Comparable?"]
    facts = "\n".join(f"- {fact}" for fact in DATASET_FACTS)
    check = ""
    shown = reference or best
    if shown is not None:
        m = _test(shown)
        check = (f"In this run, `{shown.name}` has accuracy {fmt(m.get('accuracy'), 4)} and "
                 f"weighted recall {fmt(m.get('weighted_recall'), 4)}: equal, as they must be.")
    return "\n\n".join(x for x in [head, note, table(rows, headers),
                                   "Facts about the data:", facts, check] if x)


def _reproducibility(data: ReportData) -> str:
    files = (link(data, data.run.results_csv, "results.csv") + " (one row per entry and split)"
             + ("; ISIC 2018 scorer exports of the test predictions (`image,MEL,NV,BCC,AKIEC,BKL,"
                "DF,VASC`): " + ", ".join(link(data, p, n) for n, p in data.isic_exports.items())
                if data.isic_exports else ""))
    return reproducibility_section(
        data.run.root, data.context, "run", "this report, results.csv and the figures",
        data.rank_by, data.reference, files)
