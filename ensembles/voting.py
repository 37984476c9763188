"""Soft, hard and weighted voting over member probabilities."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from scipy.optimize import minimize
from sklearn.utils.class_weight import compute_sample_weight

from core.classes import NUM_CLASSES
from ensembles.base import (
    MIN_CLASS_LESIONS,
    EnsembleEstimator,
    check_member_probas,
    class_lesion_state,
    learnable_rows,
    restore_class_lesions,
)
from ensembles.errors import EnsembleError

logger = logging.getLogger(__name__)


class SoftVoting(EnsembleEstimator):
    """The unweighted mean of the members' probabilities. Nothing is learned."""

    name = "soft_voting"
    description = "mean of the members' probabilities"
    learns = False

    def _fit(self, probas: np.ndarray, y: np.ndarray, groups: np.ndarray) -> None:
        pass

    def _predict_proba(self, probas: np.ndarray) -> np.ndarray:
        return probas.mean(axis=0)


class HardVoting(EnsembleEstimator):
    """Majority vote of the members' argmax classes. Nothing is learned.

    Each member votes for its argmax class (a member's own exact tie goes to the lowest class
    index). `predict_proba` returns vote shares (votes / n_members); they are not probabilities,
    so the ensemble's metrics.json says "probabilities": false and the metrics that need
    probabilities (AUC, log loss, Brier, ECE, ROC, reliability) are n/a for it. `predict`
    returns the class with most votes; a tie between classes goes to the one with the highest
    mean member probability, and a tie on that too to the lowest class index in canonical order.
    Because shares can tie, the ensemble's prediction files always carry the `prediction` column.
    """

    name = "hard_voting"
    description = "majority vote of the members' predicted classes"
    learns = False

    def _fit(self, probas: np.ndarray, y: np.ndarray, groups: np.ndarray) -> None:
        pass

    @staticmethod
    def _vote_counts(probas: np.ndarray) -> np.ndarray:
        votes = np.argmax(probas, axis=2)  # (members, samples)
        return (votes[..., None] == np.arange(NUM_CLASSES)).sum(axis=0)  # (samples, classes)

    def _predict_proba(self, probas: np.ndarray) -> np.ndarray:
        return self._vote_counts(probas) / probas.shape[0]

    def predict(self, member_probas: Any) -> np.ndarray:
        """Majority class per sample, ties broken by mean probability, then lowest class index."""
        self._check_fitted()
        probas = check_member_probas(member_probas, self.n_members_)
        counts = self._vote_counts(probas)
        tied = counts == counts.max(axis=1, keepdims=True)
        mean = probas.mean(axis=0)
        # np.argmax returns the first maximum, i.e. the lowest class index among exact ties.
        return np.argmax(np.where(tied, mean, -np.inf), axis=1).astype(np.int64)


