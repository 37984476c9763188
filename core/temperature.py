"""Temperature scaling: one scalar per entry, fitted on validation, that can only lower its log loss.

An entry's probabilities p become softmax(log(p) / T) (Guo et al. 2017, "On calibration of
modern neural networks"): T > 1 softens over-confident probabilities, T < 1 sharpens
under-confident ones, T = 1 changes nothing, and no T changes a row's predicted class.

The temperature minimises the validation log loss as the report measures it: after the
prior-shift correction to the training class frequencies (core.calibration), so the objective is
the mean of -log q_i[y_i] with q = prior_shift(softmax(log(p) / T), pi). That objective is convex
in 1/T, so a bounded scalar search on log T (scipy.optimize.minimize_scalar, method "bounded",
T in `T_BOUNDS`) finds its minimum. The search result is kept only when it is strictly better
than T = 1 on the same objective; otherwise T stays 1. So temperature scaling never raises the
validation log loss. Only the validation split is read: nothing is fit or chosen on test.

The scaled probabilities still target the class-balanced prior every entry's probabilities
target (core.calibration), so they can be fed to the ensembles like the unscaled ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar

from core.classes import NUM_CLASSES
from core.metrics import (
    calibration_probabilities,
    expected_calibration_error,
    per_image_brier,
    per_image_log_loss,
)
from core.predictions import Predictions

FIT_SPLIT = "val"
T_BOUNDS = (0.05, 20.0)
X_TOL = 1e-6  # on log T: a relative precision of 1e-6 on T
METHOD = (
    "p -> softmax(log(p) / T); T minimises the validation log loss after the prior shift "
    "(scipy.optimize.minimize_scalar, bounded search on log T, T within \"bounds\"); T = 1 is "
    "kept unless the optimum is strictly better"
)
# Where the entry records are stored in metrics.json / fit.json.
TEMPERATURE_KEY = "temperature"


@dataclass(frozen=True)
class TemperatureFit:
    """A fitted temperature and the validation log loss before and after it.

    Attributes:
        value: the temperature T (1.0 when scaling does not lower the validation log loss).
        log_loss_before: validation log loss at T = 1.
        log_loss_after: validation log loss at `value` (<= `log_loss_before`).
        n_images: validation images fit on.
        bounds: the range of T searched.
    """

    value: float
    log_loss_before: float
    log_loss_after: float
    n_images: int
    bounds: tuple[float, float] = T_BOUNDS

    @property
    def at_bound(self) -> bool:
        """Whether T sits at an end of `bounds` (the search stopped there: the log loss keeps
        falling beyond it, typically a model whose probabilities are close to uniform)."""
        return at_bound(self.value, self.bounds)

    def to_json(self) -> dict[str, Any]:
        """{"value", "fit_on": "val", "val_images", "val_log_loss_before", "val_log_loss_after",
        "bounds", "at_bound", "method"}."""
        return {"value": self.value, "fit_on": FIT_SPLIT, "val_images": self.n_images,
                "val_log_loss_before": self.log_loss_before,
                "val_log_loss_after": self.log_loss_after, "bounds": list(self.bounds),
                "at_bound": self.at_bound, "method": METHOD}


def at_bound(value: float, bounds: tuple[float, float] = T_BOUNDS) -> bool:
    """Whether a temperature lies within 0.1 % of either end of `bounds`."""
    return any(math.isclose(value, end, rel_tol=1e-3) for end in bounds)


def _check(y_true: np.ndarray, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    proba = np.asarray(proba, dtype=np.float64)
    y_true = np.asarray(y_true)
    if proba.ndim != 2 or proba.shape[1] != NUM_CLASSES or len(proba) == 0:
        raise ValueError(f"expected (n, {NUM_CLASSES}) probabilities with n >= 1, got shape "
                         f"{proba.shape}")
    if not np.all(np.isfinite(proba)) or np.any(proba < 0):
        raise ValueError("probabilities must be finite and non-negative")
    if y_true.shape != (len(proba),) or y_true.dtype.kind not in "iu" or np.any(y_true < 0) \
            or np.any(y_true >= NUM_CLASSES):
        raise ValueError(f"expected {len(proba)} class indices in 0..{NUM_CLASSES - 1}, got "
                         f"{y_true.shape} of {y_true.dtype}")
    return y_true.astype(np.int64), proba


def apply_temperature(proba: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log(p) / T) row by row; T = 1 returns the probabilities unchanged (a copy).

    Args:
        proba: (n, k) probabilities (rows sum to 1; zeros stay zero for any T).
        temperature: T > 0.

    Returns:
        (n, k) probabilities, rows summing to 1, each row's ordering of classes unchanged.

    Raises:
        ValueError: a temperature that is not a positive finite number.
    """
    value = float(temperature)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"the temperature must be a positive finite number, got {temperature!r}")
    proba = np.asarray(proba, dtype=np.float64)
    if value == 1.0:
        return proba.copy()
    with np.errstate(divide="ignore"):
        logits = np.log(proba) / value
    logits -= logits.max(axis=1, keepdims=True)  # every row has a positive entry: the max is finite
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)


