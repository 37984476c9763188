"""The vectorised lesion bootstrap against direct computations on expanded resamples."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from core.bootstrap import LesionBootstrap, percentile_interval, weighted_auc
from core.classes import CLASSES
from core.metrics import bootstrap_intervals, one_vs_rest_auc
from core.predictions import make_predictions


def _data(n=120, seed=0, lesions=None, skill=1.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 7, n)
    logits = rng.normal(size=(n, 7))
    logits[np.arange(n), y] += skill
    proba = np.round(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), 2)  # ties
    proba /= proba.sum(1, keepdims=True)
    lesions = np.arange(n) // 3 if lesions is None else lesions
    return y, proba, np.asarray(lesions)


def test_weighted_auc_matches_sklearn_with_ties_and_weights():
    y, proba, _ = _data()
    positive = y == 2
    weights = np.random.default_rng(1).integers(0, 4, size=(3, len(y))).astype(float)
    weights[0] = 1.0
    got = weighted_auc(positive, proba[:, 2], weights)
    for row, value in zip(weights, got, strict=True):
        assert value == pytest.approx(roc_auc_score(positive, proba[:, 2], sample_weight=row))


def test_weighted_auc_hand_example():
    # positives .8 .4, negatives .4 .1: pairs (.8,.4) 1, (.8,.1) 1, (.4,.4) tie 0.5, (.4,.1) 1
    auc = weighted_auc(np.array([True, True, False, False]), np.array([0.8, 0.4, 0.4, 0.1]),
                       np.ones((1, 4)))
    assert auc[0] == pytest.approx(3.5 / 4)


def test_each_resample_draws_as_many_lesions_as_there_are():
    boot = LesionBootstrap(np.array(list("aabbbcd")), n_resamples=50, seed=0)
    assert boot.counts.shape == (50, 4)
    assert (boot.counts.sum(axis=1) == 4).all()
    # an image's weight is its lesion's multiplicity
    assert (boot.image_weights()[:, 0] == boot.image_weights()[:, 1]).all()


def test_resampled_metrics_equal_metrics_of_the_expanded_resample():
    y, proba, lesions = _data()
    y_pred = proba.argmax(axis=1)
    boot = LesionBootstrap(lesions, n_resamples=20, seed=4)
    samples = boot.metric_samples(y, y_pred, proba)
    weights = boot.image_weights().astype(int)
    for r in range(20):
        rows = np.repeat(np.arange(len(y)), weights[r])  # the images of the drawn lesions
        yt, yp, pr = y[rows], y_pred[rows], proba[rows]
        assert samples["accuracy"][r] == pytest.approx(np.mean(yt == yp))
        assert samples["balanced_accuracy"][r] == pytest.approx(balanced_accuracy_score(yt, yp))
        assert samples["macro_auc"][r] == pytest.approx(np.nanmean(one_vs_rest_auc(yt, pr)))


def test_seeded_and_reproducible():
    y, proba, lesions = _data()
    preds = make_predictions(range(len(y)), lesions, np.array(CLASSES)[y], proba)
    assert bootstrap_intervals(preds, 100, seed=3) == bootstrap_intervals(preds, 100, seed=3)
    assert bootstrap_intervals(preds, 100, seed=3) != bootstrap_intervals(preds, 100, seed=4)


def test_interval_width_is_sane():
    # accuracy ~0.7 on 400 independent images: 95 % width about 2 * 1.96 * sqrt(.21 / 400) = 0.09
    rng = np.random.default_rng(0)
    correct = rng.random(400) < 0.7
    boot = LesionBootstrap(np.arange(400), n_resamples=1000, seed=0)
    y = np.zeros(400, dtype=int)
    low, high = percentile_interval(boot.accuracy(y, np.where(correct, 0, 1)))
    assert low < correct.mean() < high
    assert 0.06 < high - low < 0.12


def test_lesion_bootstrap_is_wider_than_image_bootstrap_for_duplicated_images():
    # 150 lesions, each photographed 5 times with identical predictions. Resampling images
    # treats 750 images as independent and is about sqrt(5) too narrow; resampling lesions
    # keeps the real sample size of 150.
    rng = np.random.default_rng(1)
    correct = np.repeat(rng.random(150) < 0.6, 5)
    y = np.zeros(750, dtype=int)
    y_pred = np.where(correct, 0, 1)
    lesions = np.repeat(np.arange(150), 5)
    by_lesion = LesionBootstrap(lesions, n_resamples=1000, seed=0).accuracy(y, y_pred)
    by_image = LesionBootstrap(np.arange(750), n_resamples=1000, seed=0).accuracy(y, y_pred)
    width_lesion = np.subtract(*percentile_interval(by_lesion)[::-1])
    width_image = np.subtract(*percentile_interval(by_image)[::-1])
    assert width_lesion > 1.8 * width_image
    # and the lesion interval matches one of 150 independent images
    single = LesionBootstrap(np.arange(150), n_resamples=1000, seed=0).accuracy(
        y[::5], y_pred[::5])
    assert width_lesion == pytest.approx(np.subtract(*percentile_interval(single)[::-1]), rel=0.25)


def test_percentile_interval_ignores_nan_and_handles_all_nan():
    assert percentile_interval(np.array([np.nan, 1.0, 1.0])) == [1.0, 1.0]
    low, high = percentile_interval(np.array([np.nan, np.nan]))
    assert np.isnan(low) and np.isnan(high)


def test_every_comparison_sampler_equals_compute_metrics_on_the_expanded_resample():
    # what comparisons.csv resamples is what metrics.json reports, resample by resample
    from core.metrics import calibration_probabilities, compute_metrics
    from reports.comparisons import SAMPLERS

    y, proba, lesions = _data(n=90, seed=2)
    proba = proba * 0.98 + 0.02 / 7  # no zero probabilities
    prior = np.array([0.05, 0.08, 0.1, 0.02, 0.1, 0.6, 0.05])
    y_pred = proba.argmax(axis=1)
    boot = LesionBootstrap(lesions, n_resamples=8, seed=5)
    calibrated = calibration_probabilities(proba, prior)
    samples = {m: f(boot, y, y_pred, proba, calibrated) for m, f in SAMPLERS.items()}
    weights = boot.image_weights().astype(int)
    for r in range(8):
        rows = np.repeat(np.arange(len(y)), weights[r])
        expanded = make_predictions(np.arange(len(rows)).astype(str), lesions[rows],
                                    np.array(CLASSES)[y[rows]], proba[rows])
        expected = compute_metrics(expanded, prior=prior)
        for metric, values in samples.items():
            if np.isnan(expected[metric]):
                assert np.isnan(values[r]), (metric, r)
            else:
                assert values[r] == pytest.approx(expected[metric], abs=1e-9), (metric, r)
