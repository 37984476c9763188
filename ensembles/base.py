"""The estimator interface shared by every ensemble, and the checks on its inputs.

Estimators follow scikit-learn's conventions: `__init__` only stores parameters,
`fit(member_probas, y, groups=None)` validates and returns self, learned state lives in attributes
ending in `_`, and `predict_proba` / `predict` work on new member probabilities.

`member_probas` is an array of shape (n_members, n_samples, 7), or a list of (n_samples, 7)
arrays, one per member, rows aligned (the same image in the same row for every member). The
output classes are always the seven canonical classes (`core.classes.CLASSES`), whether or
not the fit labels contain all of them; `predict` returns canonical class indices.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from core.classes import CLASS_INDEX, CLASSES, NUM_CLASSES
from core.predictions import ROW_SUM_TOLERANCE
from ensembles.errors import EnsembleError

MIN_MEMBERS = 2


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
            f"member {member}, row {row + 1}: probability of '{CLASSES[col]}' is "
            f"{probas[member, row, col]}; every probability must be finite"
        )
    if (probas < 0).any():
        member, row, col = map(int, np.argwhere(probas < 0)[0])
        raise EnsembleError(
            f"member {member}, row {row + 1}: probability of '{CLASSES[col]}' is negative "
            f"({probas[member, row, col]})"
        )
    sums = probas.sum(axis=2)
    off = np.argwhere(np.abs(sums - 1.0) > ROW_SUM_TOLERANCE)
    if off.size:
        member, row = map(int, off[0])
        raise EnsembleError(
            f"member {member}, row {row + 1}: probabilities sum to {sums[member, row]:.6f}, "
            f"not 1 (tolerance {ROW_SUM_TOLERANCE})"
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
                f"label in row {bad[0] + 1} is {values[bad[0]]}; class indices run 0..{NUM_CLASSES - 1}"
            )
        return values.astype(np.int64)
    names = values.astype(str)
    bad = np.flatnonzero(~np.isin(names, CLASSES))
    if bad.size:
        raise EnsembleError(
            f"label in row {bad[0] + 1} is {names[bad[0]]!r}; expected one of {', '.join(CLASSES)}"
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
