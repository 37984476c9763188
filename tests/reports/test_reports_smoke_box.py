"""A smoke or synthetic run says what it is: the pipeline-check box at the top of report.md (single
run and grid), the verdict phrased "in this run", and no published numbers beside it."""

from __future__ import annotations

import pytest

from core.atomic import atomic_write_json, read_json
from reports.build import build_report
from reports.context import RunContext
from reports.sections import pipeline_check_note, title_lines

SMALL = {"backbones": {"inception_resnet_v2": 2.0, "xception": 1.5}, "baselines": {},
         "ensembles": (), "histories": False, "n_test": 120, "n_val": 60}
REAL = {"dataset": "ham10000", "split": "lesion", "preset": "native", "seed": 0,
        "weights": "imagenet"}


@pytest.mark.parametrize("config, reasons", [
    ({"dataset": "synthetic", "preset": "smoke", "weights": None},
     "(generated synthetic images, the CPU-sized smoke preset, backbones without pretrained "
     "weights)"),
    ({"dataset": "ham10000", "preset": "smoke", "weights": None},
     "(the CPU-sized smoke preset, backbones without pretrained weights)"),
    ({"dataset": "synthetic", "preset": "native", "weights": "imagenet"},
     "(generated synthetic images)"),
    ({"dataset": "isic2018", "preset": "native", "weights": "imagenet"}, None),
    ({"dataset": "ham10000", "preset": "paper", "weights": None}, None),
    ({}, None),
])
def test_the_note_names_why_the_numbers_say_nothing(config, reasons):
    note = pipeline_check_note(RunContext(run_json={"config": config} if config else {}))
    if reasons is None:
        assert note is None
    else:
        assert note == (f"This run checks that the pipeline works {reasons}; its numbers say "
                        "nothing about how good the backbones are.")


def test_the_box_sits_between_the_title_and_the_disclaimer(tmp_path):
    ctx = RunContext(run_json={"config": {"dataset": "synthetic", "preset": "smoke"}})
    lines = title_lines("dermbench report", tmp_path / "run", ctx)
    assert lines[0] == "# dermbench report: `run`"
    assert lines[2] == "> [!WARNING]"
    assert lines[3].startswith("> **A pipeline check, not a benchmark.** This run checks")
    assert lines[-1] == "> **For research; not for clinical diagnosis.**"
    assert "[!WARNING]" not in "\n".join(title_lines("x", tmp_path, RunContext()))


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory, synthetic_run):
    run = synthetic_run(tmp_path_factory.mktemp("smoke") / "run", **SMALL)
    build_report(run.root, n_resamples=50, seed=0, processes=1, figures=False)
    return run, run.report_md.read_text(encoding="utf-8")


def test_a_smoke_report_opens_with_the_box_and_shows_no_published_numbers(smoke_report):
    _, text = smoke_report
    top = text[: text.index("## 1. Run")]
    assert "> [!WARNING]" in top and "its numbers say nothing about how good the backbones" in top
    assert "**Verdict.** In this run, InceptionResNetV2 ranks" in text
    context = text[text.index("## 6. Context"): text.index("## 7.")]
    assert context.splitlines()[2].startswith("Not shown: this run checks the pipeline")
    assert "93.20" not in text and "Published" not in context


def test_a_report_on_real_data_has_no_box_and_shows_the_published_numbers(smoke_report, tmp_path,
                                                                          synthetic_run):
    run = synthetic_run(tmp_path / "run", **SMALL)
    meta = read_json(run.run_json)
    atomic_write_json(run.run_json, {**meta, "config": REAL})
    build_report(run.root, n_resamples=50, seed=0, processes=1, figures=False)
    text = run.report_md.read_text(encoding="utf-8")
    assert "[!WARNING]" not in text and "pipeline check" not in text
    context = text[text.index("## 6. Context"): text.index("## 7.")]
    assert "| Published" in context and "93.20" in context
    assert "**Verdict.** In this run, InceptionResNetV2 ranks" in text


def test_without_run_json_the_dataset_is_unknown_and_the_published_numbers_stay_out(
        tmp_path, synthetic_run):
    run = synthetic_run(tmp_path / "run", run_files=False, **SMALL)
    build_report(run.root, n_resamples=50, seed=0, processes=1, figures=False)
    text = run.report_md.read_text(encoding="utf-8")
    assert "[!WARNING]" not in text
    assert "official datasets (ham10000, isic2018) only, and this run's dataset is not " \
           "recorded" in text


def test_a_smoke_grid_report_opens_with_the_box_and_reads_in_this_grid(tmp_path, synthetic_grid):
    run = synthetic_grid(tmp_path / "grid", **SMALL)
    build_report(run.root, n_resamples=50, seed=0, processes=1, figures=False)
    text = run.report_md.read_text(encoding="utf-8")
    top = text[: text.index("## 1. Grid")]
    assert "> [!WARNING]" in top and "This run checks that the pipeline works" in top
    assert "**Plain reading.** In this grid, InceptionResNetV2 ranks" in text
