"""The --ensemble action: the ensembles stage builds, then results.csv and the report follow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import benchmark
from core.atomic import atomic_write_json
from core.classes import CLASSES
from core.errors import BenchmarkError
from core.predictions import make_predictions, write_predictions
from core.rundir import RunDir
from ensembles import ENSEMBLE_NAMES
from pipeline.ensemble_action import run_ensemble

MEMBERS = ("inception_v3", "nasnet_large", "xception")


def write_members(root: Path, seed: int = 0, n: int = 40) -> RunDir:
    """models/<m>/predictions_{val,test}.csv of three members (pairs of images per lesion)."""
    rng = np.random.default_rng(seed)
    for split, offset in (("val", 0), ("test", n)):
        labels = np.array(CLASSES)[np.arange(n) % len(CLASSES)]
        ids = [f"ISIC_{offset + i:07d}" for i in range(n)]
        lesions = [f"HAM_{(offset + i) // 2:07d}" for i in range(n)]
        for skill, member in enumerate(MEMBERS, 1):
            logits = rng.normal(size=(n, len(CLASSES)))
            logits[np.arange(n), np.arange(n) % len(CLASSES)] += skill
            proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
            write_predictions(RunDir(root).predictions_file(RunDir(root).model_dir(member), split),
                              make_predictions(ids, lesions, labels, proba))
    return RunDir(root)


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture
def report_calls(monkeypatch) -> list[tuple]:
    """Record build_report calls instead of drawing the figures (the reports tests draw them)."""
    import reports.build

    calls: list[tuple] = []

    def fake_build_report(run_dir, **kwargs):
        calls.append((Path(run_dir), kwargs))
        return Path(run_dir) / "report.md"

    monkeypatch.setattr(reports.build, "build_report", fake_build_report)
    return calls


def _args(*argv: str):
    return benchmark.build_parser().parse_args(list(argv))


def test_ensembles_then_results_csv_and_report(tmp_path, capsys, report_calls):
    run = write_members(tmp_path / "run")
    args = _args("--ensemble", "all", "--out", str(run.root), "--bootstrap", "20", "--rank-by",
                 "accuracy")
    assert run_ensemble(args) == 0
    assert run.ensemble_names() == sorted(ENSEMBLE_NAMES)
    assert report_calls == [(run.root, {"rank_by": "accuracy", "n_resamples": 20, "seed": 0,
                                        "reference": None})]
    results = pd.read_csv(run.results_csv)
    assert set(results["entry"]) == {*MEMBERS, *ENSEMBLE_NAMES}
    assert set(results.loc[results["entry"].isin(ENSEMBLE_NAMES), "kind"]) == {"ensemble"}
    assert f"written to {run.ensembles_dir}" in capsys.readouterr().out


def test_a_grid_gets_its_ensembles_per_replicate_and_one_report(tmp_path, capsys, report_calls):
    grid = RunDir(tmp_path / "grid")
    for seed in (0, 1):
        write_members(grid.replicate(0, seed).root, seed=seed)
    atomic_write_json(grid.run_json, {"config": {"seeds": [0, 1]}})
    assert run_ensemble(_args("--ensemble", "soft_voting", "--out", str(grid.root),
                              "--bootstrap", "10")) == 0
    for _, _, replicate in grid.replicates():
        assert replicate.ensemble_names() == ["soft_voting"]
    # the grid's results.csv is its report's to write (it aggregates the replicates)
    assert not grid.results_csv.exists()
    assert report_calls == [(grid.root, {"rank_by": "balanced_accuracy", "n_resamples": 10,
                                         "seed": 0, "reference": None})]
    out = capsys.readouterr().out
    assert "fold0-seed0:" in out and "written to 2 replicates" in out


def test_a_refused_ensemble_writes_nothing_and_reports_nothing(tmp_path, report_calls):
    run = write_members(tmp_path / "run")
    before = _snapshot(run.root)
    with pytest.raises(BenchmarkError, match="at least two members"):
        run_ensemble(_args("--ensemble", "soft_voting", "--out", str(run.root), "--members",
                           "xception"))
    assert _snapshot(run.root) == before and report_calls == []
