"""One prior convention: weighted voting and stacking fit class-balanced objectives; hard voting
is flagged as having no probabilities."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import log_loss
from sklearn.utils.class_weight import compute_sample_weight

from core.classes import CLASS_INDEX, CLASSES, NUM_CLASSES
from ensembles.build import build_ensembles
from ensembles.errors import EnsembleError
from ensembles.fitfile import fit_record, load_fit, write_fit
from ensembles.stacking import Stacking, _expanded_log_loss_scorer
from ensembles.voting import WeightedVoting

# HAM10000's class mix (akiec, bcc, bkl, df, mel, nv, vasc counts out of 10,015).
HAM_PRIOR = np.array([327, 514, 1099, 115, 1113, 6705, 142]) / 10015


def p(**probs: float) -> list[float]:
    """A 7-class probability row from class-name keywords (others 0)."""
    row = [0.0] * len(CLASSES)
    for name, value in probs.items():
        row[CLASS_INDEX[name]] = value
    return row


# Two members, three images: two akiec images alike (A .9, B .3 on akiec) and one bcc image
# (A .1, B .6 on bcc). With w the weight of A, the mixture gives the true class
#   akiec: .3 + .6 w      bcc: .6 - .5 w.
# Balanced row weights (n / (n_classes * n_class)): akiec 3 / (2 * 2) = .75, bcc 3 / (2 * 1) = 1.5,
# summing to 3, so the class-balanced log loss is
#   L(w) = -(2 * .75 log(.3 + .6 w) + 1.5 log(.6 - .5 w)) / 3 = -1/2 [log(.3 + .6 w) + log(.6 - .5 w)]
#   dL/dw = 0 <=> .6 (.6 - .5 w) = .5 (.3 + .6 w) <=> w = .21 / .6 = .35.
# The plain log loss -1/3 [2 log(.3 + .6 w) + log(.6 - .5 w)] has its minimum at
#   1.2 (.6 - .5 w) = .5 (.3 + .6 w) <=> w = .57 / .9 = 19/30: the akiec majority pulls it to A.
# One image per lesion and a single bcc lesion: min_class_lesions=1 lets these hand computations
# fit (the default, two lesions per learned class, is tested in test_ensembles_integrity.py).
A = [p(akiec=0.9, bcc=0.1), p(akiec=0.9, bcc=0.1), p(akiec=0.9, bcc=0.1)]
B = [p(akiec=0.3, bcc=0.7), p(akiec=0.3, bcc=0.7), p(akiec=0.4, bcc=0.6)]
Y = ["akiec", "akiec", "bcc"]


def test_weighted_voting_minimises_the_class_balanced_log_loss():
    model = WeightedVoting(min_class_lesions=1).fit([A, B], Y)
    np.testing.assert_allclose(model.weights_, [0.35, 0.65], atol=1e-5)
    expected = -0.5 * (np.log(0.3 + 0.6 * 0.35) + np.log(0.6 - 0.5 * 0.35))
    assert model.fit_log_loss_ == pytest.approx(expected, abs=1e-9)
    assert model.objective_ == "class-balanced log loss"
    # The same number as scikit-learn's log loss with "balanced" sample weights.
    y = np.array([CLASS_INDEX[c] for c in Y])
    sklearn_loss = log_loss(y, model.predict_proba([A, B]), labels=range(NUM_CLASSES),
                            sample_weight=compute_sample_weight("balanced", y))
    assert model.fit_log_loss_ == pytest.approx(sklearn_loss, abs=1e-9)


def test_unweighted_objective_has_another_optimum():
    plain = WeightedVoting(class_weight=None, min_class_lesions=1).fit([A, B], Y)
    np.testing.assert_allclose(plain.weights_, [19 / 30, 11 / 30], atol=1e-5)
    w = 19 / 30
    expected = -(2 * np.log(0.3 + 0.6 * w) + np.log(0.6 - 0.5 * w)) / 3
    assert plain.fit_log_loss_ == pytest.approx(expected, abs=1e-9)
    assert plain.objective_ == "log loss"
    balanced = WeightedVoting(min_class_lesions=1).fit([A, B], Y)
    assert abs(balanced.weights_[0] - plain.weights_[0]) > 0.25


def test_stacking_cv_score_is_the_class_balanced_log_loss():
    # A fold model that saw classes akiec and bcc, scored on three held-out rows of akiec, akiec
    # and bcc with probabilities .8, .5 and .25 of the truth. Balanced weights .75, .75, 1.5:
    #   -(.75 log .8 + .75 log .5 + 1.5 log .25) / 3;   plain: -(log .8 + log .5 + log .25) / 3.
    class Fixed:
        classes_ = np.array([0, 1])

        def predict_proba(self, X):
            return np.array([[0.8, 0.2], [0.5, 0.5], [0.75, 0.25]])

    X, y, labels = np.zeros((3, 1)), np.array([0, 0, 1]), np.array([0, 1])
    balanced = _expanded_log_loss_scorer(labels, balanced=True)(Fixed(), X, y)
    plain = _expanded_log_loss_scorer(labels, balanced=False)(Fixed(), X, y)
    assert balanced == pytest.approx((0.75 * np.log(0.8) + 0.75 * np.log(0.5)
                                      + 1.5 * np.log(0.25)) / 3, abs=1e-12)
    assert plain == pytest.approx((np.log(0.8) + np.log(0.5) + np.log(0.25)) / 3, abs=1e-12)


def _skewed_members(rng: np.random.Generator, n: int):
    """Three weak, noisy members on HAM10000's class mix (nv about two thirds of the images)."""
    y = rng.choice(NUM_CLASSES, size=n, p=HAM_PRIOR)
    logits = rng.normal(0, 1, (3, n, NUM_CLASSES))
    logits[:, np.arange(n), y] += np.array([0.3, 0.5, 0.7])[:, None]
    members = np.exp(logits)
    return members / members.sum(axis=2, keepdims=True), y


