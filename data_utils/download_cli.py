"""`python benchmark.py --download`: check the options, download, then print what was done, the
licence and the citations (core.facts) and the next step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.errors import BenchmarkError, DownloadError
from core.facts import DISCLAIMER, LICENCE, REAL_DATASETS, SYNTHETIC, citations
from core.filesystem import check_writable_dir
from data_utils.download import download_dataset


def download_command(args: Any) -> int:
    """The `--download` action: fetch, verify and extract a dataset, then print licence/citation.

    Args:
        args: the parsed command line; uses `.dataset` and `.data_dir`.

    Returns:
        0 on success.

    Raises:
        BenchmarkError: --dataset or --data-dir missing, or --dataset synthetic.
        FileSystemError: --data-dir is a file or cannot be written (checked before any download).
        DownloadError: a download or verification failed.
    """
    dataset = getattr(args, "dataset", None)
    data_dir = getattr(args, "data_dir", None)
    if dataset == SYNTHETIC:
        raise BenchmarkError(
            "the synthetic dataset is generated, not downloaded: run "
            "`python benchmark.py --prepare --dataset synthetic` instead"
        )
    if dataset not in REAL_DATASETS:
        raise DownloadError(
            f"--download needs --dataset {' or '.join(REAL_DATASETS)} (got {dataset!r}), e.g. "
            "`python benchmark.py --download --dataset ham10000 --data-dir data/ham10000`"
        )
    if not data_dir:
        raise DownloadError(
            f"--download needs --data-dir DIR, the folder to put {dataset} in, e.g. "
            f"`python benchmark.py --download --dataset {dataset} --data-dir data/{dataset}`"
        )
    target = check_writable_dir(Path(data_dir).expanduser(), "--data-dir")
    summary = download_dataset(dataset, target)
    print(f"{dataset}: {len(summary.downloaded)} file(s) downloaded, {len(summary.skipped)} "
          f"already verified, in {summary.data_dir}")
    for folder, images in summary.images.items():
        print(f"  {folder}/: {images:,} images")
    for note in summary.notes:
        print(f"  note: {note}")
    print(f"Licence: {LICENCE} {DISCLAIMER}")
    print("Please cite:")
    for citation in citations(dataset):
        print(f"  - {citation}")
    print("The zip archives can be deleted now; the extracted folders are what --prepare reads.")
    print(f"Next: python benchmark.py --prepare --dataset {dataset} --data-dir {summary.data_dir}")
    return 0
