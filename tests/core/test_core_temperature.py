"""Temperature scaling (core.temperature): hand-computed temperatures, the guarantee that it never
raises the validation log loss, that only validation is read, and its record in metrics.json."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.atomic import atomic_write_json
from core.calibration import training_prior
from core.classes import CLASSES
from core.entry_metrics import (
    entry_metrics_current,
    entry_metrics_match,
    read_entry_metrics,
    write_entry_metrics,
)
from core.metrics import compute_metrics
from core.predictions import make_predictions, read_predictions, write_predictions
from core.rundir import RunDir
from core.temperature import (
    T_BOUNDS,
    TEMPERATURE_KEY,
    apply_temperature,
    entry_temperature,
    fit_temperature,
    scaled_calibration_metrics,
    temperature_log_loss,
)


def _two_class_set(confidence: float, hit_rate: float, n: int = 100):
    """n images all predicted [confidence, 1 - confidence, 0, ...]; a share `hit_rate` is class 0.

    The scaled probability of class 0 is sigmoid(logit(confidence) / T); the log loss is lowest
    where it equals `hit_rate`, so T = logit(confidence) / logit(hit_rate).
    """
    proba = np.zeros((n, 7))
    proba[:, 0], proba[:, 1] = confidence, 1 - confidence
    y = np.ones(n, dtype=np.int64)
    y[: round(hit_rate * n)] = 0
    return y, proba


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_apply_temperature_hand_values():
    proba = np.array([[0.5, 0.25, 0.25, 0, 0, 0, 0], [0.1, 0.2, 0.3, 0.4, 0, 0, 0]])
    # T = 2: square roots renormalised: (.7071, .5, .5) / 1.7071
    halved = apply_temperature(proba, 2.0)
    assert halved[0] == pytest.approx([0.41421356, 0.29289322, 0.29289322, 0, 0, 0, 0])
    # T = 0.5: squares renormalised: (.01, .04, .09, .16) / .3
    assert apply_temperature(proba, 0.5)[1] == pytest.approx(np.array([1, 4, 9, 16, 0, 0, 0]) / 30)
    assert np.array_equal(apply_temperature(proba, 1.0), proba)
    for t in (0.05, 0.3, 1.7, 20.0):
        scaled = apply_temperature(proba, t)
        assert scaled.sum(axis=1) == pytest.approx([1.0, 1.0])
        assert np.all(scaled[proba == 0] == 0)  # zeros stay zeros
        assert np.array_equal(scaled.argmax(axis=1), proba.argmax(axis=1))


@pytest.mark.parametrize("temperature", [0.0, -1.0, math.nan, math.inf])
def test_apply_temperature_rejects_bad_temperatures(temperature):
    with pytest.raises(ValueError, match="positive finite"):
        apply_temperature(np.full((1, 7), 1 / 7), temperature)


@pytest.mark.parametrize("y, proba, message", [
    (np.zeros(2, dtype=int), np.full((2, 6), 1 / 6), r"\(n, 7\)"),
    (np.zeros(0, dtype=int), np.zeros((0, 7)), "n >= 1"),
    (np.zeros(2, dtype=int), np.full((2, 7), np.nan), "finite"),
    (np.array([0, 7]), np.full((2, 7), 1 / 7), "class indices"),
    (np.array([0.0, 1.0]), np.full((2, 7), 1 / 7), "class indices"),
    (np.zeros(3, dtype=int), np.full((2, 7), 1 / 7), "class indices"),
])
def test_fit_temperature_rejects_bad_inputs(y, proba, message):
    with pytest.raises(ValueError, match=message):
        fit_temperature(y, proba)


def test_over_confident_set_gets_t_above_one():
    # predicted 0.9 but right 75 % of the time: T = ln 9 / ln 3 = 2
    y, proba = _two_class_set(0.9, 0.75)
    fit = fit_temperature(y, proba)
    assert fit.value == pytest.approx(_logit(0.9) / _logit(0.75), rel=1e-4)
    assert fit.value == pytest.approx(2.0, rel=1e-4)
    assert fit.log_loss_after < fit.log_loss_before
    # at the optimum the scaled confidence equals the hit rate
    assert apply_temperature(proba, fit.value)[0, 0] == pytest.approx(0.75, abs=1e-5)


def test_under_confident_set_gets_t_below_one():
    # predicted 0.75 but right 90 % of the time: T = ln 3 / ln 9 = 0.5
    y, proba = _two_class_set(0.75, 0.9)
    fit = fit_temperature(y, proba)
    assert fit.value == pytest.approx(0.5, rel=1e-4)
    assert fit.log_loss_after < fit.log_loss_before


def test_calibrated_by_construction_set_keeps_t_one():
    # predicted 0.8 and right 80 % of the time: the optimum is T = 1 exactly
    y, proba = _two_class_set(0.8, 0.8)
    fit = fit_temperature(y, proba)
    assert fit.value == pytest.approx(1.0, abs=1e-5)
    assert fit.log_loss_after == pytest.approx(fit.log_loss_before, abs=1e-12)
    # labels drawn from the predicted probabilities themselves: T close to 1
    rng = np.random.default_rng(3)
    proba = rng.dirichlet(np.full(7, 0.7), size=20000)
    y = (proba.cumsum(axis=1) < rng.random((20000, 1))).sum(axis=1)
    assert fit_temperature(y, proba).value == pytest.approx(1.0, abs=0.05)


def test_softmax_of_scaled_logits_is_recovered():
    # labels drawn from softmax(z); predictions softmax(k z): the fitted T is close to k
    rng = np.random.default_rng(0)
    logits = 2.0 * rng.normal(size=(4000, 7))
    truth = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = (truth.cumsum(axis=1) < rng.random((4000, 1))).sum(axis=1)
    for k in (0.5, 2.0, 3.0):
        assert fit_temperature(y, apply_temperature(truth, 1 / k)).value == pytest.approx(
            k, rel=0.08)


def test_nearly_uniform_but_always_right_stops_at_the_lower_bound():
    # sharper is always better: the search stops at T = 0.05 and says so
    proba = np.full((20, 7), 0.85 / 6)
    proba[:, 2] = 0.15
    fit = fit_temperature(np.full(20, 2), proba)
    assert fit.value == pytest.approx(T_BOUNDS[0], rel=1e-3) and fit.at_bound
    assert fit.to_json()["at_bound"] is True and fit.to_json()["bounds"] == list(T_BOUNDS)
    assert not fit_temperature(*_two_class_set(0.9, 0.75)).at_bound
    narrow = fit_temperature(np.full(20, 2), proba, bounds=(0.5, 2.0))
    assert narrow.value == pytest.approx(0.5, rel=1e-3) and narrow.at_bound
    assert narrow.to_json()["bounds"] == [0.5, 2.0]


@pytest.mark.parametrize("bounds", [(0.0, 2.0), (1.0, 2.0), (0.5, 1.0), (0.5, math.inf)])
def test_fit_temperature_rejects_bad_bounds(bounds):
    with pytest.raises(ValueError, match="bounds"):
        fit_temperature(np.zeros(2, dtype=int), np.full((2, 7), 1 / 7), bounds=bounds)


def test_t_one_is_kept_when_the_optimum_is_not_strictly_better():
    # every image predicted uniformly: no temperature changes anything
    y = np.arange(14) % 7
    fit = fit_temperature(y, np.full((14, 7), 1 / 7))
    assert fit.value == 1.0 and fit.log_loss_after == fit.log_loss_before == pytest.approx(
        math.log(7))


def test_validation_log_loss_never_rises_over_random_sets():
    """Property: on many random prediction sets, T is in bounds and after <= before."""
    rng = np.random.default_rng(12345)
    kept_one = 0
    for _ in range(150):
        n = int(rng.integers(1, 300))
        proba = rng.dirichlet(np.full(7, rng.uniform(0.05, 3.0)), size=n)
        if rng.random() < 0.3:  # some exact zeros, as saved CSVs can hold
            proba[rng.random((n, 7)) < 0.2] = 0.0
            proba[proba.sum(axis=1) == 0, 0] = 1.0
            proba /= proba.sum(axis=1, keepdims=True)
        y = rng.integers(0, 7, size=n)
        prior = rng.dirichlet(np.ones(7)) + 1e-3 if rng.random() < 0.5 else None
        fit = fit_temperature(y, proba, prior)
        assert T_BOUNDS[0] <= fit.value <= T_BOUNDS[1]
        assert fit.log_loss_after <= fit.log_loss_before
        assert fit.log_loss_before == temperature_log_loss(y, proba, 1.0, prior)
        assert fit.log_loss_after == temperature_log_loss(y, proba, fit.value, prior)
        kept_one += fit.value == 1.0
    assert kept_one < 150  # the search did move T on most sets


def test_objective_is_the_reported_log_loss_after_the_prior_shift():
    rng = np.random.default_rng(1)
    proba = rng.dirichlet(np.ones(7), size=50)
    labels = np.asarray(CLASSES)[rng.integers(0, 7, size=50)]
    prior = np.array([0.03, 0.05, 0.11, 0.01, 0.11, 0.67, 0.02])
    ids = [f"I{i}" for i in range(50)]
    for t in (0.4, 1.0, 2.5):
        preds = make_predictions(ids, ids, labels, apply_temperature(proba, t))
        metrics = compute_metrics(preds, prior=prior)
        assert temperature_log_loss(preds.y_true, proba, t, prior) == pytest.approx(
            metrics["log_loss"], rel=1e-12)
        scaled = scaled_calibration_metrics(preds.y_true, proba, t, prior)
        for name in ("log_loss", "brier", "ece"):
            assert scaled[name] == pytest.approx(metrics[name], rel=1e-12, abs=1e-15), name


def _write_entry(root, rng, n_val=80, n_test=60, name="net", sharp=3.0):
    entry = RunDir(root).model_dir(name)
    for split, n in (("val", n_val), ("test", n_test)):
        y = rng.integers(0, 7, size=n)
        logits = rng.normal(size=(n, 7))
        logits[np.arange(n), y] += 1.0
        proba = np.exp(sharp * logits)
        proba /= proba.sum(axis=1, keepdims=True)
        ids = [f"{split}{i}" for i in range(n)]
        write_predictions(RunDir.predictions_file(entry, split),
                          make_predictions(ids, ids, np.asarray(CLASSES)[y], proba))
    return entry


def test_metrics_json_records_the_temperature_fitted_on_validation(tmp_path):
    entry = _write_entry(tmp_path / "run", np.random.default_rng(4))
    record = write_entry_metrics(entry, n_resamples=20)
    temp = record[TEMPERATURE_KEY]
    assert temp["fit_on"] == "val" and temp["val_images"] == 80
    assert temp["value"] > 1  # sharp (over-confident) logits
    assert temp["val_log_loss_after"] < temp["val_log_loss_before"]
    assert temp["val_log_loss_before"] == pytest.approx(record["val"]["log_loss"], rel=1e-12)
    # the test calibration after scaling: compute_metrics on the scaled test predictions
    prior = training_prior(tmp_path / "run", read_predictions(
        RunDir.predictions_file(entry, "val")).label).vector
    test = read_predictions(RunDir.predictions_file(entry, "test"))
    scaled = make_predictions(test.image_id, test.lesion_id, test.label,
                              apply_temperature(test.proba, temp["value"]))
    expected = compute_metrics(scaled, prior=prior)
    for name in ("log_loss", "brier", "ece"):
        assert temp["test_after"][name] == pytest.approx(expected[name], rel=1e-12, abs=1e-15)
    assert entry_metrics_current(entry) and entry_metrics_match(entry)


def test_nothing_is_read_from_test(tmp_path):
    rng = np.random.default_rng(5)
    entry = _write_entry(tmp_path / "run", rng)
    first = write_entry_metrics(entry, n_resamples=20)[TEMPERATURE_KEY]
    # other test rows, other labels, other probabilities: the same temperature
    test = read_predictions(RunDir.predictions_file(entry, "test"))
    proba = rng.dirichlet(np.full(7, 0.2), size=len(test.image_id))
    labels = np.asarray(CLASSES)[rng.integers(0, 7, size=len(test.image_id))]
    write_predictions(RunDir.predictions_file(entry, "test"),
                      make_predictions(test.image_id, test.lesion_id, labels, proba))
    second = write_entry_metrics(entry, n_resamples=20)[TEMPERATURE_KEY]
    for key in ("value", "val_log_loss_before", "val_log_loss_after"):
        assert second[key] == first[key]
    assert second["test_after"] != first["test_after"]
    # directly: entry_temperature ignores the test split for the fit
    val = read_predictions(RunDir.predictions_file(entry, "val"))
    alone = entry_temperature({"val": val}, None)
    assert "test_after" not in alone
    assert alone["value"] == entry_temperature({"val": val, "test": test}, None)["value"]


def test_no_temperature_without_validation_or_probabilities(tmp_path):
    entry = _write_entry(tmp_path / "run", np.random.default_rng(6))
    assert TEMPERATURE_KEY in write_entry_metrics(entry, n_resamples=20)
    # hard voting: vote shares are no probabilities, the stale record goes
    record = write_entry_metrics(entry, extra={"probabilities": False}, n_resamples=20)
    assert TEMPERATURE_KEY not in record and TEMPERATURE_KEY not in read_entry_metrics(entry)
    # no validation predictions: nothing to fit on
    RunDir.predictions_file(entry, "val").unlink()
    record = write_entry_metrics(entry, extra={"probabilities": True}, n_resamples=20)
    assert TEMPERATURE_KEY not in record


def test_an_older_metrics_json_without_temperature_is_recomputed(tmp_path):
    entry = _write_entry(tmp_path / "run", np.random.default_rng(7))
    record = write_entry_metrics(entry, n_resamples=20)
    del record[TEMPERATURE_KEY]
    atomic_write_json(entry / "metrics.json", record)
    assert not entry_metrics_current(entry)
    assert not entry_metrics_match(entry)
