"""Checked provenance and leakage (core.provenance, core.integrity) and ISIC exports that the
official scorer reads as the report does (core.predictions.isic_scores)."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from core.atomic import atomic_write_json
from core.classes import CLASSES
from core.integrity import LeakageError, SplitIds, check_no_leakage, declared_split
from core.predictions import export_isic, isic_scores, make_predictions, write_predictions
from core.provenance import ensemble_freshness, file_sha256, record_of_test_set, sha256_of_test_set
from core.rundir import RunDir


def _ids(split, images, lesions, source=None):
    return SplitIds(split, source or f"{split}.csv", np.array(images), np.array(lesions))


def test_test_set_identity_ignores_row_order_and_sees_ids_and_labels():
    base = sha256_of_test_set(["b", "a"], ["nv", "mel"])
    assert base == sha256_of_test_set(["a", "b"], ["mel", "nv"])
    assert base != sha256_of_test_set(["a", "c"], ["mel", "nv"])
    assert base != sha256_of_test_set(["a", "b"], ["mel", "bkl"])
    assert base != sha256_of_test_set(["a"], ["mel"])


def test_a_lesion_in_validation_and_test_is_refused_naming_it(tmp_path):
    val = _ids("val", ["v1", "v2", "v3"], ["L1", "L2", "L9"], "models/a/predictions_val.csv")
    test = _ids("test", ["t1", "t2"], ["L9", "L5"], "models/a/predictions_test.csv")
    with pytest.raises(LeakageError, match=r"models/a/predictions_val\.csv \(val\) and "
                                           r"models/a/predictions_test\.csv \(test\) share 1 "
                                           r"lesion\(s\) \(L9\)"):
        check_no_leakage(tmp_path, test, [val])
    # declared an image-level split (the source paper's protocol): lesions may be shared
    atomic_write_json(RunDir(tmp_path).run_json, {"config": {"split": "image"}})
    assert declared_split(tmp_path) == "image"
    check_no_leakage(tmp_path, test, [val])
    # ... but an image never
    same_image = _ids("val", ["t1"], ["L7"])
    with pytest.raises(LeakageError, match=r"share 1 image\(s\) \(t1\); an image must never"):
        check_no_leakage(tmp_path, test, [same_image])


def test_dataset_json_declares_the_split_too(tmp_path):
    atomic_write_json(RunDir(tmp_path).dataset_json, {"split": {"type": "image"}})
    assert declared_split(tmp_path) == "image"
    assert declared_split(tmp_path / "nowhere") is None


def test_training_lesions_of_splits_csv_are_compared_with_test(tmp_path):
    pd.DataFrame({"image_id": ["a", "b", "c", "d", "e", "f", "g"],
                  "lesion_id": [f"L{i}" for i in range(6)] + ["L0"],
                  "dx": ["nv"] * 7, "split": ["train"] * 5 + ["test", "test"]}).to_csv(
        RunDir(tmp_path).splits_csv, index=False)
    test = _ids("test", ["f", "g"], ["L5", "L0"])
    with pytest.raises(LeakageError, match=r"splits\.csv \(train\) and test\.csv \(test\) share "
                                           r"1 lesion\(s\) \(L0\)"):
        check_no_leakage(tmp_path, test, [])
    check_no_leakage(tmp_path, test, [], with_train=False)
    check_no_leakage(tmp_path, _ids("test", ["f"], ["L5"]), [])


def test_many_shared_lesions_are_counted_and_the_first_few_named(tmp_path):
    lesions = [f"L{i:02d}" for i in range(12)]
    with pytest.raises(LeakageError, match=r"share 12 lesion\(s\) \(L00, L01, L02, L03, L04 "
                                           r"\(\+7 more\)\)"):
        check_no_leakage(tmp_path, _ids("test", [f"t{i}" for i in range(12)], lesions),
                         [_ids("val", [f"v{i}" for i in range(12)], lesions)])


def _member_files(run: RunDir, members, splits=("val", "test")):
    files = {}
    for member in members:
        files[member] = {}
        for split in splits:
            path = run.predictions_file(run.model_dir(member), split)
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                path.write_text(f"{member} {split}\n")
            files[member][split] = {"path": path.relative_to(run.root).as_posix(),
                                    "sha256": file_sha256(path)}
    return files


def test_an_ensemble_is_stale_when_a_member_file_changes_vanishes_or_appears(tmp_path):
    run = RunDir(tmp_path)
    members = ["a", "b"]
    atomic_write_json(run.ensemble_dir("soft_voting") / "fit.json",
                      {"members": members, "member_files": _member_files(run, members)})
    fresh = ensemble_freshness(run.ensemble_dir("soft_voting"))
    assert fresh.verifiable and not fresh.stale
    path = run.predictions_file(run.model_dir("b"), "test")
    path.write_text("retrained\n")
    stale = ensemble_freshness(run.ensemble_dir("soft_voting"))
    assert stale.stale and stale.changes[0].member == "b" and stale.changes[0].problem == "changed"
    new_hash = hashlib.sha256(b"retrained\n").hexdigest()
    assert stale.describe() == (
        "ensembles/soft_voting is stale: b's models/b/predictions_test.csv changed since the fit "
        f"(fit.json records sha256 {stale.changes[0].recorded[:12]}, the file has "
        f"{new_hash[:12]})")
    path.unlink()
    assert "b's models/b/predictions_test.csv is gone" in \
        ensemble_freshness(run.ensemble_dir("soft_voting")).describe()
    path.write_text("b test\n")  # back as it was: current again
    assert not ensemble_freshness(run.ensemble_dir("soft_voting")).stale
    for member in members:  # every member gets out-of-fold predictions the fit did not read
        run.predictions_file(run.model_dir(member), "oof").write_text("oof\n")
    assert "now has models/a/predictions_oof.csv" in \
        ensemble_freshness(run.ensemble_dir("soft_voting")).describe()


def test_a_fit_json_without_member_files_cannot_be_checked(tmp_path):
    run = RunDir(tmp_path)
    atomic_write_json(run.ensemble_dir("stacking") / "fit.json", {"members": ["a", "b"]})
    result = ensemble_freshness(run.ensemble_dir("stacking"))
    assert not result.verifiable and not result.stale


def _predictions(proba, prediction=None):
    n = len(proba)
    labels = np.array(CLASSES)[np.arange(n) % 7]
    return make_predictions([f"I{i}" for i in range(n)], [f"L{i}" for i in range(n)], labels,
                            np.asarray(proba, dtype=float), prediction)


def _scorer_decision(scores):
    """The official scorer's label: the unique maximum, a tie is 'undecided' (-1)."""
    best = scores.max(axis=1, keepdims=True)
    ties = (scores == best).sum(axis=1) > 1
    return np.where(ties, -1, scores.argmax(axis=1))


