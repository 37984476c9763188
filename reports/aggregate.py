"""A grid run's numbers over jobs: the per-job table, per-entry statistics, ranking, pairing.

A grid run (`--seeds 0,1,2` and/or `--folds K`) trains every entry once per replicate (fold,
seed); one entry in one replicate is a *job*. This module is pure (DataFrames and Predictions in,
DataFrames and dataclasses out); reports.grid reads the replicates and writes the files.

- The job table has one row per job and split: entry, kind, fold, seed, replicate, split, status,
  error and every summary metric of core.metrics (`SUMMARY_METRICS`). A job that failed, went
  NaN or is missing keeps its row with that status and NaN metrics.
- Per entry and split: n_jobs (status "ok"), n_failed (every other status), and the mean, the
  sample standard deviation (ddof=1; NaN for one value), min and max of each metric over the
  finite values of the ok jobs.
- Ranking: by the mean of the ranking metric on test, best first (lowest first for the
  lower-is-better metrics of core.metrics.LOWER_IS_BETTER); entries without an ok job last.
- Pairing: `shared_jobs` gives the jobs two entries both finished (same fold and seed, both ok);
  the tests over those pairs live in reports.grid_stats (valid for repeated K-fold).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from core.defaults import REFERENCE
from core.metrics import LOWER_IS_BETTER, SUMMARY_METRICS
from core.numbers import as_float
from core.rundir import SPLITS, replicate_name
from reports.results import Entry

OK = "ok"
MISSING = "missing"
JOB_ID_COLUMNS = ("entry", "kind", "fold", "seed", "replicate", "split", "status", "error")
# Counts are kept per job but not averaged.
COUNT_METRICS = ("n_images", "n_lesions")
AGGREGATE_METRICS = tuple(m for m in SUMMARY_METRICS if m not in COUNT_METRICS)
STATISTICS = ("mean", "sd", "min", "max")
TIE_TOLERANCE = 1e-12


def job_columns() -> list[str]:
    """The header of the job table (jobs.csv): identity columns, then the summary metrics."""
    return [*JOB_ID_COLUMNS, *SUMMARY_METRICS]


def job_rows(
    fold: int, seed: int, entries: Sequence[Entry], extra_metrics: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """The job-table rows of one replicate: one per entry and split (val, test).

    Args:
        fold: the replicate's fold.
        seed: the replicate's seed.
        entries: the replicate's entries, with their metrics.json loaded.
        extra_metrics: metric columns beyond the summary metrics (e.g. a per-class ranking
            metric such as "recall_mel").

    Returns:
        Row dicts. The status is the entry's ("ok", "failed", "nan", ...); an ok entry without
        metrics for a split gets status "missing" on that split's row. Metrics are NaN unless the
        row's status is "ok"; "error" is metrics.json's error text ("" when none).
    """
    metric_names = list(dict.fromkeys([*SUMMARY_METRICS, *extra_metrics]))
    rows = []
    for entry in entries:
        error = str(entry.metrics.get("error") or "")
        for split in SPLITS:
            values = entry.split_metrics(split)
            status = entry.status
            row_error = error
            if status == OK and not values:
                status = MISSING
                row_error = error or f"no {split} metrics (no predictions_{split}.csv)"
            row: dict[str, Any] = {
                "entry": entry.name, "kind": entry.kind, "fold": int(fold), "seed": int(seed),
                "replicate": replicate_name(fold, seed), "split": split, "status": status,
                "error": row_error,
            }
            for name in metric_names:
                row[name] = as_float(values.get(name)) if status == OK else math.nan
            rows.append(row)
    return rows


def jobs_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """The job table from row dicts: every column of `job_columns()`, rows in a stable order.

    Args:
        rows: job rows (see `job_rows`); absent metric columns become NaN, an absent "replicate"
            is derived from fold and seed, an absent "error" is "".

    Returns:
        The table sorted by entry, fold, seed and split (val before test).
    """
    frame = pd.DataFrame(list(rows))
    for column in job_columns():
        if column not in frame.columns:
            frame[column] = "" if column in ("error", "kind") else math.nan
    if len(frame):
        frame["fold"] = frame["fold"].astype(int)
        frame["seed"] = frame["seed"].astype(int)
        frame["replicate"] = [replicate_name(f, s) for f, s in zip(frame["fold"], frame["seed"],
                                                                    strict=True)]
        frame["error"] = frame["error"].fillna("").astype(str)
        frame["kind"] = frame["kind"].fillna("").astype(str)
    extra = [c for c in frame.columns if c not in job_columns()]
    frame = frame[job_columns() + extra]
    order = frame["split"].map({s: i for i, s in enumerate(SPLITS)}).fillna(len(SPLITS))
    frame = frame.assign(_order=order).sort_values(["entry", "fold", "seed", "_order"],
                                                   kind="stable")
    return frame.drop(columns="_order").reset_index(drop=True)


def complete_grid(jobs: pd.DataFrame, replicates: Sequence[tuple[int, int]]) -> pd.DataFrame:
    """Add a "missing" row for every (entry, replicate, split) of the grid the table lacks.

    An entry that some replicate has but another does not (no folder, or a folder without
    predictions and metrics.json), or a replicate of the grid whose folder is absent, is a job
    that produced nothing; it counts as failed.

    Args:
        jobs: the job table.
        replicates: every (fold, seed) of the grid (the ones found and the ones expected).

    Returns:
        The completed job table (same columns, stable order).
    """
    if not len(jobs):
        return jobs
    present = set(zip(jobs["entry"], jobs["fold"], jobs["seed"], jobs["split"], strict=True))
    kinds = entry_kinds(jobs)
    added = []
    for entry in dict.fromkeys(jobs["entry"]):
        for fold, seed in replicates:
            for split in SPLITS:
                if (entry, fold, seed, split) in present:
                    continue
                added.append({"entry": entry, "kind": kinds[entry], "fold": fold, "seed": seed,
                              "split": split, "status": MISSING,
                              "error": f"no results in {replicate_name(fold, seed)}"})
    if not added:
        return jobs
    return jobs_frame([*jobs.to_dict("records"), *added])


def aggregate_jobs(jobs: pd.DataFrame, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Statistics over jobs, one row per entry and split.

    Args:
        jobs: the job table.
        metrics: the metrics to aggregate (default: `AGGREGATE_METRICS` present in `jobs`).

    Returns:
        Columns entry, kind, split, n_jobs (ok jobs), n_failed (all other jobs), then per metric
        <metric>_mean, <metric>_sd (ddof=1, NaN for fewer than two values), <metric>_min,
        <metric>_max, over the finite values of the ok jobs (NaN without any). Rows in the order
        of first appearance of each entry, val before test.
    """
    metrics = [m for m in (AGGREGATE_METRICS if metrics is None else metrics) if m in jobs.columns]
    columns = ["entry", "kind", "split", "n_jobs", "n_failed",
               *(f"{m}_{s}" for m in metrics for s in STATISTICS)]
    kinds = entry_kinds(jobs)
    rows = []
    for entry in dict.fromkeys(jobs["entry"]):
        for split in SPLITS:
            group = jobs[(jobs["entry"] == entry) & (jobs["split"] == split)]
            if not len(group):
                continue
            ok = group[group["status"] == OK]
            row: dict[str, Any] = {"entry": entry, "kind": kinds[entry], "split": split,
                                   "n_jobs": len(ok), "n_failed": len(group) - len(ok)}
            for name in metrics:
                row.update(summarise(ok[name], prefix=f"{name}_"))
            rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def summarise(values: Iterable[Any], prefix: str = "") -> dict[str, float]:
    """Mean, sample standard deviation (ddof=1), min and max of the finite values.

    Args:
        values: numbers (NaN and non-numbers are left out).
        prefix: prepended to the keys.

    Returns:
        {prefix+"mean", prefix+"sd", prefix+"min", prefix+"max"}; NaN without values, sd NaN with
        one value.
    """
    array = np.array([as_float(v) for v in values], dtype=np.float64)
    array = array[np.isfinite(array)]
    if not array.size:
        return {f"{prefix}{s}": math.nan for s in STATISTICS}
    return {
        f"{prefix}mean": float(array.mean()),
        f"{prefix}sd": float(array.std(ddof=1)) if array.size >= 2 else math.nan,
        f"{prefix}min": float(array.min()),
        f"{prefix}max": float(array.max()),
    }


