"""The entries of a run directory and the flat results.csv of a single run (one row per entry
and split). A grid's aggregated results.csv is reports.grid's; reports.build picks the right one."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from core.atomic import atomic_write_csv, read_json_object
from core.entry_metrics import (
    METRICS_FILE,
    infer_kind,
    read_entry_metrics,
    write_entry_metrics,
)
from core.errors import RunDirError
from core.metrics import CI_METRICS, metric_names
from core.numbers import as_float, as_interval
from core.predictions import Predictions, read_predictions
from core.rundir import SPLITS, RunDir, entry_folders

IDENTITY_COLUMNS = ("entry", "kind", "split", "status", "fingerprint")
# Entry-level facts recorded by the trainer, repeated on each of the entry's rows.
COST_COLUMNS = ("params", "flops_per_image", "train_seconds", "batch_size", "inference_images_per_s")


@dataclass
class Entry:
    """One model, baseline or ensemble folder of a run directory.

    Attributes:
        name: folder name (e.g. "inception_resnet_v2", "soft_voting").
        directory: models/<name> or ensembles/<name>.
        metrics: its metrics.json ({} when absent).
    """

    name: str
    directory: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    _predictions: dict[str, Predictions] = field(default_factory=dict, repr=False)

    @property
    def kind(self) -> str:
        """backbone | baseline | ensemble: metrics.json's "kind"; else "ensemble" for a folder
        under ensembles/, the zoo registry's kind of a registered backbone, or "backbone"."""
        kind = self.metrics.get("kind")
        if isinstance(kind, str) and kind:
            return kind
        recorded = infer_kind(self.directory, self.metrics)
        if recorded:
            return recorded
        from zoo import registered_kind  # only for folders that record no kind

        return registered_kind(self.name) or "backbone"

    @property
    def description(self) -> str:
        """What the entry is, as the stage that made it recorded in metrics.json's "description"
        ("" when not recorded)."""
        description = self.metrics.get("description")
        return description if isinstance(description, str) else ""

    @property
    def status(self) -> str:
        """"ok", "failed" or "nan" (metrics.json's "status"; "ok" when test predictions exist)."""
        status = self.metrics.get("status")
        if isinstance(status, str) and status:
            return status
        return "ok" if self.has_split("test") else "missing"

    def has_split(self, split: str) -> bool:
        return RunDir.predictions_file(self.directory, split).is_file()

    def split_metrics(self, split: str) -> dict[str, Any]:
        """The flat metric map of `split` from metrics.json ({} when absent)."""
        value = self.metrics.get(split)
        return value if isinstance(value, dict) else {}

    def predictions(self, split: str) -> Predictions:
        """The entry's predictions on `split` (read once, then cached)."""
        if split not in self._predictions:
            self._predictions[split] = read_predictions(
                RunDir.predictions_file(self.directory, split)
            )
        return self._predictions[split]

    def reload_metrics(self) -> None:
        self.metrics = read_entry_metrics(self.directory)

    def refresh_metrics(self, n_resamples: int, seed: int) -> None:
        """Recompute metrics.json from the prediction files (core.entry_metrics), recording the
        entry's kind, and reload it.

        Raises:
            PredictionFileError: a prediction file breaks the contract.
        """
        write_entry_metrics(self.directory, extra={"kind": self.kind},
                            n_resamples=n_resamples, seed=seed)
        self.reload_metrics()


def discover_entries(run: RunDir) -> list[Entry]:
    """Every entry folder with a prediction file or a metrics.json: models first, then ensembles.

    Args:
        run: the run directory.

    Returns:
        Entries sorted by name within models/ and within ensembles/.
    """
    entries: list[Entry] = []
    for folder in (run.models_dir, run.ensembles_dir):
        for path in entry_folders(folder):
            has_files = (path / METRICS_FILE).is_file() or any(
                RunDir.predictions_file(path, s).is_file() for s in SPLITS
            )
            if has_files:
                entries.append(Entry(path.name, path, read_entry_metrics(path)))
    return entries


def run_fingerprint(run: RunDir) -> str:
    """The protocol fingerprint recorded in run.json ("" when not recorded)."""
    value = read_json_object(run.run_json, "results.csv records no fingerprint").get("fingerprint")
    return value if isinstance(value, str) else ""


def results_columns() -> list[str]:
    """The header of results.csv: identity, metrics (intervals beside their metric), costs."""
    columns = list(IDENTITY_COLUMNS)
    for name in metric_names():
        columns.append(name)
        if name in CI_METRICS:
            columns += [f"{name}_ci_low", f"{name}_ci_high"]
    return columns + list(COST_COLUMNS) + ["error"]


def results_frame(run: RunDir, entries: list[Entry] | None = None) -> pd.DataFrame:
    """results.csv as a DataFrame, from the entries' metrics.json files.

    Args:
        run: the run directory.
        entries: the entries (default: `discover_entries(run)`).

    Returns:
        One row per (entry, split) with a metrics map; an entry without split metrics (e.g. a
        failed one) gets a single "test" row with its status and empty metrics.
    """
    entries = discover_entries(run) if entries is None else entries
    default_fingerprint = run_fingerprint(run)
    columns = results_columns()
    rows = []
    for entry in entries:
        splits = [s for s in SPLITS if entry.split_metrics(s)] or ["test"]
        for split in splits:
            metrics = entry.split_metrics(split)
            row: dict[str, Any] = {
                "entry": entry.name,
                "kind": entry.kind,
                "split": split,
                "status": entry.status,
                "fingerprint": entry.metrics.get("fingerprint") or default_fingerprint,
            }
            for name in metric_names():
                row[name] = as_float(metrics.get(name))
                if name in CI_METRICS:
                    low, high = as_interval(metrics.get(f"{name}_ci"))
                    row[f"{name}_ci_low"], row[f"{name}_ci_high"] = low, high
            for name in COST_COLUMNS:
                row[name] = as_float(entry.metrics.get(name))
            row["error"] = entry.metrics.get("error") or ""
            rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def write_results_csv(run: RunDir) -> Path:
    """Write run/results.csv of a single run atomically from the entries' metrics.json files.

    Args:
        run: a single run directory (a grid's replicate included).

    Returns:
        The path of results.csv.

    Raises:
        RunDirError: `run` is a grid root, whose results.csv aggregates its replicates
            (reports.grid.write_grid_results_csv; reports.build.refresh_results_csv picks).
    """
    if run.is_grid:
        raise RunDirError(
            f"{run.root} is a grid run: its results.csv aggregates the replicates; rebuild it "
            "with --report"
        )
    atomic_write_csv(run.results_csv, results_frame(run))
    return run.results_csv
