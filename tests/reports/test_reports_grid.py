"""The report of a grid run (folds x seeds) end to end, through build_report and the CLI."""

from __future__ import annotations

import json
import math
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import pandas as pd
import pytest

import benchmark
from core.atomic import atomic_write_json, read_json
from core.entry_metrics import write_entry_metrics
from core.errors import RunDirError
from core.predictions import make_predictions, read_predictions, write_predictions
from core.rundir import RunDir
from reports.baseline import run_metrics
from reports.build import build_report, refresh_results_csv
from reports.options import ReportError

REPO = Path(__file__).resolve().parents[2]
ENTRIES = {"backbones": {"inception_resnet_v2": 2.0, "xception": 1.5},
           "baselines": {"paper_cnn": 0.8}, "ensembles": ("soft_voting",), "n_test": 60,
           "n_val": 60, "histories": False}
FAILED = (1, 1)  # xception fails in fold1-seed1


def _links(text: str) -> list[str]:
    return [unquote(m) for m in re.findall(r"\]\(([^)]+)\)", text)]


@pytest.fixture(scope="module")
def grid(tmp_path_factory, synthetic_grid):
    """A 2-fold x 2-seed grid of 3 entries and an ensemble, one failed job, and its report."""
    run = synthetic_grid(tmp_path_factory.mktemp("grid") / "grid", folds=2, seeds=(0, 1),
                         **ENTRIES)
    broken = run.replicate(*FAILED).model_dir("xception")
    for split in ("val", "test"):
        RunDir.predictions_file(broken, split).unlink()
    write_entry_metrics(broken, {"status": "failed", "error": "CUDA out of memory",
                                 "kind": "backbone"})
    path = build_report(run.root, n_resamples=1000, seed=0)
    return run, path, path.read_text(encoding="utf-8")


def _replicate_values(run: RunDir, entry: str, metric: str, folder: str = "models") -> list[float]:
    values = []
    for _, _, replicate in run.replicates():
        metrics = read_json(replicate.root / folder / entry / "metrics.json")
        if metrics.get("status") == "ok":
            values.append(metrics["test"][metric])
    return values


def test_results_csv_aggregates_over_jobs(grid):
    run, _, _ = grid
    results = pd.read_csv(run.results_csv)
    assert list(results.columns[:5]) == ["entry", "kind", "split", "n_jobs", "n_failed"]
    assert {"balanced_accuracy_mean", "balanced_accuracy_sd", "balanced_accuracy_min",
            "balanced_accuracy_max", "log_loss_mean", "macro_auc_sd"} <= set(results.columns)
    assert "n_images_mean" not in results.columns
    assert len(results) == 4 * 2  # 4 entries x (val, test)
    rows = results.set_index(["entry", "split"])
    assert rows.loc[("soft_voting", "test"), "kind"] == "ensemble"
    values = _replicate_values(run, "inception_resnet_v2", "balanced_accuracy")
    irv2 = rows.loc[("inception_resnet_v2", "test")]
    assert (irv2.n_jobs, irv2.n_failed) == (4, 0)
    assert irv2.balanced_accuracy_mean == pytest.approx(statistics.mean(values))
    assert irv2.balanced_accuracy_sd == pytest.approx(statistics.stdev(values))
    assert irv2.balanced_accuracy_max == pytest.approx(max(values))
    xcp = rows.loc[("xception", "test")]
    assert (xcp.n_jobs, xcp.n_failed) == (3, 1)
    assert xcp.accuracy_mean == pytest.approx(
        statistics.mean(_replicate_values(run, "xception", "accuracy")))
    # the replicates got their own metrics.json (a few resamples) and results.csv
    for _, _, replicate in run.replicates():
        assert len(pd.read_csv(replicate.results_csv)) >= 7
        ensemble = read_json(replicate.ensemble_dir("soft_voting") / "metrics.json")
        assert ensemble["kind"] == "ensemble" and "balanced_accuracy_ci" in ensemble["test"]


def test_jobs_csv_one_row_per_job_and_split(grid):
    run, _, _ = grid
    jobs = pd.read_csv(run.jobs_csv, keep_default_na=False, na_values=[""])
    assert len(jobs) == 4 * 4 * 2  # entries x replicates x splits
    assert list(jobs.columns[:8]) == ["entry", "kind", "fold", "seed", "replicate", "split",
                                      "status", "error"]
    failed = jobs[(jobs.entry == "xception") & (jobs.replicate == "fold1-seed1")]
    assert failed.status.tolist() == ["failed", "failed"]
    assert failed.error.tolist() == ["CUDA out of memory"] * 2
    assert failed.balanced_accuracy.isna().all()
    assert (jobs[jobs.status == "ok"].balanced_accuracy.notna()).all()


