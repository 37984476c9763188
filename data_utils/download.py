"""Download, verify and extract the official HAM10000 / ISIC 2018 Task 3 releases.

`python benchmark.py --download --dataset isic2018|ham10000 --data-dir DIR` ends with DIR in the
layout the readers expect:

- isic2018: ISIC2018_Task3_{Training,Validation,Test}_Input/ and _GroundTruth/ folders named
  like their zips, plus ISIC2018_Task3_Training_LesionGroupings.csv;
- ham10000: HAM10000_metadata.csv, HAM10000_images_part_1/ and HAM10000_images_part_2/.

Every remote file is one row of `FILES` (the only place URLs live). Downloads resume from a
`.part` file with HTTP Range, retry dropped connections with backoff, and are renamed into place
only after verification (size and checksum where known, zip CRCs, image counts after extraction).
A `<name>.verified.json` marker beside each verified file or folder records its size, mtime and
hashes, so a rerun skips it without rehashing unless the file changed.
"""

from __future__ import annotations

import csv
import hashlib
import http.client
import io
import json
import logging
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from core.atomic import atomic_open, atomic_write_json, read_json
from core.errors import BenchmarkError, DownloadError
from data_utils.archives import check_zip_integrity, count_images, safe_extract_zip

logger = logging.getLogger(__name__)

BASE_URL_ENV = "DERMBENCH_DOWNLOAD_BASE_URL"
DOWNLOADABLE = ("isic2018", "ham10000")
USER_AGENT = "dermbench-downloader/0.1 (+https://doi.org/10.7910/DVN/DBW86T)"
MARKER_SUFFIX = ".verified.json"
_CHUNK = 1 << 20
_MAX_BACKOFF_S = 30.0

ISIC2018_BASE = "https://isic-challenge-data.s3.amazonaws.com/2018/"
DATAVERSE_BASE = "https://dataverse.harvard.edu/"
HAM10000_DOI = "doi:10.7910/DVN/DBW86T"


@dataclass(frozen=True)
class RemoteFile:
    """One file of an official release: where it is, what it must be, what it becomes.

    Attributes:
        dataset: "isic2018" or "ham10000".
        name: the local file name in --data-dir.
        base_url: the server part of the URL; replaced by --download's base-URL override.
        path: the rest of the URL; `{file_id}` is filled from the Dataverse file list.
        kind: "zip" (extracted), "csv" (kept as is) or "index" (the Dataverse file list, which
            maps `lookup` names to file ids and MD5s; never saved).
        extracts_to: the folder a zip's content lands in (None for csv/index).
        expected_images: accepted image counts after extraction (empty: no count check).
        expected_files: files that must be at the top of the extracted folder.
        size: expected size in bytes, None where not published.
        sha256: expected SHA-256, None where not published.
        lookup: Dataverse only: the file's label (without extension) in the dataset's file list.
        note: caveat printed with the result.
    """

    dataset: str
    name: str
    base_url: str
    path: str
    kind: str
    extracts_to: str | None = None
    expected_images: tuple[int, ...] = ()
    expected_files: tuple[str, ...] = ()
    size: int | None = None
    sha256: str | None = None
    lookup: str | None = None
    note: str = ""

    def url(self, base_url: str | None = None, file_id: int | str | None = None) -> str:
        """The full URL, on `base_url` if given (a trailing slash is added when missing)."""
        base = self.base_url if base_url is None else base_url.rstrip("/") + "/"
        path = self.path.format(file_id=file_id) if "{file_id}" in self.path else self.path
        return base + path


