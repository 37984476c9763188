"""The run-directory layout (docs/ARCHITECTURE.md) and the default run directory, in one place.

    run.json, dataset.json, splits.csv, train.log, results.csv, report.md, figures/
    models/<name>/{history.csv,predictions_val.csv,predictions_test.csv,metrics.json}
    ensembles/<name>/{predictions_val.csv,predictions_test.csv,metrics.json,fit.json}
    isic_export/<stem>.csv

Entry folders are the non-hidden folders under models/ and ensembles/ (`entry_folders`): a
hidden one (a dot name) is a write in progress (core.atomic.staged_dirs). Files named after an
entry (figures, ISIC exports) use `entry_file_stem`, distinct for distinct entry names.

A grid run (`--seeds` with several seeds, or `--folds K`) repeats every entry per (fold, seed).
Its root keeps run.json, dataset.json, splits.csv (with the `fold` column), train.log and the
aggregated results.csv / jobs.csv / report.md; each replicate is a complete run directory of the
layout above (its own run.json with that fold's seed, its fold's splits.csv, models/, ensembles/):

    replicates/fold<f>-seed<s>/...

Without --out every action finds its run directory by one rule (`find_run_dir`, `RUN_DIR_RULE`):
runs/<dataset>-<preset>.
"""

from __future__ import annotations

import hashlib
import os
import re
import string
from dataclasses import dataclass
from pathlib import Path

from core import defaults
from core.errors import RunDirError

SPLITS: tuple[str, ...] = ("val", "test")

RUNS_ROOT = Path("runs")
REPLICATES_DIR = "replicates"
_REPLICATE_NAME = re.compile(r"^fold(\d+)-seed(\d+)$")
ISIC_EXPORT_DIR = "isic_export"
# Characters an entry name may keep in a file name; everything else is escaped as ~XX.
_SAFE = frozenset(string.ascii_letters + string.digits + "-_.+")
_ESCAPE = "~"
_MAX_STEM = 150  # bytes; longer stems are cut and given the name's full SHA-256


def entry_file_stem(name: str) -> str:
    """A file-name stem for files named after entry `name` (figures, ISIC exports).

    Distinct names always give distinct stems (a collision is impossible, not just unlikely):
    a name of letters, digits and `- _ . +` that does not start with a dot is its own stem;
    otherwise each other byte of its UTF-8 encoding (and a leading dot) is written as `~` and two
    hex digits (`my model` -> `my~20model`), which decodes back uniquely since `~` is never kept.
    A stem longer than 150 bytes keeps its first 80 characters, then `~~` and the SHA-256 of the
    name.

    Args:
        name: the entry's name (its folder name).

    Returns:
        The stem, safe on every file system and in a URL.
    """
    parts = []
    for i, char in enumerate(name):
        if char in _SAFE and not (i == 0 and char == "."):
            parts.append(char)
        else:
            parts.extend(f"{_ESCAPE}{byte:02x}" for byte in char.encode("utf-8"))
    stem = "".join(parts)
    if len(stem) > _MAX_STEM:
        digest = hashlib.sha256(name.encode("utf-8")).hexdigest()
        stem = f"{stem[:80]}{_ESCAPE}{_ESCAPE}{digest}"
    return stem


def replicate_name(fold: int, seed: int) -> str:
    """The folder name of replicate (fold, seed): `fold<f>-seed<s>`."""
    return f"fold{int(fold)}-seed{int(seed)}"


def parse_replicate_name(name: str) -> tuple[int, int] | None:
    """(fold, seed) of a replicate folder name, or None when `name` is not one."""
    match = _REPLICATE_NAME.match(name)
    return (int(match.group(1)), int(match.group(2))) if match else None


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
    def comparisons_csv(self) -> Path:
        """The reference entry against every other, per metric (reports.comparisons)."""
        return self.root / "comparisons.csv"

    @property
    def report_md(self) -> Path:
        return self.root / "report.md"

    @property
    def figures_dir(self) -> Path:
        return self.root / "figures"

    @property
    def isic_export_dir(self) -> Path:
        """The test predictions in the ISIC 2018 scorer layout, one file per entry."""
        return self.root / ISIC_EXPORT_DIR

    def isic_export_file(self, name: str) -> Path:
        """isic_export/<entry_file_stem(name)>.csv."""
        return self.isic_export_dir / f"{entry_file_stem(name)}.csv"

    @property
    def jobs_csv(self) -> Path:
        """A grid run's per-job table (entry x fold x seed, one row per job and split)."""
        return self.root / "jobs.csv"

    @property
    def replicates_dir(self) -> Path:
        return self.root / REPLICATES_DIR

    def replicate(self, fold: int, seed: int) -> RunDir:
        """The run directory of replicate (fold, seed) of a grid run."""
        return RunDir(self.replicates_dir / replicate_name(fold, seed))

    def replicates(self) -> list[tuple[int, int, RunDir]]:
        """(fold, seed, RunDir) of every replicate folder that exists, sorted by fold then seed."""
        if not self.replicates_dir.is_dir():
            return []
        found = []
        for path in self.replicates_dir.iterdir():
            key = parse_replicate_name(path.name)
            if key is not None and path.is_dir():
                found.append((key[0], key[1], RunDir(path)))
        return sorted(found, key=lambda item: (item[0], item[1]))

    @property
    def is_grid(self) -> bool:
        """Whether this is a grid run (it has a replicates/ folder)."""
        return self.replicates_dir.is_dir()

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


