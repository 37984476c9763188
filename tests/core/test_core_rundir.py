"""Which run directory the reading stages (--ensemble, --report, --check) use without --out."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import RunDirError
from core.rundir import default_run_path, find_run_dir


def test_default_run_path_is_dataset_and_preset():
    assert default_run_path("synthetic", "smoke") == Path("runs/synthetic-smoke")
    assert default_run_path("ham10000", None) == Path("runs/ham10000-native")


def test_out_wins(tmp_path):
    assert find_run_dir(tmp_path / "x", "ham10000", "paper", tmp_path).root == tmp_path / "x"


def test_the_only_run_is_used_without_options(tmp_path):
    (tmp_path / "synthetic-smoke").mkdir()
    assert find_run_dir(runs_root=tmp_path).root == tmp_path / "synthetic-smoke"


def test_several_runs_need_out_or_dataset_and_preset(tmp_path):
    (tmp_path / "synthetic-smoke").mkdir()
    (tmp_path / "ham10000-native").mkdir()
    with pytest.raises(RunDirError, match="which run.*ham10000-native, .*synthetic-smoke"):
        find_run_dir(runs_root=tmp_path)
    assert find_run_dir(preset="smoke", runs_root=tmp_path).root == tmp_path / "synthetic-smoke"
    assert find_run_dir(dataset="ham10000", runs_root=tmp_path).root == tmp_path / "ham10000-native"


def test_missing_default_names_it(tmp_path):
    with pytest.raises(RunDirError, match="ham10000-paper .*pass --out RUNDIR"):
        find_run_dir(preset="paper", runs_root=tmp_path)
    with pytest.raises(RunDirError, match="which run.*none"):
        find_run_dir(runs_root=tmp_path)
