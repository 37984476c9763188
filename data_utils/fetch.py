"""Resumable HTTP downloads: a `.part` file resumed with HTTP Range, retries with backoff, and a
rename into place only after verification (data_utils.verify)."""

from __future__ import annotations

import errno
import http.client
import logging
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from core.errors import DownloadError
from core.facts import HAM10000_URL
from core.filesystem import filesystem_error
from data_utils.verify import CHUNK, check_download

logger = logging.getLogger(__name__)

USER_AGENT = f"dermbench-downloader/0.1 (+{HAM10000_URL})"
MAX_BACKOFF_S = 30.0
# Errors of the local file, not of the connection: retrying cannot help, the user must act.
_LOCAL_ERRNOS = frozenset(getattr(errno, name) for name in (
    "ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM", "EISDIR", "ENOTDIR") if hasattr(errno, name))


class Transient(Exception):
    """A failure worth retrying (dropped connection, timeout, 5xx, refused connection)."""


def backoff_delay(attempt: int, backoff: float) -> float:
    """Seconds to wait before retry number `attempt` (1, 2, ...): doubling, capped at 30 s."""
    return min(backoff * 2 ** (attempt - 1), MAX_BACKOFF_S)


def _content_length(response: http.client.HTTPResponse) -> int | None:
    value = response.headers.get("Content-Length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _range_start(response: http.client.HTTPResponse) -> int | None:
    # "Content-Range: bytes START-END/TOTAL"
    value = response.headers.get("Content-Range", "")
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def _fetch_once(url: str, part: Path, label: str, expected_size: int | None,
                timeout: float, progress: bool) -> None:
    """One HTTP attempt that appends to (or restarts) `part`; raises Transient to retry."""
    offset = part.stat().st_size if part.exists() else 0
    if expected_size is not None and offset > expected_size:
        part.unlink()
        offset = 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and offset:
            # Nothing left to send: the part file is already complete (verification follows).
            if expected_size is None or offset == expected_size:
                logger.debug("%s: server says the %d-byte part file is complete", label, offset)
                return
            part.unlink()
            raise Transient(f"HTTP 416 for a {offset}-byte part file; restarting") from None
        if exc.code in (408, 429) or exc.code >= 500:
            raise Transient(f"HTTP {exc.code} {exc.reason}") from None
        raise DownloadError(
            f"{url} answered HTTP {exc.code} {exc.reason}; the file may have moved. Download it "
            f"manually into {part.parent} as {part.name.removesuffix('.part')} and rerun"
        ) from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Transient(str(reason)) from None

    with response:
        length = _content_length(response)
        if response.status == 206 and offset:
            if _range_start(response) != offset:
                part.unlink()
                raise Transient("server resumed at the wrong offset; restarting")
            mode, total = "ab", (offset + length if length is not None else None)
        else:
            if offset:
                logger.info("%s: server ignored the resume request; restarting from zero", label)
            offset, mode, total = 0, "wb", length
        received = 0
        try:
            with open(part, mode) as handle, tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                desc=label, disable=None if progress else True, leave=False,
            ) as bar:
                while chunk := response.read(CHUNK):
                    handle.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        except (http.client.HTTPException, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno in _LOCAL_ERRNOS:
                raise filesystem_error(exc, part) from None  # disk full, read-only: not a retry
            raise Transient(f"connection lost after {offset + received} bytes ({exc})") from None
    # http.client returns a short body without an error when the server closes early.
    if length is not None and received < length:
        raise Transient(f"connection closed after {offset + received} of {offset + length} bytes")


def download_file(
    url: str,
    dest: str | os.PathLike,
    *,
    size: int | None = None,
    sha256: str | None = None,
    md5: str | None = None,
    retries: int = 5,
    backoff: float = 1.0,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download `url` to `dest` via a resumable `dest.part`, verify it, then rename it into place.

    Args:
        url: the source.
        dest: the final path; its folder is created.
        size: expected size in bytes (None: unchecked).
        sha256: expected SHA-256 hex digest (None: unchecked).
        md5: expected MD5 hex digest, e.g. from the Dataverse file list (None: unchecked).
        retries: extra attempts after a dropped connection, timeout, refused connection or 5xx;
            each resumes where the last stopped.
        backoff: seconds before the first retry, doubled each time (capped at 30 s).
        timeout: socket timeout in seconds.
        progress: show a tqdm progress bar (on a terminal).

    Returns:
        `dest`.

    Raises:
        DownloadError: the server refused the file, every attempt failed (the message names the
            URL and how to download it manually; the part file is kept for a later resume), or
            the file does not match its size or checksum (it is deleted; the message names the
            file and the expected and actual values).
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise filesystem_error(exc, dest.parent, "create the folder") from None
    part = dest.with_name(dest.name + ".part")
    attempt = 0
    while True:
        try:
            _fetch_once(url, part, dest.name, size, timeout, progress)
            break
        except Transient as exc:
            attempt += 1
            if attempt > retries:
                kept = (f"; the partial file {part.name} is kept and a rerun resumes it"
                        if part.exists() and part.stat().st_size else "")
                raise DownloadError(
                    f"could not download {url} ({exc}) after {attempt} attempt(s){kept}. Check the "
                    f"connection and rerun, or download the file manually from {url} into "
                    f"{dest.parent} as {dest.name}"
                ) from None
            delay = backoff_delay(attempt, backoff)
            logger.warning("%s: %s; retrying in %.0f s (%d/%d)", dest.name, exc, delay,
                           attempt, retries)
            time.sleep(delay)
    check_download(part, dest, size=size, sha256=sha256, md5=md5)
    os.replace(part, dest)
    return dest