# The one table of remote files. No checksums are officially published for these releases, so
# size/sha256 stay None (verification then relies on zip CRCs, image counts and, for Dataverse,
# the MD5 the Dataverse file list publishes). Fill them in to pin a release.
#
# HAM10000 on Harvard Dataverse: the files are resolved through the dataset's persistent id with
# the documented native API ("List Files in a Dataset", /api/datasets/:persistentId/versions/
# :latest-published/files) and then fetched with the Data Access API (/api/access/datafile/{id};
# format=original returns the metadata as uploaded instead of Dataverse's tab-separated archival
# copy). NOT verified from this machine (no internet here): if Dataverse changes its API, download
# the three files by hand from https://doi.org/10.7910/DVN/DBW86T into --data-dir and rerun.
FILES: tuple[RemoteFile, ...] = (
    RemoteFile("isic2018", "ISIC2018_Task3_Training_Input.zip", ISIC2018_BASE,
               "ISIC2018_Task3_Training_Input.zip", "zip",
               extracts_to="ISIC2018_Task3_Training_Input", expected_images=(10015,)),
    RemoteFile("isic2018", "ISIC2018_Task3_Training_GroundTruth.zip", ISIC2018_BASE,
               "ISIC2018_Task3_Training_GroundTruth.zip", "zip",
               extracts_to="ISIC2018_Task3_Training_GroundTruth",
               expected_files=("ISIC2018_Task3_Training_GroundTruth.csv",)),
    RemoteFile("isic2018", "ISIC2018_Task3_Training_LesionGroupings.csv", ISIC2018_BASE,
               "ISIC2018_Task3_Training_LesionGroupings.csv", "csv"),
    RemoteFile("isic2018", "ISIC2018_Task3_Validation_Input.zip", ISIC2018_BASE,
               "ISIC2018_Task3_Validation_Input.zip", "zip",
               extracts_to="ISIC2018_Task3_Validation_Input", expected_images=(193,)),
    RemoteFile("isic2018", "ISIC2018_Task3_Validation_GroundTruth.zip", ISIC2018_BASE,
               "ISIC2018_Task3_Validation_GroundTruth.zip", "zip",
               extracts_to="ISIC2018_Task3_Validation_GroundTruth",
               expected_files=("ISIC2018_Task3_Validation_GroundTruth.csv",)),
    RemoteFile("isic2018", "ISIC2018_Task3_Test_Input.zip", ISIC2018_BASE,
               "ISIC2018_Task3_Test_Input.zip", "zip",
               extracts_to="ISIC2018_Task3_Test_Input", expected_images=(1512, 1511),
               note="the challenge scored 1,512 test images; the public release is reported to "
                    "hold 1,511, so both counts are accepted"),
    RemoteFile("isic2018", "ISIC2018_Task3_Test_GroundTruth.zip", ISIC2018_BASE,
               "ISIC2018_Task3_Test_GroundTruth.zip", "zip",
               extracts_to="ISIC2018_Task3_Test_GroundTruth",
               expected_files=("ISIC2018_Task3_Test_GroundTruth.csv",)),
    RemoteFile("ham10000", "HAM10000 file list (Dataverse)", DATAVERSE_BASE,
               f"api/datasets/:persistentId/versions/:latest-published/files"
               f"?persistentId={HAM10000_DOI}", "index"),
    RemoteFile("ham10000", "HAM10000_images_part_1.zip", DATAVERSE_BASE,
               "api/access/datafile/{file_id}", "zip",
               extracts_to="HAM10000_images_part_1", expected_images=(5000,),
               lookup="HAM10000_images_part_1"),
    RemoteFile("ham10000", "HAM10000_images_part_2.zip", DATAVERSE_BASE,
               "api/access/datafile/{file_id}", "zip",
               extracts_to="HAM10000_images_part_2", expected_images=(5015,),
               lookup="HAM10000_images_part_2"),
    RemoteFile("ham10000", "HAM10000_metadata.csv", DATAVERSE_BASE,
               "api/access/datafile/{file_id}?format=original", "csv",
               lookup="HAM10000_metadata"),
)

