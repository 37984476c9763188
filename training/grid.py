"""Grid runs (`--seeds` and/or `--folds K`): one replicate run directory per (fold, seed).

Every replicate is an ordinary run directory (`core.rundir`, "replicates/fold<f>-seed<s>"):
its run.json holds the grid's config with that training seed and fold, and its own fingerprint;
its splits.csv is the fold's split of the grid's shared splits.csv, so all entries (and all seeds)
of one fold are tested on the same images and every comparison stays paired. The worker trains a
replicate's entry exactly as it trains an entry of a single run.

With K folds, once an entry has finished in every fold of a seed, each replicate of that seed
gets the entry's out-of-fold predictions (`predictions_oof.csv`): the rows of the other folds,
each predicted by the replicate that held that fold out. Stacking fits on them when every member
has them (`ensembles.members`), never on the replicate's own test fold.

One ensemble name is one model in the whole grid: its members are the backbones finished in every
replicate (`grid_members`), and a replicate whose fit.json was made from other members or other
member files (e.g. before the out-of-fold predictions existed) is refit (`stale_ensembles`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from core.atomic import atomic_write_json_if_changed, atomic_write_text, read_json
from core.errors import RunDirError
from core.predictions import make_predictions, read_predictions, write_predictions
from core.rundir import SPLITS, RunDir
from data_utils.splits import split_for_fold
from training.fingerprint import file_sha256, protocol_fingerprint
from training.settings import ReplicateInfo, RunConfig

logger = logging.getLogger(__name__)

OOF_FILE = "predictions_oof.csv"
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


def _write_if_changed(path, text: str) -> None:
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


# ---------------------------------------------------------------------------------------------
# Out-of-fold predictions


def write_oof_predictions(run: RunDir, config: RunConfig, replicates: list[Replicate],
                          entry: str) -> list[str]:
    """Write `entry`'s predictions_oof.csv in every replicate whose seed has all folds finished.

    The out-of-fold rows of replicate (f, s) are the images of every other fold f', taken from
    the prediction files of replicate (f', s), whose model never trained on fold f'.

    Args:
        run: the grid's run directory (its splits.csv has the `fold` column).
        config: the grid's config (needs `folds`).
        replicates: the grid's replicates.
        entry: the entry.

    Returns:
        Names of the replicates that got (or already had) the file.
    """
    from training.runner import entry_is_finished

    if not config.folds:
        return []
    folds_of = read_splits(run).set_index("image_id")["fold"]
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


def _held_out_rows(entry_dir, folds_of: pd.Series, fold: int) -> pd.DataFrame:
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


def _write_oof(path, parts: list[pd.DataFrame]) -> None:
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


# ---------------------------------------------------------------------------------------------
# One ensemble variant per grid


ENSEMBLE_FIT_FILE = "fit.json"
MEMBER_SPLITS = ("val", "test")


def grid_members(replicates: list[Replicate],
                 backbones: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """The ensemble members of a grid: the backbones finished in every replicate.

    A backbone that failed (or has not run) in one replicate is left out of every replicate's
    ensembles, so that one ensemble name means one model in the whole grid.

    Args:
        replicates: the grid's replicates.
        backbones: the candidate backbones, in the study's order.

    Returns:
        (members, dropped): the members, sorted by name (as ensembles.members sorts them), and
        backbone -> the replicates it is not finished in, for every backbone finished in some
        replicates but not all.
    """
    from training.runner import entry_is_finished

    members, dropped = [], {}
    for name in backbones:
        lacking = [r.name for r in replicates if not entry_is_finished(r.run.model_dir(name))]
        if not lacking:
            members.append(name)
        elif len(lacking) < len(replicates):
            dropped[name] = lacking
    return sorted(members), dropped


def stale_ensembles(run: RunDir, names: list[str], members: list[str]) -> dict[str, str]:
    """The ensembles of a replicate that must be (re)fit, each with the reason.

    An ensemble is current when its fit.json records exactly `members` and, for every member,
    the prediction files the ensembles stage reads now (validation and test, plus out-of-fold
    when every member has one) with the SHA-256 they have now. So an ensemble fit on validation
    before the replicate's members got their out-of-fold predictions, one fit with a backbone
    the grid has since dropped, or one whose member was retrained, is stale.

    Args:
        run: the replicate's run directory.
        names: the ensembles the grid builds.
        members: the grid's members (`grid_members`).

    Returns:
        name -> why it is stale ("no fit.json", "members ... differ ...", ...); current
        ensembles are left out.
    """
    expected = list(MEMBER_SPLITS)
    if members and all(RunDir.predictions_file(run.model_dir(m), "oof").is_file()
                       for m in members):
        expected.append("oof")
    hashes: dict[tuple[str, str], str] = {}

    def current(member: str, split: str) -> str:
        if (member, split) not in hashes:
            path = RunDir.predictions_file(run.model_dir(member), split)
            hashes[(member, split)] = file_sha256(path) if path.is_file() else ""
        return hashes[(member, split)]

    stale = {}
    for name in names:
        reason = _fit_problem(run.ensemble_dir(name) / ENSEMBLE_FIT_FILE, members, expected,
                              current)
        if reason:
            stale[name] = reason
    return stale


def _fit_problem(path, members: list[str], expected: list[str], current) -> str:
    if not path.is_file():
        return "no fit.json"
    try:
        record = read_json(path)
    except (OSError, ValueError) as exc:
        return f"unreadable fit.json ({exc})"
    recorded = record.get("members") if isinstance(record, dict) else None
    state = record.get("state") if isinstance(record, dict) else None
    if (record.get("ensemble") in ("weighted_voting", "stacking") and isinstance(state, dict)
            and state.get("objective") != "class-balanced log loss"):
        return "fit before the class-balanced convention (plain log loss)"
    if not isinstance(recorded, list) or sorted(map(str, recorded)) != sorted(members):
        return (f"fit on members {', '.join(map(str, recorded or [])) or 'unknown'}, the grid's "
                f"are {', '.join(members)}")
    files = record.get("member_files")
    if not isinstance(files, dict):
        return "fit.json records no member files"
    for member in members:
        splits = files.get(member) if isinstance(files.get(member), dict) else {}
        if sorted(splits) != sorted(expected):
            return (f"fit with {member}'s {', '.join(sorted(splits)) or 'no'} predictions, the "
                    f"replicate now has {', '.join(sorted(expected))}")
        for split, entry in splits.items():
            if not isinstance(entry, dict) or entry.get("sha256") != current(member, split):
                return f"{member}'s predictions_{split}.csv changed since the fit"
    return ""
