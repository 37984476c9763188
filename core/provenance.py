"""What derived files were derived from, compared before they are used.

- The test-set identity (`record_of_test_set`): the SHA-256 of the sorted test image ids with their
  labels, and the number of images. metrics.json records it ("test_set") for every entry with
  test predictions, a baseline records the run's, and the report and --check compare them:
  numbers measured on other images are never ranked or gated together.
- An ensemble's inputs: its fit.json records, per member and split, the prediction file it read
  and that file's SHA-256 ("member_files", ensembles.fitfile). `ensemble_freshness` compares them
  with the files now: a member file that changed, disappeared or appeared (every member now has
  predictions_oof.csv and the fit did not read them) makes the ensemble stale. fit.json is read
  as plain JSON here, so every stage can check (reports never import ensembles).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.atomic import read_json_object
from core.rundir import RunDir, entry_folders

log = logging.getLogger(__name__)

TEST_SET_KEY = "test_set"
FIT_FILE = "fit.json"
MEMBER_SPLITS = ("val", "test")
OOF_SPLIT = "oof"
SHORT = 12  # hex digits of a hash shown in messages


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 (hex) of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_of_test_set(image_id: Iterable[Any], label: Iterable[Any]) -> str:
    """The identity of a test set: SHA-256 over "image_id<TAB>label" lines sorted by image id.

    Row order does not matter; another image, a missing one or another label changes it.
    """
    pairs = sorted(zip((str(i) for i in image_id), (str(lab) for lab in label), strict=True))
    digest = hashlib.sha256()
    for image, lab in pairs:
        digest.update(f"{image}\t{lab}\n".encode())
    return digest.hexdigest()


def record_of_test_set(preds: Any) -> dict[str, Any]:
    """{"sha256": identity, "images": count} of a split's predictions (core.predictions)."""
    return {"sha256": sha256_of_test_set(preds.image_id, preds.label), "images": len(preds.image_id)}


def describe_test_set(record: Any) -> str:
    """"<images> images, sha256 <first 12 hex>" of a test-set record ("unknown" if malformed)."""
    if not isinstance(record, dict) or not isinstance(record.get("sha256"), str):
        return "unknown"
    images = record.get("images")
    count = f"{images} images, " if isinstance(images, int) else ""
    return f"{count}sha256 {record['sha256'][:SHORT]}"


@dataclass(frozen=True)
class MemberChange:
    """One member file that no longer matches an ensemble's fit.

    Attributes:
        member: the member's name.
        split: "val", "test" or "oof".
        path: the file (relative to the run directory where it lies inside).
        problem: "changed", "missing" or "new" (present now, not read by the fit).
        recorded, current: the SHA-256 recorded and the file's now ("" when unknown/absent).
    """

    member: str
    split: str
    path: str
    problem: str
    recorded: str = ""
    current: str = ""

    def describe(self) -> str:
        """One phrase, e.g. "xception's predictions_test.csv changed since the fit (...)"."""
        if self.problem == "missing":
            return f"{self.member}'s {self.path} is gone"
        if self.problem == "new":
            return (f"{self.member} now has {self.path}, which the fit did not read (every member "
                    "has out-of-fold predictions now)")
        return (f"{self.member}'s {self.path} changed since the fit (fit.json records sha256 "
                f"{self.recorded[:SHORT]}, the file has {self.current[:SHORT]})")


@dataclass(frozen=True)
class EnsembleFreshness:
    """Whether an ensemble folder still matches the member files it was fit on.

    Attributes:
        name: the ensemble's folder name.
        directory: ensembles/<name>.
        members: the members fit.json records (empty when it records none).
        changes: the member files that no longer match (empty: current).
        verifiable: False when fit.json is missing or records no member files (hand-made or
            older folders): nothing can be compared.
    """

    name: str
    directory: Path
    members: tuple[str, ...]
    changes: tuple[MemberChange, ...]
    verifiable: bool

    @property
    def stale(self) -> bool:
        return bool(self.changes)

    def describe(self) -> str:
        """"ensembles/<name> is stale: <first change>[ (+N more)]"."""
        more = f" (+{len(self.changes) - 1} more)" if len(self.changes) > 1 else ""
        return f"ensembles/{self.name} is stale: {self.changes[0].describe()}{more}"


