"""Paired tests: the paired lesion-bootstrap test, Holm's correction, alignment of two entries.

The single-run significance test (`paired_bootstrap_test`) works on bootstrap replicates of a
difference reference - other, drawn by resampling lesions (core.bootstrap): the interval and
the p-value come from the same replicates, so they never disagree. McNemar's exact test
(`mcnemar_exact`) counts images as independent; it stays for description only, never as a
verdict (images of one lesion tend to be right or wrong together, which makes it anti-conservative).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from scipy.stats import binomtest
from statsmodels.stats.multitest import multipletests

from core.defaults import ALPHA
from core.predictions import Predictions

log = logging.getLogger(__name__)


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
    max over j <= i of min(1, (m - j + 1) * p_(j)) (statsmodels' multipletests, method "holm").
    NaN inputs stay NaN and do not count in m.

    Args:
        p_values: raw p-values.

    Returns:
        Adjusted p-values (compare each with alpha).
    """
    p = np.asarray(list(p_values), dtype=np.float64)
    adjusted = np.full(p.shape, math.nan)
    valid = ~np.isnan(p)
    if valid.any():
        adjusted[valid] = multipletests(p[valid], alpha=ALPHA, method="holm")[1]
    return adjusted.tolist()


@dataclass(frozen=True)
class BootstrapTest:
    """The paired bootstrap test of one difference.

    Attributes:
        ci_low, ci_high: percentile interval of the difference (order statistics, see
            `paired_bootstrap_test`); NaN without valid replicates.
        p_value: two-sided p-value of "difference = 0" from the same replicates.
        n_valid: replicates where the difference is defined (NaN ones are left out).
    """

    ci_low: float
    ci_high: float
    p_value: float
    n_valid: int

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval lies entirely above or below 0."""
        return bool(self.ci_low > 0 or self.ci_high < 0)


def tail_rank(n: int, alpha: float = ALPHA) -> int:
    """k = ceil(n * alpha / 2), computed exactly: the rank of the interval's bounds.

    Args:
        n: number of replicates (>= 1).
        alpha: 1 - coverage, e.g. 0.05.

    Returns:
        k in [1, ceil(n / 2)].
    """
    share = Fraction(alpha).limit_denominator(10**6) / 2
    return max(1, math.ceil(n * share))


def paired_bootstrap_test(differences, alpha: float = ALPHA) -> BootstrapTest:
    """Percentile interval and p-value of a difference from its paired bootstrap replicates.

    With the n defined replicates sorted, d_(1) <= ... <= d_(n), and k = ceil(n alpha / 2), the
    interval is [d_(k), d_(n+1-k)] (the alpha/2 and 1 - alpha/2 percentiles as order
    statistics), and the p-value inverts it: p = min(1, 2 min(#{d <= 0}, #{d >= 0}) / n).
    Replicates equal to 0 count on both sides (ties favour "no difference"). Then the interval
    excludes 0 exactly when p < alpha: d_(k) > 0 <=> fewer than k replicates are <= 0 <=>
    #{d <= 0} < n alpha / 2 (counts are integers), and likewise for the upper bound.

    Args:
        differences: (r,) bootstrap replicates of reference - other (NaN: undefined, left out).
        alpha: 1 - the interval's coverage, and the level the equivalence holds at.

    Returns:
        The interval, the p-value and the number of defined replicates (NaN when none).
    """
    d = np.asarray(differences, dtype=np.float64)
    d = np.sort(d[~np.isnan(d)])
    n = d.size
    if n == 0:
        return BootstrapTest(math.nan, math.nan, math.nan, 0)
    k = tail_rank(n, alpha)
    at_most_zero = int(np.count_nonzero(d <= 0))
    at_least_zero = int(np.count_nonzero(d >= 0))
    p = min(1.0, 2.0 * min(at_most_zero, at_least_zero) / n)
    return BootstrapTest(float(d[k - 1]), float(d[n - k]), p, n)


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