def test_hard_voting_ties_are_exported_as_its_tie_broken_prediction():
    # Vote shares 2/5, 2/5, 1/5 tie; hard voting broke the tie to bkl (index 2).
    shares = np.zeros((2, 7))
    shares[0, [0, 2, 5]] = [0.4, 0.4, 0.2]
    shares[1, [5]] = [1.0]
    preds = _predictions(shares, ["bkl", "nv"])
    assert _scorer_decision(shares).tolist() == [-1, 5]  # the scorer: undecided, i.e. wrong
    scores = isic_scores(preds, probabilities=False)
    assert _scorer_decision(scores).tolist() == [2, 5] == preds.y_pred.tolist()
    np.testing.assert_allclose(scores.sum(axis=1), 1.0)
    assert ((scores >= 0) & (scores <= 1)).all()


def test_probability_ties_are_broken_without_reordering_any_column():
    uniform = np.full((3, 7), 1 / 7)
    sharp = np.array([[0.1, 0.5, 0.1, 0.1, 0.1, 0.05, 0.05]])
    tied = np.array([[0.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.0]])
    proba = np.vstack([uniform, sharp, tied])
    preds = _predictions(proba)
    scores = isic_scores(preds)
    assert _scorer_decision(scores).tolist() == preds.y_pred.tolist() == [0, 0, 0, 1, 4]
    for k in range(7):  # every column ranks the images as before: its AUC is unchanged
        assert (np.argsort(scores[:, k], kind="stable") ==
                np.argsort(proba[:, k], kind="stable")).all()
    assert np.abs(scores - proba).max() < 1e-11
    plain = _predictions(np.vstack([sharp, sharp[:, ::-1]]))
    assert isic_scores(plain) is plain.proba  # nothing to break: exported as they are


def test_isic_export_of_hard_voting_carries_its_prediction(tmp_path):
    shares = np.zeros((1, 7))
    shares[0, [0, 2]] = [0.5, 0.5]
    export_isic(tmp_path / "x.csv", _predictions(shares, ["bkl"]), probabilities=False)
    frame = pd.read_csv(tmp_path / "x.csv")
    assert frame.columns[1:].tolist() == ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
    assert frame.iloc[0, 1:].astype(float).idxmax() == "BKL"
    assert record_of_test_set(_predictions(shares, ["bkl"]))["images"] == 1


def test_write_then_export_round_trip(tmp_path):
    preds = _predictions(np.full((7, 7), 1 / 7))
    write_predictions(tmp_path / "p.csv", preds)
    export_isic(tmp_path / "e.csv", preds)
    frame = pd.read_csv(tmp_path / "e.csv")
    decided = _scorer_decision(frame[["AKIEC", "BCC", "BKL", "DF", "MEL", "NV", "VASC"]]
                               .to_numpy())
    assert decided.tolist() == [0] * 7  # the report's argmax (ties to the lowest index)
