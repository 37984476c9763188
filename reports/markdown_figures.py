"""Section 7 of report.md: the figures, readable with 20+ entries.

The comparison figures (ranking chart, macro ROC) show the best entries plus the reference
(reports.entry_groups.figure_entries); when that leaves entries out, a second figure of each
shows them all (the ROC curves one panel per kind). Training curves of the entries outside the
comparison figures fold into a `<details>` block. Pure text generation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from reports.formatting import table
from reports.sections import md_image, md_link

if TYPE_CHECKING:
    from pathlib import Path

    from reports.report_data import Figures, ReportData

RELIABILITY_TITLE = ("Reliability diagrams (test, 15 confidence bins, probabilities mapped to the "
                     "training class frequencies)")


def figures_section(data: ReportData) -> str:
    """Section 7: the figures of `data.figures` (or why there are none).

    Args:
        data: the collected results.

    Returns:
        Markdown text.
    """
    out = ["## 7. Figures"]
    f = data.figures
    if f is None:
        return out[0] + "\n\nFigures were not drawn for this report (figure drawing switched off)."
    out += _comparison(data, f, "ranking", "Ranking with 95 % intervals",
                       f"Ranking of all {len(f.shown.get('ranking_all', []))} entries",
                       "Ranking with 95 % intervals")
    out += _comparison(data, f, "macro_roc", "Macro-average ROC curves (test)",
                       "Macro-average ROC curves of all entries (test), one panel per kind",
                       "Macro-average ROC curves of all entries (test)")
    if f.reliability is not None:
        out.append(f"### {RELIABILITY_TITLE}\n\n{_image(data, f.reliability, RELIABILITY_TITLE)}")
    if data.ranked:
        out.append(_per_entry(data, f))
    out.append(_training_curves(data, f))
    return "\n\n".join(out)


def _image(data: ReportData, path: Path, alt: str) -> str:
    return md_image(data.run.root, path, alt)


def _link(data: ReportData, path: Path, text: str) -> str:
    return md_link(data.run.root, path, text)


def _names(names: list[str]) -> str:
    return ", ".join(f"`{n}`" for n in names)


def _comparison(data: ReportData, f: Figures, key: str, title: str, all_title: str,
                plain_title: str) -> list[str]:
    """The top-entries figure `key` with a caption naming what it shows, then the figure of all
    entries (`<key>_all`) when some were left out; else the one figure under `plain_title`."""
    path: Path | None = getattr(f, key)
    if path is None:
        return []
    shown = f.shown.get(key, [])
    everyone: Path | None = getattr(f, f"{key}_all")
    if everyone is None:
        return [f"### {plain_title}\n\n{_image(data, path, plain_title)}"]
    total = len(f.shown.get(f"{key}_all", []))
    best = shown[:f.top]
    reference = data.reference if data.reference in shown else None
    added = reference is not None and reference not in best
    caption = (f"The {len(best)} best of the {total} entries by `{data.rank_by}`"
               + (f" and the reference `{reference}`" if added else "")
               + f": {_names(shown)}. Every entry: the next figure.")
    heading = f"{title}: the best {len(best)}" + (" and the reference" if added else "")
    return [f"### {heading}\n\n{caption}\n\n{_image(data, path, heading)}",
            f"### {all_title}\n\n{_image(data, everyone, all_title)}"]


def _per_entry(data: ReportData, f: Figures) -> str:
    first = data.ranked[0].name
    focus = data.reference if data.reference in f.roc else first
    parts = ["### Per entry: ROC curves and confusion matrices (test)"]
    if focus in f.roc:
        parts.append(_image(data, f.roc[focus], f"ROC curves of {focus}"))
    if focus in f.confusion:
        parts.append(_image(data, f.confusion[focus], f"Confusion matrices of {focus}"))
    rows = [[e.name,
             _link(data, f.roc[e.name], "ROC curves") if e.name in f.roc
             else "n/a (no probabilities)" if e.metrics.get("probabilities") is False
             else "n/a",
             _link(data, f.confusion[e.name], "confusion matrices")
             if e.name in f.confusion else "n/a"] for e in data.ranked]
    parts.append(table(rows, ["Entry", "One-vs-rest ROC", "Confusion (counts, row-normalised)"]))
    return "\n\n".join(parts)


def _training_curves(data: ReportData, f: Figures) -> str:
    """The training curves: inline for the entries of the comparison figures (all of them when
    none were left out), the others folded into a <details> block."""
    out = ["### Training curves"]
    if not f.history:
        out.append("No training history in this run directory (no models/*/history.csv).")
        return "\n\n".join(out)
    focus = set(f.shown.get("ranking", [])) if f.ranking_all is not None else set(f.history)
    inline = [n for n in f.history if n in focus]
    folded = [n for n in f.history if n not in focus]
    out += [_image(data, f.history[n], f"Training curves of {n}") for n in inline]
    if folded:
        images = "\n\n".join(_image(data, f.history[n], f"Training curves of {n}") for n in folded)
        out.append(f"<details><summary>Training curves of the {len(folded)} other "
                   f"entr{'y' if len(folded) == 1 else 'ies'}</summary>\n\n{images}\n\n</details>")
    return "\n\n".join(out)
