"""Safe zip handling for downloaded dataset archives: integrity check and extraction.

Archives from the internet are untrusted input. Before anything is written, every member name is
checked: absolute paths, `..` components, drive letters, symlinks (and any other special file
type recorded in the zip's Unix mode bits) and names that resolve outside the target are refused.
Extraction goes into a temporary folder beside the target, which is renamed into place only once
the contents are complete and counted, so an interrupted extraction never looks finished.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from core.errors import DownloadError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# Folders some zip tools add beside the real content; they are dropped after extraction.
_JUNK_NAMES = {"__MACOSX", ".DS_Store"}
_COPY_CHUNK = 1 << 20


class UnsafeArchiveError(DownloadError):
    """An archive member that would write outside the target folder or create a link."""


@dataclass(frozen=True)
class ExtractResult:
    """What an extraction produced.

    Attributes:
        target: the folder the archive's contents now live in.
        files: number of regular files extracted (junk folders excluded).
        images: number of image files (.jpg/.jpeg/.png, any case) among them.
    """

    target: Path
    files: int
    images: int


def check_zip_integrity(archive: str | os.PathLike) -> None:
    """Read every member of a zip and check its CRC.

    Args:
        archive: path of the zip file.

    Raises:
        DownloadError: the file is not a zip, is truncated, or a member fails its CRC check.
    """
    archive = Path(archive)
    try:
        with zipfile.ZipFile(archive) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise DownloadError(
            f"{archive} is not a readable zip archive ({exc}); delete it and rerun --download"
        ) from None
    if bad is not None:
        raise DownloadError(
            f"{archive}: member {bad!r} fails its CRC check (corrupt download); delete the file "
            "and rerun --download"
        )


def _member_problem(info: zipfile.ZipInfo) -> str | None:
    """Why a member may not be extracted, or None when it is safe by name and type."""
    name = info.filename
    if "\x00" in name:
        return "contains a NUL byte"
    # Zips written on Windows may use backslashes; treat them as separators for the checks.
    posix = name.replace("\\", "/")
    if posix.startswith("/") or (len(posix) > 1 and posix[1] == ":"):
        return "is an absolute path"
    if ".." in PurePosixPath(posix).parts:
        return "contains a '..' component"
    # Zips made on Unix keep st_mode in the high 16 bits; a file-type field other than regular
    # file or folder is a symlink (or a device, fifo...) and is refused whatever the creator OS.
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if kind == stat.S_IFLNK:
        return "is a symbolic link"
    if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
        return f"is a special file (mode {oct(mode)})"
    return None


def check_members(archive: str | os.PathLike, target: str | os.PathLike) -> list[zipfile.ZipInfo]:
    """Check every member of a zip for safe extraction into `target`.

    Args:
        archive: path of the zip file.
        target: the folder the members would be extracted into.

    Returns:
        The members, in archive order.

    Raises:
        UnsafeArchiveError: a member has an absolute path, a `..` component, is a link or special
            file, or resolves outside `target`. Nothing is written.
        DownloadError: the file is not a readable zip.
    """
    archive = Path(archive)
    root = Path(target).resolve()
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise DownloadError(f"{archive} is not a readable zip archive ({exc})") from None
    for info in members:
        problem = _member_problem(info)
        if problem is None:
            resolved = (root / info.filename.replace("\\", "/")).resolve()
            if resolved != root and root not in resolved.parents:
                problem = "resolves outside the target folder"
        if problem is not None:
            raise UnsafeArchiveError(
                f"refusing to extract {archive.name}: entry {info.filename!r} {problem}; the "
                "archive is not an official release or was tampered with. Delete it and download "
                "it again from the official source"
            )
    return members


def _count(folder: Path) -> tuple[int, int]:
    files = images = 0
    for _dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if d not in _JUNK_NAMES]
        for name in filenames:
            if name in _JUNK_NAMES:
                continue
            files += 1
            if name.lower().endswith(IMAGE_SUFFIXES):
                images += 1
    return files, images


def count_images(folder: str | os.PathLike) -> int:
    """Number of image files (.jpg/.jpeg/.png, any case) under `folder`, junk folders excluded."""
    return _count(Path(folder))[1]


def _content_root(tmp: Path) -> Path:
    """The folder holding the archive's content: its single top-level folder, if that is all."""
    entries = [p for p in tmp.iterdir() if p.name not in _JUNK_NAMES]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return tmp


def safe_extract_zip(
    archive: str | os.PathLike,
    target: str | os.PathLike,
    expected_images: tuple[int, ...] = (),
    expected_files: tuple[str, ...] = (),
) -> ExtractResult:
    """Extract a zip into the folder `target`, safely and atomically.

    The archive's content lands directly in `target`: when the zip holds one top-level folder
    (as the ISIC releases do) that folder's content is used, otherwise the zip's root.

    Args:
        archive: path of the zip file.
        target: the final folder; replaced if it exists (it is only called for unverified ones).
        expected_images: accepted image counts; empty accepts any count.
        expected_files: file names that must be present at the top of the extracted content.

    Returns:
        An ExtractResult with the counts.

    Raises:
        UnsafeArchiveError: an unsafe member (see `check_members`); nothing is written.
        DownloadError: a corrupt member, or the extracted content does not have the expected
            image count or files. The partial extraction is removed.
    """
    archive = Path(archive)
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".extracting", dir=target.parent))
    try:
        members = check_members(archive, tmp)
        with zipfile.ZipFile(archive) as zf:
            for info in members:
                dest = tmp / info.filename.replace("\\", "/")
                if info.is_dir():
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                # Copy the bytes only: no permissions, times or link semantics from the archive.
                with zf.open(info) as src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out, _COPY_CHUNK)
        content = _content_root(tmp)
        files, images = _count(content)
        if expected_images and images not in expected_images:
            accepted = " or ".join(f"{n:,}" for n in expected_images)
            raise DownloadError(
                f"{archive.name} holds {images:,} images but {accepted} were expected; the "
                "download is incomplete or not the official release. Delete it and rerun --download"
            )
        missing = [name for name in expected_files if not (content / name).is_file()]
        if missing:
            raise DownloadError(
                f"{archive.name} lacks {', '.join(missing)}; it is not the official release. "
                "Delete it and rerun --download"
            )
        _replace_dir(content, target)
        logger.debug("extracted %s into %s (%d files, %d images)", archive, target, files, images)
        return ExtractResult(target=target, files=files, images=images)
    except (zipfile.BadZipFile, EOFError) as exc:
        raise DownloadError(
            f"{archive} is corrupt ({exc}); delete it and rerun --download"
        ) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(tmp)


def _replace_dir(source: Path, target: Path) -> None:
    """Move `source` onto `target`, replacing an old `target` with as short a gap as possible."""
    old = None
    if target.exists() or target.is_symlink():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(source, target)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        else:
            old.unlink()
