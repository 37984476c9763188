"""Atomic writes: no partial files, identical rewrites leave the file untouched."""

from __future__ import annotations

import os
import stat

import numpy as np
import pandas as pd
import pytest

from core.atomic import (
    atomic_open,
    atomic_write_csv,
    atomic_write_json,
    atomic_write_json_if_changed,
    read_json,
)


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_open(target) as handle:
        handle.write("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_json_round_trip_with_numpy_and_nan(tmp_path):
    path = tmp_path / "sub" / "m.json"
    atomic_write_json(path, {"a": np.float64(0.5), "b": np.arange(3), "c": float("nan")})
    assert read_json(path) == {"a": 0.5, "b": [0, 1, 2], "c": None}


def test_files_get_umask_permissions_not_0600(tmp_path):
    path = tmp_path / "r.csv"
    atomic_write_csv(path, pd.DataFrame({"x": [1]}))
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_if_changed_keeps_identical_file_untouched(tmp_path):
    path = tmp_path / "m.json"
    assert atomic_write_json_if_changed(path, {"a": 1}) is True
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    assert atomic_write_json_if_changed(path, {"a": 1}) is False
    assert path.stat().st_mtime_ns == 1_000_000_000
    assert atomic_write_json_if_changed(path, {"a": 2}) is True
    assert read_json(path) == {"a": 2}