def test_balanced_stacking_targets_the_uniform_prior():
    # A logistic regression's unpenalised intercepts make its mean fitted probability equal the
    # class shares of its (weighted) fit rows. Unweighted, that is the class mix: nv near two
    # thirds. Class-balanced, the class-weighted mean is uniform, the prior of the CNNs' loss,
    # and the plain mean moves far towards uniform.
    rng = np.random.default_rng(0)
    members, y = _skewed_members(rng, 600)
    groups = np.arange(600) // 2
    weights = compute_sample_weight("balanced", y)
    uniform = np.full(NUM_CLASSES, 1 / NUM_CLASSES)
    shares = np.bincount(y, minlength=NUM_CLASSES) / len(y)
    fits = {cw: Stacking(Cs=(0.1, 1.0), class_weight=cw).fit(members, y, groups)
            for cw in ("balanced", None)}
    plain = fits[None].predict_proba(members)
    balanced = fits["balanced"].predict_proba(members)
    np.testing.assert_allclose(plain.mean(axis=0), shares, atol=2e-3)
    np.testing.assert_allclose(weights @ balanced / weights.sum(), uniform, atol=2e-3)
    assert (np.abs(balanced.mean(axis=0) - uniform).sum()
            < np.abs(plain.mean(axis=0) - uniform).sum() / 2)
    assert fits["balanced"].cv_["scoring"] == "neg_class_balanced_log_loss"
    assert fits[None].cv_["scoring"] == "neg_log_loss"
    assert fits["balanced"].objective_ == "class-balanced log loss"


@pytest.mark.parametrize("estimator", [WeightedVoting(class_weight="auto"),
                                       Stacking(class_weight={0: 1.0})])
def test_unknown_class_weight_is_refused(estimator):
    with pytest.raises(EnsembleError, match="'class_weight' parameter of .* must be 'balanced' or "
                                            "None. Got .* instead"):
        estimator.fit([A, B], Y)


def test_fit_files_before_the_convention_still_load(tmp_path):
    # A fit.json written before the class-balanced objectives: no "objective" in the state.
    model = WeightedVoting(class_weight=None, min_class_lesions=1).fit([A, B], Y)
    record = fit_record(model, members=["a", "b"], fit_split="val", fit_size=3, fit_lesions=3,
                        val_in_sample=True, member_files={})
    del record["state"]["objective"], record["params"]["class_weight"]
    write_fit(tmp_path / "fit.json", record)
    loaded = load_fit(tmp_path / "fit.json")
    assert loaded.objective_ == "log loss"
    assert np.array_equal(loaded.predict_proba([A, B]), model.predict_proba([A, B]))


def test_build_records_objectives_and_hard_votings_missing_probabilities(synthetic_run):
    run = synthetic_run(members=("inception_v3", "xception", "paper_cnn"), n_val=80, n_test=40)
    build_ensembles(run, "all", n_resamples=20)
    fits = {name: json.loads((run / "ensembles" / name / "fit.json").read_text())
            for name in ("weighted_voting", "stacking")}
    assert fits["weighted_voting"]["state"]["objective"] == "class-balanced log loss"
    assert fits["weighted_voting"]["params"]["class_weight"] == "balanced"
    assert fits["stacking"]["state"]["objective"] == "class-balanced log loss"
    assert fits["stacking"]["state"]["class_weight"] == "balanced"
    assert fits["stacking"]["state"]["cv"]["scoring"] == "neg_class_balanced_log_loss"
    metrics = {name: json.loads((run / "ensembles" / name / "metrics.json").read_text())
               for name in ("hard_voting", "soft_voting", "stacking")}
    assert metrics["hard_voting"]["probabilities"] is False
    assert metrics["soft_voting"].get("probabilities", True) is True
    assert metrics["stacking"]["objective"] == "class-balanced log loss"
