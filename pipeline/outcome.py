"""The result of one `--all` invocation (`RunOutcome`), filled in by pipeline/run_all.py and
pipeline/finish.py, and printed by pipeline/all_action.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from training.jobs import EntryOutcome


@dataclass
class RunOutcome:
    """The result of `pipeline.run_all.run_all`.

    Attributes:
        run_dir: the run directory used (a `--force-new` sibling where one was started).
        entries: one outcome per requested entry (per job in a grid), in config order.
        ensembles: names of the ensembles built.
        failures: human descriptions of what failed (entries, ensembles, report); empty when
            everything succeeded.
        results_csv: path of results.csv, or None when it could not be written.
        report: path of report.md, or None.
    """

    run_dir: Path
    entries: list[EntryOutcome] = field(default_factory=list)
    ensembles: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    results_csv: Path | None = None
    report: Path | None = None
