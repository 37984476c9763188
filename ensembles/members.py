"""Choosing ensemble members in a run directory, and reading their predictions aligned by image.

Member files (the prediction-file contract, `core.predictions`):

    models/<member>/predictions_val.csv    validation split: what voting weights and the
                                           stacking meta-model are fit on
    models/<member>/predictions_test.csv   test split: only ever predicted, never fit on
    models/<member>/predictions_oof.csv    optional, written by the training stage when the run
                                           has K folds (--folds): out-of-fold predictions, i.e.
                                           one row per image of the training+validation pool,
                                           predicted by the fold model that did not train on it;
                                           never a test image. Stacking fits on these when every
                                           member has them.

The default members are the entries of kind "backbone" present in the run: the kind recorded in
their metrics.json by the trainer, else (hand-made prediction folders) the zoo registry's kind of
that name (`zoo.registered_kind`; the registry imports no Keras). Baselines, and names the
registry does not know, join only when named (--members).

Members are always sorted by name, so the order in which they are named never changes a result.
Rows are aligned by sorting on image_id; then every member must hold exactly the same image ids
and agree on each image's label and lesion id. The fit data (validation, out-of-fold) and the
test split must share no image and no lesion, nor may the test split share one with the
training split of splits.csv (core.integrity; lesions may be shared in a run declared
--split image).

Calibrated ensembles (--calibrated) take the members temperature-scaled (`temperature_scaled`):
each member's temperature is fitted on its validation predictions exactly as its metrics.json's
"temperature" is (core.temperature, measured after the prior shift to the run's training class
frequencies), then applied to every split of that member. The test split is only scaled.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from core.atomic import read_json
from core.calibration import training_prior
from core.classes import CLASS_INDEX
from core.errors import PredictionFileError, RunDirError
from core.integrity import SplitIds, check_no_leakage
from core.predictions import Predictions, read_predictions
from core.rundir import RunDir, entry_folders
from core.temperature import apply_temperature, fit_temperature
from ensembles.errors import EnsembleError

logger = logging.getLogger(__name__)

DEFAULT_KIND = "backbone"  # the kind of the default members
FIT_SPLITS: tuple[str, ...] = ("val", "oof")
OOF_SPLIT = "oof"
FAILED_STATUSES = frozenset({"failed", "nan"})
_SHOWN_IDS = 5


@dataclass(frozen=True)
class EntryInfo:
    """What a models/<name>/ folder offers as an ensemble member."""

    name: str
    has_val: bool
    has_test: bool
    has_oof: bool
    status: str | None
    kind: str | None

    @property
    def member_kind(self) -> str | None:
        """The recorded kind, else the zoo registry's kind of this name (None: unknown)."""
        if self.kind:
            return self.kind
        from zoo import registered_kind

        return registered_kind(self.name)

    @property
    def usable(self) -> bool:
        """Has validation and test predictions and did not fail."""
        return self.has_val and self.has_test and self.status not in FAILED_STATUSES

    def problem(self) -> str:
        """Why the entry is not usable ("" when it is)."""
        if self.status in FAILED_STATUSES:
            return f"its metrics.json says status {self.status!r}"
        missing = [f"predictions_{s}.csv" for s, ok in (("val", self.has_val),
                                                         ("test", self.has_test)) if not ok]
        return f"it has no {' or '.join(missing)}" if missing else ""


def survey_models(run: RunDir) -> dict[str, EntryInfo]:
    """Every folder under RUNDIR/models with what it offers, keyed by name.

    Raises:
        RunDirError: RUNDIR/models does not exist.
    """
    if not run.models_dir.is_dir():
        raise RunDirError(
            f"{run.models_dir}: no models folder; train first (--all) or put prediction files at "
            f"{run.models_dir}/<name>/predictions_val.csv and predictions_test.csv"
        )
    entries = {}
    for folder in entry_folders(run.models_dir):
        status = kind = None
        metrics_file = folder / "metrics.json"
        if metrics_file.is_file():
            try:
                metrics = read_json(metrics_file)
                status, kind = metrics.get("status"), metrics.get("kind")
            except (ValueError, AttributeError, OSError) as exc:
                logger.warning("%s: unreadable (%s); its status is ignored", metrics_file, exc)
        entries[folder.name] = EntryInfo(
            name=folder.name,
            has_val=RunDir.predictions_file(folder, "val").is_file(),
            has_test=RunDir.predictions_file(folder, "test").is_file(),
            has_oof=RunDir.predictions_file(folder, OOF_SPLIT).is_file(),
            status=status,
            kind=kind,
        )
    return entries


