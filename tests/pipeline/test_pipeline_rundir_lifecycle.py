"""Choosing and holding the run directory of --all, and its provenance: --force-new siblings, the
protocol check of an existing run, the lock, package versions and the git sha."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from core.atomic import atomic_write_json
from core.errors import RunDirError
from core.rundir import RunDir
from pipeline.provenance import git_info, package_versions
from pipeline.rundir_lifecycle import ProtocolMismatch, candidate_dirs, check_existing, locked
from training.settings import RunConfig, SvmSettings, TrainingSettings

CONFIG = RunConfig(
    dataset="synthetic", synthetic_images=80, preset="smoke", entries=("paper_cnn",),
    training=TrainingSettings(batch_size=32, min_batch_size=4, image_size={"paper_cnn": 64},
                              phase1_epochs=1),
    svm=SvmSettings(feature_size=75),
)


def _run_dir(tmp_path: Path) -> RunDir:
    run = RunDir(tmp_path / "run")
    atomic_write_json(run.run_json, {"config": CONFIG.to_dict(), "fingerprint": "f" * 64,
                                     "signatures": {"splits_sha256": "0" * 64}})
    return run


def test_force_new_candidates_are_numbered_siblings(tmp_path):
    assert list(candidate_dirs(tmp_path / "run", False)) == [tmp_path / "run"]
    candidates = candidate_dirs(tmp_path / "run", True)
    assert [next(candidates) for _ in range(3)] == [
        tmp_path / "run", tmp_path / "run-2", tmp_path / "run-3"]


def test_an_existing_run_with_another_protocol_is_named(tmp_path):
    run = _run_dir(tmp_path)
    assert check_existing(tmp_path / "absent", CONFIG, {}) is None
    assert check_existing(run.root, CONFIG, {})["fingerprint"] == "f" * 64
    other = replace(CONFIG.with_training(phase1_epochs=4), seed=2, data_dir="/elsewhere",
                    entries=("xception",))
    with pytest.raises(ProtocolMismatch) as info:
        check_existing(run.root, other, {})
    assert info.value.description == "seed: 0 -> 2; training.phase1_epochs: 1 -> 4"


def test_a_run_directory_is_locked_while_in_use(tmp_path):
    with locked(tmp_path / "run"):
        with pytest.raises(RunDirError, match=f"in use by pid {os.getpid()}"):
            with locked(tmp_path / "run"):
                pass
    with locked(tmp_path / "run"):  # released again
        pass


def test_provenance_helpers():
    versions = package_versions(("numpy", "surely-not-installed-package"))
    assert versions == {"numpy": np.__version__}
    info = git_info()
    if info is not None:
        assert len(info["sha"]) == 40 and isinstance(info["dirty"], bool)
    assert git_info(Path("/")) is None
