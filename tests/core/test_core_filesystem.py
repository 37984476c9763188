"""File-system failures as one-line user errors (core.filesystem, core.atomic), folders written as
one set (core.atomic.staged_dirs), and file names that never collide (core.rundir.entry_file_stem).

Running as root, a chmod 0555 folder is still writable, so read-only folders and full disks are
simulated by making the OS calls fail with the real errno (EROFS, ENOSPC); one test also uses a
real read-only bind mount where the machine allows it.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from core.atomic import (
    atomic_open,
    atomic_write_json,
    atomic_write_text,
    deferred_interrupts,
    staged_dirs,
)
from core.errors import BenchmarkError, FileSystemError
from core.filesystem import check_writable_dir, check_writable_file, filesystem_error
from core.rundir import entry_file_stem


def _under(path, root: Path) -> bool:
    try:
        return Path(os.fsdecode(path)).resolve().is_relative_to(root.resolve())
    except (TypeError, ValueError):
        return False


def read_only(monkeypatch, root: Path) -> None:
    """Make every creation, rename and removal under `root` fail with EROFS."""
    real_open, real_mkdir = os.open, os.mkdir

    def deny(path):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(path))

    def fake_open(path, flags, *args, **kwargs):
        if flags & (os.O_CREAT | os.O_WRONLY | os.O_RDWR) and _under(path, root):
            deny(path)
        return real_open(path, flags, *args, **kwargs)

    def fake_mkdir(path, *args, **kwargs):
        if _under(path, root):
            deny(path)
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)


@pytest.mark.parametrize(("code", "words"), [
    (errno.EACCES, "permission denied"),
    (errno.EROFS, "read-only file system"),
    (errno.ENOSPC, "no space left on the device (disk full)"),
    (errno.ENOTDIR, "a part of the path is a file, not a folder"),
    (errno.EISDIR, "it is a folder, not a file"),
])
def test_os_errors_become_one_line_messages_naming_the_path(tmp_path, code, words):
    error = filesystem_error(OSError(code, os.strerror(code)), tmp_path / "x.json")
    assert isinstance(error, BenchmarkError) and isinstance(error, OSError)
    assert error.exit_code == 2 and error.errno == code
    text = str(error)
    assert text.startswith(f"cannot write {tmp_path / 'x.json'}: {words}; ") and "\n" not in text


def test_check_writable_dir_refuses_files_and_read_only_folders(tmp_path, monkeypatch):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(FileSystemError, match=f"--out {afile} is a file, not a folder"):
        check_writable_dir(afile, "--out")
    with pytest.raises(FileSystemError, match=f"cannot create --out {afile / 'run'}: {afile} is a "
                                              "file, not a folder"):
        check_writable_dir(afile / "run", "--out")
    # a folder that can be created: nothing is created by the check
    assert check_writable_dir(tmp_path / "new" / "run", "--out") == tmp_path / "new" / "run"
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # the probe is gone
    read_only(monkeypatch, tmp_path)
    with pytest.raises(FileSystemError, match=f"cannot write to run directory {tmp_path}: "
                                              "read-only file system"):
        check_writable_dir(tmp_path, "run directory")
    with pytest.raises(FileSystemError, match=f"cannot create --out {tmp_path / 'a'} \\(in "
                                              f"{tmp_path}\\): read-only file system"):
        check_writable_dir(tmp_path / "a", "--out")


def test_check_writable_file_refuses_a_folder(tmp_path):
    with pytest.raises(FileSystemError, match="FILE .* is a folder, not a file; give a file name"):
        check_writable_file(tmp_path, "FILE")
    assert check_writable_file(tmp_path / "b.json") == tmp_path / "b.json"


def test_a_full_disk_mid_write_is_a_one_line_error_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    target.write_text("old")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(FileSystemError, match=f"cannot write {target}: no space left on the device"):
        atomic_write_json(target, {"a": 1})
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]  # no temp file left


def test_writing_onto_a_folder_or_under_a_file_is_a_one_line_error(tmp_path):
    (tmp_path / "adir").mkdir()
    with pytest.raises(FileSystemError, match="it is a folder, not a file"):
        atomic_write_text(tmp_path / "adir", "x")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(FileSystemError, match=f"cannot write {tmp_path / 'afile' / 'b.txt'}"):
        atomic_write_text(tmp_path / "afile" / "b.txt", "x")


def test_errors_raised_by_the_writer_itself_are_kept(tmp_path):
    with pytest.raises(RuntimeError, match="bug"), atomic_open(tmp_path / "a.txt") as handle:
        handle.write("x")
        raise RuntimeError("bug")


def _write(folder: Path, text: str) -> None:
    atomic_write_text(folder / "a.txt", text)
    atomic_write_text(folder / "b.txt", text)


def test_staged_dirs_replace_every_folder_or_none(tmp_path):
    one, two = tmp_path / "ens" / "one", tmp_path / "ens" / "two"
    with staged_dirs([one, two]) as (a, b):
        _write(a, "v1")
        _write(b, "v1")
    assert (one / "a.txt").read_text() == "v1" and (two / "b.txt").read_text() == "v1"
    with pytest.raises(KeyboardInterrupt), staged_dirs([one, two]) as (a, b):
        _write(a, "v2")
        raise KeyboardInterrupt  # Ctrl-C while writing the second folder
    assert (one / "a.txt").read_text() == "v1" and (two / "a.txt").read_text() == "v1"
    assert sorted(p.name for p in (tmp_path / "ens").iterdir()) == ["one", "two"]
    with staged_dirs([one, two]) as (a, b):
        _write(a, "v3")
        (b / "c.txt").write_text("only")
    assert (one / "a.txt").read_text() == "v3"
    assert sorted(p.name for p in two.iterdir()) == ["c.txt"]  # the old files are gone
    assert sorted(p.name for p in (tmp_path / "ens").iterdir()) == ["one", "two"]


def test_ctrl_c_during_the_swap_is_delivered_after_it(tmp_path, monkeypatch):
    one, two = tmp_path / "one", tmp_path / "two"
    for folder in (one, two):
        folder.mkdir()
        (folder / "a.txt").write_text("old")
    real_rename = os.rename
    calls = []

    def rename_then_interrupt(src, dst):
        calls.append(src)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C between the renames
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename_then_interrupt)
    with pytest.raises(KeyboardInterrupt), staged_dirs([one, two]) as (a, b):
        _write(a, "new")
        _write(b, "new")
    assert (one / "a.txt").read_text() == "new" and (two / "a.txt").read_text() == "new"
    assert len(calls) == 4 and sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]


def test_deferred_interrupts_outside_a_signal_keeps_quiet():
    with deferred_interrupts():
        pass


def test_a_swap_killed_half_way_is_repaired_by_the_next_write(tmp_path):
    target = tmp_path / "soft_voting"
    (tmp_path / ".soft_voting.old-abc").mkdir()  # renamed aside, then the process was killed
    (tmp_path / ".soft_voting.old-abc" / "a.txt").write_text("old")
    (tmp_path / ".soft_voting.new-def").mkdir()  # an unfinished copy
    with staged_dirs([target]) as (folder,):
        assert (target / "a.txt").read_text() == "old"  # restored before anything else
        _write(folder, "new")
    assert (target / "a.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["soft_voting"]


def test_staged_dirs_on_a_read_only_folder_change_nothing(tmp_path, monkeypatch):
    target = tmp_path / "one"
    target.mkdir()
    (target / "a.txt").write_text("old")
    read_only(monkeypatch, tmp_path)
    with pytest.raises(FileSystemError, match="read-only file system"), \
            staged_dirs([target]) as (folder,):
        _write(folder, "new")
    assert (target / "a.txt").read_text() == "old"


NAMES = ["my model", "my_model", "my~20model", "inception_resnet_v2+svm", ".hidden", "x/y",
         "é", "e\u0301", "MyModel", "a" * 200, "a" * 199 + "b", "roc_x", "~"]


def test_entry_file_stems_are_distinct_safe_and_readable():
    stems = [entry_file_stem(name) for name in NAMES]
    assert len(set(stems)) == len(stems)
    assert entry_file_stem("my_model") == "my_model"
    assert entry_file_stem("inception_resnet_v2+svm") == "inception_resnet_v2+svm"
    assert entry_file_stem("my model") == "my~20model"
    assert entry_file_stem(".hidden") == "~2ehidden"
    for stem in stems:
        assert "/" not in stem and not stem.startswith(".") and len(stem.encode()) <= 150
        assert all(c.isascii() for c in stem)


@pytest.fixture
def real_read_only_mount(tmp_path):
    """A real read-only bind mount of a folder (root with mount rights only), else skip."""
    source, mount = tmp_path / "src", tmp_path / "ro"
    source.mkdir()
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("needs root for a bind mount")
    done = subprocess.run(["mount", "--bind", str(source), str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here: {done.stderr.decode().strip()}")
    try:
        remount = subprocess.run(["mount", "-o", "remount,bind,ro", str(mount)],
                                 capture_output=True)
        if remount.returncode != 0:
            pytest.skip("cannot remount read-only here")
        yield source, mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_a_real_read_only_file_system_is_refused_before_work(real_read_only_mount):
    source, mount = real_read_only_mount
    (source / "models").mkdir()
    with pytest.raises(FileSystemError, match=f"cannot write to run directory {mount}: read-only "
                                              "file system"):
        check_writable_dir(mount, "run directory")
    with pytest.raises(FileSystemError, match="read-only file system"):
        atomic_write_text(mount / "models" / "metrics.json", "{}")
    assert not tempfile.gettempdir().startswith(str(mount))
    assert sorted(p.name for p in source.iterdir()) == ["models"]
