"""The report's "Where the models fail" section (reports/failures_section.py): which entries it
shows, and what it says with a current, stale, partial or missing gallery index.

The galleries themselves are drawn by pipeline/failure_gallery.py (tests/pipeline); here the
index and its figures are written by hand, so no Keras is needed.
"""

from __future__ import annotations

import math

import pytest

from core.atomic import atomic_write_json
from core.provenance import file_sha256
from core.rundir import RunDir
from reports.context import read_context
from reports.failures_section import (
    INDEX_VERSION,
    TITLE,
    best_cnn_on_validation,
    failures_section,
    gallery_entries,
    gallery_figure_path,
    gallery_index_path,
)
from reports.report_data import ReportData
from reports.results import discover_entries

VAL_BA = {"inception_resnet_v2": 0.61, "inception_v3": 0.55, "resnext101": 0.58,
          "xception": 0.66, "nasnet_large": 0.52, "paper_cnn": 0.40,
          # not CNN entries: never the best on validation, however good
          "inception_resnet_v2+svm": 0.90, "soft_voting": 0.95, "stacking": 0.99}


def _run(tmp_path, synthetic_run, val=VAL_BA):
    run = synthetic_run(tmp_path / "run", n_test=40, n_val=40)
    entries = discover_entries(run)
    for entry in entries:
        entry.metrics["val"] = {"balanced_accuracy": val.get(entry.name, math.nan),
                                "log_loss": 1.0 - val.get(entry.name, math.nan)}
    return run, entries


def _data(run: RunDir, entries, reference="inception_resnet_v2", rank_by="balanced_accuracy"):
    return ReportData(run=run, context=read_context(run), ranked=entries, failed=[],
                      rank_by=rank_by, comparisons=None, figures=None, fits={}, isic_exports={},
                      n_resamples=0, seed=0, reference=reference)


def _record(run: RunDir, name: str, **changes) -> dict:
    figure = gallery_figure_path(run, name)
    figure.parent.mkdir(parents=True, exist_ok=True)
    figure.write_bytes(b"\x89PNG\r\n\x1a\n")
    record = {"figure": figure.name, "layer": "conv_7b_ac", "grid": [8, 8], "image_size": 299,
              "errors": 11, "test_images": 40, "per_class": 3,
              "predictions_test_sha256": file_sha256(
                  RunDir.predictions_file(run.model_dir(name), "test")),
              "shown": [{"image_id": "TI00003", "true": "mel", "predicted": "nv",
                         "probability": 0.97},
                        {"image_id": "TI00017", "true": "nv", "predicted": "bkl",
                         "probability": 0.81}]}
    record.update(changes)
    return record


def _write_index(run: RunDir, records: dict) -> None:
    atomic_write_json(gallery_index_path(run), {"version": INDEX_VERSION, "entries": records})


def test_best_on_validation_is_a_cnn_entry(tmp_path, synthetic_run):
    run, entries = _run(tmp_path, synthetic_run)
    assert best_cnn_on_validation(run, entries, "balanced_accuracy") == "xception"
    # a loss: lower is better (1 - 0.66 is the lowest)
    assert best_cnn_on_validation(run, entries, "log_loss") == "xception"
    # no validation metric anywhere: none
    assert best_cnn_on_validation(run, entries, "macro_auc") is None


def test_best_on_validation_ties_go_to_the_first_name(tmp_path, synthetic_run):
    run, entries = _run(tmp_path, synthetic_run,
                        {"xception": 0.5, "inception_v3": 0.5, "resnext101": 0.4})
    assert best_cnn_on_validation(run, entries, "balanced_accuracy") == "inception_v3"


@pytest.mark.parametrize("reference, wanted", [
    ("inception_resnet_v2", ["inception_resnet_v2", "xception"]),
    ("xception", ["xception"]),                       # the reference is the best: one gallery
    ("soft_voting", ["xception"]),                    # an ensemble has no Grad-CAM
    ("inception_resnet_v2+svm", ["xception"]),        # nor the SVM baseline
])
def test_gallery_entries(tmp_path, synthetic_run, reference, wanted):
    run, entries = _run(tmp_path, synthetic_run)
    assert gallery_entries(run, entries, reference, "balanced_accuracy") == wanted