LICENCE = (
    "Licence: CC BY-NC 4.0 (attribution, non-commercial); some mirrors state CC BY-NC-SA 4.0, so "
    "follow the stricter terms (non-commercial, attribution, share-alike). For research; not for "
    "clinical diagnosis."
)
CITATIONS: dict[str, tuple[str, ...]] = {
    "ham10000": (
        "Tschandl P., Rosendahl C. & Kittler H. The HAM10000 dataset, a large collection of "
        "multi-source dermatoscopic images of common pigmented skin lesions. Sci. Data 5, "
        "180161 (2018). doi:10.1038/sdata.2018.161",
    ),
    "isic2018": (
        "Tschandl P., Rosendahl C. & Kittler H. The HAM10000 dataset, a large collection of "
        "multi-source dermatoscopic images of common pigmented skin lesions. Sci. Data 5, "
        "180161 (2018). doi:10.1038/sdata.2018.161",
        "Codella N. et al. Skin Lesion Analysis Toward Melanoma Detection 2018: A Challenge "
        "Hosted by the International Skin Imaging Collaboration (ISIC). arXiv:1902.03368 (2019)",
    ),
}


@dataclass
class DownloadSummary:
    """What `download_dataset` did.

    Attributes:
        dataset: the dataset name.
        data_dir: where the files are.
        downloaded: names of files fetched in this run.
        skipped: names of files (or extracted folders) already present and verified.
        images: extracted folder name -> image count.
        notes: caveats worth printing (e.g. the 1,511 vs 1,512 test images).
    """

    dataset: str
    data_dir: Path
    downloaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    images: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class _Transient(Exception):
    """A failure worth retrying (dropped connection, timeout, 5xx, refused connection)."""


def files_for(dataset: str) -> tuple[RemoteFile, ...]:
    """The rows of `FILES` for one dataset.

    Args:
        dataset: "isic2018" or "ham10000".

    Returns:
        The dataset's rows, in download order.

    Raises:
        DownloadError: the dataset has no downloadable files (e.g. "synthetic").
    """
    rows = tuple(row for row in FILES if row.dataset == dataset)
    if not rows:
        raise DownloadError(
            f"no download is defined for dataset {dataset!r}; choose one of {', '.join(DOWNLOADABLE)}"
        )
    return rows


def _marker(path: Path) -> Path:
    return path.with_name(path.name + MARKER_SUFFIX)


def _hash_file(path: Path, with_md5: bool = False) -> tuple[str, str | None]:
    """SHA-256 (and MD5 when asked) of a file, read once in 1 MiB chunks."""
    sha = hashlib.sha256()
    md5 = hashlib.md5(usedforsecurity=False) if with_md5 else None
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            sha.update(chunk)
            if md5 is not None:
                md5.update(chunk)
    return sha.hexdigest(), (md5.hexdigest() if md5 is not None else None)


def _write_file_marker(path: Path, sha256: str, md5: str | None, url: str) -> None:
    st = path.stat()
    record = {"name": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
              "sha256": sha256, "url": url}
    if md5 is not None:
        record["md5"] = md5
    atomic_write_json(_marker(path), record)