def temperature_log_loss(y_true: np.ndarray, proba: np.ndarray, temperature: float,
                         prior: np.ndarray | None = None) -> float:
    """The log loss of the temperature-scaled, prior-shifted probabilities (the fit's objective).

    Equals core.metrics' `log_loss` of `apply_temperature(proba, temperature)` for that prior.

    Args:
        y_true: (n,) true class indices.
        proba: (n, 7) probabilities.
        temperature: T > 0.
        prior: (7,) training class frequencies (None: no prior shift).

    Returns:
        The mean of -log q_i[y_i] (clipped as scikit-learn's log_loss clips).
    """
    scaled = calibration_probabilities(apply_temperature(proba, temperature), prior)
    return float(per_image_log_loss(y_true, scaled).mean())


def fit_temperature(y_true: np.ndarray, proba: np.ndarray,
                    prior: np.ndarray | None = None,
                    bounds: tuple[float, float] = T_BOUNDS) -> TemperatureFit:
    """Fit one temperature on validation predictions by minimising their log loss.

    Args:
        y_true: (n,) true class indices of the validation images.
        proba: (n, 7) their probabilities.
        prior: (7,) training class frequencies the log loss is measured after (None: none).
        bounds: the range of T searched.

    Returns:
        The fit; its `value` is 1.0 unless the optimum lowers the validation log loss strictly,
        so `log_loss_after <= log_loss_before` always.

    Raises:
        ValueError: probabilities or labels of the wrong shape or range, or bad bounds.
    """
    y_true, proba = _check(y_true, proba)
    low, high = bounds
    if not (0 < low < 1 < high and math.isfinite(high)):
        raise ValueError(f"the bounds must satisfy 0 < low < 1 < high, got {bounds}")
    before = temperature_log_loss(y_true, proba, 1.0, prior)
    search = minimize_scalar(
        lambda log_t: temperature_log_loss(y_true, proba, math.exp(log_t), prior),
        bounds=(math.log(low), math.log(high)), method="bounded", options={"xatol": X_TOL})
    value = float(math.exp(search.x))
    after = temperature_log_loss(y_true, proba, value, prior)
    if not after < before:
        value, after = 1.0, before
    return TemperatureFit(value=value, log_loss_before=before, log_loss_after=after,
                          n_images=len(y_true), bounds=(float(low), float(high)))


def scaled_calibration_metrics(y_true: np.ndarray, proba: np.ndarray, temperature: float,
                               prior: np.ndarray | None = None) -> dict[str, float]:
    """Log loss, Brier score and ECE of the temperature-scaled probabilities.

    Measured as core.metrics measures them: after the prior shift, ECE with 15 bins on the
    argmax of the shifted probabilities.

    Args:
        y_true: (n,) true class indices.
        proba: (n, 7) unscaled probabilities.
        temperature: T > 0.
        prior: (7,) training class frequencies (None: no prior shift).

    Returns:
        {"log_loss", "brier", "ece"}.
    """
    y_true, proba = _check(y_true, proba)
    scaled = calibration_probabilities(apply_temperature(proba, temperature), prior)
    return {
        "log_loss": float(per_image_log_loss(y_true, scaled).mean()),
        "brier": float(per_image_brier(y_true, scaled).mean()),
        "ece": expected_calibration_error(y_true, scaled.argmax(axis=1), scaled),
    }


def entry_temperature(predictions: dict[str, Predictions],
                      prior: np.ndarray | None) -> dict[str, Any] | None:
    """An entry's temperature record for metrics.json, fitted on its validation predictions.

    Args:
        predictions: split -> the entry's predictions ("val" is fit on; "test" only scored).
        prior: (7,) training class frequencies (the calibration prior of its metrics).

    Returns:
        `TemperatureFit.to_json()` plus "test_after": the test split's log loss, Brier score and
        ECE after scaling (when it has test predictions); None without validation predictions.
    """
    val = predictions.get(FIT_SPLIT)
    if val is None:
        return None
    fit = fit_temperature(val.y_true, val.proba, prior)
    record = fit.to_json()
    test = predictions.get("test")
    if test is not None:
        record["test_after"] = scaled_calibration_metrics(test.y_true, test.proba, fit.value,
                                                          prior)
    return record
