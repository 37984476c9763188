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


@pytest.fixture(autouse=True, scope="session")
def _isolated_caches(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep the decoded-image cache and Keras's cache out of the user's home during tests."""
    root = tmp_path_factory.mktemp("caches")
    os.environ["DERMBENCH_CACHE"] = str(root / "dermbench")
    os.environ["KERAS_HOME"] = str(root / "keras")
    os.environ.setdefault("MPLBACKEND", "Agg")
