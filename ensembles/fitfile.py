"""fit.json: a fitted ensemble as plain JSON (never pickle), and rebuilding it exactly.

Layout (keys sorted on disk):

    format          "dermbench-ensemble-fit/1"
    ensemble        soft_voting | hard_voting | weighted_voting | stacking
    members         member names, in the order of the weights / the meta-model's features
    classes         the seven output classes, canonical order
    fit_split       "val" or "oof" for weighted voting and stacking; "none" for soft/hard voting
    fit_size        rows the ensemble was fit on (0 when nothing is fit)
    fit_lesions     distinct lesions among them
    val_in_sample   true when predictions_val.csv holds images the ensemble was fit on
    params          the estimator's constructor parameters
    state           the learned state: weighted voting: weights, objective ("class-balanced log
                    loss" by default), fit_log_loss (its value on the fit data); stacking: coef,
                    intercept, meta_classes, C, clip, cv (scoring, folds, mean score per C),
                    class_weight, objective
    member_files    {member: {split: {"path": ..., "sha256": ...}}}
    members_sha256  SHA-256 over all member files (name, split and file hash, in order)
    calibrated      true when the ensemble was built from temperature-scaled members
                    (--calibrated); false otherwise (a file without the key: false)
    temperatures    only when calibrated: {member: core.temperature's record: "value",
                    "fit_on": "val", "val_log_loss_before", "val_log_loss_after", ...}; the
                    estimator takes each member's probabilities scaled by its "value"
                    (`scale_members`), on every split and for new images alike

JSON writes floats with `repr`, which round-trips float64 exactly, so `load_fit` rebuilds an
estimator whose predictions are bitwise identical to the original's.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from core.atomic import atomic_write_json, read_json, read_json_object
from core.classes import CLASSES
from core.entry_metrics import FIT_FILE
from core.temperature import apply_temperature
from ensembles.base import EnsembleEstimator
from ensembles.errors import EnsembleError
from ensembles.registry import ESTIMATORS

FIT_FORMAT = "dermbench-ensemble-fit/1"


def members_sha256(member_files: dict[str, dict[str, dict[str, str]]]) -> str:
    """One SHA-256 over every member file's hash, in member then split order."""
    digest = hashlib.sha256()
    for member, splits in member_files.items():
        for split, entry in splits.items():
            digest.update(f"{member}\t{split}\t{entry['sha256']}\n".encode())
    return digest.hexdigest()


