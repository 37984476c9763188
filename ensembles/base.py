"""The estimator interface shared by every ensemble, and the checks on its inputs.

Estimators follow scikit-learn's conventions: `__init__` only stores parameters,
`fit(member_probas, y, groups=None)` validates and returns self, learned state lives in attributes
ending in `_`, and `predict_proba` / `predict` work on new member probabilities.

`member_probas` is an array of shape (n_members, n_samples, 7), or a list of (n_samples, 7)
arrays, one per member, rows aligned (the same image in the same row for every member). The
output classes are always the seven canonical classes (`core.classes.CLASSES`), whether or
not the fit labels contain all of them; `predict` returns canonical class indices.

Every class is covered. An ensemble that learns (weighted voting, stacking) learns a class only
from at least `MIN_CLASS_LESIONS` (2) distinct lesions of it in its fit data: with fewer, the
lesion-grouped cross-validation can never both train on the class and score it, and one lesion's
images decide everything. The rows of a class below that minimum are left out of the fit
(`learnable_rows`, logged with the class and its count, recorded in fit.json and metrics.json);
stacking gives such a class the members' mean probability (weighted voting's weighted mean covers
it anyway), so no output column is ever a constant zero. With fewer than two learnable classes
nothing is learned: weighted voting keeps equal weights and stacking outputs the members' mean,
both then soft voting under their own name, as fit.json and metrics.json say ("fallback"). A
small validation split (a smoke run, a fold of a small grid) so degrades instead of failing.

Messages about these in-memory arrays give 0-based indices (member, sample); messages about files
give the file's row numbers (core.predictions).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from core.classes import CLASS_INDEX, CLASSES, NUM_CLASSES
from core.predictions import ROW_SUM_TOLERANCE
from ensembles.errors import EnsembleError

logger = logging.getLogger(__name__)

MIN_MEMBERS = 2
MIN_CLASS_LESIONS = 2  # distinct lesions of a class in the fit data for it to be learned


def check_member_probas(member_probas: Any, n_members: int | None = None) -> np.ndarray:
    """Validate member probabilities and return them as one float64 array.

    Args:
        member_probas: (n_members, n_samples, 7) array-like, or a list of (n_samples, 7) arrays.
        n_members: when given (a fitted estimator), the number of members required.

    Returns:
        A float64 array of shape (n_members, n_samples, 7).

    Raises:
        EnsembleError: fewer than two members, ragged or wrongly shaped arrays, NaN/infinite or
            negative values, or rows that do not sum to 1 (tolerance 1e-3).
    """
    if isinstance(member_probas, np.ndarray):
        probas = member_probas.astype(np.float64, copy=False)
    else:
        arrays = [np.asarray(p, dtype=np.float64) for p in member_probas]
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise EnsembleError(
                f"member probabilities have different shapes {sorted(shapes)}; every member must "
                "predict the same images, aligned row by row"
            )
        probas = np.stack(arrays) if arrays else np.empty((0, 0, NUM_CLASSES))
    if probas.ndim != 3 or probas.shape[2] != NUM_CLASSES:
        raise EnsembleError(
            f"member probabilities must have shape (n_members, n_samples, {NUM_CLASSES}), "
            f"got {probas.shape}"
        )
    if probas.shape[0] < MIN_MEMBERS:
        raise EnsembleError(
            f"an ensemble needs at least {MIN_MEMBERS} members, got {probas.shape[0]}"
        )
    if n_members is not None and probas.shape[0] != n_members:
        raise EnsembleError(
            f"this ensemble was fit on {n_members} members but got {probas.shape[0]}; pass the "
            "same members in the same order"
        )
    if probas.shape[1] == 0:
        raise EnsembleError("member probabilities hold no samples")
    finite = np.isfinite(probas)
    if not finite.all():
        member, row, col = map(int, np.argwhere(~finite)[0])
        raise EnsembleError(
            f"member {member}, sample {row} (0-based indices): probability of '{CLASSES[col]}' "
            f"is {probas[member, row, col]}; every probability must be finite"
        )
    if (probas < 0).any():
        member, row, col = map(int, np.argwhere(probas < 0)[0])
        raise EnsembleError(
            f"member {member}, sample {row} (0-based indices): probability of '{CLASSES[col]}' "
            f"is negative ({probas[member, row, col]})"
        )
    sums = probas.sum(axis=2)
    off = np.argwhere(np.abs(sums - 1.0) > ROW_SUM_TOLERANCE)
    if off.size:
        member, row = map(int, off[0])
        raise EnsembleError(
            f"member {member}, sample {row} (0-based indices): probabilities sum to "
            f"{sums[member, row]:.6f}, not 1 (tolerance {ROW_SUM_TOLERANCE})"
        )
    return probas


def check_labels(y: Any, n_samples: int) -> np.ndarray:
    """Validate true labels and return canonical class indices.

    Args:
        y: (n_samples,) class indices 0..6 or class names (canonical order of CLASSES).
        n_samples: the number of rows in the member probabilities.

    Returns:
        An int64 array of class indices.

    Raises:
        EnsembleError: wrong length or an unknown class.
    """
    values = np.asarray(y)
    if values.ndim != 1 or len(values) != n_samples:
        raise EnsembleError(
            f"labels must be a 1-D array of {n_samples} classes (one per row), got shape "
            f"{values.shape}"
        )
    if values.dtype.kind in "iu":
        bad = np.flatnonzero((values < 0) | (values >= NUM_CLASSES))
        if bad.size:
            raise EnsembleError(
                f"label of sample {bad[0]} (0-based) is {values[bad[0]]}; class indices run "
                f"0..{NUM_CLASSES - 1}"
            )
        return values.astype(np.int64)
    names = values.astype(str)
    bad = np.flatnonzero(~np.isin(names, CLASSES))
    if bad.size:
        raise EnsembleError(
            f"label of sample {bad[0]} (0-based) is {names[bad[0]]!r}; expected one of "
            f"{', '.join(CLASSES)}"
        )
    return np.array([CLASS_INDEX[c] for c in names], dtype=np.int64)


def check_groups(groups: Any, n_samples: int) -> np.ndarray:
    """Validate group ids (lesion ids); None means every sample is its own group.

    Returns:
        A (n_samples,) array of group ids as strings.

    Raises:
        EnsembleError: wrong length.
    """
    if groups is None:
        return np.arange(n_samples).astype(str)
    values = np.asarray(groups).astype(str)
    if values.ndim != 1 or len(values) != n_samples:
        raise EnsembleError(
            f"groups must be a 1-D array with one lesion id per row ({n_samples}), got shape "
            f"{values.shape}"
        )
    return values


def class_lesions(y: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """(7,) distinct lesions (groups) per canonical class among the rows."""
    counts = np.zeros(NUM_CLASSES, dtype=np.int64)
    for k in range(NUM_CLASSES):
        counts[k] = len(np.unique(groups[y == k]))
    return counts


def describe_counts(counts: np.ndarray, classes: np.ndarray | None = None) -> str:
    """"df 1 lesion, vasc 0 lesions" for the given classes (default: all seven)."""
    chosen = range(NUM_CLASSES) if classes is None else classes
    return ", ".join(f"{CLASSES[k]} {int(counts[k])} lesion{'' if counts[k] == 1 else 's'}"
                     for k in chosen)


def learnable_rows(name: str, y: np.ndarray, groups: np.ndarray,
                   min_lesions: int = MIN_CLASS_LESIONS) -> tuple[np.ndarray, np.ndarray, str]:
    """The fit rows of the classes with at least `min_lesions` lesions (module docstring).

    Args:
        name: the ensemble (named in the log).
        y: (n,) class indices of the fit data.
        groups: (n,) their lesion ids.
        min_lesions: the fewest lesions a class needs to be learned.

    Returns:
        (mask over the rows, (7,) lesions per class, fallback): `fallback` is "" when at least two
        classes can be learned, else why nothing is (every class and its count named).
    """
    counts = class_lesions(y, groups)
    learnable = counts >= min_lesions
    if learnable.sum() < 2:
        fallback = (f"nothing learned: a class is learned only from at least {min_lesions} "
                    f"lesions of it and two such classes are needed, but the fit data "
                    f"({len(y)} images, {len(np.unique(groups))} lesions) has "
                    f"{describe_counts(counts)}; the members' mean is used (soft voting)")
        logger.warning("%s: %s. Use a larger validation split (or --folds for out-of-fold "
                       "predictions)", name, fallback)
        return np.zeros(len(y), dtype=bool), counts, fallback
    missing = np.flatnonzero(~learnable)
    if missing.size:
        logger.warning("%s: %s below the minimum of %d lesions in the fit data: not learned "
                       "(%s)", name, describe_counts(counts, missing), min_lesions,
                       "they get the members' mean probability" if name == "stacking"
                       else "left out of the weights' fit")
    return learnable[y], counts, ""


def class_lesion_state(estimator: Any) -> dict[str, Any]:
    """fit.json's record of class coverage: lesions per class in the fit data, the classes below
    the estimator's minimum (not learned) and, when nothing could be learned, why ("fallback")."""
    counts = getattr(estimator, "class_lesions_", None)
    if counts is None:
        return {}
    minimum = estimator.get_params().get("min_class_lesions", MIN_CLASS_LESIONS)
    state = {"class_lesions": {c: int(n) for c, n in zip(CLASSES, counts, strict=True)},
             "unlearned_classes": [c for c, n in zip(CLASSES, counts, strict=True)
                                   if n < minimum]}
    if getattr(estimator, "fallback_", ""):
        state["fallback"] = estimator.fallback_
        state["unlearned_classes"] = list(CLASSES)
    return state


