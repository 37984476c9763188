"""--ensemble compares before it uses (issue 15): stale ensembles refit or refused, no lesion in
two splits, every class covered, and an interrupted write that leaves the old set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import benchmark
from core.atomic import atomic_write_json
from core.predictions import make_predictions, read_predictions, write_predictions
from core.provenance import ensemble_freshness
from core.rundir import RunDir
from ensembles import ENSEMBLE_NAMES

MEMBERS = ("inception_v3", "resnext101", "xception")


@pytest.fixture(autouse=True)
def no_report_figures(monkeypatch) -> None:
    """--ensemble then rebuilds the report; the figures are the reports tests' business."""
    import reports.build

    real = reports.build.build_report
    monkeypatch.setattr(reports.build, "build_report",
                        lambda run_dir, **kwargs: real(run_dir, **kwargs, figures=False))


def _run(synthetic_run, **kwargs) -> Path:
    return synthetic_run(members=MEMBERS, n_val=140, n_test=140, **kwargs)


def _csv(run: Path, member: str, split: str) -> Path:
    return run / "models" / member / f"predictions_{split}.csv"


def _edit(run: Path, split: str, change) -> None:
    """Apply `change(frame)` to every member's predictions of `split` (they must agree)."""
    for member in MEMBERS:
        frame = pd.read_csv(_csv(run, member, split), dtype=str)
        change(frame).to_csv(_csv(run, member, split), index=False)


def _replace_member(run: Path, member: str, split: str = "test", seed: int = 0) -> None:
    preds = read_predictions(_csv(run, member, split))
    proba = np.random.default_rng(seed).dirichlet(np.ones(7), size=len(preds))
    write_predictions(_csv(run, member, split),
                      make_predictions(preds.image_id, preds.lesion_id, preds.label, proba))


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _main(*argv: str) -> int:
    return benchmark.main([*argv, "--bootstrap", "10"])


def test_other_stale_ensembles_are_refit_by_ensemble(synthetic_run, capsys):
    run = _run(synthetic_run)
    assert _main("--ensemble", "all", "--out", str(run)) == 0
    _replace_member(run, "xception")
    stale = [n for n in ENSEMBLE_NAMES if ensemble_freshness(run / "ensembles" / n).stale]
    assert stale == list(ENSEMBLE_NAMES)
    capsys.readouterr()
    assert _main("--ensemble", "soft_voting", "--out", str(run)) == 0
    out = capsys.readouterr().out
    assert "refit because their member files changed since their fit: hard_voting, " \
           "weighted_voting, stacking" in out
    for name in ENSEMBLE_NAMES:
        assert not ensemble_freshness(run / "ensembles" / name).stale, name


