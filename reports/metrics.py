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
- `log_loss` uses all seven labels; `brier` is the multiclass Brier score: the mean over images of
  the sum over the seven classes of (p_ik - y_ik)^2, so it lies in [0, 2] (0 is perfect).
- `ece`: expected calibration error with 15 equal-width confidence bins (lower edge exclusive,
  upper inclusive; a confidence of 0 falls in the first bin); confidence is the probability given
  to the predicted class, and ECE = sum over bins of (n_bin / n) * |accuracy_bin - confidence_bin|.
- `mel_sens_at_spec80/90`: from the ROC curve of melanoma vs rest, the highest sensitivity among
  thresholds whose specificity is at least 80 % / 90 %.

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

from data_utils.classes import CLASS_INDEX, CLASSES, NUM_CLASSES
from data_utils.predictions import Predictions

ECE_BINS = 15
MEL_SPECIFICITIES = (0.80, 0.90)
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


def metric_names() -> list[str]:
    """Every key `compute_metrics` returns, in a stable order (summary first, then per class)."""
    names = list(SUMMARY_METRICS)
    for metric in PER_CLASS_METRICS:
        names.extend(f"{metric}_{c}" for c in CLASSES)
    return names


def compute_metrics(preds: Predictions) -> dict[str, float]:
    """All metrics of one entry on one split (see the module docstring for the conventions).

    Args:
        preds: validated predictions of one split.

    Returns:
        A flat map metric name -> float, with the keys of `metric_names()`.
    """
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
    out["log_loss"] = float(log_loss(y_true, proba, labels=ALL_LABELS))
    out["brier"] = float(
        brier_score_loss(y_true, proba, labels=ALL_LABELS, scale_by_half=False)
    )
    out["ece"] = expected_calibration_error(y_true, y_pred, proba)
    mel = CLASS_INDEX["mel"]
    for spec in MEL_SPECIFICITIES:
        out[f"mel_sens_at_spec{round(spec * 100)}"] = sensitivity_at_specificity(
            y_true == mel, proba[:, mel], spec
        )
    out["n_images"] = float(len(y_true))
    out["n_lesions"] = float(len(set(preds.lesion_id.tolist())))
    out.update(_per_class(y_true, y_pred, per_class_auc))
    return {name: out[name] for name in metric_names()}


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


def bootstrap_intervals(
    preds: Predictions, n_resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, list[float]]:
    """Percentile intervals for accuracy, balanced accuracy and macro AUC, resampling lesions.

    Args:
        preds: predictions of one split.
        n_resamples: bootstrap resamples (lesions drawn with replacement, all their images kept).
        seed: seed of the resampling.
        level: coverage of the interval.

    Returns:
        {"accuracy_ci": [low, high], "balanced_accuracy_ci": [...], "macro_auc_ci": [...]}
        (NaN bounds where a metric is undefined in every resample).
    """
    from reports.bootstrap import LesionBootstrap, percentile_interval

    boot = LesionBootstrap(preds.lesion_id, n_resamples=n_resamples, seed=seed)
    samples = boot.metric_samples(preds.y_true, preds.y_pred, preds.proba)
    return {f"{name}_ci": percentile_interval(samples[name], level) for name in CI_METRICS}
