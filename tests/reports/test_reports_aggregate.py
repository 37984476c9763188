"""reports.aggregate on a hand-made job table: statistics, ranking and pairing by hand."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pytest

from reports.aggregate import (
    aggregate_jobs,
    better,
    complete_grid,
    entry_kinds,
    job_columns,
    job_rows,
    jobs_frame,
    ok_values,
    rank_aggregate,
    shared_jobs,
    summarise,
)
from reports.results import Entry

REPLICATES = [(0, 0), (0, 1), (1, 0), (1, 1)]
# entry -> balanced accuracy per replicate (None: no row; a string: that status, NaN metrics)
BA = {
    "inception_resnet_v2": [0.80, 0.70, 0.75, "failed"],
    "xception": [0.71, 0.73, 0.69, 0.60],
    "paper_cnn": [0.50, 0.42, 0.46, "nan"],
    "resnext101": [0.80, 0.70, 0.75, 0.70],   # equal to the reference on every shared job
    "soft_voting": [0.85, None, None, None],  # one job only
    "nasnet_large": ["failed"] * 4,
}
ACCURACY = {"inception_resnet_v2": [0.90, 0.85, 0.88], "xception": [0.86, 0.86, 0.86, 0.80]}
KINDS = {"paper_cnn": "baseline", "soft_voting": "ensemble"}


@pytest.fixture(scope="module")
def jobs():
    rows = []
    for entry, values in BA.items():
        for i, ((fold, seed), value) in enumerate(zip(REPLICATES, values, strict=True)):
            if value is None:
                continue
            status = value if isinstance(value, str) else "ok"
            ba = math.nan if isinstance(value, str) else value
            accuracy = ACCURACY.get(entry, [])
            row = {"entry": entry, "kind": KINDS.get(entry, "backbone"), "fold": fold,
                   "seed": seed, "split": "test", "status": status,
                   "error": "CUDA out of memory" if status == "failed" else "",
                   "balanced_accuracy": ba, "log_loss": 1 - ba,
                   "accuracy": accuracy[i] if i < len(accuracy) and status == "ok" else math.nan}
            rows.append(row)
            rows.append({**row, "split": "val"})
    return complete_grid(jobs_frame(rows), REPLICATES)


def test_job_table_columns_and_missing_rows(jobs):
    assert list(jobs.columns) == job_columns()
    assert len(jobs) == 6 * 4 * 2  # every entry x replicate x split, the missing ones added
    soft = jobs[(jobs.entry == "soft_voting") & (jobs.split == "test")]
    assert soft.status.tolist() == ["ok", "missing", "missing", "missing"]
    assert soft.replicate.tolist() == ["fold0-seed0", "fold0-seed1", "fold1-seed0", "fold1-seed1"]
    assert "no results in fold0-seed1" in soft.error.iloc[1]
    assert soft.kind.tolist() == ["ensemble"] * 4


def test_mean_sd_min_max_and_failed_counts(jobs):
    agg = aggregate_jobs(jobs, ["balanced_accuracy", "accuracy"]).set_index(["entry", "split"])
    irv2 = agg.loc[("inception_resnet_v2", "test")]
    assert (irv2.n_jobs, irv2.n_failed) == (3, 1)
    assert irv2.balanced_accuracy_mean == pytest.approx(0.75)
    assert irv2.balanced_accuracy_sd == pytest.approx(0.05)  # sqrt((.05^2 + .05^2 + 0) / 2)
    assert (irv2.balanced_accuracy_min, irv2.balanced_accuracy_max) == (0.70, 0.80)
    xcp = agg.loc[("xception", "test")]
    assert (xcp.n_jobs, xcp.n_failed) == (4, 0)
    assert xcp.balanced_accuracy_mean == pytest.approx(0.6825)
    assert xcp.balanced_accuracy_sd == pytest.approx(statistics.stdev([0.71, 0.73, 0.69, 0.60]))
    soft = agg.loc[("soft_voting", "test")]
    assert (soft.n_jobs, soft.n_failed, soft.balanced_accuracy_mean) == (1, 3, 0.85)
    assert math.isnan(soft.balanced_accuracy_sd)  # one job: no sample standard deviation
    nas = agg.loc[("nasnet_large", "val")]
    assert (nas.n_jobs, nas.n_failed) == (0, 4) and math.isnan(nas.balanced_accuracy_mean)
    assert agg.loc[("paper_cnn", "test")].n_failed == 1  # status "nan" counts as failed
    assert math.isnan(summarise([math.nan, "x"])["mean"])


@pytest.mark.parametrize("rank_by", ["balanced_accuracy", "log_loss"])
def test_ranking_by_mean_respects_direction(jobs, rank_by):
    # log_loss = 1 - balanced accuracy here: lower-is-better must give the same order
    ranked = rank_aggregate(aggregate_jobs(jobs, [rank_by]), rank_by)
    assert ranked.entry.tolist() == ["soft_voting", "inception_resnet_v2", "resnext101",
                                     "xception", "paper_cnn", "nasnet_large"]
    assert ranked["rank"].tolist()[:5] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert math.isnan(ranked["rank"].iloc[5])  # no finished job: not ranked, last


def test_shared_jobs_pair_only_jobs_both_finished(jobs):
    # the reference failed in fold1-seed1; xception has all four jobs
    assert shared_jobs(jobs, "xception", "balanced_accuracy") == [(0, 0), (0, 1), (1, 0)]
    assert shared_jobs(jobs, "soft_voting", "balanced_accuracy") == [(0, 0)]
    assert shared_jobs(jobs, "nasnet_large", "balanced_accuracy") == []
    # the reference has no accuracy in fold1-seed1 (it failed there): the same 3 pairs
    assert shared_jobs(jobs, "xception", "accuracy") == [(0, 0), (0, 1), (1, 0)]
    assert shared_jobs(jobs, "xception", "no_such_metric") == []
    assert ok_values(jobs, "paper_cnn", "balanced_accuracy", "test") == {
        (0, 0): 0.50, (0, 1): 0.42, (1, 0): 0.46}
    assert entry_kinds(jobs)["paper_cnn"] == "baseline"


@pytest.mark.parametrize(("difference", "metric", "expected"), [
    (0.04, "balanced_accuracy", 1), (-0.04, "balanced_accuracy", -1),
    (-0.04, "log_loss", 1), (0.04, "log_loss", -1), (1e-13, "accuracy", 0),
])
def test_better_respects_direction(difference, metric, expected):
    assert better(difference, metric) == expected


def test_job_rows_from_entries():
    metrics = {"balanced_accuracy": 0.6, "accuracy": 0.7, "n_images": 30.0}
    entries = [
        Entry("xception", Path("models/xception"),
              {"status": "ok", "kind": "backbone", "test": metrics}),
        Entry("nasnet_large", Path("models/nasnet_large"),
              {"status": "failed", "kind": "backbone", "error": "CUDA out of memory"}),
    ]
    rows = job_rows(1, 2, entries, extra_metrics=["recall_mel"])
    table = jobs_frame(rows).set_index(["entry", "split"])
    assert table.loc[("xception", "test"), "balanced_accuracy"] == 0.6
    assert table.loc[("xception", "test"), "replicate"] == "fold1-seed2"
    assert math.isnan(table.loc[("xception", "test"), "recall_mel"])
    assert table.loc[("xception", "val"), "status"] == "missing"
    assert "no val metrics" in table.loc[("xception", "val"), "error"]
    failed = table.loc[("nasnet_large", "test")]
    assert failed.status == "failed" and failed.error == "CUDA out of memory"
    assert math.isnan(failed.balanced_accuracy)
