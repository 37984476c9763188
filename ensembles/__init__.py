"""Ensembles built from saved prediction files: soft / hard / weighted voting and stacking.

Everything here works from CSV and NumPy alone (no TensorFlow/Keras), so ensembles can be rebuilt
on any laptop from a finished GPU run, or from prediction files a user made elsewhere.

Importing this package is cheap; the estimators live in `ensembles.voting` / `ensembles.stacking`,
the file handling in `ensembles.members` / `ensembles.fitfile`, the stage in `ensembles.build`,
the refit of ensembles whose member files changed in `ensembles.stale`.
"""

ENSEMBLE_NAMES: tuple[str, ...] = ("soft_voting", "hard_voting", "weighted_voting", "stacking")

__all__ = ["ENSEMBLE_NAMES"]
