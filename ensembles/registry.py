"""Ensemble name -> estimator class, and the resolution of requested names."""

from __future__ import annotations

from collections.abc import Iterable

from ensembles import ENSEMBLE_NAMES
from ensembles.base import EnsembleEstimator
from ensembles.errors import EnsembleError
from ensembles.stacking import Stacking
from ensembles.voting import HardVoting, SoftVoting, WeightedVoting

ESTIMATORS: dict[str, type[EnsembleEstimator]] = {
    cls.name: cls for cls in (SoftVoting, HardVoting, WeightedVoting, Stacking)
}


def resolve_names(names: Iterable[str] | str) -> list[str]:
    """Expand "all" and check the requested ensemble names.

    Args:
        names: ensemble names and/or "all" (a single string is one name).

    Returns:
        The distinct names in canonical order (`ENSEMBLE_NAMES`).

    Raises:
        EnsembleError: an unknown name (the message lists the known ones) or no name at all.
    """
    requested = [names] if isinstance(names, str) else list(names)
    if not requested:
        raise EnsembleError(f"no ensemble requested; choose from {', '.join(ENSEMBLE_NAMES)} or all")
    unknown = [n for n in requested if n != "all" and n not in ESTIMATORS]
    if unknown:
        raise EnsembleError(
            f"unknown ensemble {', '.join(map(repr, unknown))}; known ensembles: "
            f"{', '.join(ENSEMBLE_NAMES)} (or 'all')"
        )
    if "all" in requested:
        return list(ENSEMBLE_NAMES)
    return [n for n in ENSEMBLE_NAMES if n in requested]


def make_estimator(name: str, **params) -> EnsembleEstimator:
    """A new, unfitted estimator for ensemble `name` with `params`.

    Raises:
        EnsembleError: an unknown name.
    """
    resolve_names([name])
    return ESTIMATORS[name](**params)