def restore_class_lesions(estimator: Any, state: dict[str, Any]) -> None:
    """Read `class_lesion_state`'s record back (absent in older fit.json files)."""
    recorded = state.get("class_lesions")
    if isinstance(recorded, dict):
        estimator.class_lesions_ = np.array([int(recorded.get(c, 0)) for c in CLASSES])
    estimator.fallback_ = str(state.get("fallback") or "")


class EnsembleEstimator(ClassifierMixin, BaseEstimator):
    """Common `fit` / `predict` plumbing; subclasses implement `_fit` and `_predict_proba`.

    Class attributes:
        name: the ensemble's name (one of `ensembles.ENSEMBLE_NAMES`).
        description: what it does, in a few words (recorded in its metrics.json for the report).
        learns: whether `fit` learns anything from the data (False for soft/hard voting).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    learns: ClassVar[bool] = True

    def fit(self, member_probas: Any, y: Any, groups: Any = None) -> EnsembleEstimator:
        """Validate the inputs and fit the ensemble.

        Args:
            member_probas: (n_members, n_samples, 7) member probabilities (see module docstring).
            y: (n_samples,) true classes (indices or names).
            groups: optional (n_samples,) lesion ids; cross-validation folds never split a group.

        Returns:
            self.

        Raises:
            EnsembleError: invalid inputs (see `check_member_probas`, `check_labels`).
        """
        probas = check_member_probas(member_probas)
        labels = check_labels(y, probas.shape[1])
        group_ids = check_groups(groups, probas.shape[1])
        self.classes_ = np.arange(NUM_CLASSES)
        self.n_members_ = int(probas.shape[0])
        self.n_fit_samples_ = int(probas.shape[1])
        self._fit(probas, labels, group_ids)
        return self

    def predict_proba(self, member_probas: Any) -> np.ndarray:
        """Ensemble probabilities (n_samples, 7), canonical class order; rows sum to 1.

        Raises:
            EnsembleError: not fitted, or invalid member probabilities.
        """
        self._check_fitted()
        probas = check_member_probas(member_probas, self.n_members_)
        return self._predict_proba(probas)

    def predict(self, member_probas: Any) -> np.ndarray:
        """Predicted canonical class indices (n_samples,): the argmax of `predict_proba`."""
        return np.argmax(self.predict_proba(member_probas), axis=1).astype(np.int64)

    def get_state(self) -> dict[str, Any]:
        """The learned state as JSON-ready values (exact: floats round-trip through JSON)."""
        self._check_fitted()
        return {"n_members": self.n_members_, "n_fit_samples": self.n_fit_samples_}

    def set_state(self, state: dict[str, Any]) -> EnsembleEstimator:
        """Restore the learned state written by `get_state`; returns self."""
        self.classes_ = np.arange(NUM_CLASSES)
        self.n_members_ = int(state["n_members"])
        self.n_fit_samples_ = int(state["n_fit_samples"])
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "n_members_"):
            raise EnsembleError(f"{self.name or type(self).__name__} is not fitted; call fit first")

    def _fit(self, probas: np.ndarray, y: np.ndarray, groups: np.ndarray) -> None:
        raise NotImplementedError

    def _predict_proba(self, probas: np.ndarray) -> np.ndarray:
        raise NotImplementedError