def resolve_members(run: RunDir, requested: list[str] | None = None) -> list[str]:
    """The ensemble's members, sorted by name.

    Args:
        run: the run directory.
        requested: names from --members, or None for the default: the entries of kind
            "backbone" present in the run (`EntryInfo.member_kind`), with validation and test
            predictions and a status other than failed/nan. Baselines join only when named.

    Returns:
        At least two member names, sorted.

    Raises:
        EnsembleError: a name given twice, an unknown or unusable member (the message lists the
            usable ones), or fewer than two members.
        RunDirError: no models folder.
    """
    entries = survey_models(run)
    usable = [e.name for e in entries.values() if e.usable]
    available = ", ".join(usable) if usable else "none"
    if requested is None:
        members = [e.name for e in entries.values()
                   if e.usable and e.member_kind == DEFAULT_KIND]
        if len(members) < 2:
            raise EnsembleError(
                f"an ensemble needs at least two members; the default members are the entries of "
                f"kind backbone present in {run.models_dir} (metrics.json \"kind\", else the zoo "
                f"registry) and only {len(members)} usable one(s) found "
                f"({', '.join(members) or 'none'}); usable entries: {available}. Name at least "
                "two with --members a,b"
            )
        return sorted(members)
    seen: set[str] = set()
    for name in requested:
        if name in seen:
            raise EnsembleError(
                f"member {name!r} is named twice in --members; each model may count only once"
            )
        seen.add(name)
        if name not in entries:
            raise EnsembleError(
                f"unknown member {name!r}: no folder {run.models_dir / name}; usable members: "
                f"{available}"
            )
        if not entries[name].usable:
            raise EnsembleError(
                f"member {name!r} cannot be used: {entries[name].problem()} "
                f"({run.models_dir / name}); usable members: {available}"
            )
    if len(requested) < 2:
        raise EnsembleError(
            f"an ensemble needs at least two members, got {len(requested)} "
            f"({', '.join(requested)}); usable members: {available}"
        )
    return sorted(requested)


@dataclass(frozen=True)
class AlignedSplit:
    """All members' predictions on one split, rows aligned by image_id (sorted).

    Attributes:
        split: "val", "test" or "oof".
        members: member names, in the order of the first axis of `probas`.
        image_id, lesion_id, label: (n,) per image (label holds class names).
        probas: (n_members, n, 7) member probabilities.
        files: each member's file, relative to the run directory where possible.
        sha256: each member file's SHA-256 (hex).
    """

    split: str
    members: tuple[str, ...]
    image_id: np.ndarray
    lesion_id: np.ndarray
    label: np.ndarray
    probas: np.ndarray
    files: tuple[str, ...]
    sha256: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.image_id)

    @property
    def y(self) -> np.ndarray:
        """True labels as canonical class indices."""
        return np.array([CLASS_INDEX[c] for c in self.label], dtype=np.int64)


@dataclass(frozen=True)
class MemberData:
    """Everything the ensembles are built from: aligned val and test (and OOF when present)."""

    members: tuple[str, ...]
    val: AlignedSplit
    test: AlignedSplit
    oof: AlignedSplit | None

    def split(self, name: str) -> AlignedSplit:
        """The aligned split called `name` ("val", "test" or "oof")."""
        found = {"val": self.val, "test": self.test, "oof": self.oof}.get(name)
        if found is None:
            raise EnsembleError(f"no aligned {name!r} predictions for members {self.members}")
        return found


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _show(ids) -> str:
    ids = sorted(str(i) for i in ids)
    more = f" (+{len(ids) - _SHOWN_IDS} more)" if len(ids) > _SHOWN_IDS else ""
    return ", ".join(ids[:_SHOWN_IDS]) + more


def _check_same_images(ref: Predictions, other: Predictions, split: str) -> None:
    if np.array_equal(ref.image_id, other.image_id):
        return
    ref_ids, other_ids = set(ref.image_id), set(other.image_id)
    only_ref, only_other = ref_ids - other_ids, other_ids - ref_ids
    parts = []
    if only_ref:
        parts.append(f"{len(only_ref)} only in the first ({_show(only_ref)})")
    if only_other:
        parts.append(f"{len(only_other)} only in the second ({_show(only_other)})")
    raise PredictionFileError(
        f"{ref.source} and {other.source} cover different images on the {split} split: "
        f"{'; '.join(parts)}. Every member must predict exactly the same images; regenerate the "
        "predictions from the same split, or leave the member out with --members"
    )


def _check_same_column(ref: Predictions, other: Predictions, column: str) -> None:
    a, b = getattr(ref, column), getattr(other, column)
    differ = np.flatnonzero(a != b)
    if differ.size:
        i = int(differ[0])
        raise PredictionFileError(
            f"{ref.source} and {other.source} disagree on the {column} of image "
            f"{str(ref.image_id[i])!r}: {str(a[i])!r} vs {str(b[i])!r} ({differ.size} image(s) "
            "affected); the "
            "members must come from the same split of the same dataset"
        )


