"""A saved ensemble applied to new member probabilities (`--predict` with an ensemble).

`--ensemble` fits an estimator and writes its predictions with `estimator.predict_proba` (and, for
hard voting, its tie-broken `estimator.predict`) on the members' aligned probabilities
(ensembles.build), temperature-scaled member by member first when it was built with --calibrated.
Here the same estimator is rebuilt from fit.json (`ensembles.fitfile.load_fit`, bitwise the
fitted one), the members' probabilities for new images are stacked in fit.json's member order and
scaled by the recorded temperatures (`ensembles.fitfile.scale_members`), and the same two calls
are made: the combination rule is the one `--ensemble` used, not a re-implementation of it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ensembles.errors import EnsembleError
from ensembles.fitfile import load_fit, read_fit, scale_members
from ensembles.voting import HardVoting


@dataclass(frozen=True)
class EnsembleOutput:
    """What a saved ensemble makes of its members' probabilities.

    Attributes:
        proba: (n, 7) the ensemble's probability columns (vote shares for hard voting).
        prediction: (n,) predicted canonical class indices (hard voting: its tie rule; the
            others: the argmax of `proba`, as their prediction files imply).
        probabilities: False when `proba` holds vote shares rather than probabilities.
    """

    proba: np.ndarray
    prediction: np.ndarray
    probabilities: bool


def saved_members(fit_path: str | os.PathLike) -> list[str]:
    """The members a saved ensemble combines, in the order of its fit.

    Raises:
        EnsembleError: a missing or malformed fit.json, or one that records no members.
    """
    members = read_fit(fit_path).get("members")
    if not isinstance(members, list) or not members:
        raise EnsembleError(f"{fit_path}: records no members; rebuild it with --ensemble")
    return [str(m) for m in members]


def apply_saved_fit(fit_path: str | os.PathLike,
                    member_probas: Mapping[str, np.ndarray]) -> EnsembleOutput:
    """Combine member probabilities exactly as the saved ensemble does (module docstring).

    Args:
        fit_path: ensembles/<name>/fit.json.
        member_probas: {member: (n, 7) its own (unscaled) probabilities}, rows aligned (the same
            image in the same row for every member); every member of the fit must be present.

    Returns:
        The ensemble's output.

    Raises:
        EnsembleError: a malformed fit.json, a member missing from `member_probas`, or member
            probabilities that break the estimator's checks (shape, range, row sums).
    """
    record = read_fit(fit_path)
    members = saved_members(fit_path)
    missing = [m for m in members if m not in member_probas]
    if missing:
        raise EnsembleError(f"{fit_path}: no probabilities for member(s) {', '.join(missing)}; "
                            f"the ensemble combines {', '.join(members)}")
    estimator = load_fit(Path(fit_path))
    stacked = scale_members(record, np.stack([np.asarray(member_probas[m], dtype=np.float64)
                                              for m in members]))
    proba = estimator.predict_proba(stacked)
    if isinstance(estimator, HardVoting):
        return EnsembleOutput(proba, estimator.predict(stacked), probabilities=False)
    return EnsembleOutput(proba, np.argmax(proba, axis=1).astype(np.int64), probabilities=True)