def _true_class_probas(probas: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(n_samples, n_members): each member's probability of the true class."""
    return probas[:, np.arange(probas.shape[1]), y].T


# Mixture probabilities are floored here before the log, as sklearn.metrics.log_loss does.
_LOG_FLOOR = 1e-15

CLASS_WEIGHTS = ("balanced", None)
OBJECTIVES = {"balanced": "class-balanced log loss", None: "log loss"}


def _log_loss_and_grad(weights: np.ndarray, true_probas: np.ndarray,
                       row_weights: np.ndarray) -> tuple[float, np.ndarray]:
    """The row-weighted mean log loss of the mixture and its gradient in the member weights.

    Args:
        weights: (n_members,) mixture weights.
        true_probas: (n_samples, n_members) each member's probability of the true class.
        row_weights: (n_samples,) non-negative row weights; the loss is their weighted mean.
    """
    mixture = np.maximum(true_probas @ weights, _LOG_FLOOR)
    total = row_weights.sum()
    loss = -(row_weights @ np.log(mixture)) / total
    grad = -(row_weights / mixture) @ true_probas / total
    return float(loss), grad


class WeightedVoting(EnsembleEstimator):
    """A weighted mean of the members' probabilities, weights >= 0 summing to 1.

    The weights minimise the class-balanced multiclass log loss of the weighted mean on the fit
    data (the validation predictions): each row is weighted n / (n_classes_present * n_class),
    scikit-learn's "balanced", so every class counts as much as every other, the prior the
    class-balanced CNNs target. The loss is convex in the weights, so SLSQP on the simplex from
    equal weights finds the global minimum deterministically.

    Only classes with at least `min_class_lesions` lesions in the fit data enter the loss
    (ensembles.base.learnable_rows); the weighted mean still gives every class its members'
    weighted probability, so no class is ever left out of the output.

    Parameters:
        tol: SLSQP's tolerance.
        max_iter: SLSQP's iteration limit.
        class_weight: "balanced" (the benchmark's convention) or None (plain log loss, the
            training frequencies' prior).
        min_class_lesions: the fewest lesions of a class in the fit data for its rows to count.

    Attributes:
        weights_: (n_members,) the learned weights.
        fit_log_loss_: the objective (class-balanced log loss, or plain with class_weight=None)
            at `weights_` on the fit data.
        objective_: the objective's name.
        class_lesions_: (7,) lesions per class in the fit data.
    """

    name = "weighted_voting"
    description = "probabilities averaged with weights fit on validation"

    def __init__(self, tol: float = 1e-10, max_iter: int = 1000,
                 class_weight: str | None = "balanced",
                 min_class_lesions: int = MIN_CLASS_LESIONS) -> None:
        self.tol = tol
        self.max_iter = max_iter
        self.class_weight = class_weight
        self.min_class_lesions = min_class_lesions

    def _fit(self, probas: np.ndarray, y: np.ndarray, groups: np.ndarray) -> None:
        if self.class_weight not in CLASS_WEIGHTS:
            raise EnsembleError(f"The 'class_weight' parameter of WeightedVoting must be "
                                f"'balanced' or None. Got {self.class_weight!r} instead.")
        rows, self.class_lesions_, self.fallback_ = learnable_rows(self.name, y, groups,
                                                                   self.min_class_lesions)
        n_members = probas.shape[0]
        uniform = np.full(n_members, 1.0 / n_members)
        self.objective_ = OBJECTIVES[self.class_weight]
        if self.fallback_:  # nothing to learn from: equal weights, scored on every fit row
            self.weights_ = uniform
            every_row = (compute_sample_weight("balanced", y) if self.class_weight == "balanced"
                         else np.ones(len(y)))
            self.fit_log_loss_, _ = _log_loss_and_grad(uniform, _true_class_probas(probas, y),
                                                       every_row)
            return
        probas, y = probas[:, rows], y[rows]
        true_probas = _true_class_probas(probas, y)
        row_weights = (compute_sample_weight("balanced", y) if self.class_weight == "balanced"
                       else np.ones(len(y)))
        result = minimize(
            _log_loss_and_grad,
            uniform,
            args=(true_probas, row_weights),
            jac=True,
            method="SLSQP",
            bounds=[(0.0, 1.0)] * n_members,
            constraints=[{"type": "eq", "fun": lambda w: np.sum(w) - 1.0, "jac": lambda w: np.ones_like(w)}],
            options={"ftol": self.tol, "maxiter": self.max_iter},
        )
        # SLSQP leaves round-off (~1e-16) where the optimum puts a member at exactly zero.
        weights = np.where(result.x > 1e-12, result.x, 0.0)
        weights = weights / weights.sum()
        loss, _ = _log_loss_and_grad(weights, true_probas, row_weights)
        uniform_loss, _ = _log_loss_and_grad(uniform, true_probas, row_weights)
        if not result.success:
            logger.warning("weighted_voting: SLSQP did not converge (%s)", result.message)
        if loss > uniform_loss:
            logger.warning("weighted_voting: optimised weights are worse than equal weights; "
                           "using equal weights")
            weights, loss = uniform, uniform_loss
        self.weights_ = weights
        self.fit_log_loss_ = loss

    def _predict_proba(self, probas: np.ndarray) -> np.ndarray:
        return np.tensordot(self.weights_, probas, axes=1)

    def get_state(self) -> dict[str, Any]:
        """Member count, fit size, weights, the objective's name and its value (JSON-ready)."""
        state = super().get_state()
        state.update(weights=self.weights_.tolist(), fit_log_loss=self.fit_log_loss_,
                     objective=self.objective_, **class_lesion_state(self))
        return state

    def set_state(self, state: dict[str, Any]) -> WeightedVoting:
        """Restore the state written by `get_state`."""
        super().set_state(state)
        weights = np.asarray(state["weights"], dtype=np.float64)
        if weights.shape != (self.n_members_,) or (weights < 0).any():
            raise EnsembleError(
                f"weighted_voting state: expected {self.n_members_} non-negative weights, got "
                f"{state['weights']!r}"
            )
        self.weights_ = weights
        self.fit_log_loss_ = float(state["fit_log_loss"])
        # fit.json files written before the class-balanced objective lack the key: plain log loss.
        self.objective_ = str(state.get("objective", OBJECTIVES[None]))
        restore_class_lesions(self, state)
        return self

