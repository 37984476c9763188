"""McNemar's exact test, Holm's correction and the paired bootstrap test against hand values;
interval and p-value of the bootstrap test agree on every input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from reports.stats import holm, mcnemar_exact, paired_bootstrap_test, tail_rank


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


def test_holm_matches_statsmodels_and_nan_stays_out_of_the_family():
    from statsmodels.stats.multitest import multipletests

    p = [0.2, 0.001, math.nan, 0.04, 0.012]
    adjusted = holm(p)
    expected = multipletests([0.2, 0.001, 0.04, 0.012], method="holm")[1]
    assert [adjusted[i] for i in (0, 1, 3, 4)] == pytest.approx(expected.tolist())
    assert math.isnan(adjusted[2])
    assert all(math.isnan(v) for v in holm([math.nan, math.nan]))


def test_tail_rank_is_exact():
    # ceil(n * 0.025): 40 -> 1, 41 -> 2 (1.025), 200 -> 5, 1000 -> 25, 1001 -> 26; never 0
    assert [tail_rank(n) for n in (1, 39, 40, 41, 200, 1000, 1001)] == [1, 1, 1, 2, 5, 25, 26]
    assert tail_rank(100, alpha=0.10) == 5


def test_bootstrap_test_hand_values():
    # 40 replicates: -1 once, 0 once, 38 positive. k = ceil(40 * .025) = 1: interval = [min, max]
    d = np.array([-1.0, 0.0] + list(np.linspace(0.1, 3.8, 38)))
    result = paired_bootstrap_test(d)
    assert (result.ci_low, result.ci_high) == (-1.0, pytest.approx(3.8))
    # #{d <= 0} = 2, #{d >= 0} = 39: p = 2 * 2 / 40 = 0.1
    assert result.p_value == pytest.approx(0.1) and result.n_valid == 40
    # 200 replicates, 4 of them <= 0: k = 5, the 5th smallest is positive; p = 8 / 200 = .04
    d = np.concatenate([[-3.0, -2.0, -1.0, 0.0], np.arange(1.0, 197.0)])
    result = paired_bootstrap_test(d)
    assert result.ci_low == 1.0 and result.ci_high == 192.0
    assert result.p_value == pytest.approx(0.04) and result.excludes_zero
    # one more at 0: 5 replicates <= 0, the 5th smallest is 0: p = .05, not below alpha
    d[4] = 0.0
    result = paired_bootstrap_test(d)
    assert result.ci_low == 0.0 and result.p_value == pytest.approx(0.05)
    assert not result.excludes_zero


def test_bootstrap_test_degenerate_inputs():
    same = paired_bootstrap_test(np.zeros(100))  # identical entries: every difference 0
    assert (same.ci_low, same.ci_high, same.p_value) == (0.0, 0.0, 1.0)
    empty = paired_bootstrap_test(np.array([math.nan, math.nan]))
    assert math.isnan(empty.p_value) and math.isnan(empty.ci_low) and empty.n_valid == 0
    assert not empty.excludes_zero
    with_nan = paired_bootstrap_test(np.array([math.nan, 1.0, 2.0]))
    assert with_nan.n_valid == 2 and with_nan.p_value == 0.0


def test_interval_excludes_zero_exactly_when_p_below_alpha():
    # many random inputs, with many exact zeros (ties) and sizes around the multiples of 40
    rng = np.random.default_rng(0)
    checked = {True: 0, False: 0}
    for trial in range(3000):
        n = int(rng.integers(1, 420))
        shift = rng.normal(0, 2)
        d = np.round(rng.normal(shift, 1.5, n)) if trial % 2 else rng.normal(shift, 1.0, n)
        if trial % 5 == 0:
            d[rng.random(n) < 0.3] = np.nan
        result = paired_bootstrap_test(d)
        if result.n_valid == 0:
            continue
        assert result.excludes_zero == (result.p_value < 0.05), (trial, n, result)
        assert result.ci_low <= result.ci_high
        checked[result.excludes_zero] += 1
    assert min(checked.values()) > 500  # both outcomes well represented
    for alpha in (0.01, 0.1, 0.2):
        for _ in range(300):
            d = np.round(rng.normal(rng.normal(0, 2), 1.5, int(rng.integers(1, 300))))
            result = paired_bootstrap_test(d, alpha=alpha)
            assert result.excludes_zero == (result.p_value < alpha)
