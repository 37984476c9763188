"""Stacking: a multinomial logistic regression on the members' log-probabilities.

The meta-model's features are, member by member (in the order given), the log of the member's
seven class probabilities, clipped below at `clip` so that a zero probability stays finite. Its
regularisation strength C is chosen by cross-validation within the fit data (the validation
split, or the out-of-fold predictions when the run has K folds) with folds grouped by lesion, so
that two images of one lesion never sit on both sides of a fold. The score is the multiclass log
loss, class-balanced by default (a proper scoring rule: it rewards calibrated probabilities,
which the report's AUC, Brier and ECE columns use too); ties go to the smallest C, i.e. the
strongest regularisation.

One prior convention: by default (`class_weight="balanced"`) the meta-model weights every row
n / (n_classes_present * n_class), and the cross-validation score is the class-balanced log loss
of each held-out fold (the same weights, from that fold's labels), so the probabilities target a
uniform class prior like the class-balanced CNNs'. `class_weight=None` gives the plain log loss.

Folds: `StratifiedGroupKFold` with `min(n_splits, number of lesions)` folds; when every class is
too rare to stratify, `GroupKFold`. Folds whose training part holds fewer than two classes are
dropped; with no usable fold C falls back to `default_C` (recorded in `cv_`).

Every class is covered (ensembles.base): the meta-model learns the classes with at least
`min_class_lesions` (2) lesions in the fit data. A class below that (absent, or one lesion) gets
the members' mean probability (soft voting's), and the learned classes share the rest in the
meta-model's proportions: p = mean_k for such a class k, (1 - sum of those means) * meta
otherwise. Rows still sum to 1 and no column is a constant zero; fit.json records the classes
and their lesion counts. With fewer than two learnable classes there is no meta-model at all and
stacking outputs the members' mean (its "fallback", recorded in fit.json).

The learned state is plain arrays (`coef_`, `intercept_`, `meta_classes_`) and predictions are
computed from them alone, so a model rebuilt from fit.json predicts bitwise identically.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np
from scipy.special import softmax
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import GridSearchCV, GroupKFold, StratifiedGroupKFold
from sklearn.utils.class_weight import compute_sample_weight
from threadpoolctl import threadpool_limits

from core.classes import CLASSES, NUM_CLASSES
from ensembles.base import (
    MIN_CLASS_LESIONS,
    EnsembleEstimator,
    class_lesion_state,
    learnable_rows,
    restore_class_lesions,
)
from ensembles.errors import EnsembleError

logger = logging.getLogger(__name__)

DEFAULT_CS: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0)
DEFAULT_CLIP = 1e-7
CLASS_WEIGHTS = ("balanced", None)
# class_weight -> (the objective's name, GridSearchCV's scoring name in cv_).
OBJECTIVES = {"balanced": ("class-balanced log loss", "neg_class_balanced_log_loss"),
              None: ("log loss", "neg_log_loss")}


def log_features(probas: np.ndarray, clip: float) -> np.ndarray:
    """(n_samples, n_members * 7) features: member-major log-probabilities clipped at `clip`."""
    n_members, n_samples, n_classes = probas.shape
    logs = np.log(np.clip(probas, clip, 1.0))
    return logs.transpose(1, 0, 2).reshape(n_samples, n_members * n_classes)


def grouped_folds(
    y: np.ndarray, groups: np.ndarray, n_splits: int
) -> tuple[list[tuple[np.ndarray, np.ndarray]], dict[str, Any]]:
    """Cross-validation folds that never split a lesion.

    Args:
        y: class indices.
        groups: lesion ids, one per row.
        n_splits: the most folds wanted.

    Returns:
        (folds, info): the usable (train, test) index pairs, and a JSON-ready description
        (scheme, n_splits, dropped folds, reason when none is usable).
    """
    n_groups = len(np.unique(groups))
    k = min(n_splits, n_groups)
    if k < 2:
        reason = (f"only {n_groups} lesion(s) in the fit data; need 2 for CV" if n_groups < 2
                  else f"n_splits={n_splits}; need 2 for CV")
        return [], {"scheme": "none", "n_splits": 0, "reason": reason}
    placeholder = np.zeros((len(y), 1))
    try:
        with warnings.catch_warnings():
            # "The least populated class has only N members": expected for rare classes.
            warnings.simplefilter("ignore", UserWarning)
            splits = list(StratifiedGroupKFold(n_splits=k).split(placeholder, y, groups))
        scheme = "StratifiedGroupKFold"
    except ValueError:
        splits = list(GroupKFold(n_splits=k).split(placeholder, y, groups))
        scheme = "GroupKFold"
    usable = [(tr, te) for tr, te in splits if len(np.unique(y[tr])) >= 2 and len(te)]
    info: dict[str, Any] = {"scheme": scheme, "n_splits": len(usable),
                            "dropped_folds": len(splits) - len(usable)}
    if not usable:
        info["reason"] = "every fold's training part held a single class"
    return usable, info


def _expanded_log_loss_scorer(labels: np.ndarray, balanced: bool):
    """A GridSearchCV scorer: negative log loss over `labels`, whatever classes a fold model saw.

    With `balanced`, each held-out row is weighted n / (n_classes_present * n_class) from the
    fold's own labels, so every class present in the fold weighs the same.
    """

    def score(estimator: LogisticRegression, X: np.ndarray, y: np.ndarray) -> float:
        proba = np.zeros((len(X), len(labels)))
        proba[:, np.searchsorted(labels, estimator.classes_)] = estimator.predict_proba(X)
        weights = compute_sample_weight("balanced", y) if balanced else None
        return -log_loss(y, proba, labels=labels, sample_weight=weights)

    return score


class Stacking(EnsembleEstimator):
    """Multinomial logistic regression on clipped member log-probabilities (module docstring).

    Parameters:
        Cs: candidate inverse regularisation strengths (ascending).
        clip: lower clip of member probabilities before the log.
        n_splits: the most cross-validation folds.
        default_C: C used when no cross-validation fold is usable.
        max_iter: lbfgs iteration limit.
        class_weight: "balanced" (the benchmark's convention: balanced LogisticRegression and a
            class-balanced CV score) or None (plain log loss).
        min_class_lesions: the fewest lesions of a class in the fit data for it to be learned.

    Attributes:
        coef_: (n_meta_classes, n_members * 7) coefficients (two rows in the binary case).
        intercept_: (n_meta_classes,) intercepts.
        meta_classes_: canonical indices of the learned classes; the others get the members'
            mean probability (module docstring).
        class_lesions_: (7,) lesions per class in the fit data.
        C_: the chosen C.
        cv_: JSON-ready record of the cross-validation (scheme, folds, scoring, mean score
            per C).
        objective_: the name of the loss the meta-model and the choice of C minimise.
    """

    name = "stacking"
    description = "logistic-regression meta-model on the members' probabilities"

    def __init__(
        self,
        Cs: tuple[float, ...] = DEFAULT_CS,
        clip: float = DEFAULT_CLIP,
        n_splits: int = 5,
        default_C: float = 1.0,
        max_iter: int = 1000,
        class_weight: str | None = "balanced",
        min_class_lesions: int = MIN_CLASS_LESIONS,
    ) -> None:
        self.Cs = Cs
        self.clip = clip
        self.n_splits = n_splits
        self.default_C = default_C
        self.max_iter = max_iter
        self.class_weight = class_weight
        self.min_class_lesions = min_class_lesions

    def _meta_model(self, C: float) -> LogisticRegression:
        return LogisticRegression(C=C, max_iter=self.max_iter, class_weight=self.class_weight)

    def _fit(self, probas: np.ndarray, y: np.ndarray, groups: np.ndarray) -> None:
        # The meta-model's matrices are tiny (rows x 35): multithreaded BLAS only adds overhead,
        # and on a busy machine its spinning threads made fitting ten times slower.
        with threadpool_limits(limits=1, user_api="blas"):
            self._fit_single_threaded(probas, y, groups)

    def _fit_single_threaded(self, probas: np.ndarray, y: np.ndarray, groups: np.ndarray) -> None:
        if not 0 < self.clip < 1:
            raise EnsembleError(f"stacking: clip must lie in (0, 1), got {self.clip}")
        if self.class_weight not in CLASS_WEIGHTS:
            raise EnsembleError(f"The 'class_weight' parameter of Stacking must be 'balanced' "
                                f"or None. Got {self.class_weight!r} instead.")
        objective, scoring = OBJECTIVES[self.class_weight]
        rows, self.class_lesions_, self.fallback_ = learnable_rows(self.name, y, groups,
                                                                   self.min_class_lesions)
        if self.fallback_:  # nothing to learn from: the members' mean for every class
            n_features = probas.shape[0] * NUM_CLASSES
            self.coef_ = np.zeros((0, n_features))
            self.intercept_ = np.zeros(0)
            self.meta_classes_ = np.zeros(0, dtype=np.int64)
            self.C_ = float(self.default_C)
            self.cv_ = {"scheme": "none", "n_splits": 0, "reason": self.fallback_,
                        "scoring": scoring, "Cs": sorted(float(c) for c in self.Cs),
                        "mean_scores": None}
            self.objective_ = objective
            return
        probas, y, groups = probas[:, rows], y[rows], groups[rows]
        seen = np.unique(y)
        X = log_features(probas, self.clip)
        folds, cv_info = grouped_folds(y, groups, self.n_splits)
        cs = sorted(float(c) for c in self.Cs)
        if folds:
            search = GridSearchCV(
                self._meta_model(self.default_C),
                {"C": cs},
                scoring=_expanded_log_loss_scorer(seen, self.class_weight == "balanced"),
                cv=folds,
                refit=False,
                error_score="raise",
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                search.fit(X, y)
            best_c = float(search.best_params_["C"])
            cv_info.update(scoring=scoring, Cs=cs,
                           mean_scores=[float(s) for s in search.cv_results_["mean_test_score"]])
        else:
            best_c = float(self.default_C)
            cv_info.update(scoring=scoring, Cs=cs, mean_scores=None)
            logger.warning("stacking: no cross-validation possible (%s); using C=%s",
                           cv_info["reason"], best_c)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            meta = self._meta_model(best_c).fit(X, y)
        if any(issubclass(w.category, ConvergenceWarning) for w in caught):
            logger.warning("stacking: the meta-model did not fully converge in %d iterations",
                           self.max_iter)
        coef, intercept = meta.coef_, meta.intercept_
        if len(seen) == 2:
            # sklearn's binary model is expit(d) = softmax([0, d]); store it as two rows.
            coef = np.vstack([np.zeros_like(coef), coef])
            intercept = np.concatenate([[0.0], intercept])
        # C order, as a coefficient matrix read back from fit.json has: BLAS may sum in another
        # order for another memory layout, and the round trip must be bitwise.
        self.coef_ = np.ascontiguousarray(coef, dtype=np.float64)
        self.intercept_ = np.ascontiguousarray(intercept, dtype=np.float64)
        self.meta_classes_ = seen.astype(np.int64)
        self.C_ = best_c
        self.cv_ = cv_info
        self.objective_ = objective

    def _predict_proba(self, probas: np.ndarray) -> np.ndarray:
        if not len(self.meta_classes_):
            return probas.mean(axis=0)
        X = log_features(probas, self.clip)
        with threadpool_limits(limits=1, user_api="blas"):  # same arithmetic whatever the threads
            meta = softmax(X @ np.ascontiguousarray(self.coef_).T + self.intercept_, axis=1)
        out = np.zeros((X.shape[0], NUM_CLASSES))
        fallback = np.setdiff1d(np.arange(NUM_CLASSES), self.meta_classes_)
        if fallback.size:
            mean = probas.mean(axis=0)[:, fallback]
            out[:, fallback] = mean
            meta = meta * np.clip(1.0 - mean.sum(axis=1, keepdims=True), 0.0, 1.0)
        out[:, self.meta_classes_] = meta
        return out

    def get_state(self) -> dict[str, Any]:
        """Coefficients, intercepts, meta classes (names), C, clip, objective and the CV record."""
        state = super().get_state()
        state.update(
            coef=self.coef_.tolist(),
            intercept=self.intercept_.tolist(),
            meta_classes=[CLASSES[i] for i in self.meta_classes_],
            C=self.C_,
            clip=self.clip,
            cv=self.cv_,
            class_weight=self.class_weight,
            objective=self.objective_,
            features=f"member-major log(clip(p, {self.clip}, 1)) of the {NUM_CLASSES} canonical "
                     "classes",
            **class_lesion_state(self),
        )
        return state

    def set_state(self, state: dict[str, Any]) -> Stacking:
        """Restore the state written by `get_state`."""
        super().set_state(state)
        coef = np.asarray(state["coef"], dtype=np.float64)
        intercept = np.asarray(state["intercept"], dtype=np.float64)
        unknown = [c for c in state["meta_classes"] if c not in CLASSES]
        if unknown:
            raise EnsembleError(f"stacking state: unknown class(es) {unknown}")
        classes = np.array([CLASSES.index(c) for c in state["meta_classes"]], dtype=np.int64)
        if not len(classes) and coef.size == 0:  # the fallback: no meta-model (ensembles.base)
            coef = coef.reshape(0, self.n_members_ * NUM_CLASSES)
        expected = (len(classes), self.n_members_ * NUM_CLASSES)
        if coef.shape != expected or intercept.shape != (len(classes),):
            raise EnsembleError(
                f"stacking state: coef shape {coef.shape} / intercept shape {intercept.shape} do "
                f"not match {len(classes)} classes x {self.n_members_} members"
            )
        self.coef_, self.intercept_, self.meta_classes_ = coef, intercept, classes
        self.C_ = float(state["C"])
        self.clip = float(state["clip"])
        self.cv_ = state.get("cv", {})
        # fit.json files written before the class-balanced convention lack the key: they were fit
        # with the plain log loss.
        self.objective_ = str(state.get("objective", OBJECTIVES[None][0]))
        restore_class_lesions(self, state)
        return self
