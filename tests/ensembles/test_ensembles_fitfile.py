"""fit.json: plain JSON, and loading it reproduces the predictions bitwise."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.classes import CLASSES
from ensembles import ENSEMBLE_NAMES
from ensembles.errors import EnsembleError
from ensembles.fitfile import FIT_FORMAT, fit_record, load_fit, read_fit, write_fit
from ensembles.registry import make_estimator


def _members(seed=0, n=60):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 6, n)  # vasc never occurs: stacking keeps 6 meta classes
    logits = rng.normal(size=(3, n, 7))
    logits[:, np.arange(n), y] += np.array([0.5, 1.5, 2.5])[:, None]
    return np.exp(logits) / np.exp(logits).sum(axis=2, keepdims=True), y


FILES = {"a": {"val": {"path": "models/a/predictions_val.csv", "sha256": "1" * 64}},
         "b": {"val": {"path": "models/b/predictions_val.csv", "sha256": "2" * 64}},
         "c": {"val": {"path": "models/c/predictions_val.csv", "sha256": "3" * 64}}}


@pytest.mark.parametrize("name", ENSEMBLE_NAMES)
def test_round_trip_reproduces_predictions_exactly(tmp_path, name):
    members, y = _members()
    model = make_estimator(name).fit(members, y, np.arange(len(y)) // 2)
    record = fit_record(model, members=["a", "b", "c"], fit_split="val", fit_size=len(y),
                        fit_lesions=30, val_in_sample=True, member_files=FILES)
    write_fit(tmp_path / "fit.json", record)
    loaded = load_fit(tmp_path / "fit.json")
    assert type(loaded) is type(model)
    fresh, _ = _members(seed=1, n=25)
    assert np.array_equal(loaded.predict_proba(fresh), model.predict_proba(fresh))
    assert np.array_equal(loaded.predict(fresh), model.predict(fresh))
    text = json.loads((tmp_path / "fit.json").read_text())
    assert text["format"] == FIT_FORMAT and text["ensemble"] == name
    assert text["members"] == ["a", "b", "c"] and text["classes"] == list(CLASSES)
    assert text["fit_split"] == "val" and text["fit_size"] == 60 and text["val_in_sample"] is True
    assert len(text["members_sha256"]) == 64


def test_fit_json_holds_weights_and_meta_model(tmp_path):
    members, y = _members()
    weighted = make_estimator("weighted_voting").fit(members, y)
    state = fit_record(weighted, members=["a", "b", "c"], fit_split="val", fit_size=60,
                       fit_lesions=60, val_in_sample=True, member_files=FILES)["state"]
    assert state["weights"] == weighted.weights_.tolist() and sum(state["weights"]) == pytest.approx(1)
    assert state["objective"] == "class-balanced log loss"
    assert state["fit_log_loss"] == weighted.fit_log_loss_
    stacking = make_estimator("stacking").fit(members, y, np.arange(60) // 2)
    state = fit_record(stacking, members=["a", "b", "c"], fit_split="val", fit_size=60,
                       fit_lesions=30, val_in_sample=True, member_files=FILES)["state"]
    assert np.array(state["coef"]).shape == (6, 21) and len(state["intercept"]) == 6
    assert state["meta_classes"] == list(CLASSES[:6])
    assert state["C"] == stacking.C_ and state["clip"] == 1e-7
    assert state["cv"]["scoring"] == "neg_class_balanced_log_loss"
    assert state["class_weight"] == "balanced" and state["objective"] == "class-balanced log loss"


def test_member_hash_changes_with_any_member_file():
    members, y = _members()
    model = make_estimator("soft_voting").fit(members, y)
    kwargs = dict(members=["a", "b", "c"], fit_split="none", fit_size=0, fit_lesions=0,
                  val_in_sample=False)
    first = fit_record(model, member_files=FILES, **kwargs)["members_sha256"]
    changed = json.loads(json.dumps(FILES))
    changed["c"]["val"]["sha256"] = "4" * 64
    assert fit_record(model, member_files=changed, **kwargs)["members_sha256"] != first


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "not valid JSON"),
        ('{"format": "pickle"}', "not a dermbench-ensemble-fit/1 file"),
        (json.dumps({"format": FIT_FORMAT, "ensemble": "majority"}), "unknown ensemble 'majority'"),
        (json.dumps({"format": FIT_FORMAT, "ensemble": "soft_voting", "classes": ["nv", "mel"]}),
         "not the canonical"),
        (json.dumps({"format": FIT_FORMAT, "ensemble": "weighted_voting", "classes": list(CLASSES),
                     "params": {}, "state": {"n_members": 2, "n_fit_samples": 3,
                                             "weights": [1.0], "fit_log_loss": 0.1}}),
         "expected 2 non-negative weights"),
        (json.dumps({"format": FIT_FORMAT, "ensemble": "stacking", "classes": list(CLASSES),
                     "params": {"bogus": 1}, "state": {}}), "malformed params or state"),
    ],
)
def test_bad_fit_files_are_refused(tmp_path, content, message):
    path = tmp_path / "fit.json"
    path.write_text(content)
    with pytest.raises(EnsembleError, match=message):
        load_fit(path)


def test_missing_fit_file(tmp_path):
    with pytest.raises(EnsembleError, match="fit file not found"):
        read_fit(tmp_path / "nope.json")
