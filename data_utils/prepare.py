"""Prepare a run directory's data: read, validate, split, write splits.csv + dataset.json, cache.

`prepare` is what `python benchmark.py --prepare` (and `--all`) runs. It is idempotent: running it
again on the same run directory with the same inputs keeps splits.csv untouched and reopens the
image caches without decoding; a run directory whose splits.csv differs is refused (RunDirError)
unless `force_new`, which starts afresh in a sibling folder (`<out>-2`, ...).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from core import defaults
from core.atomic import atomic_write_json, atomic_write_text, read_json_object
from core.classes import CLASSES
from core.errors import DataError, FileSystemError, RunDirError
from core.filesystem import check_writable_dir, filesystem_error
from core.rundir import RunDir
from data_utils.readers import read_dataset
from data_utils.splits import (
    SPLIT_NAMES,
    leakage_report,
    lesions_per_split,
    make_splits,
    split_counts,
)

logger = logging.getLogger(__name__)

SPLITS_COLUMNS: tuple[str, ...] = ("image_id", "lesion_id", "dx", "split")
# dataset.json keys that define the split; a mismatch on rerun is named in the error.
CONFIG_KEYS: tuple[str, ...] = (
    "dataset", "split", "ratios", "folds", "seed", "test_set", "synthetic_images", "allow_missing",
)


@dataclass
class PreparedData:
    """The result of `prepare`.

    Attributes:
        table: the dataset table with `split` (and `fold` for K folds) columns.
        run: the run directory.
        card: the dataset card (the content of dataset.json).
        caches: image size -> ImageCache.
    """

    table: pd.DataFrame
    run: RunDir
    card: dict
    caches: dict = field(default_factory=dict)


def splits_csv_text(table: pd.DataFrame) -> str:
    """splits.csv content: image_id,lesion_id,dx,split[,fold], rows sorted by image_id."""
    columns = [*SPLITS_COLUMNS, *(["fold"] if "fold" in table.columns else [])]
    buffer = io.StringIO()
    table[columns].sort_values("image_id", kind="stable").to_csv(buffer, index=False, lineterminator="\n")
    return buffer.getvalue()


def build_card(table: pd.DataFrame, config: dict, splits_text: str) -> dict:
    """The dataset card (dataset.json): config, counts, lesions, leakage check, provenance.

    Args:
        table: the split table (split[, fold] columns; attrs from the reader).
        config: dataset, data_dir, split, ratios, folds, seed, test_set, ... (copied in).
        splits_text: the splits.csv content (hashed into `splits_sha256`).

    Returns:
        The card as a JSON-ready dict.
    """
    counts = split_counts(table)
    attrs = table.attrs or {}
    source = attrs.get("source", {})
    if config.get("test_set") == "official":
        test_source = "official ISIC 2018 Task 3 test set"
    elif config.get("folds"):
        test_source = f"fold 0 of {config['folds']} lesion-grouped folds of the dataset"
    else:
        test_source = f"{config.get('split', 'lesion')}-level held-out split of the dataset"
    card = {
        **config,
        "ratios": list(config.get("ratios", ())),
        "classes": list(CLASSES),
        "images": {**{s: sum(counts[s].values()) for s in SPLIT_NAMES}, "total": len(table)},
        "lesions": {**lesions_per_split(table), "total": int(table["lesion_id"].nunique())},
        "counts": counts,
        "class_totals": {c: int((table["dx"] == c).sum()) for c in CLASSES},
        "leakage": leakage_report(table),
        "missing_images": int(attrs.get("missing_images", 0)),
        "missing_examples": list(attrs.get("missing_examples", [])),
        "test_source": test_source,
        "source": source,
        "splits_sha256": hashlib.sha256(splits_text.encode("utf-8")).hexdigest(),
    }
    if "fold" in table.columns:
        folded = table[table["fold"] >= 0]
        per_fold = pd.crosstab(folded["fold"], folded["dx"])
        card["fold_counts"] = {
            str(int(f)): {c: int(per_fold.at[f, c]) if c in per_fold.columns else 0 for c in CLASSES}
            for f in per_fold.index
        }
        card["split_is_fold"] = 0
    return card


def _difference(old: dict, new: dict) -> str:
    if not old:
        return "it differs from the split these settings give, and there is no dataset.json"
    changed = [
        f"{key}: {old.get(key)!r} -> {new.get(key)!r}"
        for key in CONFIG_KEYS
        if old.get(key) != new.get(key)
    ]
    if changed:
        return "; ".join(changed)
    return "same settings, but the images or labels in the data folder changed"


def _choose_run_dir(out: Path, splits_text: str, card: dict, force_new: bool) -> tuple[RunDir, bool]:
    """The run directory to write, and whether its splits.csv already holds this split.

    `out` itself unless it holds a different split: then a RunDirError, or with `force_new` the
    first sibling `out-2`, `out-3`, ... that is free or holds this split (`pipeline.rundir_lifecycle`'s
    rule, so `--prepare --force-new` and `--all --force-new` land in the same place). Nothing
    that exists is moved or overwritten.
    """
    candidate, number = out, 1
    while True:
        run = RunDir(candidate)
        if not run.splits_csv.is_file():
            return run, False
        if run.splits_csv.read_text(encoding="utf-8") == splits_text:
            return run, True
        if not force_new:
            old = read_json_object(run.dataset_json)
            raise RunDirError(
                f"{run.root} already holds a different split ({run.splits_csv.name}: "
                f"{_difference(old, card)}); anything trained there used that split. Pass "
                f"--force-new to start afresh in a sibling folder (the old one is kept), or "
                f"choose another --out"
            )
        number += 1
        candidate = out.with_name(f"{out.name}-{number}")


def prepare(
    dataset: str,
    data_dir: str | os.PathLike | None,
    out: str | os.PathLike,
    *,
    split: str = defaults.SPLIT,
    ratios: Sequence[float] = defaults.RATIOS,
    folds: int | None = None,
    seed: int = defaults.SEED,
    allow_missing: bool = False,
    test_set: str = defaults.TEST_SET,
    synthetic_images: int = defaults.SYNTHETIC_IMAGES,
    image_sizes: Sequence[int] = (299,),
    resize_mode: str = defaults.RESIZE_MODE,
    cache_root: str | os.PathLike | None = None,
    workers: int | None = None,
    force_new: bool = False,
    progress: bool = True,
) -> PreparedData:
    """Read, validate and split a dataset, write splits.csv + dataset.json, build the caches.

    Args:
        dataset: "synthetic", "ham10000" or "isic2018".
        data_dir: the dataset folder; for "synthetic" None means `default_synthetic_dir`.
        out: the run directory.
        split, ratios, folds, seed: see `make_splits`.
        allow_missing, test_set: see `read_dataset`.
        synthetic_images: size of the generated dataset (synthetic only; seeded by `seed`).
        image_sizes: build a decoded-image cache for each of these sizes (empty: none).
        resize_mode: "square" or "crop".
        cache_root: cache root (None: `default_cache_root()`).
        workers: decoding processes (None: all cores).
        force_new: when `out` holds a different split, use a fresh sibling `<out>-N` instead of refusing.
        progress: show the cache build's progress bar.

    Returns:
        PreparedData(table, run, card, caches).

    Raises:
        DataError: bad dataset files (including unreadable images found by the cache build).
        RunDirError: `out` holds a different split and not `force_new`.
        SplitError: split settings that cannot be honoured.
        FileSystemError: `out` (or the chosen sibling) is a file or cannot be written, or the
            cache root is a file: checked before the data is read and the cache built.
    """
    check_writable_dir(out, "--out (the run directory)")
    if image_sizes:
        _check_cache_root(cache_root)
    if dataset == "synthetic":
        from data_utils.synthetic import default_synthetic_dir, generate_synthetic

        root = Path(data_dir) if data_dir is not None else default_synthetic_dir(synthetic_images, seed)
        if root.exists() and not root.is_dir():
            raise FileSystemError(f"--data-dir {root} is a file, not a folder; the synthetic "
                                  "dataset is generated into a folder: choose another path")
        try:
            data_dir = generate_synthetic(root, n_images=synthetic_images, seed=seed)
        except OSError as exc:  # a read-only or full disk while generating the images
            raise filesystem_error(exc, root, "generate the synthetic dataset in") from exc
    elif data_dir is None:
        raise DataError(
            f"--dataset {dataset} needs --data-dir (the folder with the release; fetch it with "
            f"--download --dataset {dataset} --data-dir DIR)"
        )
    data_dir = Path(data_dir).expanduser().resolve()
    table = read_dataset(dataset, data_dir, allow_missing=allow_missing, test_set=test_set)
    attrs = dict(table.attrs)
    table = make_splits(table, split=split, ratios=ratios, folds=folds, seed=seed)
    table.attrs = attrs

    config = {
        "dataset": dataset,
        "data_dir": str(data_dir),
        "split": split,
        "ratios": [float(r) for r in ratios],
        "folds": folds,
        "seed": int(seed),
        "test_set": test_set,
        "allow_missing": bool(allow_missing),
        "synthetic_images": int(synthetic_images) if dataset == "synthetic" else None,
    }
    text = splits_csv_text(table)
    card = build_card(table, config, text)
    run, unchanged = _choose_run_dir(Path(out), text, card, force_new)
    if run.root != Path(out):
        logger.warning("%s holds a different split; using %s (--force-new)", out, run.root)
        check_writable_dir(run.root, "the run directory (--force-new)")

    caches = {}
    if image_sizes:
        from data_utils.cache import build_cache

        for size in image_sizes:
            try:
                caches[int(size)] = build_cache(
                    table["path"].tolist(), table["image_id"].tolist(), int(size),
                    resize_mode=resize_mode, cache_root=cache_root, workers=workers,
                    progress=progress,
                )
            except OSError as exc:  # a full disk or a read-only cache: the user's to fix
                raise filesystem_error(exc, _cache_images_root(cache_root),
                                       "build the image cache in") from exc

    try:
        run.root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise filesystem_error(exc, run.root, "create the run directory") from exc
    if not unchanged:
        atomic_write_text(run.splits_csv, text)
    if read_json_object(run.dataset_json, "it is rewritten") != _json_roundtrip(card):
        atomic_write_json(run.dataset_json, card)
    logger.info("prepared %s: %d images -> %s", dataset, len(table), run.root)
    return PreparedData(table=table, run=run, card=card, caches=caches)


def _cache_images_root(cache_root: str | os.PathLike | None) -> Path:
    from data_utils.cache import default_cache_root

    return (Path(cache_root).expanduser() if cache_root is not None else default_cache_root())


def _check_cache_root(cache_root: str | os.PathLike | None) -> None:
    """Refuse a cache root that is a file (or lies under one) before any work. A folder that
    exists is not probed for writing: a complete cache is only read (a shared read-only one
    works); a cache that must be built there reports a write failure in one line."""
    root = _cache_images_root(cache_root)
    current = root
    while not current.exists() and current.parent != current:
        current = current.parent
    if current.exists() and not current.is_dir():
        what = "the image cache folder (--cache-dir or $DERMBENCH_CACHE)"
        raise FileSystemError(
            f"{what} {root} cannot be used: {current} is a file, not a folder; remove or rename "
            "it, or choose another --cache-dir")


def _json_roundtrip(obj: dict) -> dict:
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def format_card(card: dict) -> str:
    """The human dataset card: counts per split x class, lesions, leakage check.

    Args:
        card: a dataset.json dict (from `build_card`).

    Returns:
        Multi-line text (tabulate tables).
    """
    counts = card["counts"]
    totals = card["class_totals"]
    n = max(card["images"]["total"], 1)
    rows = [
        [c, *(counts[s][c] for s in SPLIT_NAMES), totals[c], f"{100 * totals[c] / n:.1f}%"]
        for c in CLASSES
    ]
    rows.append(["images", *(card["images"][s] for s in SPLIT_NAMES), card["images"]["total"], ""])
    rows.append(["lesions", *(card["lesions"][s] for s in SPLIT_NAMES), card["lesions"]["total"], ""])
    table = tabulate(rows, headers=["class", *SPLIT_NAMES, "total", "share"], tablefmt="github")
    ratios = "/".join(f"{r:g}" for r in card["ratios"])
    lines = [
        f"Dataset {card['dataset']} ({card['data_dir']})",
        f"Split: {card['split']}-level, ratios {ratios}, seed {card['seed']}"
        + (f", {card['folds']} folds (split shown: fold 0)" if card.get("folds") else "")
        + f"; test set: {card['test_source']}",
        "",
        table,
        "",
    ]
    leak = card["leakage"]
    if card["split"] == "image":
        lines.append(
            f"LEAKY image-level split (the source paper's protocol): "
            f"{leak['test_images_sharing_lesion_with_train']} test images "
            f"({100 * leak['test_images_sharing_lesion_with_train_share']:.1f}%) share a lesion "
            f"with training images; {leak['shared_lesions_total']} lesions span several splits"
        )
        per_class = {c: k for c, k in leak["test_images_sharing_lesion_with_train_per_class"].items() if k}
        if per_class:
            lines.append("  per class: " + ", ".join(f"{c} {k}" for c, k in per_class.items()))
    else:
        status = "ok" if leak["ok"] else "LEAK"
        pairs = ", ".join(f"{k} {v}" for k, v in leak["shared_lesions"].items())
        lines.append(f"Leakage check: {leak['shared_lesions_total']} lesions shared between splits "
                     f"({pairs}): {status}")
    if "fold_counts" in card:
        fold_rows = [[f, *(fc[c] for c in CLASSES), sum(fc.values())] for f, fc in card["fold_counts"].items()]
        lines += ["", tabulate(fold_rows, headers=["fold", *CLASSES, "images"], tablefmt="github")]
    if card.get("missing_images"):
        lines.append(
            f"Missing images skipped (--allow-missing): {card['missing_images']} "
            f"(first: {', '.join(card['missing_examples'])})"
        )
    source = card.get("source", {})
    if source.get("official_validation") and card.get("test_set") == "official":
        lines.append(f"Official validation set: {source['official_validation']}")
    lines.append(f"splits.csv sha256 {card['splits_sha256'][:16]}...")
    return "\n".join(lines)
