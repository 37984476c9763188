"""The ensembles stage: read member predictions, fit, predict, write the ensemble folders.

Everything is read, checked, fit and predicted in memory first (`fit_ensembles`); only when every
requested ensemble succeeded is anything written (`write_ensemble_results`), so a refusal leaves
the run directory untouched. The folders are written as one set (core.atomic.staged_dirs): an
interruption (Ctrl-C, a full disk) leaves every ensemble folder as it was or every one new,
never a folder whose metrics.json describes other members than its fit.json. Per ensemble it
writes, under RUNDIR/ensembles/<name>/:

    predictions_val.csv    soft/hard voting: out of sample. weighted voting / stacking: in sample
                           when they were fit on the validation split (fit.json and metrics.json
                           say so with val_in_sample: true); judge them on test.
    predictions_test.csv   never fit on, only predicted.
    fit.json               see `ensembles.fitfile`.
    metrics.json           via core.entry_metrics.write_entry_metrics, with the fit's facts
                           (members, fit split, weights or C, "calibrated" and the members'
                           temperatures) and the ensemble's "description".

`calibrated=True` (--calibrated) builds every requested ensemble from temperature-scaled members
(ensembles.members.temperature_scaled: each member's temperature fitted on its validation
predictions); fit.json records "calibrated": true and the temperatures.

results.csv and the report are the reports stage's; the --ensemble action refreshes them
afterwards (pipeline.ensemble_action).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.atomic import staged_dirs
from core.classes import CLASSES
from core.defaults import BOOTSTRAP, SEED
from core.entry_metrics import FIT_FILE, write_entry_metrics
from core.errors import RunDirError
from core.predictions import Predictions, make_predictions, write_predictions
from core.rundir import RunDir
from ensembles.base import MIN_CLASS_LESIONS, EnsembleEstimator
from ensembles.fitfile import fit_record, write_fit
from ensembles.members import (
    AlignedSplit,
    MemberData,
    load_members,
    resolve_members,
    temperature_scaled,
)
from ensembles.registry import make_estimator, resolve_names
from ensembles.stacking import Stacking
from ensembles.voting import HardVoting, WeightedVoting

logger = logging.getLogger(__name__)

IN_SAMPLE_NOTE = (
    "predictions_val.csv is in-sample: this ensemble was fit on these validation predictions, so "
    "its validation metrics are optimistic; judge it on test"
)


@dataclass(frozen=True)
class EnsembleResult:
    """One fitted ensemble and its predictions, not yet written.

    Attributes:
        name: the ensemble's name.
        estimator: the fitted estimator.
        val, test: its predictions on the validation and test split.
        record: the fit.json record.
    """

    name: str
    estimator: EnsembleEstimator
    val: Predictions
    test: Predictions
    record: dict[str, Any]

    @property
    def members(self) -> list[str]:
        """Member names, in the order of the fit."""
        return list(self.record["members"])

    @property
    def fit_split(self) -> str:
        """The split fit on: "val", "oof" or "none"."""
        return str(self.record["fit_split"])

    @property
    def fit_size(self) -> int:
        """Rows fit on (0 when nothing is learned)."""
        return int(self.record["fit_size"])

    @property
    def val_in_sample(self) -> bool:
        """Whether predictions_val.csv holds images the ensemble was fit on."""
        return bool(self.record["val_in_sample"])

    @property
    def calibrated(self) -> bool:
        """Whether it was built from temperature-scaled members (--calibrated)."""
        return self.record.get("calibrated") is True


def _member_files(data: MemberData) -> dict[str, dict[str, dict[str, str]]]:
    splits = [s for s in (data.val, data.test, data.oof) if s is not None]
    return {
        member: {s.split: {"path": s.files[i], "sha256": s.sha256[i]} for s in splits}
        for i, member in enumerate(data.members)
    }


def _predictions(name: str, split: AlignedSplit, estimator: EnsembleEstimator) -> Predictions:
    proba = estimator.predict_proba(split.probas)
    prediction = None
    if isinstance(estimator, HardVoting):
        # Vote shares can tie; the tie-broken class is written explicitly (core.predictions).
        prediction = np.asarray(CLASSES)[estimator.predict(split.probas)]
    return make_predictions(
        split.image_id, split.lesion_id, split.label, proba, prediction,
        source=f"ensembles/{name}/predictions_{split.split}.csv",
    )


def _fit_one(name: str, data: MemberData, member_files: dict,
             temperatures: dict[str, dict[str, Any]] | None = None) -> EnsembleResult:
    estimator = make_estimator(name)
    if not estimator.learns:
        fit_data, fit_split = data.val, "none"
    elif isinstance(estimator, Stacking) and data.oof is not None:
        fit_data, fit_split = data.oof, "oof"
    else:
        fit_data, fit_split = data.val, "val"
    # Soft/hard voting learn nothing; fit only validates the inputs and records the member count.
    estimator.fit(fit_data.probas, fit_data.y, groups=fit_data.lesion_id)
    learned = fit_split != "none"
    # A fallback (nothing learned: too few lesions per class) does not look at the predictions.
    val_in_sample = (learned and not getattr(estimator, "fallback_", "")
                     and bool(set(fit_data.image_id) & set(data.val.image_id)))
    record = fit_record(
        estimator,
        members=list(data.members),
        fit_split=fit_split,
        fit_size=len(fit_data) if learned else 0,
        fit_lesions=len(np.unique(fit_data.lesion_id)) if learned else 0,
        val_in_sample=val_in_sample,
        member_files=member_files,
        temperatures=temperatures,
    )
    if isinstance(estimator, WeightedVoting):
        logger.info("weighted_voting weights: %s", ", ".join(
            f"{m}={w:.4f}" for m, w in zip(data.members, estimator.weights_, strict=True)))
    if isinstance(estimator, Stacking):
        logger.info("stacking: fit on %s (%d rows), C=%g chosen by %s", fit_split, len(fit_data),
                    estimator.C_, estimator.cv_.get("scheme"))
    return EnsembleResult(
        name=name,
        estimator=estimator,
        val=_predictions(name, data.val, estimator),
        test=_predictions(name, data.test, estimator),
        record=record,
    )


def fit_ensembles(
    run_dir: str | os.PathLike,
    names: Iterable[str] | str = ("all",),
    members: list[str] | None = None,
    calibrated: bool = False,
) -> list[EnsembleResult]:
    """Read and check the members' predictions, fit every requested ensemble; write nothing.

    Args:
        run_dir: the run directory (holding models/<member>/predictions_{val,test}.csv).
        names: ensemble names and/or "all".
        members: member names, or None for the default (see `ensembles.members.resolve_members`).
        calibrated: build from temperature-scaled members, each member's temperature fitted on
            its validation predictions (`ensembles.members.temperature_scaled`).

    Returns:
        One `EnsembleResult` per ensemble, in canonical order.

    Raises:
        EnsembleError: unknown ensemble or member, fewer than two members, a fit that cannot run.
        PredictionFileError: a member file that breaks the contract or disagrees with another.
        RunDirError: no such run directory or no models folder.
    """
    resolved = resolve_names(names)
    run = RunDir(run_dir)
    if not run.root.is_dir():
        raise RunDirError(f"{run.root}: no such run directory; pass --out RUNDIR of a run with "
                          "models/<name>/predictions_{val,test}.csv")
    member_names = resolve_members(run, members)
    logger.info("ensemble members: %s", ", ".join(member_names))
    data = load_members(run, member_names)
    files = _member_files(data)  # the members' own files, whether scaled or not
    temperatures = None
    if calibrated:
        data, temperatures = temperature_scaled(run, data)
    return [_fit_one(name, data, files, temperatures) for name in resolved]


def _metrics_extra(result: EnsembleResult) -> dict[str, Any]:
    extra: dict[str, Any] = {
        "kind": "ensemble",
        "description": result.estimator.description,
        "status": "ok",
        "members": result.members,
        "fit_split": result.fit_split,
        "fit_size": result.fit_size,
        "val_in_sample": result.val_in_sample,
        "calibrated": result.calibrated,
    }
    if result.calibrated:
        extra["member_temperatures"] = {m: t["value"] for m, t in
                                        result.record["temperatures"].items()}
    if result.val_in_sample:
        extra["val_note"] = IN_SAMPLE_NOTE
    if isinstance(result.estimator, HardVoting):
        # Vote shares are not probabilities: the metrics that need them are n/a for hard voting.
        extra["probabilities"] = False
    if isinstance(result.estimator, WeightedVoting):
        extra["weights"] = dict(zip(result.members, result.estimator.weights_.tolist(), strict=True))
    if isinstance(result.estimator, Stacking):
        extra["C"] = result.estimator.C_
    if isinstance(result.estimator, WeightedVoting | Stacking):
        extra["objective"] = result.estimator.objective_
        state = result.record["state"]
        unlearned = state.get("unlearned_classes") or []
        if unlearned:
            counts = state.get("class_lesions", {})
            extra["unlearned_classes"] = {c: counts.get(c, 0) for c in unlearned}
            extra["fit_note"] = state.get("fallback") or _unlearned_note(result.name, unlearned,
                                                                           counts)
    return extra


def _unlearned_note(name: str, unlearned: list[str], counts: dict[str, int]) -> str:
    listed = ", ".join(f"{c} ({counts.get(c, 0)} lesion{'' if counts.get(c, 0) == 1 else 's'})"
                       for c in unlearned)
    rule = ("get the members' mean probability" if name == "stacking"
            else "are left out of the weights' fit (the weighted mean still covers them)")
    return (f"classes with fewer than {MIN_CLASS_LESIONS} lesions in the fit data are not "
            f"learned: {listed}; they {rule}")


def write_ensemble_results(
    run_dir: str | os.PathLike,
    results: list[EnsembleResult],
    n_resamples: int = BOOTSTRAP,
    seed: int = SEED,
) -> None:
    """Write each ensemble's predictions, fit.json and metrics.json, all folders as one set.

    Args:
        run_dir: the run directory.
        results: from `fit_ensembles`.
        n_resamples, seed: the lesion bootstrap of the test metrics' intervals.

    Raises:
        FileSystemError: a folder cannot be written (then no ensemble folder changed).
    """
    write_ensemble_sets([(run_dir, results, seed)], n_resamples=n_resamples)


def write_ensemble_sets(
    sets: list[tuple[str | os.PathLike, list[EnsembleResult], int]],
    n_resamples: int = BOOTSTRAP,
) -> None:
    """Write the ensembles of several run directories (a grid's replicates) as one set.

    Every folder is written into a hidden sibling first; only when all are complete are they
    swapped in (core.atomic.staged_dirs), so an interruption or an error leaves every ensemble
    folder of every run as it was, or every one new.

    Args:
        sets: (run directory, its results, its bootstrap seed) per run.
        n_resamples: the lesion bootstrap of the test metrics' intervals.

    Raises:
        FileSystemError: a folder cannot be written (nothing changed then).
    """
    jobs = [(RunDir(run_dir), result, seed) for run_dir, results, seed in sets
            for result in results]
    targets = [run.ensemble_dir(result.name) for run, result, _ in jobs]
    with staged_dirs(targets) as folders:
        for (_, result, seed), folder in zip(jobs, folders, strict=True):
            write_predictions(RunDir.predictions_file(folder, "val"), result.val)
            write_predictions(RunDir.predictions_file(folder, "test"), result.test)
            write_fit(folder / FIT_FILE, result.record)
            write_entry_metrics(folder, extra=_metrics_extra(result), n_resamples=n_resamples,
                                seed=seed)
    for target in targets:
        logger.info("wrote %s", target)


def build_ensembles(
    run_dir: str | os.PathLike,
    names: Iterable[str] | str = ("all",),
    members: list[str] | None = None,
    *,
    n_resamples: int = BOOTSTRAP,
    seed: int = SEED,
    calibrated: bool = False,
) -> list[str]:
    """Fit the requested ensembles on a run's saved predictions and write their folders.

    Nothing is written unless every requested ensemble could be built. results.csv and the
    report are not touched here (the orchestration refreshes them afterwards).

    Args:
        run_dir: the run directory.
        names: ensemble names and/or "all".
        members: member names, or None for the default members.
        n_resamples, seed: lesion bootstrap for the metrics' confidence intervals.
        calibrated: build from temperature-scaled members (see `fit_ensembles`).

    Returns:
        The names of the ensembles written, in canonical order.

    Raises:
        EnsembleError, PredictionFileError, RunDirError: see `fit_ensembles`.
    """
    results = fit_ensembles(run_dir, names, members, calibrated=calibrated)
    write_ensemble_results(run_dir, results, n_resamples=n_resamples, seed=seed)
    return [r.name for r in results]
