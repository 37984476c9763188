"""Train/val/test splits: class-stratified and grouped by lesion, K folds, or image-level (leaky).

Lesion split. The readers guarantee that every lesion has one label, so a split that is both
grouped by lesion and stratified by class decomposes into one problem per class: distribute that
class's lesions (weighted by their image counts) over the splits in proportion to the ratios.
`assign_groups` does this greedily: lesions in a seeded random order, multi-image lesions first,
each to the split relatively furthest below its target; the single-image lesions placed last top
every split up to its per-class target to within one image, for any ratios. sklearn's StratifiedGroupKFold gives the same balance for
ratios of the form 1/n but takes ~5 s on the 10,015 HAM10000 rows (it loops over groups x folds
in Python); this takes a few milliseconds.

K folds. Every lesion gets a `fold` 0..K-1 (stratified and grouped the same way). For fold k the
test split is fold k; validation is carved from the remaining lesions (grouped and stratified,
val share = val / (train + val) of the ratios, seeded by (seed, k)); the rest is training.
splits.csv stores the `split` of fold 0 and the `fold` column; `split_for_fold` gives any fold's.

Official test protocol (ISIC 2018, rows with `official_split == "test"`): those rows are the
test split; the others are split into train/val by lesion with the ratios renormalised (0.8/0.1
-> 8/9, 1/9). With K folds, fold k is the validation split and the official test stays the test.

Image split (`split="image"`): the source paper's random image-level split, stratified by class
with sklearn's `train_test_split` and not grouped, so images of one lesion can land in train and
test; `leakage_report` counts them.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pandas as pd

from core import defaults
from core.classes import CLASSES
from core.errors import BenchmarkError

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")
SPLIT_KINDS: tuple[str, ...] = ("lesion", "image")
OFFICIAL = "official_split"


class SplitError(BenchmarkError, ValueError):
    """Split settings that cannot be honoured (bad ratios, folds with an image split, ...)."""


def _check_ratios(ratios: Sequence[float]) -> np.ndarray:
    values = np.asarray(ratios, dtype=float)
    if values.shape != (3,) or (values <= 0).any() or abs(values.sum() - 1) > 1e-6:
        raise SplitError(
            f"ratios must be three positive train,val,test numbers summing to 1, got {list(ratios)}"
        )
    return values


def assign_groups(
    groups: Sequence[str], labels: Sequence[str], targets: Sequence[float], seed: int | Sequence[int]
) -> dict[str, int]:
    """Assign groups (lesions) to bins so that every class is split in the `targets` proportions.

    Args:
        groups: group id per row (a lesion id); every group must have one label.
        labels: class label per row.
        targets: the share of each bin (sums to 1).
        seed: seed (or seed sequence) for the order in which equal-sized groups are placed.

    Returns:
        group id -> bin index.
    """
    frame = pd.DataFrame({"group": np.asarray(groups), "label": np.asarray(labels)})
    per_group = frame.groupby("group", sort=True).agg(label=("label", "first"), size=("label", "size"))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(per_group))
    shares = np.asarray(targets, dtype=float)
    names = per_group.index.to_numpy()
    sizes = per_group["size"].to_numpy()
    group_labels = per_group["label"].to_numpy()
    assignment: dict[str, int] = {}
    for label in sorted(set(group_labels)):
        idx = order[group_labels[order] == label]
        # Multi-image lesions first (in random order) so every split gets its share of them;
        # single images last, which tops every split up to its target exactly.
        idx = idx[np.argsort(sizes[idx] == 1, kind="stable")]
        want = (shares * sizes[idx].sum()).tolist()
        filled = [0.0] * len(want)
        bins = range(len(want))
        members: list[list[int]] = [[] for _ in bins]
        for g in idx.tolist():
            size = sizes[g]
            fits = [b for b in bins if want[b] - filled[b] >= size / 2]
            if fits:
                k = max(fits, key=lambda b: (want[b] - filled[b]) / want[b])
            else:
                k = max(bins, key=lambda b: want[b] - filled[b])
            members[k].append(g)
            filled[k] += size
        # Small classes: where there are enough lesions, no split goes without the class (a
        # target under half an image would otherwise round to none).
        if len(idx) >= len(want):
            for k in bins:
                if not members[k]:
                    donor = max(bins, key=lambda b: (len(members[b]), filled[b] - want[b]))
                    g = min(members[donor], key=lambda m: sizes[m])
                    members[donor].remove(g)
                    members[k].append(g)
        for k in bins:
            for g in members[k]:
                assignment[names[g]] = k
    return assignment


def _grouped(table: pd.DataFrame, targets: Sequence[float], seed) -> np.ndarray:
    mapping = assign_groups(table["lesion_id"], table["dx"], targets, seed)
    return table["lesion_id"].map(mapping).to_numpy()


def _image_level(table: pd.DataFrame, test_share: float, seed: int) -> np.ndarray:
    """Boolean mask of the rows drawn into the smaller part of a stratified image-level split."""
    from sklearn.model_selection import train_test_split  # only this split needs sklearn

    index = np.arange(len(table))
    try:
        _, picked = train_test_split(
            index, test_size=test_share, stratify=table["dx"].to_numpy(), random_state=seed
        )
    except ValueError as exc:
        raise SplitError(
            f"cannot make a stratified image-level split of {len(table)} images ({exc}); use "
            f"more images or --split lesion"
        ) from None
    mask = np.zeros(len(table), dtype=bool)
    mask[picked] = True
    return mask


def _train_val(pool: pd.DataFrame, ratios: np.ndarray, split: str, seed) -> np.ndarray:
    """'train'/'val' for the rows of `pool`, val share = val / (train + val)."""
    val_share = ratios[1] / (ratios[0] + ratios[1])
    if split == "image":
        is_val = _image_level(pool, val_share, int(np.asarray(seed).ravel()[0]))
    else:
        is_val = _grouped(pool, (1 - val_share, val_share), seed) == 1
    return np.where(is_val, "val", "train")


def make_splits(
    table: pd.DataFrame,
    split: str = defaults.SPLIT,
    ratios: Sequence[float] = defaults.RATIOS,
    folds: int | None = None,
    seed: int = defaults.SEED,
) -> pd.DataFrame:
    """Add a `split` column (train/val/test) and, with `folds`, a `fold` column.

    Args:
        table: a reader's table (image_id, lesion_id, dx, ...; optional official_split).
        split: "lesion" (stratified, grouped by lesion_id) or "image" (paper's leaky split).
        ratios: train, val, test shares (sum 1). The test share is ignored when the table
            carries an official test set, and when `folds` is given (test = one fold).
        folds: K >= 2 for K stratified group folds (lesion split only).
        seed: makes the split deterministic; the same table and seed give the same split
            regardless of row order.

    Returns:
        A copy of `table` with the new column(s), rows in the input order.

    Raises:
        SplitError: bad ratios, unknown split, folds with an image split, too few images.
    """
    values = _check_ratios(ratios)
    if split not in SPLIT_KINDS:
        raise SplitError(f"split must be one of {SPLIT_KINDS}, got {split!r}")
    if folds is not None and (int(folds) != folds or folds < 2):
        raise SplitError(f"folds must be an integer >= 2, got {folds!r}")
    if folds is not None and split == "image":
        raise SplitError("--folds needs --split lesion (folds are grouped by lesion)")
    # Sorted by image id so that the row order of the metadata does not change the split.
    ordered = table.sort_values("image_id", kind="stable")
    out = table.copy()
    if folds is not None:
        official = _official_test_mask(ordered)
        fold = np.full(len(ordered), -1, dtype=np.int64)
        pool = ordered[~official]
        if pool["lesion_id"].nunique() < folds:
            raise SplitError(f"{folds} folds need at least {folds} lesions, got {pool['lesion_id'].nunique()}")
        fold[~official] = _grouped(pool, [1.0 / folds] * folds, seed)
        out["fold"] = pd.Series(fold, index=ordered.index).reindex(out.index).to_numpy()
        out["split"] = split_for_fold(out, 0, ratios=values, seed=seed).to_numpy()
        return out
    official = _official_test_mask(ordered)
    result = np.empty(len(ordered), dtype=object)
    if official.any():
        result[official] = "test"
        result[~official] = _train_val(ordered[~official], values, split, seed)
    elif split == "image":
        is_test = _image_level(ordered, values[2], seed)
        result[is_test] = "test"
        result[~is_test] = _train_val(ordered[~is_test], values, split, seed)
    else:
        bins = _grouped(ordered, values, seed)
        result = np.asarray(SPLIT_NAMES, dtype=object)[bins]
    out["split"] = pd.Series(result, index=ordered.index).reindex(out.index).to_numpy()
    return out


def _official_test_mask(table: pd.DataFrame) -> np.ndarray:
    if OFFICIAL not in table.columns:
        return np.zeros(len(table), dtype=bool)
    return (table[OFFICIAL] == "test").to_numpy()


def split_for_fold(
    table: pd.DataFrame, fold: int, ratios: Sequence[float] = defaults.RATIOS,
    seed: int = defaults.SEED,
) -> pd.Series:
    """The train/val/test assignment for fold `fold` of a table with a `fold` column.

    Test = fold k (or the official test rows, where present, and then val = fold k);
    otherwise val is carved from the other folds' lesions, grouped and stratified, with share
    val / (train + val), seeded by (seed, k).

    Args:
        table: a table with `fold` (from `make_splits(..., folds=K)`).
        fold: 0..K-1.
        ratios: the train, val, test shares used for the val carve.
        seed: the split seed.

    Returns:
        A Series of "train"/"val"/"test" aligned with `table`.

    Raises:
        SplitError: no fold column or an unknown fold.
    """
    values = _check_ratios(ratios)
    if "fold" not in table.columns:
        raise SplitError("the table has no 'fold' column; make it with make_splits(folds=K)")
    known = sorted(set(table["fold"]) - {-1})
    if fold not in known:
        raise SplitError(f"fold {fold} not in the table's folds {known}")
    ordered = table.sort_values("image_id", kind="stable")
    official = _official_test_mask(ordered)
    in_fold = (ordered["fold"] == fold).to_numpy()
    result = np.empty(len(ordered), dtype=object)
    if official.any():
        result[official] = "test"
        result[in_fold] = "val"
        result[~official & ~in_fold] = "train"
    else:
        result[in_fold] = "test"
        rest = ordered[~in_fold]
        result[~in_fold] = _train_val(rest, values, "lesion", [seed, fold])
    return pd.Series(result, index=ordered.index, name="split").reindex(table.index)


# --------------------------------------------------------------------------- summaries


def split_counts(table: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Images per split x class (canonical class order, zeros included)."""
    counts = pd.crosstab(table["split"], table["dx"])
    return {
        s: {c: int(counts.at[s, c]) if s in counts.index and c in counts.columns else 0 for c in CLASSES}
        for s in SPLIT_NAMES
    }


def lesions_per_split(table: pd.DataFrame) -> dict[str, int]:
    """Distinct lesions per split."""
    per = table.groupby("split")["lesion_id"].nunique()
    return {s: int(per.get(s, 0)) for s in SPLIT_NAMES}


def max_share_deviation(table: pd.DataFrame) -> float:
    """The largest |class share in a split - class share overall|, over splits and classes."""
    overall = table["dx"].value_counts(normalize=True)
    worst = 0.0
    for _, part in table.groupby("split"):
        share = part["dx"].value_counts(normalize=True).reindex(overall.index, fill_value=0.0)
        worst = max(worst, float((share - overall).abs().max()))
    return worst


def leakage_report(table: pd.DataFrame) -> dict:
    """Lesions shared between splits, and for leaky splits the test images that share one.

    Returns:
        {"shared_lesions": {"train/val": n, "train/test": n, "val/test": n},
         "shared_lesions_total": n (lesions in more than one split), "ok": n == 0,
         "test_images_sharing_lesion_with_train": n, "..._share": fraction of test images,
         "..._per_class": {class: n}} (+ "fold_shared_lesions" with a fold column).
    """
    lesions = {s: set(table.loc[table["split"] == s, "lesion_id"]) for s in SPLIT_NAMES}
    pairs = {
        f"{a}/{b}": len(lesions[a] & lesions[b]) for a, b in itertools.combinations(SPLIT_NAMES, 2)
    }
    per_lesion = table.groupby("lesion_id")["split"].nunique()
    total = int((per_lesion > 1).sum())
    test = table[table["split"] == "test"]
    leaky = test[test["lesion_id"].isin(lesions["train"])]
    report = {
        "shared_lesions": pairs,
        "shared_lesions_total": total,
        "ok": total == 0,
        "test_images_sharing_lesion_with_train": int(len(leaky)),
        "test_images_sharing_lesion_with_train_share": (len(leaky) / len(test)) if len(test) else 0.0,
        "test_images_sharing_lesion_with_train_per_class": {
            c: int((leaky["dx"] == c).sum()) for c in CLASSES
        },
    }
    if "fold" in table.columns:
        folded = table[table["fold"] >= 0]
        report["fold_shared_lesions"] = int((folded.groupby("lesion_id")["fold"].nunique() > 1).sum())
    return report
