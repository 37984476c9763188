"""Choosing members in a run directory and aligning their prediction files."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest

from core.errors import PredictionFileError, RunDirError
from core.integrity import LeakageError
from core.rundir import RunDir
from ensembles.errors import EnsembleError
from ensembles.members import (
    load_members,
    read_aligned_split,
    resolve_members,
    survey_models,
)


def _csv(run, member, split="val"):
    return run / "models" / member / f"predictions_{split}.csv"


STUDY_BACKBONES = ["inception_v3", "resnext101", "inception_resnet_v2", "xception", "nasnet_large"]


def test_default_members_are_the_backbones_present_sorted(synthetic_run):
    # No metrics.json (hand-made prediction folders): the zoo registry's kinds decide.
    run = synthetic_run(members=[*STUDY_BACKBONES, "paper_cnn", "inception_resnet_v2+svm"],
                        n_val=6, n_test=4)
    assert resolve_members(RunDir(run)) == sorted(STUDY_BACKBONES)
    # Baselines join only when named; the order given does not matter.
    named = resolve_members(RunDir(run), ["xception", "paper_cnn", "inception_resnet_v2+svm"])
    assert named == ["inception_resnet_v2+svm", "paper_cnn", "xception"]


def test_failed_entries_and_other_backbones_by_kind(synthetic_run):
    run = synthetic_run(members=["inception_v3", "xception", "nasnet_large", "efficientnet"],
                        n_val=6, n_test=4)
    (run / "models" / "nasnet_large" / "metrics.json").write_text(json.dumps({"status": "failed"}))
    (run / "models" / "efficientnet" / "metrics.json").write_text(json.dumps({"kind": "backbone"}))
    assert resolve_members(RunDir(run)) == ["efficientnet", "inception_v3", "xception"]
    with pytest.raises(EnsembleError, match="'nasnet_large' cannot be used: its metrics.json says "
                                            "status 'failed'.*usable members: efficientnet"):
        resolve_members(RunDir(run), ["nasnet_large", "xception"])
    assert survey_models(RunDir(run))["nasnet_large"].usable is False


def test_the_recorded_kind_wins_over_the_registry(synthetic_run):
    run = synthetic_run(members=["inception_v3", "xception", "paper_cnn", "my_net"], n_val=6,
                        n_test=4)
    (run / "models" / "xception" / "metrics.json").write_text(json.dumps({"kind": "baseline"}))
    (run / "models" / "paper_cnn" / "metrics.json").write_text(json.dumps({"kind": "backbone"}))
    (run / "models" / "my_net" / "metrics.json").write_text(json.dumps({"status": "ok"}))
    # my_net records no kind and is not registered: not a default member.
    assert resolve_members(RunDir(run)) == ["inception_v3", "paper_cnn"]
    with pytest.raises(EnsembleError, match="entries of kind backbone .*only 1 usable one"):
        (run / "models" / "paper_cnn" / "metrics.json").write_text(json.dumps({"kind": "baseline"}))
        resolve_members(RunDir(run))


def test_member_refusals(synthetic_run, tmp_path):
    run = synthetic_run(members=["inception_v3", "xception", "paper_cnn"], n_val=6, n_test=4)
    with pytest.raises(EnsembleError, match="unknown member 'vgg16'.*usable members: inception_v3, "
                                            "paper_cnn, xception"):
        resolve_members(RunDir(run), ["vgg16", "xception"])
    with pytest.raises(EnsembleError, match="'xception' is named twice"):
        resolve_members(RunDir(run), ["xception", "inception_v3", "xception"])
    with pytest.raises(EnsembleError, match="at least two members, got 1 \\(xception\\)"):
        resolve_members(RunDir(run), ["xception"])
    _csv(run, "inception_v3").unlink()
    with pytest.raises(EnsembleError, match="only 1 usable one\\(s\\) found \\(xception\\)"):
        resolve_members(RunDir(run))
    with pytest.raises(EnsembleError, match="has no predictions_val.csv"):
        resolve_members(RunDir(run), ["inception_v3", "xception"])
    with pytest.raises(RunDirError, match="no models folder"):
        resolve_members(RunDir(tmp_path / "empty"))


def test_rows_are_aligned_by_image_id_whatever_the_file_order(synthetic_run):
    run = synthetic_run(members=["inception_v3", "xception"], n_val=10, n_test=4)
    before = read_aligned_split(RunDir(run), ["inception_v3", "xception"], "val")
    frame = pd.read_csv(_csv(run, "xception"), dtype=str)
    frame.iloc[::-1].to_csv(_csv(run, "xception"), index=False)
    after = read_aligned_split(RunDir(run), ["inception_v3", "xception"], "val")
    assert np.array_equal(after.probas, before.probas)
    assert list(after.image_id) == sorted(after.image_id)
    assert after.files == ("models/inception_v3/predictions_val.csv",
                           "models/xception/predictions_val.csv")
    assert after.sha256[1] != before.sha256[1]


def test_different_image_sets_name_both_files_and_ids(synthetic_run):
    run = synthetic_run(members=["inception_v3", "xception"], n_val=10, n_test=4)
    frame = pd.read_csv(_csv(run, "xception"), dtype=str)
    frame.loc[0, "image_id"] = "ISIC_9999999"
    frame.to_csv(_csv(run, "xception"), index=False)
    with pytest.raises(PredictionFileError) as info:
        load_members(RunDir(run), ["inception_v3", "xception"])
    message = str(info.value)
    assert "inception_v3/predictions_val.csv and" in message and "xception/predictions_val.csv" in message
    assert "1 only in the first (ISIC_0000000)" in message
    assert "1 only in the second (ISIC_9999999)" in message


@pytest.mark.parametrize("column", ["label", "lesion_id"])
def test_disagreeing_labels_or_lesions_name_both_files_and_the_image(synthetic_run, column):
    run = synthetic_run(members=["inception_v3", "xception"], n_val=10, n_test=4)
    frame = pd.read_csv(_csv(run, "xception", "test"), dtype=str)
    old = frame.loc[2, column]
    new = "vasc" if old != "vasc" else "nv"
    frame.loc[2, column] = new if column == "label" else "HAM_other"
    frame.to_csv(_csv(run, "xception", "test"), index=False)
    with pytest.raises(PredictionFileError, match=(
        f"inception_v3/predictions_test.csv and .*xception/predictions_test.csv disagree on the "
        f"{column} of image 'ISIC_0000012'"
    )):
        load_members(RunDir(run), ["inception_v3", "xception"])


def test_validation_and_test_images_must_be_disjoint(synthetic_run):
    run = synthetic_run(members=["inception_v3", "xception"], n_val=6, n_test=6)
    for member in ("inception_v3", "xception"):
        frame = pd.read_csv(_csv(run, member, "test"), dtype=str)
        frame.loc[0, "image_id"] = "ISIC_0000001"  # a validation image
        frame.to_csv(_csv(run, member, "test"), index=False)
    with pytest.raises(LeakageError, match="share 1 image\\(s\\) \\(ISIC_0000001\\); an image "
                                           "must never be in both splits"):
        load_members(RunDir(run), ["inception_v3", "xception"])


def test_out_of_fold_predictions_are_used_only_when_every_member_has_them(synthetic_run, caplog):
    run = synthetic_run(members=["inception_v3", "xception"], n_val=6, n_test=6, n_oof=20)
    data = load_members(RunDir(run), ["inception_v3", "xception"])
    assert data.oof is not None and len(data.oof) == 20 and data.split("oof") is data.oof
    _csv(run, "xception", "oof").unlink()
    with caplog.at_level(logging.WARNING, logger="ensembles.members"):
        data = load_members(RunDir(run), ["inception_v3", "xception"])
    assert data.oof is None and "only 1 of the members have predictions_oof.csv" in caplog.text


def test_identical_members_are_flagged(synthetic_run, caplog):
    run = synthetic_run(members=["inception_v3", "xception"], n_val=6, n_test=6)
    for split in ("val", "test"):
        _csv(run, "xception", split).write_bytes(_csv(run, "inception_v3", split).read_bytes())
    with caplog.at_level(logging.WARNING, logger="ensembles.members"):
        load_members(RunDir(run), ["inception_v3", "xception"])
    assert "identical test predictions; is one model counted twice?" in caplog.text


def test_a_prediction_column_that_is_not_the_argmax_is_flagged(synthetic_run, caplog):
    run = synthetic_run(members=["inception_v3", "xception"], n_val=6, n_test=6)
    frame = pd.read_csv(_csv(run, "xception"), dtype=str)
    probas = frame[["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]].astype(float)
    frame["prediction"] = probas.idxmin(axis=1)  # never the argmax
    frame.to_csv(_csv(run, "xception"), index=False)
    with caplog.at_level(logging.WARNING, logger="ensembles.members"):
        load_members(RunDir(run), ["inception_v3", "xception"])
    assert "prediction column differs from the argmax in 6 row(s)" in caplog.text
