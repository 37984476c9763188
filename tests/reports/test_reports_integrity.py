"""The report and the regression gate compare before they use (issue 15): stale ensembles,
leaked lesions and other test sets are refused before anything is written; file names never
collide; files of entries no longer in the run go."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

import benchmark
from core.atomic import atomic_write_json
from core.errors import IntegrityError, PredictionFileError
from core.integrity import LeakageError
from core.predictions import make_predictions, read_predictions, write_predictions
from ensembles.build import build_ensembles
from reports.baseline import BaselineError
from reports.build import build_report
from reports.cli import run_check

SMALL = {"backbones": {"inception_resnet_v2": 2.0, "xception": 1.5}, "baselines": {},
         "ensembles": (), "n_test": 120, "n_val": 120, "histories": False}


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _replace(path: Path, seed: int = 0, drop_last: bool = False) -> None:
    preds = read_predictions(path)
    n = len(preds) - 1 if drop_last else len(preds)
    proba = np.random.default_rng(seed).dirichlet(np.ones(7), size=n)
    write_predictions(path, make_predictions(preds.image_id[:n], preds.lesion_id[:n],
                                             preds.label[:n], proba))


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.fixture
def run(synthetic_run, tmp_path):
    return synthetic_run(tmp_path / "run", **SMALL)


def test_a_stale_ensemble_is_refused_by_report_and_check(run, tmp_path, capsys):
    # Issue 15: after a member's predictions changed, --report ranked the old ensemble, silently.
    build_ensembles(run.root, ["soft_voting"], n_resamples=10)
    baseline = tmp_path / "b.json"
    assert benchmark.main(["--save-baseline", str(baseline), "--out", str(run.root)]) == 0
    _replace(run.predictions_file(run.model_dir("xception"), "test"))
    before = _snapshot(run.root)
    with pytest.raises(IntegrityError, match="ensembles/soft_voting is stale: xception's "
                                             "models/xception/predictions_test.csv changed"):
        build_report(run.root, n_resamples=10, figures=False)
    capsys.readouterr()
    assert benchmark.main(["--check", str(baseline), "--out", str(run.root)]) == 2
    err = _one_line_error(capsys)
    assert "ensembles/soft_voting is stale" in err and "--ensemble soft_voting --members " \
        "inception_resnet_v2,xception" in err
    assert _snapshot(run.root) == before


def _leak_one_lesion(run, entry="xception"):
    path = run.predictions_file(run.model_dir(entry), "test")
    preds = read_predictions(path)
    lesions = preds.lesion_id.copy()
    lesions[0] = read_predictions(run.predictions_file(run.model_dir(entry), "val")).lesion_id[0]
    write_predictions(path, make_predictions(preds.image_id, lesions, preds.label, preds.proba))
    return lesions[0]


def test_a_lesion_in_validation_and_test_is_refused_by_report(run, capsys):
    # Issue 15: --report did not check validation/test overlap at all.
    lesion = _leak_one_lesion(run)
    before = _snapshot(run.root)
    with pytest.raises(LeakageError, match=f"share 1 lesion\\(s\\) \\({lesion}\\)"):
        build_report(run.root, n_resamples=10, figures=False)
    assert benchmark.main(["--report", "--out", str(run.root), "--bootstrap", "10"]) == 2
    assert "models/xception/predictions_val.csv (val) and models/xception/predictions_test.csv " \
           "(test) share 1 lesion(s)" in _one_line_error(capsys)
    assert _snapshot(run.root) == before


def test_an_image_level_split_keeps_its_leakage_warning(synthetic_run, tmp_path):
    run = synthetic_run(tmp_path / "run", **SMALL, split="image")
    _leak_one_lesion(run)
    text = build_report(run.root, n_resamples=10, figures=False).read_text()
    assert "inflated by lesion leakage" in text


def test_entries_on_different_test_sets_are_refused(run):
    _replace(run.predictions_file(run.model_dir("xception"), "test"), drop_last=True)
    before = _snapshot(run.root)
    with pytest.raises(IntegrityError, match="tested on different test sets: inception_resnet_v2 "
                                             "on 120 images, sha256 .*, but xception on 119 "
                                             "images"):
        build_report(run.root, n_resamples=10, figures=False)
    assert _snapshot(run.root) == before


def test_a_refused_report_rewrites_no_metrics_json(run, capsys):
    # Issue 15: a refused --report had already rewritten the metrics.json of earlier entries.
    path = run.predictions_file(run.model_dir("xception"), "test")
    text = path.read_text().splitlines()
    fields = text[5].split(",")
    fields[3] = "0.9"  # the row no longer sums to 1
    path.write_text("\n".join([*text[:5], ",".join(fields), *text[6:]]) + "\n")
    before = _snapshot(run.root)
    with pytest.raises(PredictionFileError, match="predictions_test.csv: row 6 "):
        build_report(run.root, n_resamples=10, figures=False)
    assert _snapshot(run.root) == before


def test_figure_and_export_names_never_collide(synthetic_run, tmp_path):
    # Issue 15: entries `my model` and `my_model` wrote the same figure file.
    run = synthetic_run(tmp_path / "run", **{**SMALL, "backbones": {"my model": 2.0,
                                                                    "my_model": 0.5}})
    text = build_report(run.root, n_resamples=10, processes=1).read_text()
    spaced, plain = run.figures_dir / "roc_my~20model.png", run.figures_dir / "roc_my_model.png"
    assert spaced.read_bytes() != plain.read_bytes()
    assert "figures/roc_my~20model.png" in text and "figures/roc_my_model.png" in text
    exports = sorted(p.name for p in run.isic_export_dir.iterdir())
    assert exports == ["my_model.csv", "my~20model.csv"]


def test_files_of_removed_entries_are_removed(synthetic_run, tmp_path):
    run = synthetic_run(tmp_path / "run", **{**SMALL, "ensembles": ("soft_voting",)})
    build_report(run.root, n_resamples=10, processes=1)
    assert (run.isic_export_dir / "xception.csv").is_file()
    assert (run.figures_dir / "roc_xception.png").is_file()
    shutil.rmtree(run.model_dir("xception"))
    shutil.rmtree(run.ensemble_dir("soft_voting"))
    build_report(run.root, n_resamples=10, processes=1)
    assert sorted(p.name for p in run.isic_export_dir.iterdir()) == ["inception_resnet_v2.csv"]
    assert not [p for p in run.figures_dir.iterdir() if "xception" in p.name
                or "soft_voting" in p.name]


def test_a_baseline_of_another_test_set_is_refused(synthetic_run, tmp_path, capsys, caplog):
    # Issue 15: --save-baseline recorded no test set; --check passed on other images.
    first = synthetic_run(tmp_path / "a", **SMALL, data_seed=1)
    other = synthetic_run(tmp_path / "b", **SMALL, data_seed=2)
    baseline = tmp_path / "b.json"
    assert benchmark.main(["--save-baseline", str(baseline), "--out", str(first.root)]) == 0
    recorded = json.loads(baseline.read_text())["test_set"]
    assert recorded["images"] == 120 and len(recorded["sha256"]) == 64
    capsys.readouterr()
    assert benchmark.main(["--check", str(baseline), "--out", str(other.root)]) == 2
    err = _one_line_error(capsys)
    assert f"{baseline} was measured on another test set (120 images, sha256 " \
           f"{recorded['sha256'][:12]}) than {other.root}" in err
    assert "--allow-different-test-set" in err
    args = argparse.Namespace(check=str(baseline), out=str(other.root), tolerance=None,
                              allow_different_test_set=True)
    with caplog.at_level(logging.WARNING):
        assert run_check(args) in (0, 1)
    assert "comparing anyway" in caplog.text


def test_an_old_baseline_without_a_test_set_is_compared_with_a_warning(run, tmp_path, capsys,
                                                                        caplog):
    baseline = tmp_path / "b.json"
    assert benchmark.main(["--save-baseline", str(baseline), "--out", str(run.root)]) == 0
    data = json.loads(baseline.read_text())
    del data["test_set"]
    atomic_write_json(baseline, data)
    with caplog.at_level(logging.WARNING):
        assert benchmark.main(["--check", str(baseline), "--out", str(run.root)]) == 0
    assert "records no test set" in caplog.text


def test_a_malformed_test_set_in_a_baseline_is_refused(run, tmp_path):
    from reports.baseline import load_baseline

    baseline = tmp_path / "b.json"
    baseline.write_text('{"metrics": {"a/test/accuracy": 0.5}, "test_set": "abc"}')
    with pytest.raises(BaselineError, match='"test_set" must be an object with a "sha256"'):
        load_baseline(baseline)


def test_save_baseline_onto_a_folder_is_one_line(run, tmp_path, capsys):
    # Issue 15: a traceback (IsADirectoryError) after every metric was computed.
    folder = tmp_path / "baselines"
    folder.mkdir()
    assert benchmark.main(["--save-baseline", str(folder), "--out", str(run.root)]) == 2
    err = _one_line_error(capsys)
    assert f"--save-baseline FILE {folder} is a folder, not a file" in err