def test_report_sections_and_links(grid):
    run, path, text = grid
    assert path == run.report_md
    headings = ["## 1. Grid", "## 2. Ranking by the mean `balanced_accuracy`",
                "## 3. Aggregated metrics", "## 4. Per-job values", "## 5. InceptionResNetV2 vs",
                "## 6. Figures", "## Reproducibility", "## Dataset licence and citation"]
    positions = [text.index(h) for h in headings]
    assert positions == sorted(positions)
    assert re.search(r"\| Folds +\| 2 ", text) and re.search(r"\| Seeds +\| 0, 1 ", text)
    assert "16 (4 entries x 4 replicates): 15 finished, 1 failed or missing" in text
    assert "- `xception` in `fold1-seed1`: status failed (CUDA out of memory)" in text
    assert "Jobs in different folds are tested on different images" in text
    assert "**Plain reading.** In this grid, InceptionResNetV2 ranks" in text
    section = text[text.index("## 5."): text.index("## 6.")]
    assert "corrected repeated k-fold t-test (Nadeau & Bengio 2003; Bouckaert & Frank 2004)" \
        in section
    assert "Holm-corrected per metric" in section and "[comparisons.csv](comparisons.csv)" in section
    assert "Wilcoxon" not in text and "McNemar" not in text
    per_job = text[text.index("## 4."): text.index("## 5.")]
    assert "fold0-seed0" in per_job and "fold1-seed1" in per_job
    xception_row = next(line for line in per_job.splitlines() if line.startswith("| xception"))
    assert "failed" in xception_row and " ± " in xception_row
    xception_test = next(line for line in section.splitlines() if line.startswith("| xception"))
    assert re.search(r"\| 3 +\|", xception_test)  # 3 pairs: the failed job is left out
    assert (run.figures_dir / "jobs_balanced_accuracy.png").stat().st_size > 5_000
    for link in _links(text):
        assert (run.root / link).is_file(), link


def test_comparisons_csv_at_the_grid_root(grid):
    run, _, text = grid
    rows = pd.read_csv(run.root / "comparisons.csv")
    assert list(rows.columns[:14]) == [
        "reference", "other", "metric", "n_images", "n_lesions", "value_reference",
        "value_other", "difference", "ci_low", "ci_high", "p_value", "p_holm", "significant",
        "test"]
    assert set(rows.metric) == {"balanced_accuracy", "accuracy", "macro_auc"}
    assert set(rows.reference) == {"inception_resnet_v2"}
    assert set(rows.other) == {"xception", "paper_cnn", "soft_voting"}
    xcp = rows[(rows.other == "xception") & (rows.metric == "balanced_accuracy")].iloc[0]
    irv2 = _replicate_values(run, "inception_resnet_v2", "balanced_accuracy")
    assert xcp.n_jobs == 3  # fold1-seed1 failed for xception
    assert xcp.value_reference == pytest.approx(statistics.mean(irv2[:3]))
    assert xcp.difference == pytest.approx(xcp.value_reference - xcp.value_other)
    assert xcp.test.startswith("corrected repeated k-fold t-test")
    assert "3 paired jobs over 2 folds and 2 seeds" in xcp.test
    assert xcp.test.endswith("Holm over 3 comparisons")
    tested = rows[rows.p_value.notna()]
    assert len(tested) == len(rows)
    excludes_zero = (tested.ci_low > 0) | (tested.ci_high < 0)
    assert (excludes_zero == (tested.p_value < 0.05)).all()
    assert (tested.significant == (tested.p_holm < 0.05)).all()
    # the report's plain reading is built from these rows
    reading = next(line for line in text.splitlines() if line.startswith("**Plain reading.**"))
    assert "by the corrected repeated k-fold t-test with Holm's correction" in reading
    significant = rows[(rows.metric == "balanced_accuracy") & rows.significant]
    for other in significant.other:
        assert f"`{other}`" in reading.split("not significantly different")[0]


def test_seeds_only_grid_compares_on_the_shared_test_set(synthetic_grid, tmp_path):
    run = synthetic_grid(tmp_path / "grid", folds=None, seeds=(0, 1, 2),
                         backbones={"inception_resnet_v2": 2.0, "xception": 1.0}, baselines={},
                         ensembles=(), n_test=120, n_val=20, histories=False)
    text = build_report(run.root, rank_by="macro_f1", n_resamples=200, figures=False,
                        reference="xception").read_text()
    rows = pd.read_csv(run.root / "comparisons.csv")
    assert set(rows.reference) == {"xception"} and set(rows.other) == {"inception_resnet_v2"}
    assert rows.metric.tolist() == ["macro_f1", "balanced_accuracy", "accuracy", "macro_auc"]
    assert rows.test.str.startswith("seed-and-lesion t-test on a shared test set").all()
    assert rows.test.str.contains("3 jobs, 200 lesion resamples").all()
    assert (rows.difference < 0).all() and rows.p_value.notna().all()
    section = text[text.index("## 5."): text.index("## 6.")]
    assert section.startswith("## 5. `xception` vs the rest")
    assert "seed-and-lesion t-test" in section and "corrected repeated" not in section