def fit_record(
    estimator: EnsembleEstimator,
    *,
    members: list[str],
    fit_split: str,
    fit_size: int,
    fit_lesions: int,
    val_in_sample: bool,
    member_files: dict[str, dict[str, dict[str, str]]],
    temperatures: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The JSON-ready fit record of a fitted estimator (module docstring).

    Args:
        estimator: a fitted ensemble.
        members: member names in the order of the estimator's member axis.
        fit_split: "val", "oof" or "none".
        fit_size: rows fit on.
        fit_lesions: distinct lesions among them.
        val_in_sample: whether the validation predictions are in-sample.
        member_files: {member: {split: {"path", "sha256"}}}.
        temperatures: {member: temperature record} when the members were temperature-scaled
            (--calibrated), else None.

    Returns:
        The record (what `write_fit` writes).
    """
    calibrated = {"calibrated": temperatures is not None}
    if temperatures is not None:
        calibrated["temperatures"] = {m: dict(temperatures[m]) for m in members}
    return {
        "format": FIT_FORMAT,
        "ensemble": estimator.name,
        "members": list(members),
        "classes": list(CLASSES),
        "fit_split": fit_split,
        "fit_size": int(fit_size),
        "fit_lesions": int(fit_lesions),
        "val_in_sample": bool(val_in_sample),
        "params": estimator.get_params(),
        "state": estimator.get_state(),
        "member_files": member_files,
        "members_sha256": members_sha256(member_files),
        **calibrated,
    }


def member_temperatures(record: dict[str, Any]) -> np.ndarray | None:
    """The members' temperatures of a calibrated fit record, in the order of its "members".

    Args:
        record: a fit record (`read_fit`).

    Returns:
        (n_members,) temperatures, or None when the ensemble is not calibrated.

    Raises:
        EnsembleError: a calibrated record without a positive temperature for every member.
    """
    if record.get("calibrated") is not True:
        return None
    temperatures = record.get("temperatures")
    try:
        values = np.array([float(temperatures[m]["value"]) for m in record["members"]])
    except (KeyError, TypeError, ValueError):
        raise EnsembleError(
            "a calibrated fit.json must record a temperature for every member; rebuild it with "
            "--ensemble NAME --calibrated") from None
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise EnsembleError(f"fit.json records temperatures {values.tolist()}; they must be "
                            "positive; rebuild it with --ensemble NAME --calibrated")
    return values


def scale_members(record: dict[str, Any], probas: np.ndarray) -> np.ndarray:
    """The members' probabilities as the estimator of `record` takes them.

    Args:
        record: a fit record (`read_fit`).
        probas: (n_members, n, 7) the members' own probabilities, in the record's member order.

    Returns:
        `probas` temperature-scaled member by member when the ensemble is calibrated, else
        `probas` unchanged.

    Raises:
        EnsembleError: see `member_temperatures`, or a member axis of the wrong length.
    """
    temperatures = member_temperatures(record)
    if temperatures is None:
        return probas
    if len(probas) != len(temperatures):
        raise EnsembleError(f"expected the probabilities of {len(temperatures)} members "
                            f"({', '.join(record['members'])}), got {len(probas)}")
    return np.stack([apply_temperature(p, t) for p, t in zip(probas, temperatures, strict=True)])


def recorded_calibration(entry_dir: str | os.PathLike) -> bool:
    """Whether the ensemble folder's fit.json says it was built from temperature-scaled members
    (False when fit.json is missing, unreadable or older than the key)."""
    record = read_json_object(Path(entry_dir) / FIT_FILE,
                              "it is taken as built from unscaled members")
    return record.get("calibrated") is True


def write_fit(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Write a fit record atomically."""
    atomic_write_json(path, record)


def read_fit(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a fit.json.

    Raises:
        EnsembleError: missing or unreadable file, wrong format, unknown ensemble, or classes
            that are not the canonical seven.
    """
    try:
        record = read_json(path)
    except FileNotFoundError:
        raise EnsembleError(f"{path}: fit file not found") from None
    except ValueError as exc:
        raise EnsembleError(f"{path}: not valid JSON ({exc}); rebuild it with --ensemble") from exc
    if not isinstance(record, dict) or record.get("format") != FIT_FORMAT:
        raise EnsembleError(f"{path}: not a {FIT_FORMAT} file; rebuild it with --ensemble")
    if record.get("ensemble") not in ESTIMATORS:
        raise EnsembleError(
            f"{path}: unknown ensemble {record.get('ensemble')!r}; known: {', '.join(ESTIMATORS)}"
        )
    if record.get("classes") != list(CLASSES):
        raise EnsembleError(
            f"{path}: classes {record.get('classes')} are not the canonical {list(CLASSES)}"
        )
    return record


def load_fit(path: str | os.PathLike) -> EnsembleEstimator:
    """Rebuild the fitted estimator described by a fit.json.

    Args:
        path: the fit.json.

    Returns:
        An estimator whose `predict_proba` / `predict` equal the original's exactly; feed it the
        members' probabilities in the order of the record's "members".

    Raises:
        EnsembleError: see `read_fit`, or a state that does not match the ensemble.
    """
    record = read_fit(path)
    try:
        estimator = ESTIMATORS[record["ensemble"]](**record["params"])
        return estimator.set_state(record["state"])
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, EnsembleError):
            raise EnsembleError(f"{path}: {exc}") from exc
        raise EnsembleError(f"{path}: malformed params or state ({exc!r}); rebuild it with --ensemble") from exc
