"""Atomic file writes: write to a temporary file in the same folder, fsync, then rename.

A reader never sees a half-written file, and a killed process leaves either the old file or the
new one, never a mix. A folder of several files that belong together (an ensemble's predictions,
fit.json and metrics.json) is written the same way as a whole (`staged_dirs`): into a hidden
sibling, then swapped in with Ctrl-C held back, so an interruption leaves the old set or the new
one. An OSError of a write (permission, read-only file system, full disk, a file in the way)
becomes a one-line `FileSystemError` naming the destination (`core.filesystem`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from core.errors import BenchmarkError
from core.filesystem import filesystem_error

_log = logging.getLogger(__name__)

_UMASK = os.umask(0)
os.umask(_UMASK)
# Hidden siblings of a folder being replaced (`staged_dirs`); folder listings skip dot names.
_NEW, _OLD = ".new-", ".old-"


def _as_filesystem_error(exc: BaseException, path: Path, action: str = "write") -> BaseException:
    if isinstance(exc, OSError) and not isinstance(exc, BenchmarkError):
        return filesystem_error(exc, path, action)
    return exc


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary sibling of `path` for writing; on success rename it onto `path`.

    Args:
        path: the final destination.
        mode: "w" (text) or "wb" (binary).
        **kwargs: passed to `open` (e.g. encoding, newline).

    Yields:
        The open temporary file.

    Raises:
        FileSystemError: the folder cannot be created or written, the disk is full, or `path`
            is a folder (the temporary file is removed; `path` is untouched).
    """
    path = Path(path)
    if "b" not in mode:
        kwargs.setdefault("encoding", "utf-8")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise filesystem_error(exc, path) from exc
    try:
        with os.fdopen(fd, mode, **kwargs) as handle:
            # mkstemp creates 0600 files; results are meant to be shared like any other file.
            os.chmod(tmp, 0o666 & ~_UMASK)
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        converted = _as_filesystem_error(exc, path)
        if converted is exc:
            raise
        raise converted from exc


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` atomically (UTF-8)."""
    with atomic_open(path, "w") as handle:
        handle.write(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def _json_default(value: Any) -> Any:
    # NumPy scalars and arrays, Paths and sets appear in configs and metrics.
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (Path, os.PathLike)):
        return os.fspath(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def json_text(obj: Any) -> str:
    """`obj` as the indented, key-sorted JSON text that `atomic_write_json` writes."""
    return json.dumps(_nan_to_none(obj), indent=2, sort_keys=True, default=_json_default) + "\n"


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented, key-sorted JSON to `path` atomically (NaN written as null)."""
    atomic_write_text(path, json_text(obj))


def atomic_write_json_if_changed(path: str | os.PathLike, obj: Any) -> bool:
    """Like `atomic_write_json`, but leave an identical file untouched (mtime kept).

    Returns:
        True when the file was (re)written.
    """
    text = json_text(obj)
    try:
        if Path(path).read_text(encoding="utf-8") == text:
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    atomic_write_text(path, text)
    return True


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    return obj


def atomic_write_csv(path: str | os.PathLike, frame: Any, **kwargs: Any) -> None:
    """Write a pandas DataFrame to CSV atomically (index off unless given)."""
    kwargs.setdefault("index", False)
    with atomic_open(path, "w", newline="") as handle:
        frame.to_csv(handle, **kwargs)


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file written by `atomic_write_json`."""
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def read_json_object(path: str | os.PathLike, what: str = "") -> dict[str, Any]:
    """A JSON object read from `path`, or {} when the file is absent, unreadable or not an object.

    For files that are rebuilt when they are bad (metrics.json, fit.json read for display): a bad
    one is logged (with `what` saying what happens next, e.g. "it will be rewritten") instead of
    raised.

    Args:
        path: the JSON file.
        what: appended to the warning about an unreadable file.

    Returns:
        The object, or {}.
    """
    path = Path(path)
    if not path.is_file():
        return {}
    suffix = f"; {what}" if what else ""
    try:
        data = read_json(path)
    except (ValueError, UnicodeDecodeError, OSError) as exc:
        _log.warning("%s is unreadable (%s)%s", path, exc, suffix)
        return {}
    if not isinstance(data, dict):
        _log.warning("%s is not a JSON object%s", path, suffix)
        return {}
    return data


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) and SIGTERM back for the duration of the block, then deliver them.

    For the few renames that swap a set of folders: an interruption between two of them would
    leave half a set. Outside the main thread (where handlers cannot be set) it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, lambda number, _frame: caught.append(number))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if caught:
            handler = previous[caught[0]]
            if callable(handler):
                handler(caught[0], None)
            elif handler == signal.SIG_DFL:
                if caught[0] == signal.SIGINT:
                    raise KeyboardInterrupt
                os.kill(os.getpid(), caught[0])


def _siblings(target: Path, marker: str) -> list[Path]:
    prefix = f".{target.name}{marker}"
    try:
        return sorted(p for p in target.parent.iterdir() if p.name.startswith(prefix))
    except OSError:
        return []


def _recover(target: Path) -> None:
    """Tidy what a killed `staged_dirs` left beside `target`: restore the old folder when the
    swap stopped between its two renames, and remove unfinished or replaced copies."""
    olds = _siblings(target, _OLD)
    if olds and not target.exists():
        os.rename(olds[-1], target)
        _log.warning("restored %s from an interrupted replacement", target)
        olds = olds[:-1]
    for leftover in [*_siblings(target, _NEW), *olds]:
        shutil.rmtree(leftover, ignore_errors=True)


@contextlib.contextmanager
def staged_dirs(targets: Sequence[str | os.PathLike]) -> Iterator[list[Path]]:
    """Replace several folders as one step: the old set or the new one, never a mix.

    Yields one empty hidden sibling per target (`.<name>.new-XXXX`) to write into. When the block
    succeeds, each target is swapped for its sibling (the old folder renamed aside, then removed)
    with Ctrl-C held back during the renames (`deferred_interrupts`); when it fails, the siblings
    are removed and every target is untouched. A swap a kill (SIGKILL) stopped half-way is
    repaired by the next call on the same target.

    Args:
        targets: the folders to (re)write; their parents are created.

    Yields:
        The staging folders, in the order of `targets`.

    Raises:
        FileSystemError: a folder cannot be created, written or renamed (nothing is replaced).
    """
    paths = [Path(t) for t in targets]
    staged: list[Path] = []
    try:
        for target in paths:
            target.parent.mkdir(parents=True, exist_ok=True)
            _recover(target)
            folder = Path(tempfile.mkdtemp(prefix=f".{target.name}{_NEW}", dir=target.parent))
            os.chmod(folder, 0o777 & ~_UMASK)
            staged.append(folder)
    except OSError as exc:
        for folder in staged:
            shutil.rmtree(folder, ignore_errors=True)
        raise filesystem_error(exc, paths[len(staged)], "create the folder") from exc
    try:
        yield staged
    except BaseException as exc:
        for folder in staged:
            shutil.rmtree(folder, ignore_errors=True)
        converted = _as_filesystem_error(exc, paths[0].parent)
        if converted is exc:
            raise
        raise converted from exc
    moved_aside: list[tuple[Path, Path]] = []
    try:
        _swap(paths, staged, moved_aside)
    finally:  # also when a Ctrl-C held back during the swap is delivered at its end
        for _, old in moved_aside:
            shutil.rmtree(old, ignore_errors=True)


def _swap(targets: list[Path], staged: list[Path], moved_aside: list[tuple[Path, Path]]) -> None:
    """Rename every staged folder onto its target, recording in `moved_aside` the old folders
    renamed aside; on an OSError undo what was done (then `moved_aside` is emptied)."""
    placed: list[tuple[Path, Path]] = []
    with deferred_interrupts():
        try:
            for target, folder in zip(targets, staged, strict=True):
                if target.exists() or target.is_symlink():
                    old = target.with_name(f".{target.name}{_OLD}{folder.name.rsplit('-', 1)[-1]}")
                    os.rename(target, old)
                    moved_aside.append((target, old))
                os.rename(folder, target)
                placed.append((target, folder))
        except OSError as exc:
            for target, folder in reversed(placed):
                with contextlib.suppress(OSError):
                    os.rename(target, folder)
            for target, old in reversed(moved_aside):
                with contextlib.suppress(OSError):
                    os.rename(old, target)
            moved_aside.clear()
            for folder in staged:
                shutil.rmtree(folder, ignore_errors=True)
            raise filesystem_error(exc, targets[len(placed)], "replace the folder") from exc