def entry_folders(folder: Path) -> list[Path]:
    """The entry folders under models/ or ensembles/, sorted by name: every non-hidden folder
    (a hidden one is a write in progress, core.atomic.staged_dirs).

    Args:
        folder: models/ or ensembles/ of a run directory.

    Returns:
        The folders ([] when `folder` does not exist).
    """
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: p.name)


def _entries_with_predictions(folder: Path) -> list[str]:
    return [p.name for p in entry_folders(folder) if (p / "predictions_test.csv").is_file()]



# The one rule, for --help and error messages.
RUN_DIR_RULE = (
    f"{RUNS_ROOT}/<dataset>-<preset>, where the preset defaults to {defaults.PRESET} and the "
    f"dataset to {defaults.SMOKE_DATASET} with --preset {defaults.SMOKE_PRESET}, else "
    f"{defaults.DATASET}; an action that reads a run, given neither --dataset nor --preset, "
    f"takes the only folder under {RUNS_ROOT}/ when that one does not exist"
)


def default_dataset(preset: str | None) -> str:
    """The dataset of a command without --dataset: synthetic for the smoke preset, else ham10000.

    Args:
        preset: --preset, or None (the default preset).

    Returns:
        The dataset name.
    """
    return defaults.SMOKE_DATASET if (preset or defaults.PRESET) == defaults.SMOKE_PRESET \
        else defaults.DATASET


def find_run_dir(out: str | os.PathLike | None = None, dataset: str | None = None,
                 preset: str | None = None, runs_root: Path = RUNS_ROOT, *,
                 existing: bool = True) -> RunDir:
    """The run directory of every action: the one rule (`RUN_DIR_RULE`).

    1. --out, when given (used as given: callers say what is missing in it);
    2. else runs/<dataset>-<preset>: the preset defaults to native, the dataset to
       `default_dataset(preset)` (synthetic for --preset smoke, else ham10000). So
       `--all --preset smoke` writes runs/synthetic-smoke and `--report --preset smoke` reads it;
    3. an action that reads an existing run (`existing`: --ensemble, --report, --save-baseline,
       --check), given neither --dataset nor --preset, takes the only folder under runs/ when
       the directory of 2 does not exist (so `--ensemble stacking` after the Quickstart's
       `--all --preset smoke` finds runs/synthetic-smoke).

    Args:
        out: --out, or None.
        dataset: --dataset, or None.
        preset: --preset, or None.
        runs_root: where run directories live by default.
        existing: True for an action that reads an existing run (it must exist); False for one
            that creates or resumes it (--all, --prepare: nothing is checked).

    Returns:
        The RunDir.

    Raises:
        RunDirError: `existing`, no --out, and no run directory found by the rule.
    """
    if out:
        return RunDir(Path(out).expanduser())
    name = f"{dataset or default_dataset(preset)}-{preset or defaults.PRESET}"
    path = runs_root / name
    if not existing or path.is_dir():
        return RunDir(path)
    if not dataset and not preset:
        candidates = sorted(p for p in runs_root.iterdir() if p.is_dir()) \
            if runs_root.is_dir() else []
        if len(candidates) == 1:
            return RunDir(candidates[0])
        found = ", ".join(str(p) for p in candidates) if candidates else "none"
        raise RunDirError(
            f"which run? no --out given, the default run directory {path} does not exist and "
            f"{runs_root}/ holds {found}; pass --out RUNDIR, or the --dataset/--preset of the run "
            f"(without --out: {RUN_DIR_RULE})"
        )
    raise RunDirError(
        f"no --out given and the default run directory {path} does not exist (without --out: "
        f"{RUN_DIR_RULE}); pass --out RUNDIR, a folder holding "
        "models/<name>/predictions_val.csv and predictions_test.csv, or the --dataset/--preset "
        "of the run"
    )
