"""The SVM baseline's prior convention: class-balanced weights, lesion-grouped calibration folds.

Synthetic features: each class has a centre, each lesion a point near its class centre, and each
image (1-3 per lesion) a point very near its lesion's, as images of one HAM10000 lesion are.
No training of a network; every fit takes a fraction of a second.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import log_loss
from sklearn.utils.class_weight import compute_sample_weight

from training import svm_baseline
from training.settings import SvmSettings

ONE_C = SvmSettings(C_grid=(1.0,))

COUNTS = (150, 30, 12)  # lesions per class: imbalanced, like nv against df/vasc
UNIFORM = np.full(len(COUNTS), 1 / len(COUNTS))


def lesion_data(rng: np.random.Generator, centres: np.ndarray, counts=COUNTS, spread=0.15):
    """(features, labels, lesion ids): 1-3 images per lesion, `spread` apart within a lesion."""
    x, y, groups = [], [], []
    for label, n_lesions in enumerate(counts):
        for lesion in range(n_lesions):
            base = centres[label] + rng.normal(0, 1, centres.shape[1])
            for _ in range(rng.integers(1, 4)):
                x.append(base + rng.normal(0, spread, centres.shape[1]))
                y.append(label)
                groups.append(f"HAM_{label}_{lesion}")
    return np.array(x), np.array(y), np.array(groups)


def _case(seed: int):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.2, (len(COUNTS), 5))
    return centres, rng, lesion_data(rng, centres)


def _split_lesions(folds, groups):
    return [sorted(set(groups[train]) & set(groups[test])) for train, test in folds]


def test_calibration_folds_never_split_a_lesion():
    _, _, (x, y, groups) = _case(0)
    folds = svm_baseline.calibration_folds(y, groups, seed=0)
    assert len(folds) == 5
    assert _split_lesions(folds, groups) == [[]] * 5
    assert sorted(np.concatenate([test for _, test in folds]).tolist()) == list(range(len(y)))
    for train, _ in folds:
        assert set(y[train]) == set(y)
    # Fewer lesions than folds in a class -> fewer folds; a lone lesion cannot be calibrated.
    rare = np.isin(groups, [f"HAM_2_{k}" for k in range(3)]) | (y != 2)
    assert len(svm_baseline.calibration_folds(y[rare], groups[rare], seed=0)) == 3
    lone = (groups == "HAM_2_0") | (y != 2)
    with pytest.raises(ValueError, match="two lesions of every class; class 2 has 1"):
        svm_baseline.calibration_folds(y[lone], groups[lone], seed=0)


def test_fitted_svm_calibrates_on_the_lesion_folds():
    centres, rng, (x, y, groups) = _case(1)
    val_x, val_y, _ = lesion_data(rng, centres)
    fit = svm_baseline.fit_svm(x, y, val_x, val_y, ONE_C, seed=0, train_groups=groups)
    used = fit.model[-1].cv  # the CalibratedClassifierCV's folds
    assert _split_lesions(used, groups) == [[]] * len(used)
    assert fit.calibration == {"method": "sigmoid", "scheme": "StratifiedGroupKFold",
                               "groups": "lesion", "folds": 5, "class_weight": "balanced",
                               "prior": "uniform", "left_out_classes": []}
    # Image-level folds (no lesion ids) split most multi-image lesions: what the grouping prevents.
    ungrouped = svm_baseline.fit_svm(x, y, val_x, val_y, ONE_C, seed=0).model[-1].cv
    multi = {g for g in groups if (groups == g).sum() > 1}
    split = set().union(*map(set, _split_lesions(ungrouped, groups)))
    assert len(split & multi) / len(multi) > 0.5


def test_class_balanced_probabilities_target_the_uniform_prior():
    # Unweighted, Platt calibration reproduces the training frequencies (mean probability ~ class
    # shares); class-balanced, the probabilities move towards the uniform prior the CNNs target,
    # and their class-balanced mean (each image weighted n / (K n_class)) is close to uniform.
    centres, rng, (x, y, groups) = _case(0)
    val_x, val_y, _ = lesion_data(rng, centres)
    weights = compute_sample_weight("balanced", y)
    means, balanced_means = {}, {}
    for class_weight in ("balanced", None):
        fit = svm_baseline.fit_svm(x, y, val_x, val_y,
                                   SvmSettings(C_grid=(1.0,), class_weight=class_weight),
                                   seed=0, train_groups=groups)
        proba = svm_baseline.svm_proba(fit.model, x)[:, :len(COUNTS)]
        means[class_weight] = proba.mean(axis=0)
        balanced_means[class_weight] = weights @ proba / weights.sum()
    shares = np.bincount(y) / len(y)
    assert np.abs(means[None] - shares).sum() < 0.1
    assert np.abs(means["balanced"] - UNIFORM).sum() < np.abs(means[None] - UNIFORM).sum() - 0.2
    assert np.abs(balanced_means["balanced"] - UNIFORM).sum() < 0.2
    assert (np.abs(balanced_means["balanced"] - UNIFORM).sum()
            < np.abs(balanced_means[None] - UNIFORM).sum())


def test_lesion_folds_calibrate_better_on_new_lesions():
    # Image-level folds leave a lesion's twin images in the training part: the out-of-fold
    # decision values are too good, and the calibrated probabilities over-confident on new
    # lesions. Averaged over three seeded cases, on 10x more new lesions than training lesions.
    losses, excess = {True: [], False: []}, {True: [], False: []}
    for seed in range(3):
        centres, rng, (x, y, groups) = _case(seed)
        new_x, new_y, _ = lesion_data(rng, centres, counts=tuple(10 * c for c in COUNTS))
        weights = compute_sample_weight("balanced", new_y)
        for grouped in (True, False):
            fit = svm_baseline.fit_svm(x, y, new_x[:20], new_y[:20], ONE_C, seed=0,
                                       train_groups=groups if grouped else None)
            proba = svm_baseline.svm_proba(fit.model, new_x)[:, :len(COUNTS)]
            losses[grouped].append(log_loss(new_y, proba, labels=[0, 1, 2], sample_weight=weights))
            confidence = weights @ proba.max(axis=1) / weights.sum()
            accuracy = weights @ (proba.argmax(axis=1) == new_y) / weights.sum()
            excess[grouped].append(confidence - accuracy)
    assert np.mean(losses[True]) < np.mean(losses[False])
    assert np.mean(excess[True]) < np.mean(excess[False])


@pytest.mark.parametrize(
    ("svm", "groups", "message"),
    [
        (SvmSettings(C_grid=(1.0,), class_weight="auto"), None,
         "class_weight must be 'balanced' or null"),
        (ONE_C, np.array(["a", "b"]), "one lesion id per training image"),
        (SvmSettings(C_grid=()), None, "C_grid is empty"),
    ],
)
def test_bad_svm_settings_are_refused(svm, groups, message):
    _, _, (x, y, _) = _case(0)
    with pytest.raises(ValueError, match=message):
        svm_baseline.fit_svm(x, y, x, y, svm, train_groups=groups)
