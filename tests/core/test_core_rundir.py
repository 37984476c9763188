"""The one run-directory rule, used by every action (--all, --prepare, --ensemble, --report,
--save-baseline, --check): `core.rundir.find_run_dir`.

Before it, --all refused to run the native and paper presets without --dataset and --prepare
defaulted to the synthetic set, while the reading actions defaulted to ham10000; now every action
defaults the dataset the same way (synthetic for --preset smoke, else ham10000). The reading
actions keep their fallback to the only run under runs/ when given neither --dataset nor
--preset and the default directory does not exist (the Quickstart's `--ensemble stacking`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from core import defaults
from core.errors import RunDirError
from core.rundir import RUN_DIR_RULE, default_dataset, find_run_dir


def _path(out=None, dataset=None, preset=None, runs_root=Path("runs")) -> Path:
    return find_run_dir(out, dataset, preset, runs_root, existing=False).root


def test_the_rule_is_dataset_and_preset_with_one_default_each():
    assert _path(None, "synthetic", "smoke") == Path("runs/synthetic-smoke")
    assert _path(None, None, "smoke") == Path("runs/synthetic-smoke")
    assert _path() == Path("runs/ham10000-native")
    assert _path(None, "ham10000") == Path("runs/ham10000-native")
    assert _path(None, None, "paper") == Path("runs/ham10000-paper")
    assert _path(None, "isic2018", "smoke", Path("/r")) == Path("/r/isic2018-smoke")
    assert default_dataset("smoke") == defaults.SMOKE_DATASET == "synthetic"
    assert default_dataset(None) == default_dataset("native") == defaults.DATASET == "ham10000"
    assert "runs/<dataset>-<preset>" in RUN_DIR_RULE and "synthetic" in RUN_DIR_RULE


def test_out_wins(tmp_path):
    assert _path(tmp_path / "x", "ham10000", "paper") == tmp_path / "x"
    assert find_run_dir(tmp_path / "x", "ham10000", "paper", tmp_path).root == tmp_path / "x"
    assert _path("~/x") == Path.home() / "x"


def test_reading_actions_use_the_same_rule(tmp_path):
    (tmp_path / "synthetic-smoke").mkdir()
    (tmp_path / "ham10000-native").mkdir()
    assert find_run_dir(preset="smoke", runs_root=tmp_path).root == tmp_path / "synthetic-smoke"
    assert find_run_dir(dataset="ham10000", runs_root=tmp_path).root == tmp_path / "ham10000-native"
    assert find_run_dir(runs_root=tmp_path).root == tmp_path / "ham10000-native"


def test_without_dataset_and_preset_a_reading_action_takes_the_only_run(tmp_path):
    (tmp_path / "synthetic-smoke").mkdir()
    assert find_run_dir(runs_root=tmp_path).root == tmp_path / "synthetic-smoke"
    # Creating actions never guess: they use the rule's directory.
    assert _path(runs_root=tmp_path) == tmp_path / "ham10000-native"
    (tmp_path / "isic2018-paper").mkdir()
    with pytest.raises(RunDirError, match="which run.*isic2018-paper, .*synthetic-smoke"):
        find_run_dir(runs_root=tmp_path)


def test_a_missing_default_is_named_with_the_rule(tmp_path):
    (tmp_path / "synthetic-smoke").mkdir()
    with pytest.raises(RunDirError, match="ham10000-paper does not exist .*pass --out RUNDIR") \
            as info:
        find_run_dir(preset="paper", runs_root=tmp_path)
    assert RUN_DIR_RULE in str(info.value)
    with pytest.raises(RunDirError, match="which run.*none"):
        find_run_dir(runs_root=tmp_path / "empty")
