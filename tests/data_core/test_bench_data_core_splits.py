"""Speed of the lesion-grouped stratified split vs. sklearn's StratifiedGroupKFold.

Baseline, measured in the same run: carving the test split with
`StratifiedGroupKFold(n_splits=10, shuffle=True)` (one fold = 10%), then val from the rest with
`n_splits=9`, the textbook 80/10/10 grouped stratified split. Both run on the same ~1,500-image,
lesion-grouped subset of the full HAM10000 metadata (the baseline loops over groups x folds in
Python and takes ~5 s at the full 10,015 rows). The two benchmark tests record their best time;
`test_split_speedup` computes the ratio from those (timing them itself when run alone) and
asserts at least 10x, and that our split is at least as well stratified.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import StratifiedGroupKFold

from data_utils.splits import make_splits, max_share_deviation

pytestmark = pytest.mark.shared_data
TARGET = 10.0
GROUP = "lesion split (1.5k images)"
TIMINGS: dict[str, float] = {}
DEVIATIONS: dict[str, float] = {}


@pytest.fixture(scope="module")
def subset(full_metadata) -> pd.DataFrame:
    table = pd.read_csv(full_metadata)
    lesions = table["lesion_id"].drop_duplicates().sample(frac=0.15, random_state=0)
    return table[table["lesion_id"].isin(set(lesions))].reset_index(drop=True)


def sgkf_split(table: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Baseline: StratifiedGroupKFold carves test (1/10), then val (1/9 of the rest)."""
    split = np.full(len(table), "train", dtype=object)
    rest, test = next(StratifiedGroupKFold(10, shuffle=True, random_state=seed)
                      .split(table, table["dx"], table["lesion_id"]))
    split[test] = "test"
    pool = table.iloc[rest]
    _, val = next(StratifiedGroupKFold(9, shuffle=True, random_state=seed)
                  .split(pool, pool["dx"], pool["lesion_id"]))
    split[rest[val]] = "val"
    return table.assign(split=split)


def _timed(name, fn):
    def run(table):
        start = time.perf_counter()
        result = fn(table)
        elapsed = time.perf_counter() - start
        TIMINGS[name] = min(TIMINGS.get(name, elapsed), elapsed)
        DEVIATIONS[name] = max_share_deviation(result)
        return result
    return run


def test_bench_split_ours(benchmark, subset):
    benchmark.group = GROUP
    result = benchmark.pedantic(_timed("ours", make_splits), args=(subset,), rounds=3, iterations=1)
    assert max_share_deviation(result) < 0.02


def test_bench_split_sgkf_baseline(benchmark, subset):
    benchmark.group = GROUP
    result = benchmark.pedantic(_timed("sgkf", sgkf_split), args=(subset,), rounds=1, iterations=1)
    assert max_share_deviation(result) < 0.02


@pytest.mark.perf
def test_split_speedup(subset):
    if "ours" not in TIMINGS:
        _timed("ours", make_splits)(subset)
    if "sgkf" not in TIMINGS:
        _timed("sgkf", sgkf_split)(subset)
    ratio = TIMINGS["sgkf"] / TIMINGS["ours"]
    print(f"lesion split on {len(subset)} images: ours {TIMINGS['ours']:.3f} s, "
          f"StratifiedGroupKFold {TIMINGS['sgkf']:.3f} s, {ratio:.0f}x")
    assert ratio >= TARGET
    assert DEVIATIONS["ours"] <= DEVIATIONS["sgkf"] + 0.005