def test_without_an_index_one_line(tmp_path, synthetic_run):
    run, entries = _run(tmp_path, synthetic_run)
    text = failures_section(_data(run, entries))
    assert text.startswith(TITLE + "\n\n")
    body = text[len(TITLE) + 2:]
    assert "\n" not in body and "No failure gallery" in body and "prediction-only" in body


def test_current_galleries_are_shown(tmp_path, synthetic_run):
    run, entries = _run(tmp_path, synthetic_run)
    _write_index(run, {name: _record(run, name) for name in ("inception_resnet_v2", "xception")})
    text = failures_section(_data(run, entries))
    assert "### `inception_resnet_v2` (the reference, InceptionResNetV2)" in text
    assert "### `xception` (best CNN entry on validation, `balanced_accuracy` 0.660)" in text
    assert "](figures/failures/inception_resnet_v2.png)" in text
    assert "](figures/failures/xception.png)" in text
    assert "11 errors on 40 test images; the 2 shown" in text
    assert "Grad-CAM on `conv_7b_ac` (8 × 8 cells) at 299 px" in text
    assert "| TI00003 | `mel` " in text.replace("  ", " ").replace("  ", " ")
    assert "stale" not in text and "No failure gallery" not in text
    assert text.index("inception_resnet_v2.png") < text.index("xception.png")


def test_a_stale_gallery_is_not_shown(tmp_path, synthetic_run):
    run, entries = _run(tmp_path, synthetic_run)
    _write_index(run, {"inception_resnet_v2": _record(run, "inception_resnet_v2",
                                                      predictions_test_sha256="0" * 64),
                       "xception": _record(run, "xception")})
    text = failures_section(_data(run, entries))
    assert "The failure gallery of `inception_resnet_v2` is stale" in text
    assert "rerun this run's `--all` command" in text
    assert "inception_resnet_v2.png" not in text
    assert "](figures/failures/xception.png)" in text


def test_retrained_predictions_make_the_gallery_stale(tmp_path, synthetic_run):
    run, entries = _run(tmp_path, synthetic_run)
    _write_index(run, {"xception": _record(run, "xception")})
    predictions = RunDir.predictions_file(run.model_dir("xception"), "test")
    predictions.write_text(predictions.read_text().replace("\n", "\r\n"))
    text = failures_section(_data(run, entries, reference="xception"))
    assert "is stale" in text and "xception.png" not in text


@pytest.mark.parametrize("changes, says", [
    ({"figure": None, "shown": [], "unavailable": "models/xception/best.weights.h5 is missing"},
     "No failure gallery of `xception`: models/xception/best.weights.h5 is missing."),
    ({"figure": "gone.png"}, "(figures/failures/gone.png) is missing"),
    ({"figure": None, "shown": [], "errors": 0}, "`xception` made no error on the 40 test"),
])
def test_partial_galleries_say_why(tmp_path, synthetic_run, changes, says):
    run, entries = _run(tmp_path, synthetic_run)
    _write_index(run, {"xception": _record(run, "xception", **changes)})
    text = failures_section(_data(run, entries, reference="xception"))
    assert says in text
    assert "](figures/failures/" not in text


def test_an_entry_missing_from_the_index(tmp_path, synthetic_run):
    run, entries = _run(tmp_path, synthetic_run)
    _write_index(run, {"xception": _record(run, "xception")})
    text = failures_section(_data(run, entries))
    assert "No failure gallery of `inception_resnet_v2` was drawn" in text
    assert "](figures/failures/xception.png)" in text


@pytest.mark.parametrize("index", ["not json", '{"version": 99, "entries": {}}', "[1, 2]"])
def test_an_unreadable_index_counts_as_none(tmp_path, synthetic_run, index):
    run, entries = _run(tmp_path, synthetic_run)
    gallery_index_path(run).parent.mkdir(parents=True)
    gallery_index_path(run).write_text(index)
    assert "No failure gallery in this run directory" in failures_section(_data(run, entries))


def test_the_report_has_the_section_before_the_figures(tmp_path, synthetic_run):
    from reports.build import build_report

    run = synthetic_run(tmp_path / "run", n_test=40, n_val=40, ensembles=())
    report = build_report(run.root, n_resamples=20, figures=False).read_text()
    figures = next(line for line in report.splitlines()
                   if line.startswith("## ") and "Figures" in line)
    assert report.index(TITLE) < report.index(figures)
    assert "No failure gallery in this run directory" in report
