"""--predict on the shared smoke run: it reproduces the run's own test predictions for a backbone,
a baseline and the ensembles, skips unreadable files, and refuses what cannot predict."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import benchmark
from core.atomic import atomic_write_json, read_json
from core.classes import CLASSES
from core.predictions import make_predictions, read_predictions, write_predictions
from core.rundir import RunDir
from pipeline.predict_target import default_target
from training.trained import read_run_config

pytestmark = pytest.mark.slow

OUTPUT_COLUMNS = ["path", *CLASSES, "prediction"]


@pytest.fixture(scope="module")
def run(trained_smoke_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the smoke run (predictions are written into it), with a stacking fit that has
    learned something (min_class_lesions=1: a smoke validation split can be too small for the
    default fit) and weighted voting built with --calibrated."""
    from ensembles.build import fit_ensembles, write_ensemble_results

    target = tmp_path_factory.mktemp("predict") / "run"
    shutil.copytree(trained_smoke_run, target)
    _refit_learning_stacking(target)
    # weighted voting from temperature-scaled members (--calibrated): fit.json's temperatures
    # must be applied to the members' new probabilities too.
    write_ensemble_results(target, fit_ensembles(target, ["weighted_voting"], calibrated=True),
                           n_resamples=10)
    return target


def _refit_learning_stacking(root: Path) -> None:
    from ensembles.build import EnsembleResult, _member_files, _predictions, write_ensemble_results
    from ensembles.fitfile import fit_record
    from ensembles.members import load_members
    from ensembles.stacking import Stacking

    data = load_members(RunDir(root), ["inception_v3", "xception"])
    estimator = Stacking(min_class_lesions=1).fit(data.val.probas, data.val.y,
                                                  data.val.lesion_id)
    assert len(estimator.meta_classes_) >= 2  # a real meta-model, not the fallback mean
    record = fit_record(estimator, members=list(data.members), fit_split="val",
                        fit_size=len(data.val), fit_lesions=len(set(data.val.lesion_id)),
                        val_in_sample=True, member_files=_member_files(data))
    result = EnsembleResult("stacking", estimator, _predictions("stacking", data.val, estimator),
                            _predictions("stacking", data.test, estimator), record)
    write_ensemble_results(root, [result], n_resamples=10)


def _test_images(root: Path) -> pd.Series:
    """image_id -> image file of the run's test split (the generated images, as training read
    them: training.worker.image_table)."""
    from training.worker import image_table

    config, _ = read_run_config(root)
    table = image_table(config).set_index("image_id")
    splits = pd.read_csv(root / "splits.csv", dtype=str)
    ids = splits.loc[splits["split"] == "test", "image_id"]
    return table.loc[ids, "path"].map(str)


