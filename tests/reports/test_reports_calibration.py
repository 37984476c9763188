"""The prior-shift correction against hand values, the zero-frequency rule, and where the
training class frequencies come from."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from core.atomic import atomic_write_csv, atomic_write_json
from core.calibration import (
    UNIFORM,
    CalibrationPrior,
    prior_from_counts,
    prior_shift,
    training_prior,
)
from core.classes import CLASSES
from core.entry_metrics import write_entry_metrics
from core.metrics import compute_metrics
from core.predictions import make_predictions, write_predictions
from core.rundir import RunDir


def test_prior_shift_hand_values():
    prior = np.array([0.1, 0.3, 0.1, 0.1, 0.1, 0.1, 0.2])
    proba = np.array([
        [0.5, 0.5, 0, 0, 0, 0, 0],  # p * pi = (.05, .15) -> / .2 -> (.25, .75)
        [1 / 7] * 7,                 # uniform -> the prior itself
        [0, 0, 0, 0, 0.2, 0.4, 0.4],  # (.02, .04, .08) / .14 -> (1/7, 2/7, 4/7)
    ])
    shifted = prior_shift(proba, prior)
    assert shifted[0] == pytest.approx([0.25, 0.75, 0, 0, 0, 0, 0])
    assert shifted[1] == pytest.approx(prior)
    assert shifted[2] == pytest.approx([0, 0, 0, 0, 1 / 7, 2 / 7, 4 / 7])
    # a prior that does not sum to 1 is renormalised; a uniform one changes nothing
    assert prior_shift(proba, prior * 10) == pytest.approx(shifted)
    assert prior_shift(proba, np.full(7, 0.3)) == pytest.approx(proba)


@pytest.mark.parametrize("prior, message", [
    (np.array([0.5, 0.5, 0, 0, 0, 0, 0]), "positive"),
    (np.array([0.2] * 5), "7 positive"),
    (np.array([np.nan] + [0.1] * 6), "finite"),
])
def test_prior_shift_rejects_bad_priors(prior, message):
    with pytest.raises(ValueError, match=message):
        prior_shift(np.full((2, 7), 1 / 7), prior)


def test_zero_training_frequency_is_smoothed_not_nan():
    # counts 0 2 3 0 1 4 0 (10 images): a zero -> add one to every class: 1 3 4 1 2 5 1 / 17
    prior = prior_from_counts([0, 2, 3, 0, 1, 4, 0], "splits.csv")
    assert prior.smoothed
    assert prior.vector == pytest.approx(np.array([1, 3, 4, 1, 2, 5, 1]) / 17)
    # every class present: the frequencies as they are
    plain = prior_from_counts([1, 2, 3, 1, 1, 1, 1], "splits.csv")
    assert not plain.smoothed and plain.vector == pytest.approx(np.array([1, 2, 3, 1, 1, 1, 1]) / 10)
    assert prior_from_counts([0] * 7, "x").vector == pytest.approx(np.full(7, 1 / 7))
    # a test image of the class training never saw, predicted with all mass on it: finite
    proba = np.zeros((2, 7))
    proba[0, CLASSES.index("akiec")] = 1.0
    proba[1, CLASSES.index("nv")] = 1.0
    preds = make_predictions(["a", "b"], ["a", "b"], ["akiec", "nv"], proba)
    metrics = compute_metrics(preds, prior=prior.vector)
    for name in ("log_loss", "brier", "ece"):
        assert math.isfinite(metrics[name]), name


def test_prior_json_round_trip():
    prior = prior_from_counts([0, 2, 3, 0, 1, 4, 0], "dataset.json")
    data = prior.to_json()
    assert data["source"] == "dataset.json" and data["smoothing"] == "add-one"
    assert list(data["prior"]) == list(CLASSES)
    assert CalibrationPrior.from_json(data) == prior
    assert CalibrationPrior.from_json({"prior": {"akiec": 1}}) is None
    assert CalibrationPrior.from_json(None) is None


def _splits(run: RunDir, train_dx: list[str]) -> None:
    rows = [{"image_id": f"t{i}", "lesion_id": f"L{i}", "dx": dx, "split": "train"}
            for i, dx in enumerate(train_dx)]
    rows += [{"image_id": "v0", "lesion_id": "V0", "dx": "mel", "split": "val"},
             {"image_id": "x0", "lesion_id": "X0", "dx": "vasc", "split": "test"}]
    atomic_write_csv(run.splits_csv, pd.DataFrame(rows))


def test_training_prior_sources_in_order(tmp_path):
    run = RunDir(tmp_path)
    val = np.array(["nv", "nv", "mel", "bkl"])
    # nothing recorded: validation labels (all classes smoothed: 2 3 ... ), else uniform
    from_val = training_prior(run.root, val)
    assert from_val.source == "validation labels"
    assert from_val.vector == pytest.approx(np.array([1, 1, 2, 1, 2, 3, 1]) / 11)
    assert training_prior(run.root) == UNIFORM and training_prior(None) == UNIFORM
    # dataset.json counts["train"]
    atomic_write_json(run.dataset_json, {"counts": {"train": dict(zip(CLASSES, [1, 1, 1, 1, 2, 3, 1],
                                                                          strict=True))}})
    from_card = training_prior(run.root, val)
    assert from_card.source == "dataset.json"
    assert from_card.vector == pytest.approx(np.array([1, 1, 1, 1, 2, 3, 1]) / 10)
    # splits.csv's training rows win (the val and test rows do not count)
    _splits(run, list(CLASSES) + ["nv"] * 3)
    from_splits = training_prior(run.root, val)
    assert from_splits.source == "splits.csv" and not from_splits.smoothed
    assert from_splits.vector == pytest.approx(np.array([1, 1, 1, 1, 1, 4, 1]) / 10)


def test_unreadable_sources_fall_through(tmp_path):
    run = RunDir(tmp_path)
    atomic_write_csv(run.splits_csv, pd.DataFrame({"image_id": ["a"], "label": ["nv"]}))
    run.dataset_json.write_text("{not json", encoding="utf-8")
    assert training_prior(run.root, np.array(["nv"])).source == "validation labels"


def test_metrics_json_records_the_prior_and_uses_it(tmp_path):
    run = RunDir(tmp_path)
    _splits(run, list(CLASSES) + ["nv"] * 3)
    rng = np.random.default_rng(0)
    entry = run.model_dir("xception")
    for split in ("val", "test"):
        n = 28
        labels = [CLASSES[i % 7] for i in range(n)]
        write_predictions(RunDir.predictions_file(entry, split), make_predictions(
            [f"{split}{i}" for i in range(n)], [f"{split}{i}" for i in range(n)], labels,
            rng.dirichlet(np.ones(7), size=n)))
    written = write_entry_metrics(entry, n_resamples=20)
    assert written["calibration_prior"]["source"] == "splits.csv"
    assert written["calibration_prior"]["prior"]["nv"] == pytest.approx(0.4)
    assert written["probabilities"] is True and "probabilities_note" not in written
    from core.predictions import read_predictions

    test = read_predictions(RunDir.predictions_file(entry, "test"))
    prior = np.array([1, 1, 1, 1, 1, 4, 1]) / 10
    expected = compute_metrics(test, prior=prior)
    assert written["test"]["log_loss"] == pytest.approx(expected["log_loss"])
    assert written["test"]["log_loss"] != pytest.approx(compute_metrics(test)["log_loss"])
