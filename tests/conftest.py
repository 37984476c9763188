"""Shared fixtures: where the real HAM10000 sample lives, and an isolated cache per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DERMBENCH_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
SAMPLE_DIR = SHARED_DATA / "ham10000_sample"
FULL_METADATA = SHARED_DATA / "ham10000_metadata_full" / "HAM10000_metadata.csv"


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The 180 real HAM10000 images in the official layout (skips when ../shared is absent)."""
    if not (SAMPLE_DIR / "HAM10000_metadata.csv").is_file():
        pytest.skip(f"real HAM10000 sample not found at {SAMPLE_DIR} (set DERMBENCH_SHARED_DATA)")
    return SAMPLE_DIR


@pytest.fixture(scope="session")
def full_metadata() -> Path:
    """The complete official HAM10000 metadata, 10,015 rows (skips when ../shared is absent)."""
    if not FULL_METADATA.is_file():
        pytest.skip(f"full HAM10000 metadata not found at {FULL_METADATA} (set DERMBENCH_SHARED_DATA)")
    return FULL_METADATA


# Two tiny backbones registered as a plug-in (tests/plugins/dermbench_tiny_backbones.py): the
# orchestration end-to-end tests (grids, executors, plug-ins) train them instead of a Keras
# application: tiny_plugin_a and tiny_plugin_b.
_TINY_BACKBONES_MODULE = "dermbench_tiny_backbones"


@pytest.fixture(scope="session")
def tiny_backbones_env() -> dict[str, str]:
    """The environment of a subprocess that registers the two tiny test backbones (merge it
    into os.environ)."""
    path = [str(REPO_ROOT / "tests" / "plugins"), str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]
    return {"DERMBENCH_BACKBONES": _TINY_BACKBONES_MODULE,
            "PYTHONPATH": os.pathsep.join(p for p in path if p)}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Order the tests for two workers sharing two cores (tox runs xdist with
    --no-loadscope-reorder, so files are handed out in this order, one at a time to whichever
    worker is free): the slow end-to-end files first, so that the workers share them; the tests
    on the shared smoke run last, so that it has finished training in the background by then
    instead of keeping a worker waiting. The order within a file is kept."""
    def module(item: pytest.Item) -> str:
        return item.nodeid.split("::", 1)[0]

    on_smoke_run = {module(item) for item in items
                    if "trained_smoke_run" in getattr(item, "fixturenames", ())}
    slow = {module(item) for item in items if item.get_closest_marker("slow") is not None}
    items.sort(key=lambda item: 2 if module(item) in on_smoke_run else
               0 if module(item) in slow else 1)


@pytest.fixture(autouse=True, scope="session")
def _isolated_caches(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep the decoded-image cache and Keras's cache out of the user's home during tests."""
    root = tmp_path_factory.mktemp("caches")
    os.environ["DERMBENCH_CACHE"] = str(root / "dermbench")
    os.environ["KERAS_HOME"] = str(root / "keras")
    os.environ.setdefault("MPLBACKEND", "Agg")


# The one trained smoke run the end-to-end tests share (`trained_smoke_run`): the regression
# gate's run (tests/test_regression_gate.py checks it against tests/baselines/smoke_gate.json):
# deterministic, two backbones (so that every ensemble is built), the from-scratch CNN and the SVM
# baseline, on the generated stand-in for HAM10000. It starts in the background as soon as
# collection shows a test that needs it (`pytest_collection_finish`), so it trains while the unit
# tests run; the fixture waits for it. Tests read it; a test that changes files works on a copy
# (`copy_run`).
# 350 generated images: every class keeps a lesion in each split (the ISIC scorer needs them all
# in the test split); the rarest classes have one lesion in the validation split, so the fitted
# ensembles show the "not learned" fallback too.
SMOKE_RUN_ARGS = ("--all", "--preset", "smoke", "--deterministic", "--bootstrap", "200",
                  "--synthetic-images", "350",
                  "--models", "inception_v3", "xception", "paper_cnn", "inception_resnet_v2+svm")
SMOKE_RUN_TIMEOUT = 1800.0
_SMOKE_RUN = "shared-smoke-run"


def _shared_tmp(base: Path) -> Path:
    """The folder every xdist worker of this test session sees, from a session's basetemp (the
    session's own base folder without xdist)."""
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def _start_smoke_run(shared: Path) -> None:
    """Start the shared smoke run in the background, once per test session (file lock): its
    output goes to shared-smoke-run.log, its exit code to shared-smoke-run.rc when it ends."""
    import subprocess
    import sys

    from filelock import FileLock

    with FileLock(str(shared / f"{_SMOKE_RUN}.lock")):
        started = shared / f"{_SMOKE_RUN}.started"
        if started.is_file():
            return
        started.write_text(str(os.getpid()))
        command = [sys.executable, str(REPO_ROOT / "benchmark.py"), *SMOKE_RUN_ARGS,
                   "--out", str(shared / _SMOKE_RUN)]
        wrapper = ("import pathlib, subprocess, sys\n"
                   "with open(sys.argv[1], 'w') as log:\n"
                   "    rc = subprocess.call(sys.argv[3:], stdout=log, stderr=subprocess.STDOUT)\n"
                   "pathlib.Path(sys.argv[2] + '.tmp').write_text(str(rc))\n"
                   "pathlib.Path(sys.argv[2] + '.tmp').replace(sys.argv[2])\n")
        caches = shared / f"{_SMOKE_RUN}-caches"  # never the user's home (as _isolated_caches)
        env = {**os.environ, "DERMBENCH_CACHE": str(caches / "dermbench"),
               "KERAS_HOME": str(caches / "keras"), "MPLBACKEND": "Agg"}
        subprocess.Popen([sys.executable, "-c", wrapper, str(shared / f"{_SMOKE_RUN}.log"),
                          str(shared / f"{_SMOKE_RUN}.rc"), *command], cwd=shared, env=env,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the shared smoke run early when a selected test needs it."""
    if not any("trained_smoke_run" in getattr(item, "fixturenames", ())
               for item in session.items):
        return
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is not None:
        _start_smoke_run(_shared_tmp(factory.getbasetemp()))


@pytest.fixture(scope="session")
def trained_smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run of SMOKE_RUN_ARGS (weights, predictions, every ensemble, the report),
    trained once per test session and shared by all xdist workers.

    Treat it as read-only; copy it with `copy_run` before changing anything.
    """
    import time

    shared = _shared_tmp(tmp_path_factory.getbasetemp())
    _start_smoke_run(shared)
    rc_file = shared / f"{_SMOKE_RUN}.rc"
    deadline = time.monotonic() + SMOKE_RUN_TIMEOUT
    while not rc_file.is_file():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the shared smoke run did not finish in {SMOKE_RUN_TIMEOUT:.0f} s")
        time.sleep(1.0)
    if rc_file.read_text().strip() != "0":
        log = (shared / f"{_SMOKE_RUN}.log").read_text()
        raise RuntimeError(f"the shared smoke run failed (exit {rc_file.read_text().strip()}):\n"
                           + log[-4000:])
    return shared / _SMOKE_RUN


@pytest.fixture
def copy_run(tmp_path: Path):
    """Copy a run directory into this test's tmp folder (mtimes kept) and return the copy."""
    import shutil

    def copy(run: Path, name: str = "run") -> Path:
        target = tmp_path / name
        shutil.copytree(run, target)
        return target

    return copy
