"""The CLI actions --report, --save-baseline and --check through benchmark.main, and the no-TF rule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import benchmark
from core.predictions import make_predictions, read_predictions, write_predictions
from reports.baseline import check_run, load_baseline

REPO = Path(__file__).resolve().parents[2]
ENTRIES = {"backbones": {"inception_resnet_v2": 2.0, "xception": 1.5}, "baselines": {},
           "ensembles": ("soft_voting",), "n_test": 120, "n_val": 120, "histories": False}


@pytest.fixture
def run(synthetic_run, tmp_path):
    return synthetic_run(tmp_path / "run", **ENTRIES)


def _degrade(path: Path, seed: int = 0) -> None:
    """Replace an entry's probabilities with noise: every headline metric drops."""
    preds = read_predictions(path)
    proba = np.random.default_rng(seed).dirichlet(np.ones(7), size=len(preds))
    write_predictions(path, make_predictions(preds.image_id, preds.lesion_id, preds.label, proba))


def test_report_unknown_rank_by_is_a_clear_error(run, capsys):
    assert benchmark.main(["--report", "--out", str(run.root), "--rank-by", "f2"]) == 2
    err = capsys.readouterr().err
    assert "'f2' is not a metric" in err and "balanced_accuracy" in err and "mel_sens_at_spec80" in err


def test_save_baseline_then_check_passes(run, tmp_path, capsys):
    baseline = tmp_path / "baseline.json"
    assert benchmark.main(["--save-baseline", str(baseline), "--out", str(run.root)]) == 0
    data = json.loads(baseline.read_text())
    assert data["tolerance"] == 0.01 and data["tolerances"] == {}
    assert "xception/test/balanced_accuracy" in data["metrics"]
    assert "soft_voting/val/log_loss" in data["metrics"]
    capsys.readouterr()
    assert benchmark.main(["--check", str(baseline), "--out", str(run.root)]) == 0
    assert "check passed" in capsys.readouterr().out


def test_degraded_metric_fails_and_is_listed(run, tmp_path, capsys):
    baseline = tmp_path / "baseline.json"
    benchmark.main(["--save-baseline", str(baseline), "--out", str(run.root)])
    _degrade(run.predictions_file(run.model_dir("xception"), "test"))
    capsys.readouterr()
    assert benchmark.main(["--check", str(baseline), "--out", str(run.root)]) == 1
    out = capsys.readouterr().out
    assert "xception/test/balanced_accuracy" in out
    assert "xception/test/log_loss" in out  # an increase is a drop for a lower-is-better metric
    assert "xception/val/" not in out and "inception_resnet_v2/" not in out
    assert "check FAILED" in out


def test_missing_entry_and_metric_fail(run, tmp_path, capsys):
    baseline = tmp_path / "baseline.json"
    benchmark.main(["--save-baseline", str(baseline), "--out", str(run.root)])
    data = json.loads(baseline.read_text())
    data["metrics"]["xception/test/new_metric"] = 0.5
    baseline.write_text(json.dumps(data))
    for name in ("predictions_val.csv", "predictions_test.csv"):
        (run.model_dir("inception_resnet_v2") / name).unlink()
    capsys.readouterr()
    assert benchmark.main(["--check", str(baseline), "--out", str(run.root)]) == 1
    out = capsys.readouterr().out
    assert "inception_resnet_v2/test/accuracy" in out and "missing" in out
    assert "xception/test/new_metric" in out


def test_tolerances_and_direction():
    baseline = {"tolerance": 0.01, "metrics": {"a/test/accuracy": 0.80, "a/test/log_loss": 0.50,
                                               "a/test/macro_f1": 0.70},
                "tolerances": {"accuracy": 0.05, "a/test/macro_f1": 0.0}}
    current = {"a/test/accuracy": 0.76, "a/test/log_loss": 0.515, "a/test/macro_f1": 0.7}
    failures = check_run(baseline, current)
    # accuracy fell .04 < .05 (per-metric override); log loss rose .015 > .01; macro_f1 equal
    assert [f.key for f in failures] == ["a/test/log_loss"]
    assert failures[0].change == pytest.approx(0.015)
    # improvements never fail
    assert check_run(baseline, {"a/test/accuracy": 0.9, "a/test/log_loss": 0.1,
                                "a/test/macro_f1": 0.9}) == []
    # without a file tolerance, --tolerance applies
    no_default = {**baseline, "tolerance": None, "tolerances": {}}
    assert [f.key for f in check_run(no_default, current, 0.05)] == []


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "\"metrics\" mapping"),
    ('{"metrics": {}}', "is empty"),
    ('{"metrics": {"accuracy": 0.5}}', "<entry>/<split>/<metric>"),
    ('{"metrics": {"a/test/accuracy": "high"}}', "not a number"),
    ('{"metrics": {"a/test/accuracy": 0.5}, "tolerance": -1}', "expected a number >= 0"),
    ('{"metrics": {"a/test/accuracy": 0.5}, "tolerances": {"accuracy": "x"}}', "tolerance of"),
])
def test_malformed_baseline_exits_2(run, tmp_path, capsys, content, message):
    baseline = tmp_path / "bad.json"
    baseline.write_text(content)
    assert benchmark.main(["--check", str(baseline), "--out", str(run.root)]) == 2
    err = capsys.readouterr().err
    assert message in err and str(baseline) in err
    with pytest.raises(ValueError):
        load_baseline(baseline)


def test_missing_baseline_and_empty_run_dir_exit_2(run, tmp_path, capsys):
    assert benchmark.main(["--check", str(tmp_path / "nope.json"), "--out", str(run.root)]) == 2
    assert "baseline file not found" in capsys.readouterr().err
    empty = tmp_path / "empty"
    (empty / "models" / "a").mkdir(parents=True)
    baseline = tmp_path / "b.json"
    baseline.write_text('{"metrics": {"a/test/accuracy": 0.5}}')
    for argv in (["--check", str(baseline)], ["--save-baseline", str(baseline)], ["--report"]):
        assert benchmark.main([*argv, "--out", str(empty)]) == 2
        assert "no prediction files" in capsys.readouterr().err


def test_out_defaults_to_the_only_run(run, tmp_path, monkeypatch, capsys):
    workdir = tmp_path / "work"
    (workdir / "runs").mkdir(parents=True)
    monkeypatch.chdir(workdir)
    assert benchmark.main(["--save-baseline", "b.json"]) == 2
    assert "pass --out RUNDIR" in capsys.readouterr().err
    os.symlink(run.root, workdir / "runs" / "only")
    assert benchmark.main(["--save-baseline", "b.json"]) == 0
    (workdir / "runs" / "second").mkdir()
    assert benchmark.main(["--check", "b.json"]) == 2
    err = capsys.readouterr().err
    assert "runs/only" in err and "runs/second" in err


def test_report_runs_without_tensorflow_and_prints_the_path(run):
    # --report, --save-baseline and --check in a fresh interpreter: TF/Keras never imported
    out, baseline = str(run.root), str(run.root / "b.json")
    code = (
        "import sys, benchmark, reports.build, reports.cli, reports.figures, reports.baseline\n"
        f"assert benchmark.main(['--report', '--out', {out!r}, '--bootstrap', '20', "
        "'--rank-by', 'macro_auc']) == 0\n"
        f"assert benchmark.main(['--save-baseline', {baseline!r}, '--out', {out!r}]) == 0\n"
        f"assert benchmark.main(['--check', {baseline!r}, '--out', {out!r}]) == 0\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines()[0] == str(run.report_md)
    assert "## 2. Ranking by `macro_auc`" in run.report_md.read_text()