def rank_aggregate(aggregated: pd.DataFrame, rank_by: str, split: str = "test") -> pd.DataFrame:
    """The rows of `split`, best first by the mean of `rank_by`, with a "rank" column.

    Args:
        aggregated: `aggregate_jobs` output holding <rank_by>_mean.
        rank_by: the ranking metric (lower first when it is in LOWER_IS_BETTER).
        split: the split ranked.

    Returns:
        The split's rows sorted best first (ties by entry name); "rank" is 1..n for entries with a
        finite mean and NaN for the others, which come last.

    Raises:
        KeyError: `aggregated` has no <rank_by>_mean column.
    """
    column = f"{rank_by}_mean"
    if column not in aggregated.columns:
        raise KeyError(f"no {column} column to rank by; aggregate {rank_by!r} first")
    rows = aggregated[aggregated["split"] == split].copy()
    values = rows[column].astype(float)
    sign = 1.0 if rank_by in LOWER_IS_BETTER else -1.0
    rows["_missing"] = ~np.isfinite(values)
    rows["_key"] = (sign * values).fillna(0.0)
    rows = rows.sort_values(["_missing", "_key", "entry"], kind="stable")
    ranked = (~rows["_missing"]).cumsum().astype(float)
    rows["rank"] = ranked.where(~rows["_missing"], math.nan)
    return rows.drop(columns=["_missing", "_key"]).reset_index(drop=True)


