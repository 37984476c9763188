"""Atomic file writes: write to a temporary file in the same folder, fsync, then rename.

A reader never sees a half-written file, and a killed process leaves either the old file or the
new one, never a mix.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

_log = logging.getLogger(__name__)

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary sibling of `path` for writing; on success rename it onto `path`.

    Args:
        path: the final destination.
        mode: "w" (text) or "wb" (binary).
        **kwargs: passed to `open` (e.g. encoding, newline).

    Yields:
        The open temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600 files; results are meant to be shared like any other file.
        os.chmod(tmp, 0o666 & ~_UMASK)
        if "b" not in mode:
            kwargs.setdefault("encoding", "utf-8")
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


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
