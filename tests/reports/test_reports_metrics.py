"""Every metric of core.metrics against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import recall_score

from core.classes import CLASSES
from core.metrics import (
    PROBABILITY_METRICS,
    bootstrap_intervals,
    compute_metrics,
    expected_calibration_error,
    mel_val_operating_point,
    metric_names,
    sensitivity_at_specificity,
    val_threshold,
)
from core.predictions import make_predictions

# Eight images, classes akiec/bcc/mel/nv present, bkl/df/vasc absent.
#  row  true   predicted  probabilities (others 0)
#   1   nv     nv         nv .90  mel .10
#   2   nv     nv         nv .85  mel .15
#   3   nv     nv         nv .65  mel .35
#   4   nv     mel        mel .70 nv .30
#   5   mel    mel        mel .75 nv .25
#   6   mel    nv         nv .55  mel .45
#   7   bcc    bcc        bcc 1.0
#   8   akiec  bcc        bcc .50 akiec .40 nv .10
LABELS = ["nv", "nv", "nv", "nv", "mel", "mel", "bcc", "akiec"]
ROWS = [
    {"nv": 0.90, "mel": 0.10},
    {"nv": 0.85, "mel": 0.15},
    {"nv": 0.65, "mel": 0.35},
    {"mel": 0.70, "nv": 0.30},
    {"mel": 0.75, "nv": 0.25},
    {"nv": 0.55, "mel": 0.45},
    {"bcc": 1.0},
    {"bcc": 0.50, "akiec": 0.40, "nv": 0.10},
]
LESIONS = ["L1", "L1", "L2", "L3", "L4", "L5", "L6", "L7"]  # rows 1 and 2: one lesion


def _proba(rows):
    proba = np.zeros((len(rows), 7))
    for i, row in enumerate(rows):
        for name, p in row.items():
            proba[i, CLASSES.index(name)] = p
    return proba


@pytest.fixture(scope="module")
def example():
    preds = make_predictions([f"I{i}" for i in range(8)], LESIONS, LABELS, _proba(ROWS))
    return compute_metrics(preds)


def test_keys_are_the_documented_ones(example):
    assert list(example) == metric_names()
    for key in ("precision_mel", "recall_mel", "specificity_mel", "f1_mel", "support_mel",
                "auc_mel", "mel_sens_at_spec80", "mel_sens_at_spec90", "micro_auc"):
        assert key in example


def test_accuracy_and_balanced_accuracy(example):
    # correct: rows 1,2,3 (nv), 5 (mel), 7 (bcc) -> 5 / 8
    assert example["accuracy"] == pytest.approx(5 / 8)
    # recall akiec 0/1, bcc 1/1, mel 1/2, nv 3/4 -> (0 + 1 + .5 + .75) / 4 over present classes
    assert example["balanced_accuracy"] == pytest.approx(2.25 / 4)


def test_per_class_precision_recall_f1_support(example):
    # nv: TP 3, FP 1 (row 6), FN 1 (row 4) -> P 3/4, R 3/4, F1 3/4
    assert example["precision_nv"] == pytest.approx(0.75)
    assert example["recall_nv"] == pytest.approx(0.75)
    assert example["f1_nv"] == pytest.approx(0.75)
    # mel: TP 1 (row 5), FP 1 (row 4), FN 1 (row 6) -> 1/2, 1/2, 1/2
    assert example["precision_mel"] == pytest.approx(0.5)
    assert example["recall_mel"] == pytest.approx(0.5)
    assert example["f1_mel"] == pytest.approx(0.5)
    # bcc: TP 1, FP 1 (row 8) -> P 1/2, R 1, F1 = 2 * .5 * 1 / 1.5 = 2/3
    assert example["precision_bcc"] == pytest.approx(0.5)
    assert example["recall_bcc"] == pytest.approx(1.0)
    assert example["f1_bcc"] == pytest.approx(2 / 3)
    # akiec: never predicted -> precision 0 (not undefined), recall 0, F1 0
    assert example["precision_akiec"] == 0.0
    assert example["recall_akiec"] == 0.0
    assert example["f1_akiec"] == 0.0
    assert [example[f"support_{c}"] for c in CLASSES] == [1, 1, 0, 0, 2, 4, 0]


def test_specificity(example):
    # nv: 4 negatives, 1 FP -> 3/4; mel: 6 negatives, 1 FP -> 5/6; bcc: 7 negatives, 1 FP -> 6/7
    assert example["specificity_nv"] == pytest.approx(3 / 4)
    assert example["specificity_mel"] == pytest.approx(5 / 6)
    assert example["specificity_bcc"] == pytest.approx(6 / 7)
    # akiec and the absent classes are never predicted: TN = all negatives -> 1
    for name in ("akiec", "bkl", "df", "vasc"):
        assert example[f"specificity_{name}"] == 1.0


def test_absent_classes_are_undefined(example):
    for name in ("bkl", "df", "vasc"):
        for metric in ("precision", "recall", "f1", "auc"):
            assert math.isnan(example[f"{metric}_{name}"]), (metric, name)


def test_macro_and_weighted_averages(example):
    # over the 4 present classes akiec, bcc, mel, nv
    assert example["macro_precision"] == pytest.approx((0 + 0.5 + 0.5 + 0.75) / 4)
    assert example["macro_recall"] == pytest.approx((0 + 1 + 0.5 + 0.75) / 4)
    assert example["macro_f1"] == pytest.approx((0 + 2 / 3 + 0.5 + 0.75) / 4)
    # weights = supports 1, 1, 2, 4 of 8
    assert example["weighted_precision"] == pytest.approx((0 + 0.5 + 2 * 0.5 + 4 * 0.75) / 8)
    assert example["weighted_recall"] == pytest.approx((0 + 1 + 2 * 0.5 + 4 * 0.75) / 8)
    assert example["weighted_f1"] == pytest.approx((0 + 2 / 3 + 2 * 0.5 + 4 * 0.75) / 8)


def test_weighted_recall_equals_accuracy():
    # sum_k (n_k / n) * TP_k / n_k = sum_k TP_k / n = accuracy, on any single-label test set
    rng = np.random.default_rng(3)
    for _ in range(5):
        n = 97
        proba = rng.dirichlet(np.ones(7), size=n)
        labels = np.array(CLASSES)[rng.integers(0, 7, n)]
        metrics = compute_metrics(make_predictions(range(n), range(n), labels, proba))
        assert metrics["weighted_recall"] == pytest.approx(metrics["accuracy"], abs=1e-12)


def test_auc(example):
    # nv: positives .90 .85 .65 .30 vs negatives .25 .55 0 .10: 4+4+4+3 of 16 pairs won
    assert example["auc_nv"] == pytest.approx(15 / 16)
    # mel: positives .75 .45 vs negatives .10 .15 .35 .70 0 0: 6 + 5 of 12
    assert example["auc_mel"] == pytest.approx(11 / 12)
    assert example["auc_bcc"] == 1.0
    assert example["auc_akiec"] == 1.0
    assert example["macro_auc"] == pytest.approx((15 / 16 + 11 / 12 + 1 + 1) / 4)
    # micro: 8 positive (true-class) scores vs 48 negative entries (40 zeros and
    # .10 .15 .35 .70 .25 .55 .50 .10); negatives below each positive:
    # .90: 48, .85: 48, .65: 47, .30: 44, .75: 48, .45: 45, 1.0: 48, .40: 45 -> 373 of 384
    assert example["micro_auc"] == pytest.approx(373 / 384)


def test_log_loss_and_brier(example):
    # -mean log p(true class)
    expected = -(math.log(0.9) + math.log(0.85) + math.log(0.65) + math.log(0.3)
                 + math.log(0.75) + math.log(0.45) + math.log(1.0) + math.log(0.4)) / 8
    assert example["log_loss"] == pytest.approx(expected, abs=1e-9)
    # sum over classes of squared error, per row:
    # .1²+.1²=.02, .15²*2=.045, .35²*2=.245, .7²*2=.98, .25²*2=.125, .55²*2=.605, 0,
    # .6²+.5²+.1²=.62  -> 2.64 / 8
    assert example["brier"] == pytest.approx(2.64 / 8)


def test_ece(example):
    # confidences .90 .85 .65 .70 .75 .55 1.0 .50 fall in 8 different 1/15-wide bins, so
    # ECE = mean |correct - confidence| = (.1 + .15 + .35 + .7 + .25 + .55 + 0 + .5) / 8
    assert example["ece"] == pytest.approx(2.6 / 8)


def test_ece_groups_a_bin():
    # .90 right and .91 wrong share bin (13/15, 14/15]: |1/2 - .905| * 2/3; .30 right: .7 * 1/3
    y_true = np.array([0, 0, 1])
    y_pred = np.array([0, 1, 1])
    proba = np.zeros((3, 7))
    proba[0, 0], proba[0, 1] = 0.90, 0.10
    proba[1, 1], proba[1, 0] = 0.91, 0.09
    proba[2, 1], proba[2, 0], proba[2, 2], proba[2, 3] = 0.30, 0.25, 0.25, 0.20
    expected = abs(0.5 - 0.905) * 2 / 3 + abs(1 - 0.30) / 3
    assert expected_calibration_error(y_true, y_pred, proba) == pytest.approx(expected)


def test_melanoma_sensitivity_at_specificity(example):
    # mel scores: positives .75 .45; negatives .70 .35 .15 .10 0 0.
    # threshold .45: TP 2, FP 1 (.70) -> spec 5/6 >= .8 -> sensitivity 1
    assert example["mel_sens_at_spec80"] == 1.0
    # spec >= .9 needs FP 0: threshold .75 -> TP 1 -> sensitivity 1/2
    assert example["mel_sens_at_spec90"] == 0.5


def test_sensitivity_at_specificity_undefined_without_positives():
    assert math.isnan(sensitivity_at_specificity(np.zeros(4, bool), np.arange(4.0), 0.8))


def test_counts(example):
    assert example["n_images"] == 8
    assert example["n_lesions"] == 7


def test_prediction_column_drives_label_metrics():
    # argmax says nv for both; the prediction column (hard voting) says mel for the second
    proba = _proba([{"nv": 0.6, "mel": 0.4}, {"nv": 0.5, "mel": 0.5}])
    preds = make_predictions(["a", "b"], ["a", "b"], ["nv", "mel"], proba, ["nv", "mel"])
    metrics = compute_metrics(preds)
    assert metrics["accuracy"] == 1.0
    assert metrics["balanced_accuracy"] == 1.0


def test_absent_class_predicted_scores_precision_zero():
    proba = _proba([{"nv": 1.0}, {"vasc": 0.6, "nv": 0.4}])
    metrics = compute_metrics(make_predictions(["a", "b"], ["a", "b"], ["nv", "nv"], proba))
    assert metrics["precision_vasc"] == 0.0  # predicted once, never right
    assert math.isnan(metrics["recall_vasc"])
    assert math.isnan(metrics["precision_bkl"])  # neither present nor predicted
    # macro averages over the present class nv only: P 1/1, R 1/2
    assert metrics["macro_precision"] == 1.0
    assert metrics["macro_recall"] == 0.5
    assert metrics["balanced_accuracy"] == 0.5
    assert metrics["balanced_accuracy"] == pytest.approx(
        recall_score([5, 5], [5, 6], labels=[5], average="macro")
    )
    # nv is the only class: no negatives, AUC undefined everywhere -> macro AUC NaN
    assert math.isnan(metrics["macro_auc"])


def test_bootstrap_intervals_keys_and_order():
    rng = np.random.default_rng(0)
    n = 200
    labels = np.array(CLASSES)[rng.integers(0, 7, n)]
    proba = rng.dirichlet(np.ones(7), size=n)
    preds = make_predictions(range(n), np.arange(n) // 2, labels, proba)
    intervals = bootstrap_intervals(preds, n_resamples=200, seed=1)
    assert set(intervals) == {"accuracy_ci", "balanced_accuracy_ci", "macro_auc_ci"}
    metrics = compute_metrics(preds)
    for name, (low, high) in intervals.items():
        assert low <= metrics[name.removesuffix("_ci")] <= high


# ---------------------------------------------------------------------------------------------
# the melanoma operating point chosen on validation, entries without probabilities


def _mel_preds(mel_scores_pos, mel_scores_neg):
    """Melanomas with the given melanoma probabilities, then nevi (rest of the mass on nv)."""
    scores = list(mel_scores_pos) + list(mel_scores_neg)
    labels = ["mel"] * len(mel_scores_pos) + ["nv"] * len(mel_scores_neg)
    proba = _proba([{"mel": s, "nv": 1 - s} for s in scores])
    ids = [f"I{i}" for i in range(len(scores))]
    return make_predictions(ids, ids, labels, proba)


def test_melanoma_operating_point_chosen_on_validation():
    # validation: melanomas .9 .6 .3; ten others .8 .5 .45 .2 and six at .1.
    # 90 % specificity allows one false positive: threshold .8 -> TP 1 (sens 1/3), .6 -> TP 2
    # (sens 2/3, FP 1 = spec .9), .5 -> FP 2 (spec .8, too low). Threshold .6.
    val = _mel_preds([0.9, 0.6, 0.3], [0.8, 0.5, 0.45, 0.2] + [0.1] * 6)
    # test: melanomas .7 .6 .55 .2 -> called (>= .6): 2 of 4; others .65 .59 .3 .1 .1 -> one
    # false positive -> specificity 4/5
    test = _mel_preds([0.7, 0.6, 0.55, 0.2], [0.65, 0.59, 0.3, 0.1, 0.1])
    assert mel_val_operating_point(val, test) == pytest.approx((0.6, 0.5, 0.8))
    metrics = compute_metrics(test, val=val)
    assert metrics["mel_val_threshold_spec90"] == pytest.approx(0.6)
    assert metrics["mel_sens_at_val_threshold_spec90"] == pytest.approx(0.5)
    assert metrics["mel_spec_at_val_threshold_spec90"] == pytest.approx(0.8)
    # without validation predictions: NaN
    assert math.isnan(compute_metrics(test)["mel_val_threshold_spec90"])


def test_val_threshold_ties_and_nothing_allowed():
    # melanomas .9 .05, ten others .8 and nine at .1: thresholds .9 (sens 1/2, spec 1) and .8
    # (sens 1/2, spec .9) tie on sensitivity, and the higher specificity wins; .1 and .05 call
    # every other image melanoma
    positive = np.array([True, True] + [False] * 10)
    score = np.array([0.9, 0.05, 0.8] + [0.1] * 9)
    assert val_threshold(positive, score, 0.9) == 0.9
    # five negatives: any false positive gives specificity .8 < .9; the top score is a negative,
    # so only "above every score" qualifies (nothing called melanoma)
    positive = np.array([True, False, False, False, False, False])
    score = np.array([0.2, 0.9, 0.1, 0.1, 0.1, 0.1])
    threshold = val_threshold(positive, score, 0.9)
    assert threshold > 0.9 and threshold == np.nextafter(0.9, 1.0)
    assert math.isnan(val_threshold(np.zeros(4, bool), np.arange(4.0), 0.9))


def test_entry_without_probabilities_gets_nan_for_what_needs_them():
    preds = make_predictions([f"I{i}" for i in range(8)], LESIONS, LABELS, _proba(ROWS))
    metrics = compute_metrics(preds, probabilities=False, val=preds)
    for name in PROBABILITY_METRICS:
        assert math.isnan(metrics[name]), name
    for name in ("macro_auc", "micro_auc", "auc_mel", "log_loss", "brier", "ece",
                 "mel_sens_at_spec80", "mel_sens_at_spec90", "mel_val_threshold_spec90"):
        assert name in PROBABILITY_METRICS
    assert metrics["accuracy"] == pytest.approx(5 / 8)  # label metrics stay
    intervals = bootstrap_intervals(preds, n_resamples=20, probabilities=False)
    assert all(math.isnan(v) for v in intervals["macro_auc_ci"])
    assert not math.isnan(intervals["accuracy_ci"][0])


def test_new_metrics_come_after_the_per_class_block():
    names = metric_names()
    assert names[-3:] == ["mel_val_threshold_spec90", "mel_sens_at_val_threshold_spec90",
                          "mel_spec_at_val_threshold_spec90"]
    assert names.index("auc_vasc") == len(names) - 4


def test_calibration_metrics_use_the_prior_shifted_probabilities():
    from sklearn.metrics import log_loss

    from core.calibration import prior_shift

    preds = make_predictions([f"I{i}" for i in range(8)], LESIONS, LABELS,
                             _proba(ROWS) * 0.93 + 0.01)
    prior = np.array([0.05, 0.05, 0.1, 0.05, 0.1, 0.6, 0.05])
    shifted = prior_shift(preds.proba, prior)
    metrics = compute_metrics(preds, prior=prior)
    plain = compute_metrics(preds)
    assert metrics["log_loss"] == pytest.approx(log_loss(preds.y_true, shifted, labels=range(7)))
    assert metrics["log_loss"] != pytest.approx(plain["log_loss"])
    assert metrics["ece"] == pytest.approx(
        expected_calibration_error(preds.y_true, shifted.argmax(axis=1), shifted))
    # discrimination is untouched
    for name in ("accuracy", "balanced_accuracy", "macro_auc", "macro_f1", "mel_sens_at_spec90"):
        assert metrics[name] == plain[name]
