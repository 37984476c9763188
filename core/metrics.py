"""Classification metrics for one entry on one split, on scikit-learn where it has them.

Conventions (they matter when a class is absent from a split):

- Label metrics use the predicted class of `Predictions.y_pred` (the `prediction` column where the
  file has one, e.g. hard voting; else the argmax of the probabilities).
- Averages ("macro", "weighted", balanced accuracy, macro AUC) run over the classes *present in
  the true labels* of the split. A present class that is never predicted scores precision 0 (not
  undefined); a class absent from the split contributes nothing to the averages.
- Per-class metrics of a class absent from the split: support 0, recall/F1/AUC NaN (undefined),
  precision 0 if the model predicted that class anyway (every such prediction is wrong) else NaN;
  specificity stays defined.
- One-vs-rest ROC AUC per class; `macro_auc` is their mean over present classes, `micro_auc` the
  AUC of all (image, class) pairs pooled.
- Calibration metrics (`log_loss`, `brier`, `ece`) are computed on the probabilities after the
  prior-shift correction to the training class frequencies when a `prior` is given
  (core.calibration); every other metric uses the probabilities as they are.
- `log_loss` uses all seven labels; `brier` is the multiclass Brier score: the mean over images of
  the sum over the seven classes of (p_ik - y_ik)^2, so it lies in [0, 2] (0 is perfect).
- `ece`: expected calibration error with 15 equal-width confidence bins (lower edge exclusive,
  upper inclusive; a confidence of 0 falls in the first bin); confidence is the largest
  probability of the (prior-shifted) row, correctness that of its argmax, and
  ECE = sum over bins of (n_bin / n) * |accuracy_bin - confidence_bin|.
- `mel_sens_at_spec80/90`: from the test ROC curve of melanoma vs rest, the highest sensitivity
  among thresholds whose specificity is at least 80 % / 90 % (an optimistic reading: the
  threshold is chosen on the test split itself).
- `mel_val_threshold_spec90`, `mel_sens_at_val_threshold_spec90`,
  `mel_spec_at_val_threshold_spec90`: an operating point chosen on validation. The threshold on
  the melanoma probability is the one with the highest validation sensitivity among those with
  validation specificity >= 90 % (ties: the higher specificity); an image is called melanoma when
  its probability is >= the threshold. Its test sensitivity and specificity are reported. NaN
  without validation predictions (and always on the validation split itself).
- An entry without probabilities (hard voting: vote shares are not probabilities) gets NaN for
  every metric in `PROBABILITY_METRICS`.

Everything returned is a plain float (NaN where undefined).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    brier_score_loss,
    log_loss,
    multilabel_confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

from core.classes import CLASS_INDEX, CLASSES, NUM_CLASSES
from core.predictions import Predictions

ECE_BINS = 15
MEL_SPECIFICITIES = (0.80, 0.90)
MEL_VAL_SPECIFICITY = 0.90
ALL_LABELS = list(range(NUM_CLASSES))

# Metrics where a lower value is better (the regression gate compares these the other way).
LOWER_IS_BETTER = frozenset({"log_loss", "brier", "ece"})

# Headline metrics with bootstrap intervals ("<metric>_ci": [low, high]).
CI_METRICS = ("accuracy", "balanced_accuracy", "macro_auc")

PER_CLASS_METRICS = ("precision", "recall", "specificity", "f1", "support", "auc")

SUMMARY_METRICS = (
    "accuracy",
    "balanced_accuracy",
    "macro_precision",
    "macro_recall",
    "macro_f1",
    "weighted_precision",
    "weighted_recall",
    "weighted_f1",
    "macro_auc",
    "micro_auc",
    "log_loss",
    "brier",
    "ece",
    "mel_sens_at_spec80",
    "mel_sens_at_spec90",
    "n_images",
    "n_lesions",
)


# The melanoma operating point chosen on validation, read on test (after the per-class block).
VAL_OPERATING_POINT_METRICS = (
    "mel_val_threshold_spec90",
    "mel_sens_at_val_threshold_spec90",
    "mel_spec_at_val_threshold_spec90",
)

CALIBRATION_METRICS = ("log_loss", "brier", "ece")

# Metrics that need probabilities: NaN for an entry that has none (hard voting).
PROBABILITY_METRICS = frozenset(
    {"macro_auc", "micro_auc", *CALIBRATION_METRICS, "mel_sens_at_spec80", "mel_sens_at_spec90",
     *VAL_OPERATING_POINT_METRICS, *(f"auc_{c}" for c in CLASSES)}
)


def metric_names() -> list[str]:
    """Every key `compute_metrics` returns, in a stable order: summary, per class, operating point."""
    names = list(SUMMARY_METRICS)
    for metric in PER_CLASS_METRICS:
        names.extend(f"{metric}_{c}" for c in CLASSES)
    return names + list(VAL_OPERATING_POINT_METRICS)


def compute_metrics(
    preds: Predictions,
    prior: np.ndarray | None = None,
    probabilities: bool = True,
    val: Predictions | None = None,
) -> dict[str, float]:
    """All metrics of one entry on one split (see the module docstring for the conventions).

    Args:
        preds: validated predictions of one split.
        prior: (7,) training class frequencies for the calibration metrics (None: the
            probabilities are scored as they are).
        probabilities: False for an entry whose probability columns are not probabilities
            (hard voting's vote shares): `PROBABILITY_METRICS` are then NaN.
        val: the entry's validation predictions, to choose the melanoma operating point (pass
            them for the test split; None gives NaN for `VAL_OPERATING_POINT_METRICS`).

    Returns:
        A flat map metric name -> float, with the keys of `metric_names()`.
    """
    out = _label_and_probability_metrics(preds, prior)
    point = mel_val_operating_point(val, preds) if val is not None else (math.nan,) * 3
    out.update(zip(VAL_OPERATING_POINT_METRICS, point, strict=True))
    if not probabilities:
        out.update({name: math.nan for name in PROBABILITY_METRICS})
    return {name: out[name] for name in metric_names()}


def _label_and_probability_metrics(
    preds: Predictions, prior: np.ndarray | None
) -> dict[str, float]:
    y_true = preds.y_true
    y_pred = preds.y_pred
    proba = preds.proba
    present = sorted(set(y_true.tolist()))

    out: dict[str, float] = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": balanced_accuracy(y_true, y_pred),
    }
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(
            y_true, y_pred, labels=present, average=average, zero_division=0
        )
        out[f"{average}_precision"] = float(p)
        out[f"{average}_recall"] = float(r)
        out[f"{average}_f1"] = float(f)

    per_class_auc = one_vs_rest_auc(y_true, proba)
    defined = per_class_auc[~np.isnan(per_class_auc)]
    out["macro_auc"] = float(defined.mean()) if defined.size else math.nan
    out["micro_auc"] = _micro_auc(y_true, proba)
    shifted = calibration_probabilities(proba, prior)
    out["log_loss"] = float(log_loss(y_true, shifted, labels=ALL_LABELS))
    out["brier"] = float(
        brier_score_loss(y_true, shifted, labels=ALL_LABELS, scale_by_half=False)
    )
    out["ece"] = expected_calibration_error(y_true, shifted.argmax(axis=1), shifted)
    mel = CLASS_INDEX["mel"]
    for spec in MEL_SPECIFICITIES:
        out[f"mel_sens_at_spec{round(spec * 100)}"] = sensitivity_at_specificity(
            y_true == mel, proba[:, mel], spec
        )
    out["n_images"] = float(len(y_true))
    out["n_lesions"] = float(len(set(preds.lesion_id.tolist())))
    out.update(_per_class(y_true, y_pred, per_class_auc))
    return out


def calibration_probabilities(proba: np.ndarray, prior: np.ndarray | None) -> np.ndarray:
    """The probabilities calibration is measured on: prior-shifted to `prior`, or as they are."""
    if prior is None:
        return proba
    from core.calibration import prior_shift

    return prior_shift(proba, prior)


def per_image_log_loss(y_true: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """(n,) -log p(true class), clipped as scikit-learn's log_loss does (mean = log_loss)."""
    eps = np.finfo(np.float64).eps
    return -np.log(np.clip(proba[np.arange(len(y_true)), y_true], eps, 1 - eps))


