"""Stacking: hand-computed meta-model predictions, complementary members, grouped CV folds."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score

from core.classes import CLASS_INDEX, CLASSES, NUM_CLASSES
from ensembles.stacking import Stacking, grouped_folds, log_features


def _state(coef, intercept, meta_classes, n_members=2, clip=1e-7):
    return {"n_members": n_members, "n_fit_samples": 0, "coef": coef, "intercept": intercept,
            "meta_classes": meta_classes, "C": 1.0, "clip": clip, "cv": {}}


def test_log_features_are_member_major_and_clipped():
    a = np.zeros((1, 7))
    a[0, 0] = 1.0  # akiec 1, others 0 -> log 1 = 0, log(clip) elsewhere
    b = np.full((1, 7), 1 / 7)
    X = log_features(np.stack([a, b]), clip=1e-7)
    assert X.shape == (1, 14)
    assert X[0, 0] == 0.0 and X[0, 1] == pytest.approx(math.log(1e-7))
    np.testing.assert_allclose(X[0, 7:], math.log(1 / 7))


def test_prediction_from_hand_set_coefficients():
    # Meta classes akiec, bcc. logit_akiec = 0; logit_bcc = 1 * log p_member0(akiec) + 0.
    # member0 akiec = .5 -> logit_bcc = log .5 -> meta = softmax(0, log .5) = (2/3, 1/3).
    # member0 akiec = 0 -> clipped to 1e-7 -> meta bcc = 1e-7 / (1 + 1e-7).
    # The five classes the meta-model does not know get the members' mean probability: member0
    # gives them 0, member1 1/7, so each 1/14 and together 5/14; akiec and bcc share the other
    # 9/14 in the meta-model's proportions: row 1 = (2/3 * 9/14, 1/3 * 9/14, 1/14 x 5).
    coef = [[0.0] * 14, [1.0] + [0.0] * 13]
    model = Stacking().set_state(_state(coef, [0.0, 0.0], ["akiec", "bcc"]))
    row_half = [0.5, 0.5, 0, 0, 0, 0, 0]
    row_zero = [0.0, 1.0, 0, 0, 0, 0, 0]
    member1 = [[1 / 7] * 7, [1 / 7] * 7]
    proba = model.predict_proba([[row_half, row_zero], member1])
    np.testing.assert_allclose(proba[0], [3 / 7, 3 / 14, *[1 / 14] * 5], rtol=1e-12)
    assert proba[1, 1] == pytest.approx(1e-7 / (1 + 1e-7) * 9 / 14, rel=1e-9)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    assert model.predict([[row_half, row_zero], member1]).tolist() == [0, 0]
    # Intercepts alone: meta (log 1, log 3) -> (1/4, 3/4) of the 2/7 the five others leave.
    model = Stacking().set_state(_state([[0.0] * 14] * 2, [0.0, math.log(3)], ["mel", "nv"]))
    np.testing.assert_allclose(model.predict_proba([member1, member1])[:, [4, 5]],
                               [[1 / 14, 3 / 14]] * 2, rtol=1e-12)


def complementary_members(rng: np.random.Generator, n: int):
    """Three members, each expert on different classes and confused (uniform) on the rest.

    A knows akiec/bcc/bkl, B knows df/mel, C knows nv/vasc. On its own classes a member puts .9 on
    the truth; elsewhere it spreads evenly over the classes it does not know. Each member's
    accuracy is therefore about 3/7 + 4/7 * 1/4 (A), far from 1; together they identify every class.
    """
    expertise = [{0, 1, 2}, {3, 4}, {5, 6}]
    y = rng.integers(0, NUM_CLASSES, n)
    members = np.zeros((3, n, NUM_CLASSES))
    for m, known in enumerate(expertise):
        unknown = sorted(set(range(NUM_CLASSES)) - known)
        for i, c in enumerate(y):
            if c in known:
                members[m, i] = 0.1 / 6
                members[m, i, c] = 0.9
            else:
                members[m, i, unknown] = 1 / len(unknown)
        members[m] = 0.85 * members[m] + 0.15 * rng.dirichlet(np.ones(NUM_CLASSES), n)
    return members, y


def test_stacking_beats_every_complementary_member():
    rng = np.random.default_rng(0)
    fit_members, fit_y = complementary_members(rng, 280)
    test_members, test_y = complementary_members(rng, 280)
    groups = np.arange(280) // 2
    model = Stacking().fit(fit_members, fit_y, groups)
    stacked = accuracy_score(test_y, model.predict(test_members))
    best_member = max(accuracy_score(test_y, m.argmax(axis=1)) for m in test_members)
    assert best_member < 0.75
    assert stacked > 0.95 and stacked > best_member + 0.2
    assert model.C_ in model.Cs and model.cv_["scheme"] == "StratifiedGroupKFold"
    assert model.cv_["n_splits"] == 5 and len(model.cv_["mean_scores"]) == len(model.Cs)
    # The chosen C has the best mean CV score (ties -> the first, smallest C).
    assert model.C_ == model.Cs[int(np.argmax(model.cv_["mean_scores"]))]


def test_class_missing_from_fit_labels_gets_the_members_mean_never_zero():
    # Issue 15: a class absent from the fit data was a constant-zero column (every vasc image
    # missed, silently). Now it gets the members' mean probability; the rest is learned.
    rng = np.random.default_rng(1)
    members, y = complementary_members(rng, 140)
    keep = y != CLASS_INDEX["vasc"]
    model = Stacking().fit(members[:, keep], y[keep], np.arange(keep.sum()))
    proba = model.predict_proba(members)
    assert proba.shape == (140, 7)
    vasc = proba[:, CLASS_INDEX["vasc"]]
    np.testing.assert_array_equal(vasc, members.mean(axis=0)[:, CLASS_INDEX["vasc"]])
    assert (vasc > 0).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert [int(c) for c in model.meta_classes_] == [0, 1, 2, 3, 4, 5]
    assert model.get_state()["unlearned_classes"] == ["vasc"]
    assert model.get_state()["class_lesions"]["vasc"] == 0


@pytest.mark.parametrize("class_weight", ["balanced", None])
def test_binary_labels_match_sklearns_logistic_regression(class_weight):
    rng = np.random.default_rng(2)
    members, y = complementary_members(rng, 100)
    keep = np.isin(y, [CLASS_INDEX["mel"], CLASS_INDEX["nv"]])
    members, y = members[:, keep], y[keep]
    # One fold -> no CV, default C=1.
    model = Stacking(Cs=(1.0,), n_splits=1, class_weight=class_weight).fit(members, y)
    assert model.cv_["scheme"] == "none" and model.C_ == 1.0
    assert model.coef_.shape == (2, 21) and (model.coef_[0] == 0).all()
    reference = LogisticRegression(C=1.0, max_iter=1000, class_weight=class_weight).fit(
        log_features(members, 1e-7), y)
    expected = reference.predict_proba(log_features(members, 1e-7))
    proba = model.predict_proba(members)
    # mel and nv share what the members' mean leaves for the five classes not in the fit.
    others = [k for k in range(NUM_CLASSES) if k not in (4, 5)]
    np.testing.assert_array_equal(proba[:, others], members.mean(axis=0)[:, others])
    learned = proba[:, [4, 5]]
    np.testing.assert_allclose(learned / learned.sum(axis=1, keepdims=True), expected, atol=1e-12)


def test_single_class_fit_labels_fall_back_to_the_members_mean():
    rng = np.random.default_rng(5)
    members = rng.dirichlet(np.ones(7), size=(2, 4))
    model = Stacking().fit(members, ["nv"] * 4)
    assert model.fallback_.startswith("nothing learned") and "nv 4 lesions" in model.fallback_
    np.testing.assert_array_equal(model.predict_proba(members), members.mean(axis=0))
    state = model.get_state()
    assert state["meta_classes"] == [] and state["unlearned_classes"] == list(CLASSES)
    rebuilt = Stacking().set_state(state)
    np.testing.assert_array_equal(rebuilt.predict_proba(members), members.mean(axis=0))


def test_grouped_folds_never_split_a_lesion():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 7, 200)
    groups = (np.arange(200) // 3).astype(str)
    folds, info = grouped_folds(y, groups, 5)
    assert info["scheme"] == "StratifiedGroupKFold" and len(folds) == 5
    for train, test in folds:
        assert not set(groups[train]) & set(groups[test])
    assert sorted(np.concatenate([t for _, t in folds]).tolist()) == list(range(200))


def test_grouped_folds_fall_back_for_rare_classes_and_few_lesions():
    # 4 lesions, one class each, 5 folds wanted -> k = 4 folds; every class has 2 images (< 4),
    # so stratification is impossible -> GroupKFold; each training part holds 3 classes.
    y = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    groups = np.array(["a", "a", "b", "b", "c", "c", "d", "d"])
    folds, info = grouped_folds(y, groups, 5)
    assert info["scheme"] == "GroupKFold" and info["n_splits"] == 4
    # A single lesion: no CV at all.
    folds, info = grouped_folds(y, np.array(["a"] * 8), 5)
    assert folds == [] and info["n_splits"] == 0 and "1 lesion" in info["reason"]
    # Two lesions of one class each: each training part holds one class -> every fold dropped.
    folds, info = grouped_folds(np.array([0, 1]), np.array(["a", "b"]), 5)
    assert folds == [] and info["dropped_folds"] == 2 and "single class" in info["reason"]


def test_stacking_without_usable_folds_uses_default_c():
    members = np.stack([np.eye(7)[[0, 1]] * 0.9 + 0.1 / 7, np.full((2, 7), 1 / 7)])
    members[0] /= members[0].sum(axis=1, keepdims=True)
    model = Stacking(default_C=0.5, min_class_lesions=1).fit(members, [0, 1], ["a", "b"])
    assert model.C_ == 0.5 and model.cv_["mean_scores"] is None
    assert model.predict(members).tolist() == [0, 1]