def _read_marker(path: Path) -> dict[str, Any] | None:
    try:
        record = read_json(_marker(path))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


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
    record = _read_marker(path)
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
    sha256, _ = _hash_file(path)
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
    _write_file_marker(path, sha256, None, row.url())
    return True


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
    """One HTTP attempt that appends to (or restarts) `part`; raises _Transient to retry."""
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
            raise _Transient(f"HTTP 416 for a {offset}-byte part file; restarting") from None
        if exc.code in (408, 429) or exc.code >= 500:
            raise _Transient(f"HTTP {exc.code} {exc.reason}") from None
        raise DownloadError(
            f"{url} answered HTTP {exc.code} {exc.reason}; the file may have moved. Download it "
            f"manually into {part.parent} as {part.name.removesuffix('.part')} and rerun"
        ) from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise _Transient(str(reason)) from None

    with response:
        length = _content_length(response)
        if response.status == 206 and offset:
            if _range_start(response) != offset:
                part.unlink()
                raise _Transient("server resumed at the wrong offset; restarting")
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
                while chunk := response.read(_CHUNK):
                    handle.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        except (http.client.HTTPException, OSError) as exc:
            raise _Transient(f"connection lost after {offset + received} bytes ({exc})") from None
    # http.client returns a short body without an error when the server closes early.
    if length is not None and received < length:
        raise _Transient(f"connection closed after {offset + received} of {offset + length} bytes")


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
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    attempt = 0
    while True:
        try:
            _fetch_once(url, part, dest.name, size, timeout, progress)
            break
        except _Transient as exc:
            attempt += 1
            if attempt > retries:
                kept = (f"; the partial file {part.name} is kept and a rerun resumes it"
                        if part.exists() and part.stat().st_size else "")
                raise DownloadError(
                    f"could not download {url} ({exc}) after {attempt} attempt(s){kept}. Check the "
                    f"connection and rerun, or download the file manually from {url} into "
                    f"{dest.parent} as {dest.name}"
                ) from None
            delay = min(backoff * 2 ** (attempt - 1), _MAX_BACKOFF_S)
            logger.warning("%s: %s; retrying in %.0f s (%d/%d)", dest.name, exc, delay,
                           attempt, retries)
            time.sleep(delay)
    _verify_part(part, dest, size=size, sha256=sha256, md5=md5)
    os.replace(part, dest)
    return dest


def _verify_part(part: Path, dest: Path, *, size: int | None, sha256: str | None,
                 md5: str | None) -> None:
    """Check a finished part file against the expected size and hashes; delete it if bad."""
    actual_size = part.stat().st_size
    if size is not None and actual_size != size:
        part.unlink()
        raise DownloadError(
            f"{dest.name}: downloaded {actual_size} bytes but expected {size}; the bad file was "
            "deleted. Rerun --download; if it persists, the release changed: report it"
        )
    if sha256 is None and md5 is None:
        return
    actual_sha, actual_md5 = _hash_file(part, with_md5=md5 is not None)
    for algo, expected, actual in (("SHA-256", sha256, actual_sha), ("MD5", md5, actual_md5)):
        if expected is not None and actual != expected.lower():
            part.unlink()
            raise DownloadError(
                f"{dest.name}: {algo} mismatch, expected {expected} but got {actual}; the bad "
                "file was deleted. Rerun --download; if it persists, the server or the release "
                "changed: report it"
            )


def _dataverse_index(row: RemoteFile, base_url: str | None, timeout: float, retries: int,
                     backoff: float) -> dict[str, dict[str, Any]]:
    """Map lower-case file stems to their Dataverse `dataFile` records."""
    url = row.url(base_url)
    attempt = 0
    while True:
        try:
            request = urllib.request.Request(
                url, headers={"User-Agent": USER_AGENT, "Accept": "application/json"})
            with urllib.request.urlopen(request, timeout=timeout) as response:
                payload = json.load(response)
            break
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code < 500 or attempt >= retries:
                raise DownloadError(
                    f"the Dataverse file list {url} answered HTTP {exc.code}; download the HAM10000 "
                    "files manually from https://doi.org/10.7910/DVN/DBW86T into --data-dir"
                ) from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            if attempt >= retries:
                reason = getattr(exc, "reason", exc)
                raise DownloadError(
                    f"could not reach {url} ({reason}); check the connection and rerun, or "
                    "download the HAM10000 files manually from https://doi.org/10.7910/DVN/DBW86T "
                    "into --data-dir"
                ) from None
        except ValueError:
            raise DownloadError(f"the Dataverse file list {url} is not JSON; rerun later") from None
        attempt += 1
        time.sleep(min(backoff * 2 ** (attempt - 1), _MAX_BACKOFF_S))
    entries = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(entries, list):
        raise DownloadError(f"the Dataverse file list {url} has no 'data' list; rerun later")
    index: dict[str, dict[str, Any]] = {}
    for entry in entries:
        data_file = entry.get("dataFile", {}) if isinstance(entry, dict) else {}
        names = (entry.get("label"), data_file.get("filename"), data_file.get("originalFileName"))
        for name in names:
            if name:
                index.setdefault(Path(name).stem.lower(), data_file)
    return index


