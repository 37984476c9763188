"""reports.aggregate on a hand-made job table: statistics, ranking and paired tests by hand."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binomtest

from data_utils.classes import CLASSES
from data_utils.predictions import make_predictions
from reports.aggregate import (
    aggregate_jobs,
    complete_grid,
    job_columns,
    job_rows,
    jobs_frame,
    paired_tests,
    pooled_mcnemar,
    rank_aggregate,
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


def _t_p_df2(diffs: list[float]) -> tuple[float, float]:
    """Paired t statistic and two-sided p for 3 pairs (df = 2: P(|T| > t) = 1 - t/sqrt(2+t^2))."""
    assert len(diffs) == 3
    t = statistics.mean(diffs) / (statistics.stdev(diffs) / math.sqrt(3))
    return t, 1 - abs(t) / math.sqrt(2 + t * t)


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


def test_paired_tests_by_hand(jobs):
    tests = {t.other: t for t in paired_tests(jobs, "balanced_accuracy")}
    assert list(tests) == ["nasnet_large", "paper_cnn", "resnext101", "soft_voting", "xception"]

    xcp = tests["xception"]
    diffs = [0.80 - 0.71, 0.70 - 0.73, 0.75 - 0.69]  # the 4th job: the reference failed
    assert xcp.pairs == ((0, 0), (0, 1), (1, 0)) and xcp.n_pairs == 3
    assert xcp.mean_diff["balanced_accuracy"] == pytest.approx(0.04)
    assert xcp.mean_diff["accuracy"] == pytest.approx((0.04 - 0.01 + 0.02) / 3)
    assert (xcp.wins, xcp.ties, xcp.losses) == (2, 0, 1)
    t, p = _t_p_df2(diffs)
    assert xcp.t_statistic == pytest.approx(t) and xcp.t_p == pytest.approx(p)
    # Wilcoxon, exact, n = 3: |d| ranks 3, 1, 2; W- = 1; P(W- <= 1) = 2/8; two-sided 0.5
    assert xcp.wilcoxon_p == pytest.approx(0.5)
    assert xcp.note == ""

    cnn = tests["paper_cnn"]
    t_cnn, p_cnn = _t_p_df2([0.30, 0.28, 0.29])
    assert (cnn.wins, cnn.ties, cnn.losses) == (3, 0, 0)
    assert cnn.t_p == pytest.approx(p_cnn) and cnn.t_statistic == pytest.approx(t_cnn)
    assert cnn.wilcoxon_p == pytest.approx(0.25)  # every sign positive: 2 * 1/8

    # Holm over the two defined p-values (NaN ones do not count): 2 * smallest, then running max
    assert cnn.t_p_holm == pytest.approx(2 * p_cnn)
    assert xcp.t_p_holm == pytest.approx(max(2 * p_cnn, p))
    assert cnn.wilcoxon_p_holm == pytest.approx(0.5) and xcp.wilcoxon_p_holm == pytest.approx(0.5)

    same = tests["resnext101"]
    assert (same.n_pairs, same.wins, same.ties, same.losses) == (3, 0, 3, 0)
    assert math.isnan(same.t_p) and math.isnan(same.wilcoxon_p) and math.isnan(same.t_p_holm)
    assert same.note == "all paired differences are zero"
    one = tests["soft_voting"]
    assert one.n_pairs == 1 and math.isnan(one.t_p) and math.isnan(one.wilcoxon_p)
    assert one.note == "fewer than 2 paired jobs"
    assert tests["nasnet_large"].n_pairs == 0 and tests["nasnet_large"].kind == "backbone"


def test_paired_tests_lower_is_better_and_without_reference(jobs):
    tests = {t.other: t for t in paired_tests(jobs, "log_loss")}
    # log_loss = 1 - BA: the reference's lower loss is a win
    assert (tests["xception"].wins, tests["xception"].losses) == (2, 1)
    assert tests["xception"].mean_diff["log_loss"] == pytest.approx(-0.04)
    assert paired_tests(jobs[jobs.entry != "inception_resnet_v2"]) == []


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


def _preds(ids, labels, predicted):
    proba = np.full((len(ids), 7), 0.01)
    proba[np.arange(len(ids)), [CLASSES.index(p) for p in predicted]] = 0.94
    return make_predictions(ids, [f"L{i}" for i in ids], labels, proba)


def test_pooled_mcnemar_aligns_and_concatenates(jobs):
    labels = ["nv", "mel", "bcc", "nv"]
    ref1 = _preds(["a", "b", "c", "d"], labels, ["nv", "mel", "nv", "nv"])  # right, right, wrong, right
    # the other entry: other row order and one extra image, which is dropped
    oth1 = _preds(["d", "c", "b", "a", "e"], ["nv", "bcc", "mel", "nv", "df"],
                  ["mel", "nv", "mel", "mel", "df"])  # d wrong, c wrong, b right, a wrong
    ref2 = _preds(["x", "y"], ["df", "df"], ["nv", "df"])
    oth2 = _preds(["x", "y"], ["df", "df"], ["df", "df"])
    result = pooled_mcnemar([(ref1, oth1), (ref2, oth2)])
    assert (result.only_a, result.only_b) == (2, 1)  # a, d for the reference; x for the other
    assert result.p_value == pytest.approx(binomtest(2, 3, 0.5).pvalue)
    assert pooled_mcnemar([]) is None
    tests = {t.other: t for t in paired_tests(jobs, mcnemar={"xception": result})}
    assert tests["xception"].mcnemar == result
    assert tests["xception"].mcnemar_p_holm == pytest.approx(result.p_value)  # only one p-value
    assert tests["paper_cnn"].mcnemar is None and math.isnan(tests["paper_cnn"].mcnemar_p_holm)
