"""What report.md shows (`ReportData`) and the paths of its figures (`Figures`).

Their own module so that the modules rendering the report's sections (reports.markdown and the
reports.markdown_* / section modules beside it) can all import them without importing each other;
reports.markdown re-exports both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core import defaults
from core.rundir import RunDir
from reports.comparisons import ComparisonRow
from reports.context import RunContext
from reports.entry_groups import FIGURE_TOP
from reports.results import Entry


@dataclass
class Figures:
    """Paths of the generated figures (absolute; rendered relative to the run directory).

    `ranking` and `macro_roc` show the best `top` entries plus the reference
    (reports.entry_groups.figure_entries); `ranking_all` and `macro_roc_all` show every entry and
    are drawn only when the first two leave some out. `shown` maps each of these four figures'
    field names to the entries it shows, best first.
    """

    ranking: Path | None = None
    macro_roc: Path | None = None
    reliability: Path | None = None
    ranking_all: Path | None = None
    macro_roc_all: Path | None = None
    shown: dict[str, list[str]] = field(default_factory=dict)
    top: int = FIGURE_TOP
    roc: dict[str, Path] = field(default_factory=dict)
    confusion: dict[str, Path] = field(default_factory=dict)
    history: dict[str, Path] = field(default_factory=dict)


@dataclass
class ReportData:
    """Everything report.md shows.

    Attributes:
        run: the run directory.
        context: run.json / dataset.json facts.
        ranked: entries with test metrics, best first by `rank_by`.
        failed: entries without test metrics (failed, NaN or never predicted).
        rank_by: the ranking metric.
        comparisons: the comparisons.csv rows (reference vs each other entry, per metric);
            None when the reference has no test predictions.
        figures: generated figures (None: figure drawing was switched off).
        fits: ensemble name -> its fit.json ({} when absent).
        isic_exports: entry name -> exported ISIC 2018 scorer file.
        n_resamples, seed: bootstrap settings.
        reference: the entry every other is compared with.
        comparisons_csv: the written comparisons.csv (None: not written).
    """

    run: RunDir
    context: RunContext
    ranked: list[Entry]
    failed: list[Entry]
    rank_by: str
    comparisons: list[ComparisonRow] | None
    figures: Figures | None
    fits: dict[str, dict[str, Any]]
    isic_exports: dict[str, Path]
    n_resamples: int
    seed: int
    reference: str = defaults.REFERENCE
    comparisons_csv: Path | None = None
