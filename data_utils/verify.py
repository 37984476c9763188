"""Verification of downloaded files: checksums, zip integrity, and the markers that remember it.

A `<name>.verified.json` marker beside each verified file or extracted folder records its size,
mtime and hashes, so a rerun of `--download` skips it without rehashing unless the file changed.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

from core.atomic import atomic_write_json, read_json_object
from core.errors import DownloadError
from data_utils.archives import check_zip_integrity, count_images
from data_utils.sources import RemoteFile

logger = logging.getLogger(__name__)

MARKER_SUFFIX = ".verified.json"
CHUNK = 1 << 20


def marker_path(path: Path) -> Path:
    """The marker of a file or folder: `<name>.verified.json` beside it."""
    return path.with_name(path.name + MARKER_SUFFIX)


def read_marker(path: Path) -> dict[str, Any] | None:
    """The marker of `path`, or None when it is absent or unreadable (then `path` is checked again)."""
    return read_json_object(marker_path(path), "it is checked again") or None


def hash_file(path: Path, with_md5: bool = False) -> tuple[str, str | None]:
    """SHA-256 (and MD5 when asked) of a file, read once in 1 MiB chunks."""
    sha = hashlib.sha256()
    md5 = hashlib.md5(usedforsecurity=False) if with_md5 else None
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            sha.update(chunk)
            if md5 is not None:
                md5.update(chunk)
    return sha.hexdigest(), (md5.hexdigest() if md5 is not None else None)


def write_file_marker(path: Path, sha256: str, md5: str | None, url: str) -> None:
    """Record that `path` (downloaded from `url`) is verified: its size, mtime and hashes."""
    st = path.stat()
    record = {"name": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
              "sha256": sha256, "url": url}
    if md5 is not None:
        record["md5"] = md5
    atomic_write_json(marker_path(path), record)


def is_verified(path: str | os.PathLike, row: RemoteFile) -> bool:
    """Whether `path` holds a verified copy of `row`, rehashing only when the file changed.

    A file whose size and mtime match its marker is trusted. Otherwise it is hashed and checked
    against the table's size/sha256 (and zip CRCs for zips); a good file gets a fresh marker.

    Args:
        path: the local file.
        row: its table row.

    Returns:
        True when the file is present and verified; False when it is absent or does not verify
        (the caller then downloads it again).
    """
    path = Path(path)
    if not path.is_file():
        return False
    st = path.stat()
    record = read_marker(path)
    if (
        record is not None
        and record.get("size") == st.st_size
        and record.get("mtime_ns") == st.st_mtime_ns
        and (row.sha256 is None or record.get("sha256") == row.sha256)
    ):
        return True
    if row.size is not None and st.st_size != row.size:
        logger.warning("%s has %d bytes, expected %d; downloading it again",
                       path, st.st_size, row.size)
        return False
    sha256, _ = hash_file(path)
    if row.sha256 is not None and sha256 != row.sha256:
        logger.warning("%s has SHA-256 %s, expected %s; downloading it again",
                       path, sha256, row.sha256)
        return False
    if row.kind == "zip":
        try:
            check_zip_integrity(path)
        except DownloadError:
            logger.warning("%s is not an intact zip; downloading it again", path)
            return False
    write_file_marker(path, sha256, None, row.url())
    return True


def check_download(part: Path, dest: Path, *, size: int | None, sha256: str | None,
                   md5: str | None) -> None:
    """Check a finished `.part` file against the expected size and hashes; delete it if bad.

    Args:
        part: the downloaded part file.
        dest: the final path (named in the message).
        size: expected size in bytes (None: unchecked).
        sha256, md5: expected hex digests (None: unchecked).

    Raises:
        DownloadError: a mismatch; the message names the file and the expected and actual values.
    """
    actual_size = part.stat().st_size
    if size is not None and actual_size != size:
        part.unlink()
        raise DownloadError(
            f"{dest.name}: downloaded {actual_size} bytes but expected {size}; the bad file was "
            "deleted. Rerun --download; if it persists, the release changed: report it"
        )
    if sha256 is None and md5 is None:
        return
    actual_sha, actual_md5 = hash_file(part, with_md5=md5 is not None)
    for algo, expected, actual in (("SHA-256", sha256, actual_sha), ("MD5", md5, actual_md5)):
        if expected is not None and actual != expected.lower():
            part.unlink()
            raise DownloadError(
                f"{dest.name}: {algo} mismatch, expected {expected} but got {actual}; the bad "
                "file was deleted. Rerun --download; if it persists, the server or the release "
                "changed: report it"
            )


def extraction_verified(row: RemoteFile, data_dir: Path) -> int | None:
    """Image count of a verified extracted folder, or None when it must be (re)extracted."""
    folder = data_dir / str(row.extracts_to)
    record = read_marker(folder)
    if record is None or not folder.is_dir():
        return None
    archive = data_dir / row.name
    if archive.is_file():
        archive_record = read_marker(archive)
        if archive_record is None or archive_record.get("sha256") != record.get("archive_sha256"):
            return None
    images = count_images(folder)
    if images != record.get("images"):
        return None
    if any(not (folder / name).is_file() for name in row.expected_files):
        return None
    return images
