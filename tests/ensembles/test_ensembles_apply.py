"""A saved ensemble applied to new member probabilities equals what --ensemble computed."""

from __future__ import annotations

import numpy as np
import pytest

from core.classes import CLASSES
from ensembles.apply import apply_saved_fit, saved_members
from ensembles.errors import EnsembleError
from ensembles.fitfile import fit_record, write_fit
from ensembles.registry import make_estimator

MEMBERS = ["inception_v3", "xception", "resnext101"]


def _probas(rng, n):
    raw = rng.gamma(0.6, size=(len(MEMBERS), n, len(CLASSES)))
    return raw / raw.sum(axis=2, keepdims=True)


@pytest.fixture
def data():
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(len(CLASSES)), 12)
    groups = np.array([f"L{i // 2}" for i in range(len(y))])
    fit = _probas(rng, len(y))
    fit[:, np.arange(len(y)), y] += 0.8  # members that know something, so stacking learns
    fit /= fit.sum(axis=2, keepdims=True)
    return fit, y, groups, _probas(rng, 40)


@pytest.mark.parametrize("name", ["soft_voting", "hard_voting", "weighted_voting", "stacking"])
def test_apply_saved_fit_is_the_fitted_estimator_bit_for_bit(tmp_path, data, name):
    fit, y, groups, new = data
    estimator = make_estimator(name).fit(fit, y, groups)
    path = tmp_path / "fit.json"
    write_fit(path, fit_record(estimator, members=MEMBERS, fit_split="val", fit_size=len(y),
                               fit_lesions=len(set(groups)), val_in_sample=True, member_files={}))
    # Given as a mapping in another order: the fit's member order is what counts.
    output = apply_saved_fit(path, {m: new[i] for i, m in reversed(list(enumerate(MEMBERS)))})
    np.testing.assert_array_equal(output.proba, estimator.predict_proba(new))
    np.testing.assert_array_equal(output.prediction, estimator.predict(new))
    assert output.probabilities == (name != "hard_voting")
    assert saved_members(path) == MEMBERS


def test_hard_voting_keeps_its_tie_rule(tmp_path):
    estimator = make_estimator("hard_voting").fit(
        np.full((2, 2, 7), 1 / 7), ["akiec", "bcc"])
    path = tmp_path / "fit.json"
    write_fit(path, fit_record(estimator, members=["a", "b"], fit_split="none", fit_size=0,
                               fit_lesions=0, val_in_sample=False, member_files={}))
    a = np.array([[0.6, 0.4, 0, 0, 0, 0, 0]])
    b = np.array([[0.0, 0.45, 0.55, 0, 0, 0, 0]])  # one vote each for akiec and bkl
    output = apply_saved_fit(path, {"a": a, "b": b})
    assert output.proba[0, 0] == output.proba[0, 2] == 0.5
    assert output.prediction.tolist() == [0]  # tie broken by the mean probability: akiec 0.3


@pytest.mark.parametrize("members, match", [
    ({"a": np.full((1, 7), 1 / 7)}, "no probabilities for member"),
    ({"a": np.full((1, 7), 1 / 7), "b": np.full((1, 7), 0.5)}, "sum to"),
])
def test_bad_member_probabilities_are_refused(tmp_path, members, match):
    estimator = make_estimator("soft_voting").fit(np.full((2, 1, 7), 1 / 7), ["akiec"])
    path = tmp_path / "fit.json"
    write_fit(path, fit_record(estimator, members=["a", "b"], fit_split="none", fit_size=0,
                               fit_lesions=0, val_in_sample=False, member_files={}))
    with pytest.raises(EnsembleError, match=match):
        apply_saved_fit(path, members)


def test_a_missing_fit_is_refused(tmp_path):
    with pytest.raises(EnsembleError, match="fit file not found"):
        apply_saved_fit(tmp_path / "fit.json", {})


@pytest.mark.parametrize("name", ["soft_voting", "stacking"])
def test_a_calibrated_ensemble_scales_its_members_first(tmp_path, data, name):
    """--calibrated: the estimator was fit on, and takes, temperature-scaled member probabilities."""
    from core.temperature import apply_temperature

    fit, y, groups, new = data
    temperatures = [0.7, 1.0, 2.5]
    scaled = lambda p: np.stack([apply_temperature(q, t)  # noqa: E731
                                 for q, t in zip(p, temperatures, strict=True)])
    estimator = make_estimator(name).fit(scaled(fit), y, groups)
    path = tmp_path / "fit.json"
    write_fit(path, fit_record(estimator, members=MEMBERS, fit_split="val", fit_size=len(y),
                               fit_lesions=len(set(groups)), val_in_sample=True, member_files={},
                               temperatures={m: {"value": t} for m, t in
                                             zip(MEMBERS, temperatures, strict=True)}))
    output = apply_saved_fit(path, dict(zip(MEMBERS, new, strict=True)))
    np.testing.assert_array_equal(output.proba, estimator.predict_proba(scaled(new)))
    assert not np.allclose(output.proba, estimator.predict_proba(new))
