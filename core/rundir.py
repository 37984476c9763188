"""The run-directory layout of DESIGN.md, in one place.

    run.json, dataset.json, splits.csv, train.log, results.csv, report.md, figures/
    models/<name>/{history.csv,predictions_val.csv,predictions_test.csv,metrics.json}
    ensembles/<name>/{predictions_val.csv,predictions_test.csv,metrics.json,fit.json}

A grid run (`--seeds` with several seeds, or `--folds K`) repeats every entry per (fold, seed).
Its root keeps run.json, dataset.json, splits.csv (with the `fold` column), train.log and the
aggregated results.csv / jobs.csv / report.md; each replicate is a complete run directory of the
layout above (its own run.json with that fold's seed, its fold's splits.csv, models/, ensembles/):

    replicates/fold<f>-seed<s>/...
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from core.errors import RunDirError

SPLITS: tuple[str, ...] = ("val", "test")

# The entries of a full run: the study's five fine-tuned backbones, in its order, and two baselines.
# Plain names here (no zoo import) so that ensembles/ and reports/ stay free of Keras.
BACKBONES: tuple[str, ...] = (
    "inception_v3", "resnext101", "inception_resnet_v2", "xception", "nasnet_large",
)
SCRATCH_BASELINE = "paper_cnn"
SVM_BASELINE = "inception_resnet_v2+svm"
BASELINES: tuple[str, ...] = (SCRATCH_BASELINE, SVM_BASELINE)


def entry_kind(name: str) -> str:
    """"backbone" for the five fine-tuned backbones, "baseline" for everything else trained."""
    return "backbone" if name in BACKBONES else "baseline"


RUNS_ROOT = Path("runs")
REPLICATES_DIR = "replicates"
_REPLICATE_NAME = re.compile(r"^fold(\d+)-seed(\d+)$")


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


def _entries_with_predictions(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(
        p.name for p in folder.iterdir() if (p / "predictions_test.csv").is_file()
    )


def default_run_path(dataset: str, preset: str | None, runs_root: Path = RUNS_ROOT) -> Path:
    """Where a run writes when --out is not given: runs/<dataset>-<preset> (preset default native)."""
    return runs_root / f"{dataset}-{preset or 'native'}"


def find_run_dir(out: str | os.PathLike | None = None, dataset: str | None = None,
                 preset: str | None = None, runs_root: Path = RUNS_ROOT) -> RunDir:
    """The finished run that --ensemble, --report, --save-baseline and --check read.

    Args:
        out: --out; used as given (callers say what is missing in it).
        dataset, preset: --dataset / --preset; when either is given, the default run directory of
            that combination (dataset default: synthetic for smoke, else ham10000).
        runs_root: where runs live by default.

    Returns:
        The RunDir. Without --out, --dataset and --preset: the only folder under runs/.

    Raises:
        RunDirError: no --out and no run directory found by the rules above.
    """
    if out:
        return RunDir(out)
    if dataset or preset:
        dataset = dataset or ("synthetic" if preset == "smoke" else "ham10000")
        path = default_run_path(dataset, preset, runs_root)
        if path.is_dir():
            return RunDir(path)
        raise RunDirError(
            f"no --out given and the default run directory {path} (for --dataset {dataset} "
            f"--preset {preset or 'native'}) does not exist; pass --out RUNDIR, a folder holding "
            "models/<name>/predictions_val.csv and predictions_test.csv"
        )
    candidates = sorted(p for p in runs_root.iterdir() if p.is_dir()) if runs_root.is_dir() else []
    if len(candidates) == 1:
        return RunDir(candidates[0])
    found = ", ".join(str(p) for p in candidates) if candidates else "none"
    raise RunDirError(f"which run? pass --out RUNDIR (run directories under {runs_root}/: {found})")