def _resolve(row: RemoteFile, base_url: str | None, index: dict[str, dict[str, Any]] | None
             ) -> tuple[str, int | None, str | None]:
    """URL, expected size and MD5 of a row, using the Dataverse file list where needed."""
    if row.lookup is None:
        return row.url(base_url), row.size, None
    data_file = (index or {}).get(row.lookup.lower())
    if data_file is None or "id" not in data_file:
        raise DownloadError(
            f"{row.lookup} is not in the Dataverse file list of {HAM10000_DOI}; download it "
            "manually from https://doi.org/10.7910/DVN/DBW86T into --data-dir and rerun"
        )
    # An ingested table is served converted unless format=original; its published size and MD5
    # describe the stored copy, so they are only used for plain (non-tabular) files.
    tabular = bool(data_file.get("tabularData") or data_file.get("originalFileFormat"))
    size = row.size if tabular else (row.size or data_file.get("filesize"))
    md5 = None
    if not tabular:
        checksum = data_file.get("checksum") or {}
        if str(checksum.get("type", "")).upper() == "MD5":
            md5 = checksum.get("value")
        md5 = md5 or data_file.get("md5")
    return row.url(base_url, data_file["id"]), size, md5


def _to_comma_csv(path: Path) -> None:
    """Rewrite a tab-separated table (Dataverse's archival form) as a comma-separated CSV."""
    text = path.read_text(encoding="utf-8-sig")
    first = text.split("\n", 1)[0]
    if "\t" not in first or "," in first:
        return
    rows = list(csv.reader(io.StringIO(text), delimiter="\t"))
    with atomic_open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)


def _extraction_verified(row: RemoteFile, data_dir: Path) -> int | None:
    """Image count of a verified extracted folder, or None when it must be (re)extracted."""
    folder = data_dir / str(row.extracts_to)
    record = _read_marker(folder)
    if record is None or not folder.is_dir():
        return None
    archive = data_dir / row.name
    if archive.is_file():
        archive_record = _read_marker(archive)
        if archive_record is None or archive_record.get("sha256") != record.get("archive_sha256"):
            return None
    images = count_images(folder)
    if images != record.get("images"):
        return None
    if any(not (folder / name).is_file() for name in row.expected_files):
        return None
    return images


def download_dataset(
    dataset: str,
    data_dir: str | os.PathLike,
    *,
    base_url: str | None = None,
    retries: int = 5,
    backoff: float = 1.0,
    timeout: float = 60.0,
    progress: bool = True,
) -> DownloadSummary:
    """Download, verify and extract every file of `dataset` into `data_dir`; skip verified ones.

    Args:
        dataset: "isic2018" or "ham10000".
        data_dir: destination folder (created).
        base_url: replaces every row's server part (default: $DERMBENCH_DOWNLOAD_BASE_URL, else
            the official servers); used to test against a local server or a mirror.
        retries, backoff, timeout, progress: see `download_file`.

    Returns:
        A DownloadSummary.

    Raises:
        DownloadError: a file could not be fetched or does not verify, or an archive is unsafe.
    """
    rows = files_for(dataset)
    base_url = base_url or os.environ.get(BASE_URL_ENV) or None
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    summary = DownloadSummary(dataset=dataset, data_dir=data_dir)
    index_rows = [row for row in rows if row.kind == "index"]
    index: dict[str, dict[str, Any]] | None = None
    for row in rows:
        if row.kind == "index":
            continue
        if row.note:
            summary.notes.append(f"{row.name}: {row.note}")
        if row.kind == "zip":
            images = _extraction_verified(row, data_dir)
            if images is not None:
                summary.skipped.append(str(row.extracts_to))
                summary.images[str(row.extracts_to)] = images
                continue
        dest = data_dir / row.name
        if is_verified(dest, row):
            summary.skipped.append(row.name)
        else:
            if row.lookup is not None and index is None:
                index = _dataverse_index(index_rows[0], base_url, timeout, retries, backoff)
            url, size, md5 = _resolve(row, base_url, index)
            logger.info("downloading %s", url)
            download_file(url, dest, size=size, sha256=row.sha256, md5=md5, retries=retries,
                          backoff=backoff, timeout=timeout, progress=progress)
            if row.kind == "csv":
                _to_comma_csv(dest)
            elif row.kind == "zip":
                check_zip_integrity(dest)
            sha256, _ = _hash_file(dest)
            _write_file_marker(dest, sha256, md5, url)
            summary.downloaded.append(row.name)
        if row.kind == "zip":
            summary.images[str(row.extracts_to)] = _extract(row, data_dir)
    return summary


