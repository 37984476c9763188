"""The failure gallery stage (pipeline/failure_gallery.py): which errors, which entries, when it
is drawn again, and the gallery of a real `--all` run in its report."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from core.classes import CLASSES
from core.predictions import make_predictions, write_predictions
from core.rundir import RunDir
from pipeline.failure_gallery import GalleryResult, most_confident_errors, refresh_failure_gallery
from reports.failures_section import (
    TITLE,
    gallery_dir,
    gallery_entries,
    gallery_index_path,
    read_gallery_index,
)
from reports.results import discover_entries


def _preds(rows):
    """rows: (true, predicted, probability of the prediction)."""
    proba = []
    for _, predicted, p in rows:
        row = np.full(7, (1 - p) / 6)
        row[CLASSES.index(predicted)] = p
        proba.append(row)
    n = len(rows)
    return make_predictions([f"I{i:02d}" for i in range(n)], [f"L{i:02d}" for i in range(n)],
                            [true for true, _, _ in rows], np.array(proba))


def test_most_confident_errors_per_true_class():
    preds = _preds([
        ("mel", "nv", 0.60),    # 0
        ("mel", "nv", 0.90),    # 1
        ("mel", "mel", 0.99),   # 2: right, never shown
        ("mel", "bkl", 0.70),   # 3
        ("mel", "nv", 0.50),    # 4: the fourth mel error, left out
        ("akiec", "bcc", 0.40),  # 5
        ("nv", "mel", 0.80),    # 6
        ("nv", "mel", 0.80),    # 7: a tie, by image id after 6
    ])
    # canonical class order (akiec, ..., mel, nv), most confident first within a class
    assert most_confident_errors(preds).tolist() == [5, 1, 3, 0, 6, 7]
    assert most_confident_errors(preds, per_class=1).tolist() == [5, 1, 6]


def test_no_errors_no_rows():
    assert most_confident_errors(_preds([("mel", "mel", 0.9), ("nv", "nv", 0.8)])).size == 0


@pytest.mark.parametrize("result, line", [
    (GalleryResult(), "failure gallery skipped: no CNN entry of the run has test predictions"),
    (GalleryResult(drawn={"xception": 12}, current=["inception_resnet_v2"]),
     "failure gallery: drew xception (the most confident of its 12 wrong test predictions); "
     "inception_resnet_v2 up to date"),
    (GalleryResult(unavailable={"xception": "no weights"}),
     "failure gallery: none of xception (no weights)"),
])
def test_summary_lines(result, line):
    assert result.summary() == line


def test_a_run_without_weights_records_why(tmp_path):
    """A prediction-only run directory: the reference's record says why it has no gallery."""
    run = RunDir(tmp_path / "run")
    for name in ("inception_resnet_v2", "inception_resnet_v2+svm"):
        for split in ("val", "test"):
            write_predictions(RunDir.predictions_file(run.model_dir(name), split),
                              _preds([("mel", "nv", 0.6), ("nv", "nv", 0.7)]))
    result = refresh_failure_gallery(run.root)
    assert list(result.unavailable) == ["inception_resnet_v2"] and result.changed
    assert "best.weights.h5 is missing" in result.unavailable["inception_resnet_v2"]
    index = read_gallery_index(run)
    assert index["inception_resnet_v2"]["unavailable"] and not list(gallery_dir(run).glob("*.png"))
    before = gallery_index_path(run).stat().st_mtime_ns
    assert not refresh_failure_gallery(run.root).changed  # same reason: nothing rewritten
    assert gallery_index_path(run).stat().st_mtime_ns == before


@pytest.mark.slow
def test_the_smoke_run_has_its_gallery(trained_smoke_run, copy_run):
    """`--all` drew the gallery after training and its report shows it; on a copy: drawn again
    when missing, kept when current, redrawn when the predictions change, and the figures of
    entries no longer shown are removed."""
    from PIL import Image

    from reports.build import build_report

    shown = read_gallery_index(RunDir(trained_smoke_run))
    assert shown and all(record.get("figure") for record in shown.values())
    report = (trained_smoke_run / "report.md").read_text()
    assert TITLE in report and "](figures/failures/" in report
    stdout = trained_smoke_run.parent / "shared-smoke-run.stdout"
    if stdout.is_file():
        assert "failure gallery: " in stdout.read_text()

    # on a copy, with paper_cnn as the reference (no ensemble member: its predictions may change)
    run = RunDir(copy_run(trained_smoke_run))
    shutil.rmtree(gallery_dir(run))
    result = refresh_failure_gallery(run.root, reference="paper_cnn")
    assert result.changed and "paper_cnn" in result.drawn
    index = read_gallery_index(run)
    assert sorted(index) == sorted(gallery_entries(run, discover_entries(run), "paper_cnn",
                                                   "balanced_accuracy"))
    for name, record in index.items():
        with Image.open(gallery_dir(run) / record["figure"]) as png:
            assert png.format == "PNG" and png.width > 300
        assert record["shown"] and record["errors"] >= len(record["shown"])
        assert record["image_size"] == {"paper_cnn": 64, "xception": 71,
                                        "inception_v3": 75}[name]
    again = refresh_failure_gallery(run.root, reference="paper_cnn")
    assert not again.changed and not again.drawn

    build_report(run.root, n_resamples=20, processes=1, reference="paper_cnn")
    report = run.report_md.read_text()
    assert "### `paper_cnn` (the reference" in report
    assert "](figures/failures/paper_cnn.png)" in report

    # new test predictions of paper_cnn (a retrained entry): stale until drawn again
    predictions = RunDir.predictions_file(run.model_dir("paper_cnn"), "test")
    predictions.write_text(predictions.read_text().replace("\n", "\r\n"))
    build_report(run.root, n_resamples=20, processes=1, reference="paper_cnn")
    assert "The failure gallery of `paper_cnn` is stale" in run.report_md.read_text()
    assert "paper_cnn" in refresh_failure_gallery(run.root, reference="paper_cnn").drawn

    # back to the default reference (not in this run): only the best on validation is kept
    refresh_failure_gallery(run.root)
    best = gallery_entries(run, discover_entries(run), "inception_resnet_v2", "balanced_accuracy")
    assert len(best) == 1 and list(read_gallery_index(run)) == best
    assert [p.name for p in gallery_dir(run).glob("*.png")] == [f"{best[0]}.png"]
