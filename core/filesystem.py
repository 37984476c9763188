"""File-system problems as user errors: one line that names the path, checked before long work.

Permission denied, a read-only file system, a file where a folder is needed (or the reverse) and
a full disk are the user's to fix, so they become a `core.errors.FileSystemError` (exit code 2)
instead of a traceback:

- `filesystem_error(exc, path)`: an OSError met while reading or writing `path`, as one line
  (what failed, why in words, what to do). The atomic writers (`core.atomic`) raise these.
- `check_writable_dir(path, what)`: before an action writes into a folder (or creates it), prove
  that it can: the folder, or its nearest existing ancestor, is a folder and a file can be
  created in it (a probe file, removed at once: `os.access` says yes to root on a read-only
  folder and knows nothing of full disks or read-only mounts).
- `check_writable_file(path, what)`: the same for a file to be written (it must not be a folder).
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path

from core.errors import FileSystemError

PROBE_PREFIX = ".dermbench-write-check-"

# errno -> (what happened, in words; what to do)
_EXPLAINED: dict[int, tuple[str, str]] = {
    errno.EACCES: ("permission denied", "make it writable for this user or choose another path"),
    errno.EPERM: ("operation not permitted", "make it writable for this user or choose another "
                                             "path"),
    errno.EROFS: ("read-only file system", "copy it to a writable file system or choose another "
                                           "path"),
    errno.ENOSPC: ("no space left on the device (disk full)", "free some space, then rerun the "
                                                              "same command"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "remove or rename that file, "
                                                                  "or choose another path"),
    errno.EISDIR: ("it is a folder, not a file", "give a file name, not a folder"),
    errno.EEXIST: ("a file is in the way of a folder", "remove or rename that file, or choose "
                                                       "another path"),
    errno.ENAMETOOLONG: ("the name is too long", "choose a shorter path"),
    errno.ENOENT: ("no such file or folder", "check the path"),
}
for _name in ("EDQUOT",):  # not on every platform
    if hasattr(errno, _name):
        _EXPLAINED[getattr(errno, _name)] = ("disk quota exceeded", "free some space, then rerun "
                                                                    "the same command")


def explain(exc: OSError) -> tuple[str, str]:
    """(what happened, what to do) for an OSError, in words.

    Args:
        exc: the error.

    Returns:
        Two short phrases; unknown errors give their own strerror and a generic fix.
    """
    found = _EXPLAINED.get(exc.errno or -1)
    if found is not None:
        return found
    return (exc.strerror or str(exc) or type(exc).__name__, "check the path and its permissions")


def filesystem_error(exc: OSError, path: str | os.PathLike, action: str = "write") -> FileSystemError:
    """An OSError met while working on `path`, as a one-line `FileSystemError`.

    Args:
        exc: the OSError (a FileSystemError is returned as it is).
        path: the file or folder the action was about (named in the message).
        action: what was attempted, e.g. "write", "create the folder", "read".

    Returns:
        The error to raise (its `errno` is the original's).
    """
    if isinstance(exc, FileSystemError):
        return exc
    reason, fix = explain(exc)
    where = ""
    other = os.fsdecode(exc.filename) if isinstance(exc.filename, (str, bytes)) else ""
    # Name another path the error is about (e.g. a file in the way), not our hidden temp files.
    if other and other != os.fspath(path) and not Path(other).name.startswith("."):
        where = f" ({other})"
    error = FileSystemError(f"cannot {action} {path}{where}: {reason}; {fix}")
    error.errno = exc.errno
    return error


def _nearest_existing(path: Path) -> Path:
    current = path
    while True:
        try:
            if current.exists() or current.is_symlink():
                return current
        except OSError:  # an unreadable parent: let the probe below report it
            return current
        if current.parent == current:
            return current
        current = current.parent


def check_writable_dir(path: str | os.PathLike, what: str = "folder") -> Path:
    """Refuse, before any work, a folder that cannot be written or created.

    Nothing is created: when `path` does not exist, its nearest existing ancestor must be a
    folder in which a file can be created (so creating `path` later can succeed).

    Args:
        path: the folder an action will write into.
        what: how the message calls it, e.g. "run directory", "--data-dir".

    Returns:
        `path` as a Path.

    Raises:
        FileSystemError: `path` (or an ancestor) is a file, or the folder is not writable
            (permission, read-only file system, ...), naming the path.
    """
    path = Path(path).expanduser()
    existing = _nearest_existing(path)
    if existing == path and path.exists() and not path.is_dir():
        raise FileSystemError(
            f"{what} {path} is a file, not a folder; remove or rename the file, or choose another "
            "path")
    if existing != path and existing.exists() and not existing.is_dir():
        raise FileSystemError(
            f"cannot create {what} {path}: {existing} is a file, not a folder; remove or rename "
            "that file, or choose another path")
    try:
        fd, probe = tempfile.mkstemp(prefix=PROBE_PREFIX, dir=existing)
    except OSError as exc:
        reason, fix = explain(exc)
        target = str(path) if existing == path else f"{path} (in {existing})"
        verb = "write to" if existing == path else "create"
        error = FileSystemError(f"cannot {verb} {what} {target}: {reason}; {fix}")
        error.errno = exc.errno
        raise error from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return path


def check_writable_file(path: str | os.PathLike, what: str = "file") -> Path:
    """Refuse, before any work, a file that cannot be written: a folder, or one in a folder that
    cannot be written or created.

    Args:
        path: the file an action will write (atomically: only its folder must be writable).
        what: how the message calls it, e.g. "--save-baseline FILE".

    Returns:
        `path` as a Path.

    Raises:
        FileSystemError: naming the path and the fix.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise FileSystemError(
            f"{what} {path} is a folder, not a file; give a file name, e.g. "
            f"{path / 'baseline.json'}")
    check_writable_dir(path.parent, f"the folder of {what}")
    return path