def read_aligned_split(run: RunDir, members: list[str], split: str) -> AlignedSplit:
    """Read every member's predictions on `split` and align them by image_id.

    Raises:
        PredictionFileError: a file breaking the contract (wrong columns, sums, NaN, ...), image
            id sets that differ between members, or labels / lesion ids that disagree.
    """
    preds, hashes = [], []
    for name in members:
        path = RunDir.predictions_file(run.model_dir(name), split)
        try:
            hashes.append(hashlib.sha256(path.read_bytes()).hexdigest())
        except FileNotFoundError:
            raise PredictionFileError(f"{path}: prediction file not found") from None
        member_preds = read_predictions(path).sorted_by_image()
        if member_preds.prediction is not None:
            differ = int((member_preds.y_pred != np.argmax(member_preds.proba, axis=1)).sum())
            if differ:
                logger.warning("%s: its prediction column differs from the argmax in %d row(s); "
                               "ensembles use the probabilities (hard voting votes for the argmax)",
                               path, differ)
        preds.append(member_preds)
    ref = preds[0]
    for other in preds[1:]:
        _check_same_images(ref, other, split)
        _check_same_column(ref, other, "label")
        _check_same_column(ref, other, "lesion_id")
    return AlignedSplit(
        split=split,
        members=tuple(members),
        image_id=ref.image_id,
        lesion_id=ref.lesion_id,
        label=ref.label,
        probas=np.stack([p.proba for p in preds]),
        files=tuple(_relative(Path(p.source), run.root) for p in preds),
        sha256=tuple(hashes),
    )


def _ids(split: AlignedSplit) -> SplitIds:
    return SplitIds(split.split, split.files[0], split.image_id, split.lesion_id)


def load_members(run: RunDir, members: list[str]) -> MemberData:
    """Read and check every member's validation, test and (when all have it) OOF predictions.

    Args:
        run: the run directory.
        members: member names (from `resolve_members`).

    Returns:
        The aligned `MemberData`.

    Raises:
        PredictionFileError: any contract violation (see `read_aligned_split`).
        LeakageError: the validation (or out-of-fold) and test predictions, or splits.csv's
            training split and the test predictions, share an image, or a lesion (core.integrity).
    """
    val = read_aligned_split(run, members, "val")
    test = read_aligned_split(run, members, "test")
    with_oof = [m for m in members if RunDir.predictions_file(run.model_dir(m), OOF_SPLIT).is_file()]
    oof = None
    if len(with_oof) == len(members):
        oof = read_aligned_split(run, members, OOF_SPLIT)
    check_no_leakage(run.root, _ids(test), [_ids(s) for s in (val, oof) if s is not None])
    if with_oof and oof is None:
        logger.warning(
            "only %s of the members have predictions_oof.csv (%s); stacking is fit on the "
            "validation predictions instead", len(with_oof), ", ".join(with_oof))
    for i, first in enumerate(members):
        for j in range(i + 1, len(members)):
            if np.array_equal(test.probas[i], test.probas[j]):
                logger.warning("members %s and %s have identical test predictions; is one model "
                               "counted twice?", first, members[j])
    return MemberData(members=tuple(members), val=val, test=test, oof=oof)


def temperature_scaled(run: RunDir, data: MemberData) -> tuple[MemberData, dict[str, dict[str, Any]]]:
    """The members' predictions temperature-scaled, each with a temperature fitted on its
    validation predictions (core.temperature; nothing is fit on test or out-of-fold rows).

    The objective is the member's validation log loss after the prior shift to the run's training
    class frequencies (core.calibration.training_prior), as for the "temperature" of its
    metrics.json, so both record the same temperature.

    Args:
        run: the run directory (for the calibration prior).
        data: the members' aligned predictions (`load_members`).

    Returns:
        (the scaled data: validation, test and out-of-fold probabilities scaled member by member,
        {member: its temperature record (`TemperatureFit.to_json`)}).
    """
    prior = training_prior(run.root, data.val.label).vector
    fits = {member: fit_temperature(data.val.y, data.val.probas[i], prior)
            for i, member in enumerate(data.members)}
    values = [fits[m].value for m in data.members]
    for member in data.members:
        fit = fits[member]
        logger.info("%s: temperature %.4f (validation log loss %.4f -> %.4f)", member, fit.value,
                    fit.log_loss_before, fit.log_loss_after)

    def scale(split: AlignedSplit) -> AlignedSplit:
        return replace(split, probas=np.stack(
            [apply_temperature(p, t) for p, t in zip(split.probas, values, strict=True)]))

    scaled = MemberData(members=data.members, val=scale(data.val), test=scale(data.test),
                        oof=None if data.oof is None else scale(data.oof))
    return scaled, {member: fits[member].to_json() for member in data.members}
