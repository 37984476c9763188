"""The run-directory layout of DESIGN.md, in one place.

    run.json, dataset.json, splits.csv, train.log, results.csv, report.md, figures/
    models/<name>/{history.csv,predictions_val.csv,predictions_test.csv,metrics.json}
    ensembles/<name>/{predictions_val.csv,predictions_test.csv,metrics.json,fit.json}
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

SPLITS: tuple[str, ...] = ("val", "test")


@dataclass(frozen=True)
class RunDir:
    """Paths inside one run directory. Creating it touches nothing on disk."""

    root: Path

    def __init__(self, root: str | os.PathLike) -> None:
        object.__setattr__(self, "root", Path(root))

    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    @property
    def dataset_json(self) -> Path:
        return self.root / "dataset.json"

    @property
    def splits_csv(self) -> Path:
        return self.root / "splits.csv"

    @property
    def train_log(self) -> Path:
        return self.root / "train.log"

    @property
    def results_csv(self) -> Path:
        return self.root / "results.csv"

    @property
    def report_md(self) -> Path:
        return self.root / "report.md"

    @property
    def figures_dir(self) -> Path:
        return self.root / "figures"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def ensembles_dir(self) -> Path:
        return self.root / "ensembles"

    def model_dir(self, name: str) -> Path:
        return self.models_dir / name

    def ensemble_dir(self, name: str) -> Path:
        return self.ensembles_dir / name

    @staticmethod
    def predictions_file(entry_dir: Path, split: str) -> Path:
        """`predictions_<split>.csv` inside a model or ensemble folder."""
        return entry_dir / f"predictions_{split}.csv"

    def model_names(self) -> list[str]:
        """Models that have a `predictions_test.csv`, sorted by name."""
        return _entries_with_predictions(self.models_dir)

    def ensemble_names(self) -> list[str]:
        """Ensembles that have a `predictions_test.csv`, sorted by name."""
        return _entries_with_predictions(self.ensembles_dir)


def _entries_with_predictions(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(
        p.name for p in folder.iterdir() if (p / "predictions_test.csv").is_file()
    )