def _extract(row: RemoteFile, data_dir: Path) -> int:
    archive = data_dir / row.name
    folder = data_dir / str(row.extracts_to)
    logger.info("extracting %s into %s", row.name, folder)
    result = safe_extract_zip(archive, folder, expected_images=row.expected_images,
                              expected_files=row.expected_files)
    record = _read_marker(archive) or {}
    atomic_write_json(_marker(folder), {
        "name": folder.name, "archive": row.name, "archive_sha256": record.get("sha256"),
        "files": result.files, "images": result.images,
    })
    return result.images


def download_command(args: Any) -> int:
    """The `--download` action: fetch, verify and extract a dataset, then print licence/citation.

    Args:
        args: the parsed command line; uses `.dataset` and `.data_dir`.

    Returns:
        0 on success.

    Raises:
        BenchmarkError: --dataset or --data-dir missing, or --dataset synthetic.
        DownloadError: a download or verification failed.
    """
    dataset = getattr(args, "dataset", None)
    data_dir = getattr(args, "data_dir", None)
    if dataset == "synthetic":
        raise BenchmarkError(
            "the synthetic dataset is generated, not downloaded: run "
            "`python benchmark.py --prepare --dataset synthetic` instead"
        )
    if dataset not in DOWNLOADABLE:
        raise DownloadError(
            f"--download needs --dataset {' or '.join(DOWNLOADABLE)} (got {dataset!r}), e.g. "
            "`python benchmark.py --download --dataset ham10000 --data-dir data/ham10000`"
        )
    if not data_dir:
        raise DownloadError(
            f"--download needs --data-dir DIR, the folder to put {dataset} in, e.g. "
            f"`python benchmark.py --download --dataset {dataset} --data-dir data/{dataset}`"
        )
    summary = download_dataset(dataset, Path(data_dir).expanduser())
    print(f"{dataset}: {len(summary.downloaded)} file(s) downloaded, {len(summary.skipped)} "
          f"already verified, in {summary.data_dir}")
    for folder, images in summary.images.items():
        print(f"  {folder}/: {images:,} images")
    for note in summary.notes:
        print(f"  note: {note}")
    print(LICENCE)
    print("Please cite:")
    for citation in CITATIONS[dataset]:
        print(f"  - {citation}")
    print("The zip archives can be deleted now; the extracted folders are what --prepare reads.")
    print(f"Next: python benchmark.py --prepare --dataset {dataset} --data-dir {summary.data_dir}")
    return 0


__all__ = [
    "BASE_URL_ENV",
    "CITATIONS",
    "FILES",
    "LICENCE",
    "DownloadSummary",
    "RemoteFile",
    "download_command",
    "download_dataset",
    "download_file",
    "files_for",
    "is_verified",
]
