"""Soft, hard and weighted voting on tiny cases computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from core.classes import CLASS_INDEX, CLASSES
from ensembles import ENSEMBLE_NAMES
from ensembles.errors import EnsembleError
from ensembles.registry import ESTIMATORS, make_estimator, resolve_names
from ensembles.voting import HardVoting, SoftVoting, WeightedVoting


def p(**probs: float) -> list[float]:
    """A 7-class probability row from class-name keywords (others 0)."""
    row = [0.0] * len(CLASSES)
    for name, value in probs.items():
        row[CLASS_INDEX[name]] = value
    return row


def test_registry_matches_published_names():
    assert tuple(ESTIMATORS) == ENSEMBLE_NAMES
    assert resolve_names("all") == list(ENSEMBLE_NAMES)
    assert resolve_names(["stacking", "soft_voting", "stacking"]) == ["soft_voting", "stacking"]
    with pytest.raises(EnsembleError, match="unknown ensemble 'majority'.*soft_voting, hard_voting"):
        make_estimator("majority")


def test_soft_voting_is_the_plain_mean():
    # member A: akiec .5, bcc .2, bkl .1, df .1, mel .05, nv .05
    # member B: akiec .1, bcc .6, bkl .1, df .1, mel .05, nv .05
    # mean:     akiec .3, bcc .4, bkl .1, df .1, mel .05, nv .05  -> bcc
    a = [p(akiec=0.5, bcc=0.2, bkl=0.1, df=0.1, mel=0.05, nv=0.05)]
    b = [p(akiec=0.1, bcc=0.6, bkl=0.1, df=0.1, mel=0.05, nv=0.05)]
    model = SoftVoting().fit([a, b], ["bcc"])
    np.testing.assert_allclose(model.predict_proba([a, b]),
                               [p(akiec=0.3, bcc=0.4, bkl=0.1, df=0.1, mel=0.05, nv=0.05)])
    assert model.predict([a, b]).tolist() == [CLASS_INDEX["bcc"]]
    assert model.n_members_ == 2 and model.classes_.tolist() == list(range(7))


def test_hard_voting_majority_and_vote_shares():
    # votes: mel, mel, nv -> mel wins 2:1; shares mel 2/3, nv 1/3. The mean favours nv
    # ((.4+.4+1)/3 = .6 against mel (.6+.6+0)/3 = .4), so the vote count, not the mean, decides.
    members = [[p(mel=0.6, nv=0.4)], [p(mel=0.6, nv=0.4)], [p(nv=1.0)]]
    model = HardVoting().fit(members, ["mel"])
    np.testing.assert_allclose(model.predict_proba(members), [p(mel=2 / 3, nv=1 / 3)])
    assert model.predict(members).tolist() == [CLASS_INDEX["mel"]]


def test_hard_voting_tie_broken_by_mean_probability():
    # votes: bcc (A: bcc .6, nv .4) and nv (B: bcc .1, nv .9) -> 1:1 tie.
    # mean bcc = (.6+.1)/2 = .35, mean nv = (.4+.9)/2 = .65 -> nv, although bcc has the lower index.
    members = [[p(bcc=0.6, nv=0.4)], [p(bcc=0.1, nv=0.9)]]
    model = HardVoting().fit(members, ["nv"])
    np.testing.assert_allclose(model.predict_proba(members), [p(bcc=0.5, nv=0.5)])
    assert model.predict(members).tolist() == [CLASS_INDEX["nv"]]


def test_hard_voting_tie_on_votes_and_mean_goes_to_lowest_class_index():
    # votes: bkl (A: bcc .25, bkl .75) and bcc (B: bcc .75, bkl .25) -> 1:1 tie;
    # means: bcc (.25+.75)/2 = .5 = bkl (.75+.25)/2 exactly -> lowest index: bcc (1) before bkl (2).
    # Member order reversed gives the same answer.
    a, b = [p(bcc=0.25, bkl=0.75)], [p(bcc=0.75, bkl=0.25)]
    for members in ([a, b], [b, a]):
        model = HardVoting().fit(members, ["bkl"])
        assert model.predict(members).tolist() == [CLASS_INDEX["bcc"]]


def test_hard_voting_member_with_its_own_tie_votes_lowest_index():
    # A: akiec .5, vasc .5 -> votes akiec (lowest index); with B and C voting vasc, akiec gets a
    # share of 1/3. With A and a bcc voter only: akiec and bcc tie 1:1, mean akiec .25 < bcc .5
    # -> bcc.
    a = [p(akiec=0.5, vasc=0.5)]
    three = [a, [p(vasc=1.0)], [p(vasc=1.0)]]
    assert HardVoting().fit(three, ["vasc"]).predict_proba(three)[0, CLASS_INDEX["akiec"]] == 1 / 3
    two = [a, [p(bcc=1.0)]]
    assert HardVoting().fit(two, ["bcc"]).predict(two).tolist() == [CLASS_INDEX["bcc"]]


def test_weighted_voting_hand_computed_optimum():
    # Two members, two images; only the true class's probability enters the log loss.
    # image 1 (akiec): A .9, B .3     image 2 (bcc): A .1, B .6
    # L(w) = -1/2 [log(.3 + .6 w) + log(.6 - .5 w)]  (w = weight of A)
    # dL/dw = 0 <=> .6 / (.3 + .6 w) = .5 / (.6 - .5 w) <=> .36 - .3 w = .15 + .3 w <=> w = .35
    # -> weights (.35, .65); image 1 probs = .35 (.9, .1) + .65 (.3, .7) = (.51, .49).
    a = [p(akiec=0.9, bcc=0.1), p(akiec=0.9, bcc=0.1)]
    b = [p(akiec=0.3, bcc=0.7), p(akiec=0.4, bcc=0.6)]
    model = WeightedVoting(min_class_lesions=1).fit([a, b], ["akiec", "bcc"])  # one image each
    np.testing.assert_allclose(model.weights_, [0.35, 0.65], atol=1e-5)
    assert model.weights_.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(model.predict_proba([a, b])[0], p(akiec=0.51, bcc=0.49), atol=1e-5)
    expected_loss = -0.5 * (np.log(0.3 + 0.6 * 0.35) + np.log(0.6 - 0.5 * 0.35))
    assert model.fit_log_loss_ == pytest.approx(expected_loss, abs=1e-9)


def test_weighted_voting_puts_nearly_all_weight_on_a_perfect_member():
    rng = np.random.default_rng(1)
    n = 300
    y = rng.integers(0, 7, n)
    perfect = np.full((n, 7), 0.1 / 6)
    perfect[np.arange(n), y] = 0.9
    noisy = [rng.dirichlet(np.ones(7), n) for _ in range(3)]
    members = np.stack([noisy[0], perfect, noisy[1], noisy[2]])
    model = WeightedVoting().fit(members, y)
    assert model.weights_[1] > 0.95
    assert (model.weights_ >= 0).all() and model.weights_.sum() == pytest.approx(1.0)
    assert (model.predict(members) == y).all()


def test_weighted_voting_is_deterministic():
    rng = np.random.default_rng(2)
    members = rng.dirichlet(np.ones(7), (3, 50))
    y = rng.integers(0, 7, 50)
    first = WeightedVoting().fit(members, y).weights_
    assert np.array_equal(first, WeightedVoting().fit(members, y).weights_)


@pytest.mark.parametrize("name", ENSEMBLE_NAMES)
def test_shuffled_rows_or_members_keep_each_images_prediction(name):
    rng = np.random.default_rng(3)
    n = 80
    y = rng.integers(0, 7, n)
    logits = rng.normal(size=(3, n, 7))
    logits[:, np.arange(n), y] += np.array([1.0, 2.0, 3.0])[:, None]
    members = np.exp(logits) / np.exp(logits).sum(axis=2, keepdims=True)
    groups = np.arange(n) // 2
    # A two-value C grid keeps stacking quick; the CLI test covers the default grid.
    params = {"Cs": (0.1, 10.0)} if name == "stacking" else {}
    base = make_estimator(name, **params).fit(members, y, groups)
    reference = base.predict(members)
    rows = rng.permutation(n)
    shuffled = make_estimator(name, **params).fit(members[:, rows], y[rows], groups[rows])
    assert np.array_equal(shuffled.predict(members[:, rows]), reference[rows])
    order = [2, 0, 1]
    swapped = make_estimator(name, **params).fit(members[order], y, groups)
    assert np.array_equal(swapped.predict(members[order]), reference)
    np.testing.assert_allclose(swapped.predict_proba(members[order]), base.predict_proba(members),
                               atol=1e-4)


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([[p(nv=1.0)]], "at least 2 members, got 1"),
        ([[p(nv=1.0)], [p(nv=1.0), p(nv=1.0)]], "different shapes"),
        ([[p(nv=0.5)], [p(nv=1.0)]], "sum to 0.500000"),
        ([[p(nv=1.1, mel=-0.1)], [p(nv=1.0)]], "negative"),
        ([[p(nv=float("nan"))], [p(nv=1.0)]], "finite"),
        (np.ones((2, 1, 6)) / 6, r"shape \(n_members, n_samples, 7\)"),
    ],
)
def test_invalid_member_probabilities_are_refused(members, message):
    with pytest.raises(EnsembleError, match=message):
        SoftVoting().fit(members, ["nv"])


def test_labels_predict_member_count_and_unfitted_checks():
    two = [[p(nv=1.0)], [p(nv=1.0)]]
    with pytest.raises(EnsembleError, match="'melanoma'"):
        SoftVoting().fit(two, ["melanoma"])
    with pytest.raises(EnsembleError, match="1-D array of 1"):
        SoftVoting().fit(two, ["nv", "nv"])
    with pytest.raises(EnsembleError, match="not fitted"):
        SoftVoting().predict(two)
    model = SoftVoting().fit(two, [CLASS_INDEX["nv"]])
    with pytest.raises(EnsembleError, match="fit on 2 members but got 3"):
        model.predict([*two, [p(nv=1.0)]])