def better(difference: float, metric: str) -> int:
    """+1 when a difference (reference - other) of `metric` favours the reference, -1 when it
    favours the other entry, 0 for a tie (|difference| <= 1e-12)."""
    if abs(difference) <= TIE_TOLERANCE:
        return 0
    favours_reference = difference < 0 if metric in LOWER_IS_BETTER else difference > 0
    return 1 if favours_reference else -1


def shared_jobs(
    jobs: pd.DataFrame, other: str, metric: str, reference: str = REFERENCE,
    split: str = "test",
) -> list[tuple[int, int]]:
    """(fold, seed) of the jobs where both entries are ok with a finite `metric` on `split`.

    Args:
        jobs: the job table.
        other: the other entry.
        metric: the compared metric.
        reference: the reference entry.
        split: the split compared.

    Returns:
        The shared (fold, seed) pairs, sorted.
    """
    ref = ok_values(jobs, reference, metric, split)
    oth = ok_values(jobs, other, metric, split)
    return sorted(set(ref) & set(oth))


def ok_values(
    jobs: pd.DataFrame, entry: str, metric: str, split: str
) -> dict[tuple[int, int], float]:
    """(fold, seed) -> finite `metric` of the entry's ok jobs on `split`.

    Args:
        jobs: the job table.
        entry: the entry.
        metric: the metric column ({} when the table has none).
        split: the split.

    Returns:
        The finite values of the entry's ok rows, keyed by (fold, seed).
    """
    if metric not in jobs.columns:
        return {}
    rows = jobs[(jobs["entry"] == entry) & (jobs["split"] == split) & (jobs["status"] == OK)]
    values = {}
    for fold, seed, value in zip(rows["fold"], rows["seed"], rows[metric], strict=True):
        number = as_float(value)
        if math.isfinite(number):
            values[(int(fold), int(seed))] = number
    return values


def entry_kinds(jobs: pd.DataFrame) -> dict[str, str]:
    """entry -> its kind: the first non-empty kind of its ok rows, else of any row."""
    kinds: dict[str, str] = {}
    for only_ok in (True, False):
        rows = jobs[jobs["status"] == OK] if only_ok else jobs
        for entry, kind in zip(rows["entry"], rows["kind"], strict=True):
            if entry not in kinds and isinstance(kind, str) and kind:
                kinds[entry] = kind
    return {entry: kinds.get(entry, "") for entry in dict.fromkeys(jobs["entry"])}

