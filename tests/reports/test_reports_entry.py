"""metrics.json conventions: hard voting has no probabilities, and the staleness checks
(`entry_metrics_current`, `entry_metrics_match`) follow the current conventions."""

from __future__ import annotations

import os

import numpy as np
import pytest

from core.atomic import atomic_write_json, read_json
from core.classes import CLASSES
from core.entry_metrics import (
    PROBABILITIES_NOTE,
    entry_metrics_current,
    entry_metrics_match,
    has_probabilities,
    write_entry_metrics,
)
from core.metrics import PROBABILITY_METRICS
from core.predictions import make_predictions, write_predictions
from core.rundir import RunDir


def _write(entry, seed=0, votes=False):
    rng = np.random.default_rng(seed)
    for split in ("val", "test"):
        n = 35
        labels = [CLASSES[i % 7] for i in range(n)]
        proba = rng.dirichlet(np.ones(7), size=n)
        prediction = None
        if votes:  # vote shares of five members, and the voted class
            proba = np.round(proba * 5) / 5
            proba[proba.sum(axis=1) == 0, 5] = 1.0
            proba /= proba.sum(axis=1, keepdims=True)
            prediction = np.array(CLASSES)[proba.argmax(axis=1)]
        write_predictions(RunDir.predictions_file(entry, split), make_predictions(
            [f"{split}{i}" for i in range(n)], [f"{split}L{i // 2}" for i in range(n)], labels,
            proba, prediction))


def _assert_no_probability_metrics(metrics):
    assert metrics["probabilities"] is False
    assert metrics["probabilities_note"] == PROBABILITIES_NOTE
    for split in ("val", "test"):
        for name in PROBABILITY_METRICS:
            assert metrics[split][name] is None, (split, name)  # NaN written as null
        assert metrics[split]["accuracy"] is not None
    assert metrics["test"]["macro_auc_ci"] == [None, None]
    assert metrics["test"]["accuracy_ci"][0] is not None


def test_hard_voting_by_fit_json(tmp_path):
    run = RunDir(tmp_path)
    entry = run.ensemble_dir("hard_voting")
    _write(entry, votes=True)
    atomic_write_json(entry / "fit.json", {"ensemble": "hard_voting", "members": ["a", "b"]})
    write_entry_metrics(entry, {"kind": "ensemble"}, n_resamples=20)
    _assert_no_probability_metrics(read_json(entry / "metrics.json"))
    # an explicit true in extra does not turn vote shares into probabilities
    assert has_probabilities(entry, {"probabilities": True}) is False


def test_no_probabilities_by_extra_and_kept_on_rewrite(tmp_path):
    run = RunDir(tmp_path)
    entry = run.ensemble_dir("majority")
    _write(entry, votes=True)
    write_entry_metrics(entry, {"kind": "ensemble", "probabilities": False}, n_resamples=20)
    _assert_no_probability_metrics(read_json(entry / "metrics.json"))
    write_entry_metrics(entry, n_resamples=20)  # the report's rewrite passes no extra
    _assert_no_probability_metrics(read_json(entry / "metrics.json"))


def test_an_entry_with_probabilities_records_true(tmp_path):
    entry = RunDir(tmp_path).model_dir("xception")
    _write(entry)
    written = write_entry_metrics(entry, n_resamples=20)
    assert written["probabilities"] is True and "probabilities_note" not in written
    assert isinstance(written["test"]["macro_auc"], float)
    assert written["calibration_prior"]["source"] == "validation labels"


def test_staleness_checks_follow_the_conventions(tmp_path):
    run = RunDir(tmp_path)
    entry = run.model_dir("xception")
    _write(entry)
    write_entry_metrics(entry, n_resamples=20)
    path = entry / "metrics.json"
    assert entry_metrics_current(entry) and entry_metrics_match(entry)
    # splits.csv (the prior's source) newer than metrics.json: stale, and the prior differs
    (run.root / "splits.csv").write_text(
        "image_id,lesion_id,dx,split\n" + "".join(f"t{i},L{i},{c},train\n"
                                                  for i, c in enumerate(CLASSES * 2 + ("nv",))))
    stamp = (run.root / "splits.csv").stat().st_mtime_ns
    os.utime(path, ns=(stamp - 10**9, stamp - 10**9))
    assert not entry_metrics_current(entry)
    assert not entry_metrics_match(entry)
    write_entry_metrics(entry, n_resamples=20)
    assert entry_metrics_current(entry) and entry_metrics_match(entry)
    assert read_json(path)["calibration_prior"]["source"] == "splits.csv"
    # a metrics.json of the old conventions (no calibration_prior) is stale and does not match
    old = read_json(path)
    del old["calibration_prior"]
    atomic_write_json(path, old)
    assert not entry_metrics_current(entry) and not entry_metrics_match(entry)
    # a changed value does not match
    write_entry_metrics(entry, n_resamples=20)
    changed = read_json(path)
    changed["test"]["log_loss"] += 0.01
    atomic_write_json(path, changed)
    assert entry_metrics_current(entry) and not entry_metrics_match(entry)


def test_hard_voting_fit_json_makes_old_metrics_stale(tmp_path):
    entry = RunDir(tmp_path).ensemble_dir("hard_voting")
    _write(entry, votes=True)
    write_entry_metrics(entry, n_resamples=20)  # no fit.json yet: scored as probabilities
    assert read_json(entry / "metrics.json")["probabilities"] is True
    stamp = (entry / "metrics.json").stat().st_mtime_ns
    atomic_write_json(entry / "fit.json", {"ensemble": "hard_voting"})
    os.utime(entry / "fit.json", ns=(stamp, stamp))  # even with the same mtime
    assert not entry_metrics_current(entry)
    assert not entry_metrics_match(entry)


@pytest.mark.parametrize("flag", [True, False])
def test_failed_entry_is_current_with_its_metrics(tmp_path, flag):
    entry = RunDir(tmp_path).model_dir("nasnet_large")
    write_entry_metrics(entry, {"status": "failed", "error": "boom", "probabilities": flag})
    assert entry_metrics_current(entry)
