"""Out-of-fold predictions of a K-fold grid: a training output of every replicate.

A grid run with `--folds K` trains each entry once per (fold, seed) replicate; replicate (f, s)
tests on fold f. Once an entry has finished in every fold of a seed, each replicate of that seed
gets the entry's `predictions_oof.csv`: the rows of the other folds, each predicted by the
replicate that held that fold out, so no row was seen in training by the model that predicted it.
Stacking fits on them when every member has them (ensembles/members.py), never on the
replicate's own test fold.

The replicate folders themselves are made by the orchestration (pipeline/replicates.py); this
module only reads their prediction files and the grid's splits.csv (its `fold` column).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from core.predictions import make_predictions, read_predictions, write_predictions
from core.rundir import SPLITS, RunDir
from training.jobs import entry_is_finished
from training.settings import RunConfig

OOF_FILE = "predictions_oof.csv"


class GridReplicate(Protocol):
    """What this module needs of a grid replicate (pipeline.replicates.Replicate has it)."""

    @property
    def fold(self) -> int: ...

    @property
    def seed(self) -> int: ...

    @property
    def run(self) -> RunDir: ...

    @property
    def name(self) -> str: ...


def write_oof_predictions(run: RunDir, config: RunConfig, replicates: Sequence[GridReplicate],
                          entry: str) -> list[str]:
    """Write `entry`'s predictions_oof.csv in every replicate whose seed has all folds finished.

    The out-of-fold rows of replicate (f, s) are the images of every other fold f', taken from
    the prediction files of replicate (f', s), whose model never trained on fold f'. A file that
    already holds the same rows and probabilities is left untouched.

    Args:
        run: the grid's run directory (its splits.csv has the `fold` column).
        config: the grid's config (needs `folds`).
        replicates: the grid's replicates.
        entry: the entry.

    Returns:
        Names of the replicates that got (or already had) the file.
    """
    if not config.folds:
        return []
    folds_of = _folds_of_images(run)
    written = []
    for seed in sorted({r.seed for r in replicates}):
        same_seed = {r.fold: r for r in replicates if r.seed == seed}
        if not all(entry_is_finished(r.run.model_dir(entry)) for r in same_seed.values()):
            continue
        held_out = {fold: _held_out_rows(r.run.model_dir(entry), folds_of, fold)
                    for fold, r in same_seed.items()}
        for fold, replicate in same_seed.items():
            others = [held_out[f] for f in sorted(held_out) if f != fold]
            if not others:
                continue
            _write_oof(replicate.run.model_dir(entry) / OOF_FILE, others)
            written.append(replicate.name)
    return written


def _folds_of_images(run: RunDir) -> pd.Series:
    """image_id -> fold, from the grid's splits.csv (ids kept as strings)."""
    return pd.read_csv(run.splits_csv, dtype={"image_id": str}).set_index("image_id")["fold"]


def _held_out_rows(entry_dir: Path, folds_of: pd.Series, fold: int) -> pd.DataFrame:
    """The rows of `entry_dir`'s prediction files whose image lies in `fold`."""
    frames = []
    for split in SPLITS:
        preds = read_predictions(RunDir.predictions_file(entry_dir, split))
        keep = np.asarray(folds_of.reindex(preds.image_id).to_numpy() == fold)
        frames.append(pd.DataFrame({
            "image_id": preds.image_id[keep], "lesion_id": preds.lesion_id[keep],
            "label": preds.label[keep], **{f"p{i}": preds.proba[keep, i]
                                          for i in range(preds.proba.shape[1])}}))
    return pd.concat(frames, ignore_index=True)


def _write_oof(path: Path, parts: list[pd.DataFrame]) -> None:
    rows = pd.concat(parts, ignore_index=True).sort_values("image_id", kind="stable")
    proba = rows[[c for c in rows.columns if c.startswith("p")]].to_numpy()
    preds = make_predictions(rows["image_id"], rows["lesion_id"], rows["label"], proba,
                             source=str(path))
    if path.is_file():
        existing = read_predictions(path)
        if (np.array_equal(existing.image_id, preds.image_id)
                and np.array_equal(existing.proba, preds.proba)):
            return
    write_predictions(path, preds)
