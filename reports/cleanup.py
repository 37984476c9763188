"""Keeping the report's output folders clean: files of entries no longer in the run go.

figures/ and isic_export/ hold one file per entry (core.rundir.entry_file_stem); when an entry is
removed from the run, or renamed, its old files would otherwise stay and look current. After a
report has written its files, `remove_stale_files` deletes the report's other files there.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from core.filesystem import filesystem_error

log = logging.getLogger(__name__)


def remove_stale_files(folder: Path, pattern: str, keep: Iterable[Path]) -> list[Path]:
    """Remove the files matching `pattern` in `folder` that are not in `keep` (outputs of
    entries no longer in the run).

    Args:
        folder: figures/ or isic_export/.
        pattern: the glob of the report's files there.
        keep: the files this report wrote.

    Returns:
        The removed files.
    """
    kept = {Path(p).resolve() for p in keep}
    removed = []
    if not folder.is_dir():
        return removed
    for path in sorted(folder.glob(pattern)):
        if path.is_file() and path.resolve() not in kept:
            try:
                path.unlink()
            except OSError as exc:
                raise filesystem_error(exc, path, "remove") from exc
            removed.append(path)
    if removed:
        log.info("removed %d file(s) of entries no longer in the run from %s", len(removed),
                 folder)
    return removed