def _predict(capsys, *argv: str) -> tuple[int, str, str]:
    code = benchmark.main(["--predict", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _written(out: str) -> pd.DataFrame:
    match = re.search(r"^wrote (\S+\.csv) ", out, re.MULTILINE)
    assert match, out
    frame = pd.read_csv(match.group(1))
    assert list(frame.columns) == OUTPUT_COLUMNS
    return frame


@pytest.mark.parametrize("entry, folder", [
    ("xception", "models"),  # a fine-tuned backbone
    ("paper_cnn", "models"),  # the from-scratch baseline
    ("soft_voting", "ensembles"),
    ("hard_voting", "ensembles"),  # vote shares and its tie rule
    ("stacking", "ensembles"),  # a learned meta-model from fit.json
    ("weighted_voting", "ensembles"),  # temperature-scaled members (--calibrated)
])
def test_predict_reproduces_the_runs_test_predictions(run, capsys, entry, folder):
    images = _test_images(run)
    code, out, _ = _predict(capsys, *images.tolist(), "--out", str(run), "--entry", entry)
    assert code == 0
    assert f"entry: {entry}" in out and "top class" in out
    frame = _written(out)
    assert frame["path"].tolist() == images.tolist()
    expected = read_predictions(run / folder / entry / "predictions_test.csv")
    order = pd.Series(np.arange(len(expected)), index=expected.image_id)[images.index]
    np.testing.assert_allclose(frame[list(CLASSES)].to_numpy(), expected.proba[order],
                               rtol=0, atol=1e-5)
    assert frame["prediction"].tolist() == np.asarray(CLASSES)[expected.y_pred[order]].tolist()


def test_an_unreadable_file_is_listed_and_skipped_with_exit_1(run, tmp_path, capsys):
    good = _test_images(run).iloc[0]
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    code, out, _ = _predict(capsys, good, str(corrupt), str(tmp_path / "gone.png"), "--out",
                            str(run), "--entry", "paper_cnn")
    assert code == 1
    assert _written(out)["path"].tolist() == [good]
    assert "skipped 2 file(s)" in out
    assert re.search(r"corrupt\.jpg\s+\w+Error: ", out)
    assert re.search(r"gone\.png\s+no such file or folder", out)


def test_a_folder_of_real_images_writes_the_csv_and_the_table(run, sample_dir, capsys):
    code, out, _ = _predict(capsys, str(sample_dir), "--out", str(run), "--entry", "xception")
    assert code == 0
    frame = _written(out)
    jpegs = sorted(str(p) for p in sample_dir.rglob("*.jpg"))
    assert sorted(frame["path"]) == jpegs and len(jpegs) == 180
    np.testing.assert_allclose(frame[list(CLASSES)].sum(axis=1), 1.0, atol=1e-5)
    assert set(frame["prediction"]) <= set(CLASSES)
    assert "image" in out and "top class" in out and "probability" in out
    assert "and 80 more images (all in the CSV)" in out


def test_without_entry_the_first_on_validation_predicts(run, capsys):
    code, out, _ = _predict(capsys, _test_images(run).iloc[0], "--out", str(run))
    assert code == 0
    chosen = default_target(RunDir(run), read_run_config(run)[0])
    assert f"entry: {chosen.name}" in out and "ranked first" in out
    assert chosen.name not in ("weighted_voting", "stacking")  # in-sample on validation


def test_explain_writes_one_overlay_per_image(run, capsys):
    pytest.importorskip("training.gradcam")
    images = _test_images(run).iloc[:2].tolist()
    code, out, _ = _predict(capsys, *images, "--out", str(run), "--entry", "paper_cnn",
                            "--explain")
    assert code == 0
    folder = Path(re.search(r"^Grad-CAM overlays: (\S+)$", out, re.MULTILINE).group(1))
    assert folder.parent.parent.name == "predictions" and folder.name == "gradcam"
    assert sorted(p.name for p in folder.glob("*.png")) == sorted(
        Path(i).stem + ".png" for i in images)


# --- refusals, on a run directory made of the smoke run's files without its weights ----------

@pytest.fixture
def weightless(trained_smoke_run: Path, tmp_path: Path) -> Path:
    """The smoke run's records and prediction files, without any weights file."""
    root = tmp_path / "weightless"
    shutil.copytree(trained_smoke_run, root,
                    ignore=shutil.ignore_patterns("*.h5", "state", "figures", "*.log"))
    return root


@pytest.mark.parametrize("entry, message", [
    ("no_such_model", "unknown entry 'no_such_model'"),
    ("xception", r"best\.weights\.h5 is missing"),
    ("soft_voting", r"ensemble soft_voting needs its member inception_v3: .*best\.weights\.h5"),
    ("inception_resnet_v2+svm", "not its fitted SVM"),
    ("xception+tta4", "use --entry xception"),
])
def test_what_cannot_predict_is_refused_in_one_line(weightless, capsys, entry, message):
    code, out, err = _predict(capsys, str(weightless / "splits.csv"), "--out", str(weightless),
                              "--entry", entry)
    assert code == 2 and out == ""
    assert re.search(message, err) and len(err.strip().splitlines()) == 1
    assert not (weightless / "predictions").exists()


def test_the_default_entry_is_chosen_on_validation_never_on_test(weightless):
    run = RunDir(weightless)
    for name in ("paper_cnn", "xception", "inception_v3"):
        (run.model_dir(name) / "best.weights.h5").write_bytes(b"")
    # xception is perfect on validation; paper_cnn perfect on test; stacking (fit on
    # validation, in-sample there) perfect on validation too.
    for folder, split in ((run.model_dir("xception"), "val"), (run.model_dir("paper_cnn"), "test"),
                          (run.ensemble_dir("stacking"), "val")):
        path = RunDir.predictions_file(folder, split)
        preds = read_predictions(path)
        write_predictions(path, make_predictions(preds.image_id, preds.lesion_id, preds.label,
                                                 np.eye(len(CLASSES))[preds.y_true]))
    fit = run.ensemble_dir("stacking") / "fit.json"
    atomic_write_json(fit, {**read_json(fit), "val_in_sample": True})
    chosen = default_target(run, read_run_config(weightless)[0])
    assert chosen.name == "xception" and chosen.kind == "model"
    assert "validation balanced accuracy (1.000)" in chosen.chosen_by


def test_a_grid_root_is_refused_naming_a_replicate(weightless, capsys):
    (weightless / "replicates" / "fold0-seed0").mkdir(parents=True)
    code, _, err = _predict(capsys, "x.jpg", "--out", str(weightless))
    assert code == 2 and "is a grid run" in err and "replicates/fold0-seed0" in err
