"""File-system failures through the real CLI (benchmark.main): each one exits 2 with one line
naming the path, no traceback, checked before the long work, and leaves the run directory
byte-identical (issue 15).

Running as root, a chmod 0555 folder is still writable, so a read-only folder (EROFS), a denied
one (EACCES) and a full disk (ENOSPC) are simulated by making the OS calls under a folder fail
with the real errno; tests/core/test_core_filesystem.py also uses a real read-only mount.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest

import benchmark
from core.predictions import make_predictions, write_predictions
from core.rundir import RunDir

MEMBERS = ("inception_v3", "xception")


def _under(path, root: Path) -> bool:
    try:
        return Path(os.fsdecode(path)).absolute().is_relative_to(root.absolute())
    except (TypeError, ValueError):
        return False


def deny_writes(monkeypatch, root: Path, code: int = errno.EROFS) -> None:
    """Every creation, rename or removal under `root` fails with `code` (EROFS: read-only)."""

    def fail(path):
        raise OSError(code, os.strerror(code), os.fsdecode(path))

    def guard(real, *, write_flags: bool = False):
        def call(path, *args, **kwargs):
            flags = args[0] if args else kwargs.get("flags", 0)
            writing = not write_flags or flags & (os.O_CREAT | os.O_WRONLY | os.O_RDWR)
            if writing and isinstance(path, (str, bytes, os.PathLike)) and _under(path, root):
                fail(path)
            return real(path, *args, **kwargs)
        return call

    monkeypatch.setattr(os, "open", guard(os.open, write_flags=True))
    for name in ("mkdir", "unlink", "remove", "rmdir"):
        monkeypatch.setattr(os, name, guard(getattr(os, name)))
    for name in ("rename", "replace"):
        real = getattr(os, name)

        def move(src, dst, *args, _real=real, **kwargs):
            if _under(src, root) or _under(dst, root):
                fail(dst)
            return _real(src, dst, *args, **kwargs)

        monkeypatch.setattr(os, name, move)


def write_members(root: Path, n: int = 42) -> RunDir:
    rng = np.random.default_rng(0)
    run = RunDir(root)
    for split, offset in (("val", 0), ("test", n)):
        labels = np.array(["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"])[np.arange(n) % 7]
        for skill, member in enumerate(MEMBERS, 1):
            logits = rng.normal(size=(n, 7))
            logits[np.arange(n), np.arange(n) % 7] += skill
            write_predictions(
                run.predictions_file(run.model_dir(member), split),
                make_predictions([f"I{offset + i}" for i in range(n)],
                                 [f"L{offset + i}" for i in range(n)], labels,
                                 np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)))
    return run


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _one_line(capsys) -> str:
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("error: ")
    return err


@pytest.fixture
def run(tmp_path) -> RunDir:
    return write_members(tmp_path / "run")


@pytest.fixture
def report_dispatch():
    """--report as benchmark.py dispatches it (pipeline.report_action)."""
    assert benchmark._ACTIONS["report"] == ("pipeline.report_action", "run_report")


@pytest.mark.parametrize(("code", "words"), [(errno.EROFS, "read-only file system"),
                                             (errno.EACCES, "permission denied")])
def test_report_on_a_read_only_run_directory(run, capsys, monkeypatch, report_dispatch, code,
                                             words):
    before = _snapshot(run.root)
    deny_writes(monkeypatch, run.root, code)
    assert benchmark.main(["--report", "--out", str(run.root)]) == 2
    err = _one_line(capsys)
    assert f"cannot write to run directory {run.root}: {words}" in err
    assert _snapshot(run.root) == before


def test_ensemble_all_on_a_read_only_run_directory(run, capsys, monkeypatch):
    before = _snapshot(run.root)
    deny_writes(monkeypatch, run.root)
    assert benchmark.main(["--ensemble", "all", "--out", str(run.root)]) == 2
    assert f"cannot create the ensembles folder {run.ensembles_dir} (in {run.root}): read-only " \
           "file system" in _one_line(capsys)
    assert _snapshot(run.root) == before


def test_save_baseline_into_a_read_only_folder(run, tmp_path, capsys, monkeypatch):
    target = tmp_path / "baselines"
    target.mkdir()
    deny_writes(monkeypatch, target)
    assert benchmark.main(["--save-baseline", str(target / "b.json"), "--out", str(run.root)]) == 2
    assert f"cannot write to the folder of --save-baseline FILE {target}: read-only file system" \
        in _one_line(capsys)
    assert list(target.iterdir()) == []


def test_save_baseline_onto_a_folder(run, tmp_path, capsys):
    assert benchmark.main(["--save-baseline", str(tmp_path), "--out", str(run.root)]) == 2
    assert f"--save-baseline FILE {tmp_path} is a folder, not a file" in _one_line(capsys)


def test_a_full_disk_during_report_is_one_line(run, capsys, monkeypatch, report_dispatch):
    before = _snapshot(run.root)

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    assert benchmark.main(["--report", "--out", str(run.root)]) == 2
    err = _one_line(capsys)
    assert "no space left on the device (disk full); free some space" in err
    assert str(run.root) in err
    assert _snapshot(run.root) == before  # the first write failed; no temp file is left


@pytest.fixture
def no_long_work(monkeypatch):
    """Fail the test if --prepare starts reading the data or building the image cache."""
    import data_utils.cache
    import data_utils.prepare

    def started(*args, **kwargs):
        raise AssertionError("the long work started before the file-system check")

    monkeypatch.setattr(data_utils.prepare, "read_dataset", started)
    monkeypatch.setattr(data_utils.cache, "build_cache", started)


def test_prepare_out_that_is_a_file_is_refused_before_the_cache(tmp_path, capsys, no_long_work):
    # Issue 15: found only after the whole image cache was built, as a traceback.
    out = tmp_path / "run"
    out.write_text("not a folder")
    argv = ["--prepare", "--preset", "smoke", "--out", str(out), "--cache-dir",
            str(tmp_path / "cache")]
    assert benchmark.main(argv) == 2
    assert f"--out (the run directory) {out} is a file, not a folder" in _one_line(capsys)
    assert not (tmp_path / "cache").exists()


def test_prepare_on_a_read_only_file_system(tmp_path, capsys, monkeypatch, no_long_work):
    read_only = tmp_path / "ro"
    read_only.mkdir()
    deny_writes(monkeypatch, read_only)
    out = read_only / "run"
    argv = ["--prepare", "--dataset", "ham10000", "--data-dir", str(tmp_path), "--out", str(out)]
    assert benchmark.main(argv) == 2
    assert f"cannot create --out (the run directory) {out} (in {read_only}): read-only file " \
           "system" in _one_line(capsys)
    assert list(read_only.iterdir()) == []


def test_download_into_a_data_dir_that_is_a_file(tmp_path, capsys):
    data_dir = tmp_path / "data"
    data_dir.write_text("not a folder")
    argv = ["--download", "--dataset", "ham10000", "--data-dir", str(data_dir)]
    assert benchmark.main(argv) == 2
    assert f"--data-dir {data_dir} is a file, not a folder" in _one_line(capsys)
    assert data_dir.read_text() == "not a folder"
