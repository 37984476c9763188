"""What the report stage checks before it uses (or writes) anything.

`check_entries` reads every prediction file of a run's entries (each is validated by
core.predictions) and refuses, naming the file and the fix:

- a stale ensemble: a member prediction file changed, vanished or appeared since its fit
  (core.provenance.stale_ensembles); `--report` refits such ensembles first where their members
  are present (pipeline.report_action), so this only fires when it could not or was not asked;
- leakage: an entry's validation (or out-of-fold) predictions and the test split sharing an
  image or a lesion, or the test split sharing one with splits.csv's training split (unless the
  run is declared --split image; core.integrity);
- entries measured on different test sets (core.provenance.sha256_of_test_set): a ranking or a
  regression gate of numbers measured on other images would mean nothing.

`check_writable_outputs` proves, before the first write, that every folder the report writes to
can be written (core.filesystem).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from core.errors import IntegrityError
from core.filesystem import check_writable_dir
from core.integrity import SplitIds, check_no_leakage
from core.provenance import describe_test_set, record_of_test_set, stale_ensembles
from core.rundir import RunDir
from reports.results import Entry

OOF_SPLIT = "oof"


def check_stale_ensembles(run: RunDir, replaced: Collection[str] = ()) -> None:
    """Refuse a stale ensemble (one line naming it, the member file that changed and the fix).

    Args:
        run: a single run directory (or one replicate).
        replaced: ensembles about to be rewritten (refit) by the caller: not checked.

    Raises:
        IntegrityError: the first stale ensemble.
    """
    stale = [s for s in stale_ensembles(run) if s.name not in set(replaced)]
    if stale:
        first = stale[0]
        others = f" ({len(stale) - 1} more stale ensemble(s))" if len(stale) > 1 else ""
        raise IntegrityError(
            f"{first.describe()}{others}; its predictions no longer follow from its members: "
            f"refit it with --ensemble {first.name} --members {','.join(first.members)} --out "
            f"{run.root} (--report refits stale ensembles itself)")


def _entry_ids(run: RunDir, entry: Entry, split: str) -> SplitIds:
    ids = SplitIds.of(entry.predictions(split), split)
    path = Path(ids.source)
    if path.is_absolute() and path.is_relative_to(run.root.absolute()):
        return replace(ids, source=path.relative_to(run.root.absolute()).as_posix())
    return ids


def check_entries(run: RunDir, entries: Sequence[Entry],
                  replaced: Collection[str] = ()) -> dict[str, Any] | None:
    """Read and check every prediction file of `entries` before anything is written.

    Args:
        run: a single run directory (or one replicate of a grid).
        entries: its entries (reports.results.discover_entries).
        replaced: ensemble names the caller rewrites before the report (their current files are
            neither checked for staleness nor compared: they are derived from checked members).

    Returns:
        The test-set record shared by every entry with test predictions ({"sha256", "images"}),
        or None when none has test predictions.

    Raises:
        PredictionFileError: a prediction file breaks the contract.
        IntegrityError: a stale ensemble, leaked lesions or images, or entries measured on
            different test sets (see the module docstring).
    """
    check_stale_ensembles(run, replaced)
    checked = [e for e in entries if not (e.kind == "ensemble" and e.name in set(replaced))]
    for entry in checked:
        for split in ("val", "test"):
            if entry.has_split(split):
                entry.predictions(split)  # read and validated once, then cached
    tested = [e for e in checked if e.has_split("test")]
    if not tested:
        return None
    records = {e.name: record_of_test_set(e.predictions("test")) for e in tested}
    reference = tested[0]
    differing = [e.name for e in tested if records[e.name] != records[reference.name]]
    if differing:
        same = [e.name for e in tested if records[e.name] == records[reference.name]]
        raise IntegrityError(
            f"{run.root}: the entries were tested on different test sets: "
            f"{', '.join(same)} on {describe_test_set(records[reference.name])}, but "
            f"{differing[0]} on {describe_test_set(records[differing[0]])}"
            f"{f' (and {len(differing) - 1} more)' if len(differing) > 1 else ''}; one report "
            "ranks entries on one test set: remove or re-predict the entries of the other")
    test = _entry_ids(run, reference, "test")
    check_no_leakage(run.root, test, [])  # splits.csv's training split
    for entry in checked:
        others = [_entry_ids(run, entry, "val")] if entry.has_split("val") else []
        if entry.has_split(OOF_SPLIT):
            others.append(_entry_ids(run, entry, OOF_SPLIT))
        if others:
            own_test = _entry_ids(run, entry, "test") if entry.has_split("test") else test
            check_no_leakage(run.root, own_test, others, with_train=False)
    return records[reference.name]


def check_writable_outputs(run: RunDir, entries: Sequence[Entry], figures: bool = True) -> None:
    """Prove that every folder a single run's report writes to can be written.

    Args:
        run: the run directory.
        entries: the entries whose metrics.json is rewritten.
        figures: whether figures/ is written.

    Raises:
        FileSystemError: naming the first folder that cannot be written.
    """
    check_writable_dir(run.root, "run directory")
    for entry in entries:
        check_writable_dir(entry.directory, f"the folder of entry {entry.name}")
    check_writable_dir(run.isic_export_dir, "the ISIC export folder")
    if figures:
        check_writable_dir(run.figures_dir, "the figures folder")
