"""The official files of each downloadable release: where each one is, what it must be, what it
becomes. `FILES` is the only place URLs live; `data_utils.download` fetches its rows.

No checksums are officially published for these releases, so size/sha256 stay None (verification
then relies on zip CRCs, image counts and, for Dataverse, the MD5 the Dataverse file list
publishes). Fill them in to pin a release.

HAM10000 on Harvard Dataverse: the files are resolved through the dataset's persistent id with
the documented native API ("List Files in a Dataset", /api/datasets/:persistentId/versions/
:latest-published/files) and then fetched with the Data Access API (/api/access/datafile/{id};
format=original returns the metadata as uploaded instead of Dataverse's tab-separated archival
copy). NOT verified from this machine (no internet here): if Dataverse changes its API, download
the three files by hand from https://doi.org/10.7910/DVN/DBW86T into --data-dir and rerun.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import DownloadError
from core.facts import HAM10000, HAM10000_DOI, HAM10000_IMAGES, ISIC2018, REAL_DATASETS
from data_utils.layout import (
    HAM_METADATA,
    HAM_PARTS,
    ISIC_GROUPINGS,
    ISIC_TEST_GT,
    ISIC_TEST_GT_DIR,
    ISIC_TEST_INPUT,
    ISIC_TRAIN_GT,
    ISIC_TRAIN_GT_DIR,
    ISIC_TRAIN_INPUT,
    ISIC_VAL_GT,
    ISIC_VAL_GT_DIR,
    ISIC_VAL_INPUT,
)

ISIC2018_BASE = "https://isic-challenge-data.s3.amazonaws.com/2018/"
DATAVERSE_BASE = "https://dataverse.harvard.edu/"


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


def _isic_zip(folder: str, **kwargs) -> RemoteFile:
    """An ISIC 2018 zip, named like the folder it extracts to."""
    return RemoteFile(ISIC2018, f"{folder}.zip", ISIC2018_BASE, f"{folder}.zip", "zip",
                      extracts_to=folder, **kwargs)


def _dataverse_file(name: str, path: str, kind: str, lookup: str, **kwargs) -> RemoteFile:
    return RemoteFile(HAM10000, name, DATAVERSE_BASE, path, kind, lookup=lookup, **kwargs)


# The one table of remote files, each release's rows in download order.
FILES: tuple[RemoteFile, ...] = (
    _isic_zip(ISIC_TRAIN_INPUT, expected_images=(HAM10000_IMAGES,)),
    _isic_zip(ISIC_TRAIN_GT_DIR, expected_files=(ISIC_TRAIN_GT,)),
    RemoteFile(ISIC2018, ISIC_GROUPINGS, ISIC2018_BASE, ISIC_GROUPINGS, "csv"),
    _isic_zip(ISIC_VAL_INPUT, expected_images=(193,)),
    _isic_zip(ISIC_VAL_GT_DIR, expected_files=(ISIC_VAL_GT,)),
    _isic_zip(ISIC_TEST_INPUT, expected_images=(1512, 1511),
              note="the challenge scored 1,512 test images; the public release is reported to "
                   "hold 1,511, so both counts are accepted"),
    _isic_zip(ISIC_TEST_GT_DIR, expected_files=(ISIC_TEST_GT,)),
    RemoteFile(HAM10000, "HAM10000 file list (Dataverse)", DATAVERSE_BASE,
               f"api/datasets/:persistentId/versions/:latest-published/files"
               f"?persistentId={HAM10000_DOI}", "index"),
    _dataverse_file(f"{HAM_PARTS[0]}.zip", "api/access/datafile/{file_id}", "zip", HAM_PARTS[0],
                    extracts_to=HAM_PARTS[0], expected_images=(5000,)),
    _dataverse_file(f"{HAM_PARTS[1]}.zip", "api/access/datafile/{file_id}", "zip", HAM_PARTS[1],
                    extracts_to=HAM_PARTS[1], expected_images=(5015,)),
    _dataverse_file(HAM_METADATA, "api/access/datafile/{file_id}?format=original", "csv",
                    HAM_METADATA.removesuffix(".csv")),
)


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
            f"no download is defined for dataset {dataset!r}; choose one of {', '.join(REAL_DATASETS)}"
        )
    return rows
