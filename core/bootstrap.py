"""Lesion-level bootstrap, vectorised with NumPy.

Images of one lesion are not independent (HAM10000 has up to six images of a lesion), so each
resample draws *lesions* with replacement and keeps all images of every drawn lesion. A resample
is a vector of lesion multiplicities; an image's weight is its lesion's multiplicity. Accuracy
and balanced accuracy then reduce to matrix products of the (resamples x lesions) multiplicities
with per-lesion counts, and macro AUC to a weighted rank statistic per class computed for all
resamples at once (no per-resample scikit-learn calls).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from core.classes import NUM_CLASSES


class LesionBootstrap:
    """One fixed set of lesion resamples, reusable for several entries (paired comparisons).

    Attributes:
        codes: (n,) lesion index of each image.
        counts: (n_resamples, n_lesions) how often each lesion was drawn in each resample.
    """

    def __init__(self, lesion_id, n_resamples: int = 1000, seed: int = 0) -> None:
        """Draw the resamples.

        Args:
            lesion_id: (n,) lesion id per image (images sharing an id are resampled together).
            n_resamples: number of resamples.
            seed: seed of the NumPy generator.
        """
        self.codes, uniques = pd.factorize(np.asarray(lesion_id))
        n_lesions = len(uniques)
        rng = np.random.default_rng(seed)
        draws = rng.integers(0, n_lesions, size=(n_resamples, n_lesions))
        offsets = (np.arange(n_resamples) * n_lesions)[:, None]
        self.counts = np.bincount(
            (draws + offsets).ravel(), minlength=n_resamples * n_lesions
        ).reshape(n_resamples, n_lesions).astype(np.float64)
        self._image_weights: np.ndarray | None = None

    @property
    def n_lesions(self) -> int:
        return self.counts.shape[1]

    def image_weights(self) -> np.ndarray:
        """(n_resamples, n) weight of every image in every resample (its lesion's multiplicity)."""
        if self._image_weights is None:
            self._image_weights = self.counts[:, self.codes]
        return self._image_weights

    def per_lesion(self, values: np.ndarray) -> np.ndarray:
        """Sum per-image values (n,) or (n, k) per lesion -> (n_lesions,) or (n_lesions, k)."""
        out = np.zeros((self.n_lesions, *values.shape[1:]), dtype=np.float64)
        np.add.at(out, self.codes, values)
        return out

    def image_mean(self, values: np.ndarray) -> np.ndarray:
        """(n_resamples,) mean of a per-image value (n,) over the images of each resample."""
        images = np.bincount(self.codes, minlength=self.n_lesions).astype(np.float64)
        total = self.counts @ self.per_lesion(np.asarray(values, dtype=np.float64))
        return total / (self.counts @ images)

    def accuracy(self, y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
        """(n_resamples,) accuracy in each resample."""
        return self.image_mean(y_true == y_pred)

    def class_recalls(self, y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
        """(n_resamples, 7) recall of each class in each resample (NaN: class not drawn)."""
        onehot = np.eye(NUM_CLASSES)[y_true]
        support = self.counts @ self.per_lesion(onehot)
        hits = self.counts @ self.per_lesion(onehot * (y_true == y_pred)[:, None])
        with np.errstate(invalid="ignore", divide="ignore"):
            return hits / support

    def balanced_accuracy(self, y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
        """(n_resamples,) mean recall over the classes present in each resample."""
        return _nanmean_rows(self.class_recalls(y_true, y_pred))

    def macro_f1(self, y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
        """(n_resamples,) mean F1 over the classes present in each resample.

        F1 of class k = 2 TP / (predicted_k + support_k), the convention of `core.metrics`
        (a present class that is never predicted scores 0).
        """
        eye = np.eye(NUM_CLASSES)
        true_hot, pred_hot = eye[y_true], eye[y_pred]
        support = self.counts @ self.per_lesion(true_hot)
        predicted = self.counts @ self.per_lesion(pred_hot)
        hits = self.counts @ self.per_lesion(true_hot * (y_true == y_pred)[:, None])
        with np.errstate(invalid="ignore", divide="ignore"):
            f1 = np.where(support > 0, 2.0 * hits / (predicted + support), np.nan)
        return _nanmean_rows(f1)

    def class_auc(self, y_true: np.ndarray, proba: np.ndarray, k: int) -> np.ndarray:
        """(n_resamples,) one-vs-rest AUC of class k (NaN where a resample lacks either side)."""
        positive = y_true == k
        if not positive.any() or positive.all():
            return np.full(self.counts.shape[0], np.nan)
        return weighted_auc(positive, proba[:, k], self.image_weights())

    def macro_auc(self, y_true: np.ndarray, proba: np.ndarray) -> np.ndarray:
        """(n_resamples,) mean one-vs-rest AUC over the classes with positives and negatives."""
        aucs = np.stack([self.class_auc(y_true, proba, k) for k in range(NUM_CLASSES)], axis=1)
        return _nanmean_rows(aucs)

    def metric_samples(
        self, y_true: np.ndarray, y_pred: np.ndarray, proba: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Bootstrap samples of accuracy, balanced accuracy and macro AUC."""
        return {
            "accuracy": self.accuracy(y_true, y_pred),
            "balanced_accuracy": self.balanced_accuracy(y_true, y_pred),
            "macro_auc": self.macro_auc(y_true, proba),
        }


def weighted_auc(positive: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC for many weightings of the same images at once (ties count one half).

    AUC = sum over (positive i, negative j) of w_i w_j ([s_i > s_j] + 0.5 [s_i == s_j]), divided
    by (sum of positive weights) x (sum of negative weights). The negatives are sorted by score
    once; per resample, a cumulative sum of their weights gives, for every positive, the negative
    weight below its score (C[lo]) and up to its score (C[hi]), and its pairs contribute
    w_i (C[lo] + C[hi]) / 2.

    Args:
        positive: (n,) bool.
        score: (n,) scores.
        weights: (r, n) non-negative weights, one row per resample.

    Returns:
        (r,) AUCs; NaN where a row has no positive or no negative weight.
    """
    positive = np.asarray(positive, dtype=bool)
    neg_index = np.flatnonzero(~positive)
    neg_order = neg_index[np.argsort(score[neg_index], kind="stable")]
    neg_scores = score[neg_order]
    pos_index = np.flatnonzero(positive)
    lo = np.searchsorted(neg_scores, score[pos_index], side="left")
    hi = np.searchsorted(neg_scores, score[pos_index], side="right")
    cum = np.zeros((weights.shape[0], len(neg_order) + 1))
    np.cumsum(weights[:, neg_order], axis=1, out=cum[:, 1:])
    pos_w = weights[:, pos_index]
    numerator = 0.5 * ((cum[:, lo] + cum[:, hi]) * pos_w).sum(axis=1)
    denominator = pos_w.sum(axis=1) * cum[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / denominator, np.nan)


def _nanmean_rows(values: np.ndarray) -> np.ndarray:
    defined = ~np.isnan(values)
    n = defined.sum(axis=1)
    total = np.where(defined, values, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / n, np.nan)


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> list[float]:
    """Percentile bootstrap interval [low, high] ignoring NaN samples ([NaN, NaN] if all NaN).

    Args:
        samples: (r,) bootstrap replicates of a statistic.
        level: coverage, e.g. 0.95 for the 2.5th and 97.5th percentiles.

    Returns:
        [low, high] as floats.
    """
    samples = np.asarray(samples, dtype=np.float64)
    samples = samples[~np.isnan(samples)]
    if samples.size == 0:
        return [math.nan, math.nan]
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(samples, [tail, 100.0 - tail])
    return [float(low), float(high)]