def per_image_brier(y_true: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """(n,) sum over the seven classes of (p_ik - y_ik)^2 (mean = the multiclass Brier score)."""
    return ((proba - np.eye(NUM_CLASSES)[y_true]) ** 2).sum(axis=1)


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean recall over the classes present in `y_true` (scikit-learn's balanced accuracy).

    Args:
        y_true: (n,) true class indices.
        y_pred: (n,) predicted class indices.

    Returns:
        The balanced accuracy.
    """
    # sklearn warns when y_pred holds classes absent from y_true; they are excluded by design.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return float(balanced_accuracy_score(y_true, y_pred))


def _per_class(
    y_true: np.ndarray, y_pred: np.ndarray, per_class_auc: np.ndarray
) -> dict[str, float]:
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=ALL_LABELS, average=None, zero_division=0
    )
    confusion = multilabel_confusion_matrix(y_true, y_pred, labels=ALL_LABELS)
    out: dict[str, float] = {}
    for k, name in enumerate(CLASSES):
        tn, fp = confusion[k, 0, 0], confusion[k, 0, 1]
        predicted = confusion[k, 1, 1] + fp
        absent = support[k] == 0
        out[f"precision_{name}"] = math.nan if absent and predicted == 0 else float(precision[k])
        out[f"recall_{name}"] = math.nan if absent else float(recall[k])
        out[f"specificity_{name}"] = float(tn / (tn + fp)) if tn + fp else math.nan
        out[f"f1_{name}"] = math.nan if absent else float(f1[k])
        out[f"support_{name}"] = float(support[k])
        out[f"auc_{name}"] = float(per_class_auc[k])
    return out


def one_vs_rest_auc(y_true: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """ROC AUC of each class against the rest; NaN for a class without positives or negatives.

    Args:
        y_true: (n,) class indices.
        proba: (n, 7) probabilities.

    Returns:
        (7,) float array.
    """
    aucs = np.full(NUM_CLASSES, math.nan)
    for k in range(NUM_CLASSES):
        positive = y_true == k
        if positive.any() and not positive.all():
            aucs[k] = roc_auc_score(positive, proba[:, k])
    return aucs


def _micro_auc(y_true: np.ndarray, proba: np.ndarray) -> float:
    onehot = np.eye(NUM_CLASSES)[y_true]
    if onehot.all() or not onehot.any():
        return math.nan
    return float(roc_auc_score(onehot.ravel(), proba.ravel()))


def expected_calibration_error(
    y_true: np.ndarray, y_pred: np.ndarray, proba: np.ndarray, n_bins: int = ECE_BINS
) -> float:
    """Expected calibration error with `n_bins` equal-width confidence bins.

    Args:
        y_true: (n,) true class indices.
        y_pred: (n,) predicted class indices.
        proba: (n, 7) probabilities; the confidence of row i is proba[i, y_pred[i]].
        n_bins: number of bins on [0, 1].

    Returns:
        sum over bins of (n_bin / n) * |accuracy_bin - mean confidence_bin|.
    """
    confidence = proba[np.arange(len(y_pred)), y_pred]
    correct = (y_true == y_pred).astype(np.float64)
    bins = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    acc_sum = np.bincount(bins, weights=correct, minlength=n_bins)
    conf_sum = np.bincount(bins, weights=confidence, minlength=n_bins)
    used = count > 0
    gap = np.abs(acc_sum[used] - conf_sum[used])  # = n_bin * |acc_bin - conf_bin|
    return float(gap.sum() / len(y_true))


def reliability_bins(
    y_true: np.ndarray, y_pred: np.ndarray, proba: np.ndarray, n_bins: int = ECE_BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-bin mean confidence, accuracy and count (NaN for empty bins), for reliability diagrams.

    Args:
        y_true, y_pred, proba: as for `expected_calibration_error`.
        n_bins: number of equal-width bins.

    Returns:
        (confidence, accuracy, count), each of shape (n_bins,).
    """
    confidence = proba[np.arange(len(y_pred)), y_pred]
    correct = (y_true == y_pred).astype(np.float64)
    bins = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(bins, weights=confidence, minlength=n_bins) / count
        acc = np.bincount(bins, weights=correct, minlength=n_bins) / count
    return conf, acc, count


def sensitivity_at_specificity(positive: np.ndarray, score: np.ndarray, specificity: float) -> float:
    """Highest sensitivity among ROC thresholds whose specificity is at least `specificity`.

    Args:
        positive: (n,) bool, the class of interest (e.g. melanoma).
        score: (n,) score for that class.
        specificity: the minimum specificity, e.g. 0.8.

    Returns:
        The sensitivity (true-positive rate), NaN without positives or negatives.
    """
    positive = np.asarray(positive, dtype=bool)
    if not positive.any() or positive.all():
        return math.nan
    fpr, tpr, _ = roc_curve(positive, score, drop_intermediate=False)
    ok = (1.0 - fpr) >= specificity - 1e-12
    return float(tpr[ok].max())


def mel_val_operating_point(
    val: Predictions, test: Predictions, specificity: float = MEL_VAL_SPECIFICITY
) -> tuple[float, float, float]:
    """The melanoma threshold chosen on validation, and its test sensitivity and specificity.

    Args:
        val: validation predictions (the threshold is chosen on their melanoma probability).
        test: test predictions (where the threshold is applied).
        specificity: the minimum validation specificity, e.g. 0.9.

    Returns:
        (threshold, test sensitivity, test specificity); an image is called melanoma when its
        melanoma probability is >= threshold. All NaN when validation lacks melanomas or
        non-melanomas; sensitivity (specificity) NaN when test lacks melanomas (others).
    """
    mel = CLASS_INDEX["mel"]
    threshold = val_threshold(val.y_true == mel, val.proba[:, mel], specificity)
    if math.isnan(threshold):
        return (math.nan, math.nan, math.nan)
    positive = test.y_true == mel
    called = test.proba[:, mel] >= threshold
    sensitivity = float(called[positive].mean()) if positive.any() else math.nan
    spec = float((~called[~positive]).mean()) if (~positive).any() else math.nan
    return (threshold, sensitivity, spec)


def val_threshold(positive: np.ndarray, score: np.ndarray, specificity: float) -> float:
    """The score threshold with the highest sensitivity among those with specificity >= target.

    Candidate thresholds are the distinct scores (call positive when score >= threshold) and one
    just above the largest score (nothing called positive). Ties in sensitivity go to the higher
    specificity (the higher threshold).

    Args:
        positive: (n,) bool, the class of interest.
        score: (n,) its score.
        specificity: the minimum specificity.

    Returns:
        The threshold, NaN without positives or negatives.
    """
    positive = np.asarray(positive, dtype=bool)
    score = np.asarray(score, dtype=np.float64)
    if not positive.any() or positive.all():
        return math.nan
    candidates = np.append(np.unique(score), np.nextafter(score.max(), math.inf))
    pos, neg = np.sort(score[positive]), np.sort(score[~positive])
    # scores below a candidate are called negative: searchsorted(left) counts them
    sens = 1.0 - np.searchsorted(pos, candidates, side="left") / len(pos)
    spec = np.searchsorted(neg, candidates, side="left") / len(neg)
    ok = np.flatnonzero(spec >= specificity - 1e-12)
    best = ok[np.lexsort((-spec[ok], -sens[ok]))[0]]
    return float(candidates[best])


def bootstrap_intervals(
    preds: Predictions,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    probabilities: bool = True,
) -> dict[str, list[float]]:
    """Percentile intervals for accuracy, balanced accuracy and macro AUC, resampling lesions.

    Args:
        preds: predictions of one split.
        n_resamples: bootstrap resamples (lesions drawn with replacement, all their images kept).
        seed: seed of the resampling.
        level: coverage of the interval.
        probabilities: False for an entry without probabilities (its AUC interval is NaN).

    Returns:
        {"accuracy_ci": [low, high], "balanced_accuracy_ci": [...], "macro_auc_ci": [...]}
        (NaN bounds where a metric is undefined in every resample).
    """
    from core.bootstrap import LesionBootstrap, percentile_interval

    boot = LesionBootstrap(preds.lesion_id, n_resamples=n_resamples, seed=seed)
    samples = {"accuracy": boot.accuracy(preds.y_true, preds.y_pred),
               "balanced_accuracy": boot.balanced_accuracy(preds.y_true, preds.y_pred)}
    if probabilities:
        samples["macro_auc"] = boot.macro_auc(preds.y_true, preds.proba)
    return {f"{name}_ci": percentile_interval(samples[name], level) if name in samples
            else [math.nan, math.nan] for name in CI_METRICS}
