"""McNemar's exact test, Holm's correction and the paired comparison against hand values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from data_utils.classes import CLASSES
from data_utils.predictions import make_predictions
from reports.stats import compare, compare_all, holm, mcnemar_exact


def test_mcnemar_exact_hand_value():
    # 7 images only A got right, 1 only B: two-sided binomial, n = 8, p = 1/2:
    # 2 * P(X <= 1) = 2 * (C(8,0) + C(8,1)) / 2^8 = 2 * 9 / 256
    a = np.array([1] * 7 + [0] + [1] * 5 + [0] * 3, dtype=bool)
    b = np.array([0] * 7 + [1] + [1] * 5 + [0] * 3, dtype=bool)
    result = mcnemar_exact(a, b)
    assert (result.only_a, result.only_b) == (7, 1)
    assert result.p_value == pytest.approx(18 / 256)


def test_mcnemar_symmetric_and_degenerate():
    # 3 vs 3 discordant: the most likely outcome, p = 1; no discordant pair: p = 1
    a = np.array([1, 1, 1, 0, 0, 0], dtype=bool)
    assert mcnemar_exact(a, ~a).p_value == pytest.approx(1.0)
    assert mcnemar_exact(a, a).p_value == 1.0
    # 10 vs 0: 2 * (1/2)^10
    assert mcnemar_exact(np.ones(10, bool), np.zeros(10, bool)).p_value == pytest.approx(2 / 1024)


def test_holm_hand_values():
    # sorted .005 .01 .03 .04 (m = 4): 4*.005 = .02, 3*.01 = .03, 2*.03 = .06,
    # 1*.04 = .04 -> raised to the running max .06; returned in input order
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # capped at 1: 2*.5 = 1, then max(1, .6) = 1
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    assert holm([0.2]) == pytest.approx([0.2])
    assert holm([]) == []


def test_holm_skips_nan():
    adjusted = holm([0.01, math.nan, 0.02])
    assert adjusted[0] == pytest.approx(0.02)  # m = 2
    assert math.isnan(adjusted[1])
    assert adjusted[2] == pytest.approx(0.02)


def _preds(labels, predicted, ids=None, lesions=None):
    n = len(labels)
    proba = np.full((n, 7), 0.05)
    for i, c in enumerate(predicted):
        proba[i, CLASSES.index(c)] = 0.7
    ids = [f"I{i}" for i in range(n)] if ids is None else ids
    return make_predictions(ids, lesions if lesions is not None else ids, labels, proba)


def test_compare_identical_entries():
    labels = ["nv", "mel", "bcc", "nv", "akiec", "nv"]
    a = _preds(labels, ["nv", "nv", "bcc", "nv", "akiec", "mel"])
    result = compare(a, a, "same", n_resamples=100)
    assert result.ba_diff == 0.0
    assert result.ba_diff_ci == [0.0, 0.0]
    assert result.mcnemar.p_value == 1.0


def test_compare_aligns_rows_by_image_id():
    labels = ["nv", "mel", "bcc", "nv"]
    ref = _preds(labels, labels)  # all right
    # same images in another order, plus one image the reference lacks
    other = _preds(["bcc", "nv", "nv", "mel", "df"], ["bcc", "nv", "mel", "mel", "df"],
                   ids=["I2", "I0", "I3", "I1", "X9"])
    result = compare(ref, other, "other", n_resamples=100)
    assert result.n_images == 4
    # other is wrong only on I3 (true nv, predicted mel): accuracy 1 vs 3/4,
    # balanced accuracy 1 vs mean(nv 1/2, mel 1, bcc 1) = 5/6
    assert result.accuracy_diff == pytest.approx(0.25)
    assert result.ba_diff == pytest.approx(1 - 5 / 6)
    assert (result.mcnemar.only_a, result.mcnemar.only_b) == (1, 0)
    assert result.ba_diff_ci[0] >= 0.0


def test_compare_all_applies_holm():
    rng = np.random.default_rng(0)
    labels = list(np.array(CLASSES)[rng.integers(0, 7, 300)])
    ref = _preds(labels, labels)
    noisy = {name: _preds(labels, [c if rng.random() > q else "nv" for c in labels])
             for name, q in (("a", 0.05), ("b", 0.3), ("c", 0.5))}
    results = compare_all(ref, noisy, n_resamples=200)
    assert [r.other for r in results] == ["a", "b", "c"]
    expected = holm([r.mcnemar.p_value for r in results])
    assert [r.p_holm for r in results] == pytest.approx(expected)
    assert results[2].significant and results[2].ba_diff_ci[0] > 0
