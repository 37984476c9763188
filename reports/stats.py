"""Paired comparisons: McNemar's exact test, a paired lesion bootstrap, Holm's correction."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest

from data_utils.predictions import Predictions
from reports.bootstrap import LesionBootstrap, percentile_interval
from reports.metrics import balanced_accuracy

log = logging.getLogger(__name__)

REFERENCE_ENTRY = "inception_resnet_v2"
ALPHA = 0.05


@dataclass(frozen=True)
class McNemarResult:
    """McNemar's exact test on paired per-image correctness.

    Attributes:
        only_a: images entry A got right and entry B wrong.
        only_b: images entry B got right and entry A wrong.
        p_value: two-sided exact p-value (binomial test of only_a out of only_a + only_b at 1/2).
    """

    only_a: int
    only_b: int
    p_value: float


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> McNemarResult:
    """McNemar's exact test: under H0 a discordant image is equally likely to favour A or B.

    Args:
        correct_a: (n,) bool, entry A's prediction is right, per image.
        correct_b: (n,) bool, same images, entry B.

    Returns:
        The discordant counts and the two-sided p-value (1.0 without discordant images).
    """
    correct_a = np.asarray(correct_a, dtype=bool)
    correct_b = np.asarray(correct_b, dtype=bool)
    only_a = int(np.sum(correct_a & ~correct_b))
    only_b = int(np.sum(~correct_a & correct_b))
    if only_a + only_b == 0:
        return McNemarResult(only_a, only_b, 1.0)
    p = binomtest(only_a, only_a + only_b, 0.5, alternative="two-sided").pvalue
    return McNemarResult(only_a, only_b, float(p))


def holm(p_values) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order.

    With the m p-values sorted ascending, p_(1) <= ... <= p_(m), the adjusted value of the i-th is
    max over j <= i of min(1, (m - j + 1) * p_(j)). NaN inputs stay NaN and do not count in m.

    Args:
        p_values: raw p-values.

    Returns:
        Adjusted p-values (compare each with alpha).
    """
    p = np.asarray(list(p_values), dtype=np.float64)
    adjusted = np.full(p.shape, math.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = valid.size
    running = 0.0
    for rank, idx in enumerate(valid[np.argsort(p[valid], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[idx]))
        adjusted[idx] = running
    return adjusted.tolist()


@dataclass(frozen=True)
class Comparison:
    """The reference entry against one other entry on the images both predicted.

    Attributes:
        other: the other entry's name.
        n_images: images both entries predicted (the comparison uses only these).
        ba_reference, ba_other: balanced accuracies on those images.
        ba_diff: ba_reference - ba_other.
        ba_diff_ci: paired lesion-bootstrap percentile interval of ba_diff.
        accuracy_diff: accuracy difference (reference - other).
        mcnemar: McNemar's exact test on per-image correctness.
        p_holm: Holm-adjusted p-value across all comparisons (NaN until adjusted).
    """

    other: str
    n_images: int
    ba_reference: float
    ba_other: float
    ba_diff: float
    ba_diff_ci: list[float]
    accuracy_diff: float
    mcnemar: McNemarResult
    p_holm: float = math.nan

    @property
    def significant(self) -> bool:
        """Holm-adjusted McNemar p-value below ALPHA."""
        return bool(self.p_holm < ALPHA)


def align(a: Predictions, b: Predictions) -> tuple[Predictions, Predictions]:
    """Restrict two entries' predictions to their common image_ids, in the same row order.

    Args:
        a, b: predictions of one split.

    Returns:
        (a', b') with identical image_id arrays (possibly empty).
    """
    common = np.intersect1d(a.image_id, b.image_id)
    return _subset(a, common), _subset(b, common)


def _subset(preds: Predictions, ids: np.ndarray) -> Predictions:
    index = {image: i for i, image in enumerate(preds.image_id.tolist())}
    rows = np.array([index[i] for i in ids.tolist()], dtype=np.int64)
    return Predictions(
        image_id=preds.image_id[rows],
        lesion_id=preds.lesion_id[rows],
        label=preds.label[rows],
        proba=preds.proba[rows],
        prediction=None if preds.prediction is None else preds.prediction[rows],
        source=preds.source,
    )


def compare(
    reference: Predictions, other: Predictions, other_name: str, n_resamples: int = 1000, seed: int = 0
) -> Comparison | None:
    """Compare the reference entry with one other entry (paired, same lesion resamples).

    Args:
        reference: the reference entry's test predictions.
        other: the other entry's test predictions.
        other_name: its name.
        n_resamples: lesion-bootstrap resamples for the balanced-accuracy difference.
        seed: resampling seed.

    Returns:
        The comparison, or None when the two share no image.
    """
    ref, oth = align(reference, other)
    if len(ref.image_id) == 0:
        log.warning("%s shares no test image with the reference entry; not compared", other_name)
        return None
    if len(ref.image_id) < max(len(reference.image_id), len(other.image_id)):
        log.warning(
            "%s and the reference entry predicted different test images; comparing on the %d "
            "they share", other_name, len(ref.image_id)
        )
    y_true = ref.y_true
    pred_ref, pred_oth = ref.y_pred, oth.y_pred
    boot = LesionBootstrap(ref.lesion_id, n_resamples=n_resamples, seed=seed)
    diff = boot.balanced_accuracy(y_true, pred_ref) - boot.balanced_accuracy(y_true, pred_oth)
    ba_ref = balanced_accuracy(y_true, pred_ref)
    ba_oth = balanced_accuracy(y_true, pred_oth)
    return Comparison(
        other=other_name,
        n_images=len(y_true),
        ba_reference=ba_ref,
        ba_other=ba_oth,
        ba_diff=ba_ref - ba_oth,
        ba_diff_ci=percentile_interval(diff),
        accuracy_diff=float(np.mean(pred_ref == y_true) - np.mean(pred_oth == y_true)),
        mcnemar=mcnemar_exact(pred_ref == y_true, pred_oth == y_true),
    )


def compare_all(
    reference: Predictions,
    others: dict[str, Predictions],
    n_resamples: int = 1000,
    seed: int = 0,
) -> list[Comparison]:
    """Compare the reference with every other entry and Holm-adjust the McNemar p-values.

    Args:
        reference: the reference entry's test predictions.
        others: name -> test predictions of every other entry.
        n_resamples: bootstrap resamples per comparison.
        seed: resampling seed (the same lesion draws for every comparison on the same images).

    Returns:
        One Comparison per other entry that shares images with the reference, in input order.
    """
    results = [compare(reference, preds, name, n_resamples, seed) for name, preds in others.items()]
    results = [r for r in results if r is not None]
    adjusted = holm([r.mcnemar.p_value for r in results])
    return [
        Comparison(**{**r.__dict__, "p_holm": p}) for r, p in zip(results, adjusted, strict=True)
    ]
