"""The grid report refuses an ensemble name whose replicates mix members or fit sources."""

from __future__ import annotations

import pytest

import benchmark
from core.atomic import atomic_write_json, read_json
from core.errors import BenchmarkError
from reports.build import build_report
from reports.grid_consistency import MixedEnsembleError, ensemble_variant

BACKBONES = {"inception_resnet_v2": 2.0, "xception": 1.5, "resnext101": 1.2}


@pytest.fixture
def grid(synthetic_grid, tmp_path):
    return synthetic_grid(tmp_path / "grid", folds=2, seeds=(0,), backbones=BACKBONES,
                          baselines={}, ensembles=("soft_voting", "stacking"), n_test=40,
                          n_val=30, histories=False)


def _edit_fit(run, fold, seed, name, **changes):
    path = run.replicate(fold, seed).ensemble_dir(name) / "fit.json"
    atomic_write_json(path, {**read_json(path), **changes})


@pytest.mark.parametrize(("changes", "expected"), [
    ({"fit_split": "val"},
     "fold0-seed0: members inception_resnet_v2, resnext101, xception, fit on oof; "
     "fold1-seed0: members inception_resnet_v2, resnext101, xception, fit on val"),
    ({"members": ["xception", "inception_resnet_v2"]},
     "fold1-seed0: members inception_resnet_v2, xception, fit on oof"),
    ({"calibrated": True},
     "fold1-seed0: members inception_resnet_v2, resnext101, xception, fit on oof "
     "(temperature-scaled members)"),
])
def test_mixed_variants_are_refused_before_anything_is_written(grid, changes, expected):
    _edit_fit(grid, 1, 0, "stacking", **changes)
    with pytest.raises(MixedEnsembleError, match="ensemble 'stacking' mixes variants") as info:
        build_report(grid.root, figures=False)
    message = str(info.value)
    assert "\n" not in message and isinstance(info.value, BenchmarkError)
    assert expected in message
    assert "rerun the grid's --all command with the same options" in message
    assert "--ensemble stacking --members inception_resnet_v2," in message
    assert not grid.report_md.exists() and not grid.jobs_csv.exists()


def test_the_cli_exits_with_code_2_and_one_line(grid, capsys):
    _edit_fit(grid, 0, 0, "soft_voting", members=["resnext101", "xception"])
    assert benchmark.main(["--report", "--out", str(grid.root)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1
    assert "ensemble 'soft_voting'" in err and "fold0-seed0" in err


def test_consistent_grid_and_metrics_json_fallback(grid):
    build_report(grid.root, figures=False)  # the fixture's replicates agree
    # without fit.json the members and fit source recorded in metrics.json count
    entry = grid.replicate(1, 0).ensemble_dir("stacking")
    (entry / "fit.json").unlink()
    atomic_write_json(entry / "metrics.json", {**read_json(entry / "metrics.json"),
                                               "members": ["xception", "resnext101"],
                                               "fit_split": "oof"})
    assert ensemble_variant(entry) == (("resnext101", "xception"), "oof")
    with pytest.raises(MixedEnsembleError, match="fold1-seed0: members resnext101, xception"):
        build_report(grid.root, figures=False)
    # an ensemble recording neither is not checked
    atomic_write_json(entry / "metrics.json", {k: v for k, v in read_json(
        entry / "metrics.json").items() if k not in ("members", "fit_split")})
    assert ensemble_variant(entry) is None
    assert build_report(grid.root, figures=False).is_file()
