"""Download, verify and extract the official HAM10000 / ISIC 2018 Task 3 releases.

`python benchmark.py --download --dataset isic2018|ham10000 --data-dir DIR` ends with DIR in the
layout the readers expect (data_utils.layout):

- isic2018: ISIC2018_Task3_{Training,Validation,Test}_Input/ and _GroundTruth/ folders named
  like their zips, plus ISIC2018_Task3_Training_LesionGroupings.csv;
- ham10000: HAM10000_metadata.csv, HAM10000_images_part_1/ and HAM10000_images_part_2/.

Every remote file is one row of `data_utils.sources.FILES`. Each is fetched by
`data_utils.fetch.download_file` (resumed, retried, renamed into place only after verification)
and checked by `data_utils.verify` (size and checksum where known, zip CRCs, image counts after
extraction), whose markers let a rerun skip verified files without rehashing them.
"""

from __future__ import annotations

import csv
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

from core.atomic import atomic_open, atomic_write_json
from core.errors import DownloadError
from core.facts import HAM10000_DOI, HAM10000_URL
from data_utils.archives import check_zip_integrity, safe_extract_zip
from data_utils.fetch import USER_AGENT, backoff_delay, download_file
from data_utils.sources import RemoteFile, files_for
from data_utils.verify import (
    extraction_verified,
    hash_file,
    is_verified,
    marker_path,
    read_marker,
    write_file_marker,
)

logger = logging.getLogger(__name__)

BASE_URL_ENV = "DERMBENCH_DOWNLOAD_BASE_URL"


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
                    f"files manually from {HAM10000_URL} into --data-dir"
                ) from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            if attempt >= retries:
                reason = getattr(exc, "reason", exc)
                raise DownloadError(
                    f"could not reach {url} ({reason}); check the connection and rerun, or "
                    f"download the HAM10000 files manually from {HAM10000_URL} into --data-dir"
                ) from None
        except ValueError:
            raise DownloadError(f"the Dataverse file list {url} is not JSON; rerun later") from None
        attempt += 1
        time.sleep(backoff_delay(attempt, backoff))
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
            f"manually from {HAM10000_URL} into --data-dir and rerun"
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
        retries, backoff, timeout, progress: see `data_utils.fetch.download_file`.

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
            images = extraction_verified(row, data_dir)
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
            sha256, _ = hash_file(dest)
            write_file_marker(dest, sha256, md5, url)
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
    record = read_marker(archive) or {}
    atomic_write_json(marker_path(folder), {
        "name": folder.name, "archive": row.name, "archive_sha256": record.get("sha256"),
        "files": result.files, "images": result.images,
    })
    return result.images