def test_a_stale_ensemble_whose_member_is_gone_is_refused(synthetic_run, capsys):
    run = _run(synthetic_run)
    assert _main("--ensemble", "stacking", "--out", str(run)) == 0
    _csv(run, "xception", "val").unlink()
    before = _snapshot(run)
    capsys.readouterr()
    argv = ["--ensemble", "soft_voting", "--members", "inception_v3,resnext101", "--out", str(run)]
    assert _main(*argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "ensembles/stacking is stale: xception's models/xception/predictions_val.csv is gone" \
        in err and "cannot be refit from its members" in err and "--ensemble stacking" in err
    assert _snapshot(run) == before


def _share_a_lesion(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[0, "lesion_id"] = "HAM_0000000"  # a validation lesion, on another image
    return frame


def test_a_lesion_in_validation_and_test_is_refused(synthetic_run, capsys):
    # Issue 15: --ensemble compared image ids only; stacking was fit on a leaked lesion.
    run = _run(synthetic_run)
    _edit(run, "test", _share_a_lesion)
    before = _snapshot(run)
    assert _main("--ensemble", "all", "--out", str(run)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "models/inception_v3/predictions_val.csv (val) and " \
           "models/inception_v3/predictions_test.csv (test) share 1 lesion(s) (HAM_0000000)" in err
    assert _snapshot(run) == before


def test_a_declared_image_level_split_may_share_lesions(synthetic_run):
    run = _run(synthetic_run)
    _edit(run, "test", _share_a_lesion)
    atomic_write_json(RunDir(run).run_json, {"config": {"split": "image"}})
    assert _main("--ensemble", "soft_voting", "--out", str(run)) == 0


def test_training_and_test_lesions_of_splits_csv_are_compared(synthetic_run, capsys):
    run = _run(synthetic_run)
    test = read_predictions(_csv(run, "xception", "test"))
    val = read_predictions(_csv(run, "xception", "val"))
    rows = [("train_0", test.lesion_id[3], "nv", "train")]
    rows += [(i, lesion, "nv", "val") for i, lesion in zip(val.image_id, val.lesion_id, strict=True)]
    rows += [(i, lesion, "nv", "test") for i, lesion in zip(test.image_id, test.lesion_id,
                                                            strict=True)]
    pd.DataFrame(rows, columns=["image_id", "lesion_id", "dx", "split"]).to_csv(
        RunDir(run).splits_csv, index=False)
    assert _main("--ensemble", "soft_voting", "--out", str(run)) == 2
    assert f"splits.csv (train) and models/inception_v3/predictions_test.csv (test) share 1 " \
           f"lesion(s) ({test.lesion_id[3]})" in capsys.readouterr().err


def test_a_class_missing_from_validation_is_never_a_zero_column(synthetic_run):
    # Issue 15: with no df in validation, stacking's df column was 0.0 on every test image.
    run = _run(synthetic_run, seed=4)

    def no_df(frame):
        frame.loc[frame["label"] == "df", "label"] = "nv"
        return frame

    _edit(run, "val", no_df)
    assert (read_predictions(_csv(run, "xception", "test")).label == "df").any()
    assert _main("--ensemble", "all", "--out", str(run)) == 0
    for name in ("stacking", "weighted_voting"):
        test = read_predictions(run / "ensembles" / name / "predictions_test.csv")
        assert (test.proba[:, 3] > 0).all(), name
        fit = json.loads((run / "ensembles" / name / "fit.json").read_text())
        assert fit["state"]["class_lesions"]["df"] == 0 and "df" in fit["state"]["unlearned_classes"]
        metrics = json.loads((run / "ensembles" / name / "metrics.json").read_text())
        assert metrics["unlearned_classes"]["df"] == 0 and "df (0 lesions)" in metrics["fit_note"]
    members = np.stack([read_predictions(_csv(run, m, "test")).sorted_by_image().proba
                        for m in MEMBERS])
    stacked = read_predictions(run / "ensembles" / "stacking" / "predictions_test.csv")
    np.testing.assert_array_equal(stacked.proba[:, 3], members.mean(axis=0)[:, 3])


def test_a_tiny_validation_split_is_not_fit_on_and_says_so(synthetic_run, capsys, caplog):
    # Issue 15: a 6-row validation file (3 lesions, 2 classes) was fit on, silently. A class is
    # learned only from 2+ lesions and two such classes are needed: here only nv has 2, so
    # nothing is learned and both fitted ensembles are the members' mean (soft voting), said
    # in the log, the summary table, fit.json and metrics.json.
    run = synthetic_run(members=MEMBERS, n_val=6, n_test=40)

    def two_classes(frame):
        frame["label"] = ["nv", "nv", "nv", "nv", "mel", "mel"]
        return frame

    _edit(run, "val", two_classes)
    assert _main("--ensemble", "all", "--out", str(run)) == 0
    out = capsys.readouterr().out
    soft = read_predictions(run / "ensembles" / "soft_voting" / "predictions_test.csv")
    for name in ("weighted_voting", "stacking"):
        row = next(line for line in out.splitlines() if line.startswith(name))
        assert "nothing learned: members' mean" in row
        test = read_predictions(run / "ensembles" / name / "predictions_test.csv")
        np.testing.assert_allclose(test.proba, soft.proba, rtol=0, atol=1e-15)
        fit = json.loads((run / "ensembles" / name / "fit.json").read_text())
        assert "(6 images, 3 lesions) has akiec 0 lesions" in fit["state"]["fallback"]
        assert "mel 1 lesion, nv 2 lesions" in fit["state"]["fallback"]
        assert fit["val_in_sample"] is False
        metrics = json.loads((run / "ensembles" / name / "metrics.json").read_text())
        assert metrics["fit_note"].startswith("nothing learned: a class is learned only from at "
                                              "least 2 lesions")
    assert "stacking: nothing learned" in caplog.text


def test_ctrl_c_while_writing_leaves_every_ensemble_as_it_was(synthetic_run, monkeypatch):
    # Issue 15: after Ctrl-C during --ensemble, metrics.json's "members" stayed stale.
    import ensembles.build

    run = _run(synthetic_run)
    assert _main("--ensemble", "all", "--out", str(run)) == 0
    before = _snapshot(run / "ensembles")
    real = ensembles.build.write_entry_metrics
    calls = []

    def interrupted(folder, **kwargs):
        calls.append(folder)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(folder, **kwargs)

    monkeypatch.setattr(ensembles.build, "write_entry_metrics", interrupted)
    argv = ["--ensemble", "all", "--members", "inception_v3,xception", "--out", str(run)]
    assert _main(*argv) == 130
    assert _snapshot(run / "ensembles") == before
    assert sorted(p.name for p in (run / "ensembles").iterdir()) == sorted(ENSEMBLE_NAMES)
    for name in ENSEMBLE_NAMES:
        fit = json.loads((run / "ensembles" / name / "fit.json").read_text())
        metrics = json.loads((run / "ensembles" / name / "metrics.json").read_text())
        assert fit["members"] == metrics["members"] == sorted(MEMBERS)
    monkeypatch.setattr(ensembles.build, "write_entry_metrics", real)
    assert _main(*argv) == 0  # the same command again completes the new set
    for name in ENSEMBLE_NAMES:
        metrics = json.loads((run / "ensembles" / name / "metrics.json").read_text())
        assert metrics["members"] == ["inception_v3", "xception"]
