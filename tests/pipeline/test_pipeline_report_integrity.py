"""--report refits stale ensembles before it reports (pipeline.report_action), in a single run and
in every replicate of a grid, and refuses, writing nothing, when it cannot."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import benchmark
from core.atomic import atomic_write_json
from core.predictions import make_predictions, read_predictions, write_predictions
from core.provenance import ensemble_freshness
from core.rundir import RunDir
from ensembles import ENSEMBLE_NAMES
from ensembles.build import build_ensembles
from pipeline.report_action import run_report

MEMBERS = ("inception_v3", "nasnet_large", "xception")


def write_members(root: Path, seed: int = 0, n: int = 60) -> RunDir:
    """models/<m>/predictions_{val,test}.csv of three members; every class has lesions."""
    rng = np.random.default_rng(seed)
    run = RunDir(root)
    for split, offset in (("val", 0), ("test", n)):
        labels = np.array(["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"])[np.arange(n) % 7]
        ids = [f"ISIC_{offset + i:07d}" for i in range(n)]
        lesions = [f"HAM_{offset + i:07d}" for i in range(n)]
        for skill, member in enumerate(MEMBERS, 1):
            logits = rng.normal(size=(n, 7))
            logits[np.arange(n), np.arange(n) % 7] += skill
            proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
            write_predictions(run.predictions_file(run.model_dir(member), split),
                              make_predictions(ids, lesions, labels, proba))
    return run


def _replace(run: RunDir, member: str, seed: int = 0) -> None:
    path = run.predictions_file(run.model_dir(member), "test")
    preds = read_predictions(path)
    proba = np.random.default_rng(seed).dirichlet(np.ones(7), size=len(preds))
    write_predictions(path, make_predictions(preds.image_id, preds.lesion_id, preds.label, proba))


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture
def report_through_pipeline(monkeypatch):
    """benchmark.py's --report, dispatched to pipeline.report_action."""
    assert benchmark._ACTIONS["report"] == ("pipeline.report_action", "run_report")
    import reports.build

    real = reports.build.build_report
    monkeypatch.setattr(reports.build, "build_report",
                        lambda run_dir, **kwargs: real(run_dir, **kwargs, figures=False))


def _args(*argv: str):
    return benchmark.build_parser().parse_args(list(argv))


def test_report_refits_stale_ensembles_then_reports(tmp_path, capsys, report_through_pipeline):
    run = write_members(tmp_path / "run")
    build_ensembles(run.root, ("all",), n_resamples=10)
    _replace(run, "xception")
    assert all(ensemble_freshness(run.ensemble_dir(n)).stale for n in ENSEMBLE_NAMES)
    assert benchmark.main(["--report", "--out", str(run.root), "--bootstrap", "10"]) == 0
    out = capsys.readouterr().out
    assert f"refit in {run.root}: soft_voting, hard_voting, weighted_voting, stacking" in out
    assert out.strip().splitlines()[-1] == str(run.report_md)
    for name in ENSEMBLE_NAMES:
        assert not ensemble_freshness(run.ensemble_dir(name)).stale
    # the refit soft voting is the mean of the members as they are now
    soft = read_predictions(run.predictions_file(run.ensemble_dir("soft_voting"), "test"))
    members = [read_predictions(run.predictions_file(run.model_dir(m), "test")) for m in MEMBERS]
    np.testing.assert_allclose(soft.proba, np.mean([m.proba for m in members], axis=0))
    metrics = json.loads((run.ensemble_dir("soft_voting") / "metrics.json").read_text())
    assert metrics["test_set"]["images"] == 60 and metrics["members"] == list(MEMBERS)


def test_report_refuses_a_stale_ensemble_it_cannot_refit(tmp_path, capsys,
                                                         report_through_pipeline):
    run = write_members(tmp_path / "run")
    build_ensembles(run.root, ("soft_voting",), n_resamples=10)
    shutil.rmtree(run.model_dir("nasnet_large"))
    before = _snapshot(run.root)
    assert benchmark.main(["--report", "--out", str(run.root), "--bootstrap", "10"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "ensembles/soft_voting is stale: nasnet_large's models/nasnet_large/predictions_val" \
           ".csv is gone" in err and "unknown member 'nasnet_large'" in err
    assert _snapshot(run.root) == before


def test_a_refused_report_refits_nothing(tmp_path, report_through_pipeline):
    run = write_members(tmp_path / "run")
    build_ensembles(run.root, ("soft_voting",), n_resamples=10)
    _replace(run, "xception")
    before = _snapshot(run.root)
    assert benchmark.main(["--report", "--out", str(run.root), "--rank-by", "f2"]) == 2
    assert benchmark.main(["--report", "--out", str(run.root), "--reference", "vgg"]) == 2
    assert _snapshot(run.root) == before


def test_a_grid_gets_its_stale_replicate_ensembles_refit(tmp_path, report_through_pipeline):
    grid = RunDir(tmp_path / "grid")
    for seed in (0, 1):
        replicate = write_members(grid.replicate(0, seed).root, seed=seed)
        build_ensembles(replicate.root, ("soft_voting", "stacking"), n_resamples=10, seed=seed)
    atomic_write_json(grid.run_json, {"config": {"seeds": [0, 1]}})
    _replace(RunDir(grid.replicate(0, 1).root), "xception")
    assert run_report(_args("--report", "--out", str(grid.root), "--bootstrap", "10")) == 0
    for _, _, replicate in grid.replicates():
        for name in ("soft_voting", "stacking"):
            assert not ensemble_freshness(replicate.ensemble_dir(name)).stale
    assert grid.report_md.is_file()


def test_ensemble_validates_the_report_before_writing(tmp_path, capsys):
    run = write_members(tmp_path / "run")
    before = _snapshot(run.root)
    assert benchmark.main(["--ensemble", "all", "--out", str(run.root), "--rank-by", "f2"]) == 2
    assert "'f2' is not a metric" in capsys.readouterr().err
    assert _snapshot(run.root) == before
