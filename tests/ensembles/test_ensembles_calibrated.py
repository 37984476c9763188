"""Ensembles built from temperature-scaled members (--calibrated): the temperatures come from the
members' validation predictions only, are recorded in fit.json and metrics.json, rebuild the
saved predictions from fit.json, and survive a staleness refit."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from core.atomic import read_json
from core.calibration import training_prior
from core.entry_metrics import write_entry_metrics
from core.predictions import make_predictions, read_predictions, write_predictions
from core.rundir import RunDir
from core.temperature import apply_temperature, fit_temperature
from ensembles.build import build_ensembles, fit_ensembles
from ensembles.cli import fit_from_args
from ensembles.errors import EnsembleError
from ensembles.fitfile import (
    load_fit,
    member_temperatures,
    read_fit,
    recorded_calibration,
    scale_members,
)
from ensembles.members import load_members
from ensembles.stale import refit_stale

MEMBERS = ["inception_resnet_v2", "inception_v3", "xception"]
SKILLS = [3.0, 2.0, 1.5]  # logits with a large true-class bonus: over-confident members


def test_calibrated_fit_records_the_members_validation_temperatures(synthetic_run):
    root = synthetic_run(members=MEMBERS, skills=SKILLS, seed=1)
    results = fit_ensembles(root, ("soft_voting", "weighted_voting"), MEMBERS, calibrated=True)
    run = RunDir(root)
    val = load_members(run, MEMBERS).val
    prior = training_prior(root, val.label).vector
    for result in results:
        assert result.calibrated and result.record["calibrated"] is True
        temps = result.record["temperatures"]
        assert list(temps) == MEMBERS
        for i, member in enumerate(MEMBERS):
            fit = fit_temperature(val.y, val.probas[i], prior)
            assert temps[member]["value"] == pytest.approx(fit.value, rel=1e-9)
            assert temps[member]["fit_on"] == "val"
            assert temps[member]["val_log_loss_after"] <= temps[member]["val_log_loss_before"]
    # the same temperature as the member's own metrics.json
    for member in MEMBERS:
        recorded = write_entry_metrics(run.model_dir(member), n_resamples=20)["temperature"]
        assert recorded["value"] == pytest.approx(
            results[0].record["temperatures"][member]["value"], rel=1e-6)


def test_soft_voting_averages_the_scaled_members(synthetic_run):
    root = synthetic_run(members=MEMBERS, skills=SKILLS, seed=2)
    soft = fit_ensembles(root, ("soft_voting",), MEMBERS, calibrated=True)[0]
    plain = fit_ensembles(root, ("soft_voting",), MEMBERS)[0]
    test = load_members(RunDir(root), MEMBERS).test
    temps = [soft.record["temperatures"][m]["value"] for m in MEMBERS]
    expected = np.mean([apply_temperature(p, t) for p, t in zip(test.probas, temps, strict=True)],
                       axis=0)
    assert soft.test.proba == pytest.approx(expected, abs=1e-12)
    assert plain.test.proba == pytest.approx(test.probas.mean(axis=0), abs=1e-12)
    assert plain.record["calibrated"] is False and "temperatures" not in plain.record
    assert not np.allclose(soft.test.proba, plain.test.proba)


def test_fit_json_rebuilds_the_calibrated_predictions(synthetic_run):
    root = synthetic_run(members=MEMBERS, skills=SKILLS, seed=3)
    build_ensembles(root, ("all",), MEMBERS, n_resamples=20, calibrated=True)
    run = RunDir(root)
    raw = load_members(run, MEMBERS).test.probas  # the members' own, unscaled
    for name in ("soft_voting", "weighted_voting", "stacking"):
        folder = run.ensemble_dir(name)
        record = read_fit(folder / "fit.json")
        assert recorded_calibration(folder)
        saved = read_predictions(RunDir.predictions_file(folder, "test")).sorted_by_image().proba
        rebuilt = load_fit(folder / "fit.json").predict_proba(scale_members(record, raw))
        assert rebuilt == pytest.approx(saved, abs=1e-6)
        metrics = read_json(folder / "metrics.json")
        assert metrics["calibrated"] is True
        assert metrics["member_temperatures"] == {m: t["value"]
                                                  for m, t in record["temperatures"].items()}
        assert "temperature" in metrics  # the ensemble's own, fitted on its validation rows
    assert "temperature" not in read_json(run.ensemble_dir("hard_voting") / "metrics.json")


def test_member_temperatures_are_not_read_from_test(synthetic_run):
    root = synthetic_run(members=MEMBERS, skills=SKILLS, seed=4)
    before = fit_ensembles(root, ("soft_voting",), MEMBERS, calibrated=True)[0]
    rng = np.random.default_rng(0)
    for member in MEMBERS:  # new test probabilities for every member
        path = RunDir.predictions_file(RunDir(root).model_dir(member), "test")
        test = read_predictions(path)
        write_predictions(path, make_predictions(
            test.image_id, test.lesion_id, test.label,
            rng.dirichlet(np.ones(7), size=len(test.image_id))))
    after = fit_ensembles(root, ("soft_voting",), MEMBERS, calibrated=True)[0]
    assert after.record["temperatures"] == before.record["temperatures"]


@pytest.mark.parametrize("record, message", [
    ({"calibrated": True, "members": ["a", "b"]}, "a temperature for every member"),
    ({"calibrated": True, "members": ["a", "b"], "temperatures": {"a": {"value": 1.0}}},
     "a temperature for every member"),
    ({"calibrated": True, "members": ["a"], "temperatures": {"a": {"value": -2.0}}},
     "must be positive"),
])
def test_member_temperatures_rejects_bad_records(record, message):
    with pytest.raises(EnsembleError, match=message):
        member_temperatures(record)


def test_uncalibrated_records_scale_nothing():
    probas = np.full((2, 3, 7), 1 / 7)
    assert member_temperatures({"members": ["a", "b"]}) is None
    assert scale_members({"calibrated": False, "members": ["a", "b"]}, probas) is probas


def test_stale_calibrated_ensemble_is_refit_calibrated(synthetic_run):
    root = synthetic_run(members=MEMBERS, skills=SKILLS, seed=5)
    build_ensembles(root, ("soft_voting", "hard_voting"), MEMBERS, n_resamples=20,
                    calibrated=True)
    build_ensembles(root, ("weighted_voting",), MEMBERS, n_resamples=20)
    run = RunDir(root)
    path = RunDir.predictions_file(run.model_dir("xception"), "val")
    val = read_predictions(path)  # xception retrained: sharper validation predictions
    write_predictions(path, make_predictions(val.image_id, val.lesion_id, val.label,
                                             apply_temperature(val.proba, 0.5)))
    refits = {r.name: r for r in refit_stale(root)}
    assert set(refits) == {"soft_voting", "hard_voting", "weighted_voting"}
    assert refits["soft_voting"].calibrated and refits["hard_voting"].calibrated
    assert not refits["weighted_voting"].calibrated
    old = read_fit(run.ensemble_dir("soft_voting") / "fit.json")["temperatures"]["xception"]
    new = refits["soft_voting"].record["temperatures"]["xception"]
    assert new["value"] == pytest.approx(2 * old["value"], rel=1e-3)  # refitted on the new file


def test_cli_passes_calibrated(synthetic_run):
    root = synthetic_run(members=MEMBERS, skills=SKILLS, seed=6)
    args = argparse.Namespace(ensemble="soft_voting", members=list(MEMBERS), out=str(root),
                              calibrated=True, seed=0)
    _, fitted = fit_from_args(args)
    assert [r.calibrated for r in fitted[0].results] == [True]
    args.calibrated = False
    _, fitted = fit_from_args(args)
    assert not any(r.calibrated for r in fitted[0].results)
