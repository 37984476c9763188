"""The replicate folders of a grid run (`--seeds` and/or `--folds K`): one per (fold, seed).

Every replicate is an ordinary run directory (`core.rundir`, "replicates/fold<f>-seed<s>"): its
run.json holds the grid's config with that training seed and fold (`replicate_config`), and its
own fingerprint; its splits.csv is the fold's split of the grid's shared splits.csv
(`fold_split`), so all entries (and all seeds) of one fold are tested on the same images and every
comparison stays paired. The worker trains a replicate's entry exactly as it trains an entry of a
single run. `write_replicates` creates the folders after the grid's data is prepared, and checks
them on resume.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from core.atomic import atomic_write_json_if_changed, atomic_write_text, read_json
from core.errors import RunDirError
from core.rundir import RunDir
from data_utils.splits import split_for_fold
from training.fingerprint import file_sha256, protocol_fingerprint
from training.settings import ReplicateInfo, RunConfig

SPLIT_DTYPES = {"image_id": str, "lesion_id": str, "dx": str, "split": str}


@dataclass(frozen=True)
class Replicate:
    """One (fold, seed) of a grid run.

    Attributes:
        fold: the fold (0 when the grid has no --folds).
        seed: the training seed.
        run: its run directory.
        config: its resolved config (the grid's, with this seed and fold).
    """

    fold: int
    seed: int
    run: RunDir
    config: RunConfig

    @property
    def name(self) -> str:
        return self.run.root.name


def replicate_config(config: RunConfig, fold: int, seed: int) -> RunConfig:
    """The config of replicate (fold, seed) of a grid config.

    "seed" becomes the training seed; the replicate's `data_seed` keeps the grid's seed, which
    made the split and the synthetic data; its `fold` is the fold (None without --folds).
    """
    return replace(config, seeds=None, seed=int(seed), replicate=ReplicateInfo(
        data_seed=int(config.seed), fold=int(fold) if config.folds else None))


def fold_split(splits: pd.DataFrame, config: RunConfig, fold: int) -> pd.DataFrame:
    """The grid's splits.csv table with `split` set to fold `fold`'s train/val/test."""
    if not config.folds:
        return splits
    out = splits.copy()
    out["split"] = split_for_fold(splits, fold, ratios=tuple(config.ratios),
                                  seed=int(config.seed)).to_numpy()
    return out


def read_splits(run: RunDir) -> pd.DataFrame:
    """A run directory's splits.csv, ids kept as strings."""
    return pd.read_csv(run.splits_csv, dtype=SPLIT_DTYPES)


def write_replicates(run: RunDir, config: RunConfig,
                     signatures: dict[str, Any]) -> list[Replicate]:
    """Create or check every replicate folder of a grid run (after the data is prepared).

    Writes each replicate's splits.csv, dataset.json and run.json, only where they changed, so
    a resumed grid touches nothing that is already right.

    Args:
        run: the grid's run directory (with splits.csv and dataset.json).
        config: the grid's resolved config.
        signatures: the grid's content signatures (weights); the replicate's own splits_sha256
            is added.

    Returns:
        The replicates, fold by fold, seed by seed.

    Raises:
        RunDirError: a replicate folder holds a run of a different protocol.
    """
    splits = read_splits(run)
    dataset_card = run.dataset_json.read_text(encoding="utf-8") if run.dataset_json.is_file() \
        else None
    replicates = []
    for fold in config.grid_folds:
        table = fold_split(splits, config, fold)
        text = table.to_csv(index=False, lineterminator="\n")
        for seed in config.seeds or ():
            replicate_run = run.replicate(fold, seed)
            replicate_run.root.mkdir(parents=True, exist_ok=True)
            _write_if_changed(replicate_run.splits_csv, text)
            if dataset_card is not None:
                _write_if_changed(replicate_run.dataset_json, dataset_card)
            rep_config = replicate_config(config, fold, seed)
            rep_signatures = {**{k: v for k, v in signatures.items() if k != "splits_sha256"},
                              "splits_sha256": file_sha256(replicate_run.splits_csv)}
            _write_replicate_json(replicate_run, rep_config, rep_signatures, fold, seed)
            replicates.append(Replicate(fold, int(seed), replicate_run, rep_config))
    return replicates


def _write_if_changed(path: Path, text: str) -> None:
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    atomic_write_text(path, text)


def _write_replicate_json(run: RunDir, config: RunConfig, signatures: dict[str, Any],
                          fold: int, seed: int) -> None:
    fingerprint = protocol_fingerprint(config.to_dict(), signatures)
    if run.run_json.is_file():
        previous = read_json(run.run_json)
        if previous.get("fingerprint") != fingerprint:
            raise RunDirError(
                f"{run.root} holds a replicate of a different protocol (fingerprint "
                f"{previous.get('fingerprint')}, this command {fingerprint}); move that folder "
                "away or choose another --out"
            )
        # Entries are a union over invocations, as in a single run's run.json.
        known = list(previous.get("config", {}).get("entries", []))
        config = replace(config, entries=tuple(known + [e for e in config.entries
                                                        if e not in known]))
    atomic_write_json_if_changed(run.run_json, {
        "config": config.to_dict(), "fingerprint": fingerprint, "signatures": signatures,
        "replicate": {"fold": fold, "seed": seed}, "grid": "../..",
    })
