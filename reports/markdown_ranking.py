"""Section 2 of report.md: the ranking, grouped so that it stays readable with 20+ entries.

One table per kind (backbones, baselines, ensembles, then any other kind such as derived
test-time-augmentation entries: reports.entry_groups), each row keeping its rank in the whole
ranking; the backbones' rows are grouped by architecture family, families ordered by their best
entry. Pure text generation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.metrics import LOWER_IS_BETTER
from reports.entry_groups import (
    NOT_RECORDED_GROUP,
    OTHER_FAMILY,
    FamilyRows,
    KindGroup,
    entry_group,
    group_ranked,
    kind_counts,
)
from reports.formatting import fmt, fmt_ci, one_line, table
from reports.markdown_stats import no_probability_notes
from reports.results import Entry

if TYPE_CHECKING:
    from reports.report_data import ReportData

# Metrics with a column of their own; any other --rank-by metric gets a column first.
STANDARD_COLUMNS = ("balanced_accuracy", "accuracy", "macro_f1", "weighted_precision",
                    "weighted_recall", "weighted_f1", "macro_auc", "mel_sens_at_spec80",
                    "mel_sens_at_spec90")
METRIC_HEADERS = ["Balanced accuracy [95 % CI]", "Accuracy [95 % CI]", "Macro F1", "Weighted P",
                  "Weighted R", "Weighted F1", "Macro AUC [95 % CI]", "Mel sens. @ 80 % spec.",
                  "Mel sens. @ 90 % spec."]
INTERVALS_NOTE = (
    "Intervals: 95 % percentile intervals from a bootstrap that resamples lesions (all images "
    "of a drawn lesion stay together). Weighted recall equals accuracy by definition on a "
    "single-label test set. Melanoma sensitivity at a fixed specificity is read off the "
    "melanoma-vs-rest ROC curve."
)


def ranking_section(data: ReportData) -> str:
    """Section 2: the ranking by `data.rank_by`, one table per kind, the notes, and the entries
    without test results.

    Args:
        data: the collected results.

    Returns:
        Markdown text.
    """
    direction = "lower is better" if data.rank_by in LOWER_IS_BETTER else "higher is better"
    head = f"## 2. Ranking by `{data.rank_by}` ({direction}, test split)"
    if not data.ranked:
        return head + "\n\nNo entry has test predictions in this run directory."
    groups = group_ranked(data.ranked)
    out = [head, _intro(data, groups)]
    extra = [] if data.rank_by in STANDARD_COLUMNS else [data.rank_by]
    # the --models group only tells entries apart in a run that mixes groups (--models all)
    mixed = len({entry_group(e) for e in data.ranked} - {NOT_RECORDED_GROUP}) > 1
    for number, group in enumerate(groups, 1):
        out.append(f"### 2.{number} {group.title}"
                   + (", by family" if _split_by_family(group) else ""))
        out.append(_group_table(data, group, extra, mixed))
    out.append(INTERVALS_NOTE)
    notes = no_probability_notes(data.ranked)
    if notes:
        out.append(notes)
    if data.failed:
        out.append(failed_list(data.failed))
    return "\n\n".join(out)


def _split_by_family(group: KindGroup) -> bool:
    return any(f.family is not None for f in group.families)


def _intro(data: ReportData, groups: list[KindGroup]) -> str:
    best = data.ranked[0]
    text = (f"{len(data.ranked)} entries with test predictions ({kind_counts(data.ranked)}), "
            f"one table per kind; **Rank** is the place in the whole ranking (1 = best: "
            f"`{best.name}`).")
    backbones = next((g for g in groups if _split_by_family(g)), None)
    if backbones is not None:
        text += (" Backbones are grouped by architecture family, families ordered by their best "
                 "entry.")
        if any(f.family == OTHER_FAMILY for f in backbones.families):
            text += (f" Family `{OTHER_FAMILY}`: the entry's metrics.json records no family "
                     "(a run made before families were recorded, or hand-made predictions).")
    if any(e.name == data.reference for e in data.ranked):
        text += f" The reference `{data.reference}` is in bold."
    return text


def _group_table(data: ReportData, group: KindGroup, extra: list[str], mixed: bool) -> str:
    by_family = _split_by_family(group)
    entries = [e for f in group.families for _, e in f.rows]
    with_group = mixed and any(entry_group(e) != NOT_RECORDED_GROUP for e in entries)
    headers = ["Rank", "Entry", *(["Family"] if by_family else []),
               *(["Models group"] if with_group else []), *extra, *METRIC_HEADERS]
    rows = []
    for family in group.families:
        for rank, entry in family.rows:
            name = f"**{entry.name}**" if entry.name == data.reference else entry.name
            rows.append([rank, name, *_family_cell(family, by_family),
                         *([entry_group(entry)] if with_group else []),
                         *_metric_cells(entry, extra)])
    return table(rows, headers)


def _family_cell(family: FamilyRows, by_family: bool) -> list[str]:
    return [family.family or OTHER_FAMILY] if by_family else []


def _metric_cells(entry: Entry, extra: list[str]) -> list[str]:
    m = entry.split_metrics("test")
    return [*(fmt_ci(m, e) for e in extra),
            fmt_ci(m, "balanced_accuracy"), fmt_ci(m, "accuracy"), fmt(m.get("macro_f1")),
            fmt(m.get("weighted_precision")), fmt(m.get("weighted_recall")),
            fmt(m.get("weighted_f1")), fmt_ci(m, "macro_auc"),
            fmt(m.get("mel_sens_at_spec80")), fmt(m.get("mel_sens_at_spec90"))]


def failed_list(failed: list[Entry]) -> str:
    """The entries without test results, one line each with their status and error."""
    lines = ["Entries without test results (not ranked):", ""]
    for entry in failed:
        error = entry.metrics.get("error")
        if entry.status == "ok":
            lines.append(f"- `{entry.name}`: no predictions_test.csv")
            continue
        lines.append(f"- `{entry.name}`: status {entry.status}"
                     + (f" ({one_line(str(error))})" if error else ""))
    return "\n".join(lines)