@pytest.mark.parametrize(("reference", "match"), [
    ("nasnet_large", "--reference 'nasnet_large' has no finished job with test predictions"),
    ("no_such_entry", "choose one of: inception_resnet_v2, paper_cnn, soft_voting, xception"),
])
def test_an_unknown_reference_is_refused(grid, reference, match):
    run, _, _ = grid
    with pytest.raises(ReportError, match=match):
        build_report(run.root, reference=reference, figures=False)


def test_grid_baseline_is_the_mean_and_a_failed_job_is_missing(grid):
    run, _, _ = grid
    values = run_metrics(run)
    ba = [read_json(r.model_dir("paper_cnn") / "metrics.json")["val"]["balanced_accuracy"]
          for _, _, r in run.replicates()]
    assert values["paper_cnn/val/balanced_accuracy"] == pytest.approx(statistics.mean(ba))
    assert math.isnan(values["xception/test/accuracy"])  # one job failed
    assert "soft_voting/test/log_loss" in values


def test_cli_report_save_baseline_and_check(grid, tmp_path, capsys):
    run, _, _ = grid
    out = str(run.root)
    assert benchmark.main(["--report", "--out", out, "--bootstrap", "20"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == str(run.report_md)
    baseline = tmp_path / "grid.json"
    assert benchmark.main(["--save-baseline", str(baseline), "--out", out]) == 0
    data = json.loads(baseline.read_text())
    assert data["aggregate"].startswith("mean over 4 replicates")
    assert "inception_resnet_v2/test/balanced_accuracy" in data["metrics"]
    assert not any(k.startswith("xception/") for k in data["metrics"])
    capsys.readouterr()
    assert benchmark.main(["--check", str(baseline), "--out", out]) == 0
    assert "check passed" in capsys.readouterr().out


def test_report_through_the_real_cli_without_tensorflow(grid):
    run, _, _ = grid
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['benchmark.py', '--report', '--out', {str(run.root)!r}, '--rank-by', "
        "'macro_auc']\n"
        "try:\n"
        "    runpy.run_path('benchmark.py', run_name='__main__')\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines()[0] == str(run.report_md)
    text = run.report_md.read_text()
    assert "## 2. Ranking by the mean `macro_auc`" in text
    assert "balanced_accuracy_min" in pd.read_csv(run.results_csv).columns
    assert "macro_auc_min" in pd.read_csv(run.results_csv).columns


def test_missing_replicate_stale_metrics_and_lower_is_better(synthetic_grid, tmp_path):
    run = synthetic_grid(tmp_path / "grid", folds=None, seeds=(0, 1),
                         backbones={"inception_resnet_v2": 2.0, "xception": 0.3}, baselines={},
                         ensembles=(), n_test=40, n_val=40, histories=False)
    config = read_json(run.run_json)
    config["config"]["seeds"] = [0, 1, 2]  # fold0-seed2 never ran
    atomic_write_json(run.run_json, config)
    text = build_report(run.root, rank_by="log_loss", n_resamples=1000, figures=False).read_text()
    assert "Replicates expected by run.json but absent: `fold0-seed2`" in text
    assert "none: one train/val/test split" in text
    assert "- `inception_resnet_v2` in `fold0-seed2`: status missing" in text
    ranking = text[text.index("## 2."): text.index("## 3.")]
    assert "lower is better" in ranking
    assert ranking.index("inception_resnet_v2") < ranking.index("xception")
    assert "Figures were not drawn" in text
    assert len(pd.read_csv(run.jobs_csv)) == 2 * 3 * 2

    # metrics.json is recomputed only when a prediction file is newer and gives other values
    entry = run.replicate(0, 1).model_dir("xception")
    metrics, predictions = entry / "metrics.json", RunDir.predictions_file(entry, "test")
    os.utime(metrics, ns=(2 * 10**18, 2 * 10**18))
    build_report(run.root, figures=False)
    assert metrics.stat().st_mtime_ns == 2 * 10**18
    os.utime(predictions, ns=(3 * 10**18, 3 * 10**18))  # rewritten, same content
    build_report(run.root, figures=False)
    assert metrics.stat().st_mtime_ns == 2 * 10**18
    preds = read_predictions(predictions)
    write_predictions(predictions, make_predictions(preds.image_id, preds.lesion_id, preds.label,
                                                    preds.proba[:, ::-1]))
    os.utime(predictions, ns=(4 * 10**18, 4 * 10**18))
    refresh_results_csv(run)  # on a grid root: refreshes and aggregates
    assert metrics.stat().st_mtime_ns != 2 * 10**18
    rows = pd.read_csv(run.results_csv).set_index(["entry", "split"])
    assert rows.loc[("xception", "test"), "n_jobs"] == 2


def test_grid_without_replicates(tmp_path):
    (tmp_path / "replicates").mkdir()
    with pytest.raises(RunDirError, match="without any replicate folder"):
        build_report(tmp_path)
    with pytest.raises(RunDirError, match="grid run without prediction files"):
        run_metrics(RunDir(tmp_path))