def _resolve(run_root: Path, recorded: str) -> Path:
    path = Path(recorded)
    return path if path.is_absolute() else run_root / path


def ensemble_freshness(entry_dir: str | os.PathLike,
                       hashes: dict[Path, str] | None = None) -> EnsembleFreshness:
    """Compare an ensemble's fit.json "member_files" with the member files now.

    Args:
        entry_dir: ensembles/<name> of a run directory.
        hashes: a cache path -> SHA-256 shared between calls (members are shared by ensembles).

    Returns:
        The comparison; a fit.json without member files is not verifiable (never stale).
    """
    entry_dir = Path(entry_dir)
    run_root = entry_dir.parent.parent
    record = read_json_object(entry_dir / FIT_FILE, "its freshness cannot be checked")
    members = record.get("members")
    files = record.get("member_files")
    members = tuple(str(m) for m in members) if isinstance(members, list) else ()
    if not isinstance(files, dict) or not files or not members:
        return EnsembleFreshness(entry_dir.name, entry_dir, members, (), False)
    cache = {} if hashes is None else hashes
    changes: list[MemberChange] = []
    for member in members:
        splits = files.get(member)
        splits = splits if isinstance(splits, dict) else {}
        for split in (*MEMBER_SPLITS, OOF_SPLIT):
            entry = splits.get(split)
            if not isinstance(entry, dict):
                continue
            recorded_path = str(entry.get("path") or f"models/{member}/predictions_{split}.csv")
            path = _resolve(run_root, recorded_path)
            if not path.is_file():
                changes.append(MemberChange(member, split, recorded_path, "missing",
                                            str(entry.get("sha256", ""))))
                continue
            if path not in cache:
                cache[path] = file_sha256(path)
            if cache[path] != entry.get("sha256"):
                changes.append(MemberChange(member, split, recorded_path, "changed",
                                            str(entry.get("sha256", "")), cache[path]))
        for split in MEMBER_SPLITS:
            if split not in splits:
                changes.append(MemberChange(member, split, f"models/{member}/predictions_{split}"
                                            ".csv", "missing"))
    run = RunDir(run_root)
    read_oof = any(isinstance(files.get(m), dict) and OOF_SPLIT in files[m] for m in members)
    if not read_oof and all(RunDir.predictions_file(run.model_dir(m), OOF_SPLIT).is_file()
                            for m in members):
        changes.append(MemberChange(members[0], OOF_SPLIT,
                                    f"models/{members[0]}/predictions_{OOF_SPLIT}.csv", "new"))
    return EnsembleFreshness(entry_dir.name, entry_dir, members, tuple(changes), True)


def ensembles_freshness(run: RunDir) -> list[EnsembleFreshness]:
    """`ensemble_freshness` of every ensemble folder of a run (single run or one replicate)."""
    hashes: dict[Path, str] = {}
    return [ensemble_freshness(folder, hashes) for folder in entry_folders(run.ensembles_dir)
            if (folder / FIT_FILE).is_file()
            or RunDir.predictions_file(folder, "test").is_file()]


def stale_ensembles(run: RunDir) -> list[EnsembleFreshness]:
    """The stale ensembles of a run; unverifiable ones are logged (they cannot be checked).

    Args:
        run: a single run directory (or one replicate of a grid).

    Returns:
        The stale ones, by name.
    """
    found = ensembles_freshness(run)
    unverifiable = [f.name for f in found if not f.verifiable]
    if unverifiable:
        log.warning("%s: the fit.json of %s records no member files, so whether they still "
                    "match their members cannot be checked; rebuild them with --ensemble to "
                    "record them", run.root, ", ".join(unverifiable))
    return [f for f in found if f.stale]

