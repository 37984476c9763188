"""reports.grid_stats: the grid's tests by hand, their false-positive rates by simulation, and the
comparison rows built from a job table."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from core.bootstrap import LesionBootstrap
from core.classes import CLASSES
from core.metrics import compute_metrics
from core.predictions import Predictions, make_predictions
from core.rundir import RunDir
from reports.aggregate import complete_grid, jobs_frame
from reports.grid_stats import (
    COLUMNS,
    EXTRA_COLUMNS,
    GridDesign,
    SharedTestBootstrap,
    compared_metrics,
    corrected_t_test,
    grid_comparisons,
    metric_replicates,
    read_design,
    shared_test_t_test,
)

T2_975 = 0.95 * math.sqrt(2 / (1 - 0.95**2))  # t quantile, df 2: F(t) = 1/2 + t / (2 sqrt(2+t^2))


# ---------------------------------------------------------------------------------------------
# the two tests by hand


def test_corrected_t_test_by_hand():
    d = [0.09, -0.03, 0.06]  # mean 0.04, sample variance (0.05^2 + 0.07^2 + 0.02^2) / 2 = 0.0039
    result = corrected_t_test(d, test_train_ratio=0.25)
    se = math.sqrt((1 / 3 + 0.25) * 0.0039)
    t = 0.04 / se
    assert result.difference == pytest.approx(0.04)
    assert (result.se, result.statistic, result.df) == pytest.approx((se, t, 2.0))
    assert result.p_value == pytest.approx(1 - t / math.sqrt(2 + t * t))  # df 2, two-sided
    assert (result.ci_low, result.ci_high) == pytest.approx((0.04 - T2_975 * se,
                                                             0.04 + T2_975 * se))
    # the correction only ever widens the plain paired t-test's interval
    plain = stats.ttest_1samp(d, 0.0)
    assert result.p_value > plain.pvalue


@pytest.mark.parametrize(("differences", "ratio", "note", "p"), [
    ([0.1], 0.25, "fewer than 2 paired jobs", math.nan),
    ([], 0.25, "fewer than 2 paired jobs", math.nan),
    ([0.1, 0.2], math.nan, "n_test/n_train is unknown", math.nan),
    ([0.1, 0.2], 0.0, "n_test/n_train is unknown", math.nan),
    ([0.1, 0.1, 0.1], 0.25, "every paired difference is equal", math.nan),
    ([0.0, 0.0, 0.0], 0.25, "identical on every paired job", 1.0),
])
def test_corrected_t_test_degenerate_inputs(differences, ratio, note, p):
    result = corrected_t_test(differences, ratio)
    assert note in result.note
    assert result.p_value == p or (math.isnan(p) and math.isnan(result.p_value))


def test_shared_test_t_test_by_hand():
    d = np.array([0.1, 0.2, 0.3])
    shift = np.array([0.0, 0.1, -0.1, 0.0])  # every job moves with the shared test set
    boot = d[:, None] + shift[None, :]
    result = shared_test_t_test(d, boot)
    # Var*(D) = var(0.2 + shift) = 0.02 / 3; between = var(d) / 3 = 0.01 / 3; se^2 = 0.01
    # A = covariance of two jobs = 0.02 / 3, B = 0.01 / 3: df = (A + B)^2 / (B^2 / 2) = 18
    assert result.se == pytest.approx(0.1)
    assert result.statistic == pytest.approx(2.0)
    assert result.df == pytest.approx(18.0)
    assert result.p_value == pytest.approx(2 * stats.t.sf(2.0, 18))
    half = stats.t.ppf(0.975, 18) * 0.1
    assert (result.ci_low, result.ci_high) == pytest.approx((0.2 - half, 0.2 + half))


def test_shared_test_t_test_without_shared_part_has_the_seeds_df():
    d = np.array([0.1, 0.2, 0.3])
    boot = np.tile(d[:, None], (1, 5))  # no test-set noise at all
    result = shared_test_t_test(d, boot)
    assert result.df == pytest.approx(2.0)
    assert result.p_value == pytest.approx(stats.ttest_1samp(d, 0.0).pvalue)


@pytest.mark.parametrize(("d", "boot", "note"), [
    ([0.1], [[0.1, 0.2]], "fewer than 2 paired jobs"),
    ([0.1, 0.2], [[0.1, np.nan], [0.2, 0.3]], "fewer than 2 lesion resamples"),
    ([0.1, 0.1], [[0.1, 0.1], [0.1, 0.1]], "every paired difference is equal"),
])
def test_shared_test_t_test_degenerate_inputs(d, boot, note):
    result = shared_test_t_test(d, np.array(boot))
    assert note in result.note and math.isnan(result.p_value)


def test_interval_and_p_value_never_disagree():
    rng = np.random.default_rng(3)
    for _ in range(300):
        d = rng.normal(0.02, 0.03, size=15)
        corrected = corrected_t_test(d, 0.25)
        shared = shared_test_t_test(d[:3], d[:3, None] + rng.normal(0, 0.02, size=(1, 50)))
        for result in (corrected, shared):
            assert (result.p_value < 0.05) == (result.ci_low > 0 or result.ci_high < 0)


# ---------------------------------------------------------------------------------------------
# simulations: 5 folds x 3 seeds


def _fold_grid_rates(tau: float, delta: float, n_sims: int = 2000, seed: int = 0):
    """Rates of p < 0.05 (corrected, naive paired t-test) for d = delta + a_fold + e_job."""
    rng = np.random.default_rng(seed)
    folds = rng.normal(0.0, tau, size=(n_sims, 5, 1))
    noise = rng.normal(0.0, 1.0, size=(n_sims, 5, 3))
    d = (delta + folds + noise).reshape(n_sims, 15)
    corrected = np.array([corrected_t_test(row, 1 / 4).p_value for row in d])
    naive = stats.ttest_1samp(d, 0.0, axis=1).pvalue
    return float(np.mean(corrected < 0.05)), float(np.mean(naive < 0.05))


@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_corrected_test_false_positives_under_the_null(tau):
    # a per-fold effect equal to the seed noise, then twice it; no true difference
    corrected, naive = _fold_grid_rates(tau, 0.0)
    assert corrected <= 0.08
    assert naive >= 0.12  # the plain t-test over jobs: about 17 % and 26 %


def test_corrected_test_finds_a_true_difference():
    corrected, _ = _fold_grid_rates(tau=1.0, delta=3.0, n_sims=500)
    assert corrected >= 0.8


# ---------------------------------------------------------------------------------------------
# simulations: one test set, several seeds


def _seed_grid_rates(sd_lesion: float, sd_seed: float, delta: float = 0.0, n_sims: int = 500,
                     seeds: int = 3, n_lesions: int = 150, resamples: int = 200, seed: int = 0):
    """Rates of p < 0.05 for two models tested on one shared test set of lesions (2 images
    each), trained with `seeds` seeds: (ours, naive paired t over seeds, two-stage bootstrap).

    An image is right when difficulty (per lesion, shared by both models) + a model-specific
    per-lesion effect (sd_lesion, the same for every seed: what the shared test set fixes) + a
    per-seed shift of the model's skill (sd_seed) + per-seed image noise (0.5) + delta (model A
    only) is above zero.
    """
    rng = np.random.default_rng(seed)
    lesion = np.repeat(np.arange(n_lesions), 2)
    ours = naive = two_stage = 0
    for i in range(n_sims):
        difficulty = rng.normal(size=n_lesions)[lesion]
        persistent = rng.normal(0.0, sd_lesion, size=(2, n_lesions))[:, lesion]
        shift = rng.normal(0.0, sd_seed, size=(2, seeds, 1))
        noise = rng.normal(0.0, 0.5, size=(2, seeds, lesion.size))
        skill = np.array([0.5 + delta, 0.5])[:, None, None]
        right = skill + difficulty + persistent[:, None, :] + shift + noise > 0
        boot = LesionBootstrap(lesion, n_resamples=resamples, seed=i)
        truth = np.zeros(lesion.size, dtype=np.int64)
        acc = np.array([[boot.accuracy(truth, (~right[m, s]).astype(np.int64))
                         for s in range(seeds)] for m in range(2)])
        d = right[0].mean(axis=1) - right[1].mean(axis=1)
        boot_d = acc[0] - acc[1]
        ours += shared_test_t_test(d, boot_d).p_value < 0.05
        with warnings.catch_warnings():  # three nearly equal differences: precision warning
            warnings.simplefilter("ignore", RuntimeWarning)
            naive += stats.ttest_1samp(d, 0.0).pvalue < 0.05
        drawn = boot_d[rng.integers(0, seeds, size=(resamples, seeds)),
                       np.arange(resamples)[:, None]].mean(axis=1)
        two_stage += min(1.0, 2 * min(np.mean(drawn <= 0), np.mean(drawn >= 0))) < 0.05
    return ours / n_sims, naive / n_sims, two_stage / n_sims


def test_shared_test_false_positives_when_the_test_set_dominates():
    ours, naive, _ = _seed_grid_rates(sd_lesion=1.0, sd_seed=0.02)
    assert ours <= 0.08
    assert naive >= 0.15  # the seeds share their test images: the plain t-test ignores that


def test_shared_test_false_positives_when_seed_noise_dominates():
    ours, _, two_stage = _seed_grid_rates(sd_lesion=0.0, sd_seed=0.4)
    assert ours <= 0.08
    assert two_stage >= 0.12  # resampling 3 seeds cannot be calibrated: why it is not used


def test_shared_test_finds_a_true_difference():
    ours, _, _ = _seed_grid_rates(sd_lesion=0.5, sd_seed=0.05, delta=0.6, n_sims=150)
    assert ours >= 0.8


# ---------------------------------------------------------------------------------------------
# comparison rows from a job table


BA = {  # entry -> test balanced accuracy per (fold, seed); None: failed
    "inception_resnet_v2": {(0, 0): 0.80, (0, 1): 0.70, (1, 0): 0.75, (1, 1): None},
    "xception": {(0, 0): 0.71, (0, 1): 0.73, (1, 0): 0.69, (1, 1): 0.60},
    "paper_cnn": {(0, 0): 0.50, (0, 1): 0.42, (1, 0): 0.46, (1, 1): 0.40},
    "hard_voting": {(0, 0): 0.78, (0, 1): 0.72, (1, 0): 0.70, (1, 1): 0.71},
}


@pytest.fixture
def job_table():
    rows = []
    for entry, values in BA.items():
        for (fold, seed), value in values.items():
            ok = value is not None
            rows.append({"entry": entry, "kind": "backbone", "fold": fold, "seed": seed,
                         "split": "test", "status": "ok" if ok else "failed",
                         "balanced_accuracy": value if ok else math.nan,
                         "accuracy": (value + 0.1) if ok else math.nan,
                         "macro_auc": math.nan if entry == "hard_voting" or not ok else 0.9,
                         "n_images": 100.0 + fold, "n_lesions": 80.0})
    return complete_grid(jobs_frame(rows), list(BA["xception"]))


def test_comparisons_use_the_corrected_test_and_holm_per_metric(job_table):
    design = GridDesign(test_sets={0: "a", 1: "b"}, ratios={0: 0.2, 1: 0.3})
    rows = grid_comparisons(job_table, "inception_resnet_v2", compared_metrics("accuracy"),
                            design)
    assert list(rows.columns) == [*COLUMNS, *EXTRA_COLUMNS]
    assert list(dict.fromkeys(rows["metric"])) == ["accuracy", "balanced_accuracy", "macro_auc"]
    row = rows[(rows.other == "xception") & (rows.metric == "balanced_accuracy")].iloc[0]
    expected = corrected_t_test([0.09, -0.03, 0.06], 0.25)  # mean ratio of folds 0 and 1
    assert (row.n_jobs, row.n_folds, row.n_seeds) == (3, 2, 2)
    assert (row.wins, row.ties, row.losses) == (2, 0, 1)
    assert row.p_value == pytest.approx(expected.p_value)
    assert (row.ci_low, row.ci_high) == pytest.approx((expected.ci_low, expected.ci_high))
    assert row.value_reference == pytest.approx(0.75) and row.value_other == pytest.approx(0.71)
    assert (row.n_images, row.n_lesions) == (301, 240)  # totals over the 3 paired jobs
    assert row.test.startswith("corrected repeated k-fold t-test (Nadeau & Bengio 2003")
    assert "3 paired jobs over 2 folds and 2 seeds, n_test/n_train 0.25" in row.test
    assert row.test.endswith("Holm over 3 comparisons")
    family = rows[rows.metric == "balanced_accuracy"]
    from reports.stats import holm
    assert family.p_holm.tolist() == pytest.approx(holm(family.p_value.tolist()))
    assert (family.significant == (family.p_holm < 0.05)).all()
    # hard voting has no AUC: not tested, left out of the AUC family
    auc = rows[rows.metric == "macro_auc"].set_index("other")
    assert auc.loc["hard_voting", "n_jobs"] == 0 and math.isnan(auc.loc["hard_voting", "p_value"])
    assert "fewer than 2 paired jobs" in auc.loc["hard_voting", "note"]
    assert not auc.loc["hard_voting", "significant"]
    assert "Holm" not in auc.loc["hard_voting", "test"]


def test_comparisons_without_the_reference_are_empty(job_table):
    rows = grid_comparisons(job_table, "nasnet_large", ["balanced_accuracy"], GridDesign())
    assert rows.empty and list(rows.columns) == [*COLUMNS, *EXTRA_COLUMNS]


def test_jobs_of_one_fold_share_a_test_set_and_need_predictions(job_table):
    one_fold = job_table[job_table.fold == 0]
    rows = grid_comparisons(one_fold, "inception_resnet_v2", ["balanced_accuracy"],
                            GridDesign(test_sets={0: "a"}))
    assert rows.test.str.startswith("seed-and-lesion t-test").all()
    assert rows.note.str.contains("no test predictions to resample").all()
    # folds 0 and 1 with the same test images (an official test set): shared as well
    rows = grid_comparisons(job_table, "inception_resnet_v2", ["balanced_accuracy"],
                            GridDesign(test_sets={0: "a", 1: "a"}))
    assert rows.test.str.startswith("seed-and-lesion t-test").all()


# ---------------------------------------------------------------------------------------------
# reading the design and the shared test set's predictions


def _splits(run: RunDir, test: list[str], train: int, val: int) -> None:
    run.root.mkdir(parents=True, exist_ok=True)
    ids = test + [f"tr{i}" for i in range(train)] + [f"va{i}" for i in range(val)]
    split = ["test"] * len(test) + ["train"] * train + ["val"] * val
    pd.DataFrame({"image_id": ids, "lesion_id": ids, "dx": "nv", "split": split}).to_csv(
        run.splits_csv, index=False)


def test_read_design_from_each_folds_splits_csv(tmp_path):
    grid = RunDir(tmp_path / "grid")
    for fold, (test, rest) in enumerate(((["a", "b"], 8), (["c", "d", "e"], 7))):
        for seed in (0, 1):
            _splits(grid.replicate(fold, seed), test, rest - 1, 1)
    found = grid.replicates()
    design = read_design(found, 2)
    assert design.ratios == pytest.approx({0: 2 / 8, 1: 3 / 7})
    assert design.ratio([0, 1]) == pytest.approx((2 / 8 + 3 / 7) / 2)
    assert not design.shares_test_set([0, 1]) and design.shares_test_set([1])
    assert "splits.csv" in design.ratio_source
    # no splits.csv: the jobs' test images against dataset.json's total, else 1/(K-1)
    bare = RunDir(tmp_path / "bare")
    for fold in (0, 1):
        bare.replicate(fold, 0).root.mkdir(parents=True)
    jobs = pd.DataFrame({"fold": [0, 1], "split": ["test", "test"], "n_images": [20.0, 25.0]})
    design = read_design(bare.replicates(), 4, jobs, {"images": {"total": 100}})
    assert design.ratios == pytest.approx({0: 20 / 80, 1: 25 / 75})
    assert read_design(bare.replicates(), 4).ratios == pytest.approx({0: 1 / 3, 1: 1 / 3})


def _preds(ids, correct, seed):
    rng = np.random.default_rng(seed)
    labels = [CLASSES[i % 7] for i in range(len(ids))]
    proba = rng.dirichlet(np.ones(7), size=len(ids))
    for i, ok in enumerate(correct):
        k = CLASSES.index(labels[i]) if ok else (CLASSES.index(labels[i]) + 1) % 7
        proba[i, k] += 2.0
    proba /= proba.sum(axis=1, keepdims=True)
    return make_predictions(ids, [f"L{int(i[1:]) // 2}" for i in ids], labels, proba)


def test_shared_test_bootstrap_aligns_images_and_reuses_draws():
    ids = [f"i{k:02d}" for k in range(40)]
    rng = np.random.default_rng(0)
    files = {}
    for seed in (0, 1, 2):
        files[("ref", 0, seed)] = _preds(ids, rng.random(40) < 0.8, seed)
        # the other entry: rows reversed and one extra image, which is left out
        other = _preds(ids[::-1] + ["i99"], rng.random(41) < 0.6, 10 + seed)
        files[("oth", 0, seed)] = other
    calls = []

    def load(entry, fold, seed):
        calls.append((entry, fold, seed))
        return files.get((entry, fold, seed))

    boot = SharedTestBootstrap(load, n_resamples=50, seed=1)
    pairs = [(0, 0), (0, 1), (0, 2)]
    diffs = boot.differences("ref", "oth", pairs, "accuracy")
    assert diffs.shape == (3, 50)
    lesions = [f"L{int(i[1:]) // 2}" for i in ids]
    draws = LesionBootstrap(lesions, n_resamples=50, seed=1)
    ref = files[("ref", 0, 1)]
    oth = files[("oth", 0, 1)].sorted_by_image()
    keep = np.isin(oth.image_id, ids)
    expected = (draws.accuracy(ref.y_true, ref.y_pred)
                - draws.accuracy(oth.y_true[keep], oth.y_pred[keep]))
    np.testing.assert_allclose(diffs[1], expected)
    again = boot.differences("ref", "oth", pairs, "accuracy")
    np.testing.assert_array_equal(again, diffs)  # cached replicates, same draws
    f1 = boot.differences("ref", "oth", pairs[:2], "macro_f1")
    assert f1.shape == (2, 50) and np.isfinite(f1).all()
    assert boot.differences("ref", "missing", pairs, "accuracy") is None  # no prediction file


@pytest.mark.parametrize("metric", [
    "accuracy", "balanced_accuracy", "macro_precision", "macro_f1", "weighted_precision",
    "weighted_recall", "weighted_f1", "precision_df", "recall_mel", "f1_nv", "specificity_vasc",
    "precision_vasc", "macro_auc", "auc_mel", "ece",
])
def test_metric_replicates_equal_compute_metrics_on_each_resample(metric):
    ids = [f"i{k:02d}" for k in range(30)]
    rng = np.random.default_rng(5)
    preds = _preds(ids, rng.random(30) < 0.7, 0)
    preds.label[:3] = "vasc"  # vasc is absent from some resamples
    boot = LesionBootstrap(preds.lesion_id, n_resamples=6, seed=2)
    values = metric_replicates(boot, preds, metric)
    rows = np.arange(len(preds))
    for value, weight in zip(values, boot.image_weights().astype(int), strict=True):
        index = np.repeat(rows, weight)
        resample = Predictions(preds.image_id[index], preds.lesion_id[index],
                               preds.label[index], preds.proba[index])
        expected = compute_metrics(resample)[metric]
        assert value == pytest.approx(expected, nan_ok=True), metric
