"""End to end: metrics.json, results.csv, ISIC export, figures and report.md from a run directory."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pandas as pd
import pytest

from core.atomic import atomic_write_json, read_json
from core.classes import ISIC_COLUMNS
from core.entry_metrics import write_entry_metrics
from core.errors import RunDirError
from core.facts import LICENCE, citations
from reports.build import build_report
from reports.options import ReportError, rankable_metrics
from reports.results import IDENTITY_COLUMNS, write_results_csv

SMALL = {"backbones": {"inception_resnet_v2": 2.0, "xception": 1.5},
         "baselines": {"paper_cnn": 0.8}, "ensembles": ("soft_voting", "hard_voting")}


def _links(text: str) -> list[str]:
    return [unquote(m) for m in re.findall(r"\]\(([^)]+)\)", text)]


def _build(synthetic_run, root, figures=True, **kwargs):
    options = {**SMALL, "n_test": 150, "n_val": 150, **kwargs}
    run = synthetic_run(root, **options)
    path = build_report(run.root, n_resamples=200, seed=0, processes=1, figures=figures)
    return run, path, path.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def bare(tmp_path_factory, synthetic_run):
    """A run directory that holds nothing but prediction files, and its report."""
    return _build(synthetic_run, tmp_path_factory.mktemp("bare") / "run", histories=False,
                  run_files=False)


def test_predictions_only_run(bare):
    run, path, text = bare
    assert path == run.report_md
    # every section, in order
    headings = ["## 1. Run", "## 2. Ranking by `balanced_accuracy`",
                "## 3. InceptionResNetV2 vs the rest", "## 4. Per class", "### Ensembles",
                "### Baselines", "## 5. Cost", "## 6. Context", "## 7. Figures",
                "## Reproducibility", "## Dataset licence and citation"]
    positions = [text.index(h) for h in headings]
    assert positions == sorted(positions)
    # sections without data say so
    assert "No training history in this run directory" in text
    assert "No cost figures in this run directory" in text
    assert re.search(r"\| Command line +\| not recorded", text)
    assert "not recorded (no run.json)" in text
    assert "For research; not for clinical diagnosis." in text
    assert "CC BY-NC 4.0" in text
    # the licence and citations `--download` prints (core.facts), worded the same
    assert LICENCE in text and all(c in text for c in citations())
    # without descriptions in metrics.json, an ensemble's method is its name
    assert re.search(r"\| soft_voting +\| soft_voting +\|", text)
    assert "inflated by lesion leakage" not in text
    # every relative link points at a file that exists
    links = _links(text)
    assert any(link.startswith("figures/") for link in links)
    for link in links:
        assert (run.root / link).is_file(), link
    for name in ("ranking", "macro_roc", "reliability", "roc_xception",
                 "confusion_paper_cnn"):
        assert (run.figures_dir / f"{name}.png").stat().st_size > 10_000
    # metrics.json in core.entry_metrics' layout
    metrics = read_json(run.model_dir("xception") / "metrics.json")
    assert {"val", "test", "status", "kind"} <= set(metrics)
    assert metrics["kind"] == "backbone" and metrics["status"] == "ok"
    assert len(metrics["test"]["balanced_accuracy_ci"]) == 2
    assert "balanced_accuracy_ci" not in metrics["val"]
    assert read_json(run.ensemble_dir("hard_voting") / "metrics.json")["kind"] == "ensemble"
    assert read_json(run.model_dir("paper_cnn") / "metrics.json")["kind"] == "baseline"
    # results.csv: identity columns first, one row per entry and split, CIs as two columns
    results = pd.read_csv(run.results_csv)
    assert tuple(results.columns[:5]) == IDENTITY_COLUMNS
    assert len(results) == 5 * 2
    assert {"accuracy_ci_low", "accuracy_ci_high", "macro_auc_ci_high"} <= set(results.columns)
    test_row = results[(results.entry == "xception") & (results.split == "test")].iloc[0]
    assert test_row.accuracy_ci_low <= test_row.accuracy <= test_row.accuracy_ci_high
    # ISIC 2018 scorer export
    export = pd.read_csv(run.root / "isic_export" / "xception.csv")
    assert list(export.columns) == ["image", *ISIC_COLUMNS]
    assert len(export) == 150


def test_links_are_relative(bare):
    _, _, text = bare
    for link in _links(text):
        assert not Path(link).is_absolute() and not link.startswith("..")


def test_full_run_directory(synthetic_run, tmp_path):
    run, _, text = _build(synthetic_run, tmp_path / "run", backbones={"inception_resnet_v2": 2.0},
                          ensembles=("soft_voting",))
    assert "`python benchmark.py --all --preset smoke`" in text
    assert re.search(r"\| Split +\| lesion-level", text)
    assert "passed: 0 lesion(s)" in text
    assert "![Training curves of inception_resnet_v2](figures/history_inception_resnet_v2.png)" in text
    assert "| Parameters" in text and "54.0 M" in text and "1.0 h" in text
    assert "**Verdict.** In this run, InceptionResNetV2 ranks" in text
    assert "Holm p" in text
    assert re.search(r"\| soft_voting +\| mean of the members' probabilities", text)
    assert re.search(r"\| paper_cnn +\| paper_cnn as its trainer describes it", text)
    assert "fixed rule" in text
    for link in _links(text):
        assert (run.root / link).is_file(), link
    # metrics.json keeps the trainer's keys
    metrics = read_json(run.model_dir("inception_resnet_v2") / "metrics.json")
    assert metrics["params"] == 5.4e7 and metrics["fingerprint"] == "abc123"


def test_image_split_warning(synthetic_run, tmp_path):
    _, _, text = _build(synthetic_run, tmp_path / "run", split="image", histories=False,
                        figures=False)
    top = text[: text.index("## 1. Run")]
    assert "inflated by lesion leakage" in top
    assert "37 test image(s)" in top


def test_without_reference_backbone_the_section_says_so(synthetic_run, tmp_path):
    _, _, text = _build(synthetic_run, tmp_path / "run", backbones={"xception": 1.5},
                        baselines={}, ensembles=(), histories=False, figures=False)
    section = text[text.index("## 3."): text.index("## 4.")]
    assert "`inception_resnet_v2`) has no test predictions" in section
    assert "No ensembles in this run directory." in text
    assert "No baselines in this run directory" in text


def test_rank_by_lower_is_better_and_unknown_metric(synthetic_run, tmp_path):
    run = synthetic_run(tmp_path / "run", backbones={"inception_resnet_v2": 2.0, "xception": 0.5},
                        baselines={}, ensembles=(), n_test=100, n_val=100, histories=False)
    text = build_report(run.root, rank_by="log_loss", n_resamples=50, figures=False).read_text()
    ranking = text[text.index("## 2."): text.index("## 3.")]
    assert "lower is better" in ranking
    assert f"--report --out {run.root.as_posix()} --rank-by log_loss\n" in text
    assert ranking.index("inception_resnet_v2") < ranking.index("xception")
    with pytest.raises(ReportError, match="not a metric.*balanced_accuracy.*log_loss"):
        build_report(run.root, rank_by="accuracy_typo")
    assert "support_mel" not in rankable_metrics()


def test_failed_entry_is_listed_not_ranked(synthetic_run, tmp_path):
    run = synthetic_run(tmp_path / "run", backbones={"inception_resnet_v2": 2.0}, baselines={},
                        ensembles=(), n_test=80, n_val=80, histories=False)
    broken = run.model_dir("nasnet_large")
    written = write_entry_metrics(broken, {"status": "failed", "error": "out of memory at 8",
                                           "kind": "backbone"})
    assert written == {"status": "failed", "error": "out of memory at 8", "kind": "backbone"}
    text = build_report(run.root, n_resamples=50, figures=False).read_text()
    assert "`nasnet_large`: status failed (out of memory at 8)" in text
    rows = pd.read_csv(write_results_csv(run))
    assert rows.set_index("entry").loc["nasnet_large", "status"] == "failed"


def test_entry_metrics_errors_and_merge(tmp_path, synthetic_run):
    with pytest.raises(RunDirError, match="neither predictions_val.csv"):
        write_entry_metrics(tmp_path / "empty")
    run = synthetic_run(tmp_path / "run", backbones={"xception": 1.0}, baselines={}, ensembles=(),
                        n_test=60, n_val=60, histories=False)
    entry = run.model_dir("xception")
    atomic_write_json(entry / "metrics.json", {"params": 7, "status": "ok", "note": "kept"})
    result = write_entry_metrics(entry, {"params": 8}, n_resamples=20)
    assert result["params"] == 8 and result["note"] == "kept" and "test" in result


def test_run_dir_without_predictions(tmp_path):
    (tmp_path / "models" / "x").mkdir(parents=True)
    with pytest.raises(RunDirError, match="no prediction files"):
        build_report(tmp_path)
    with pytest.raises(RunDirError, match="no such run directory"):
        build_report(tmp_path / "missing")
