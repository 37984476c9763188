"""Fixtures of the pipeline tests: what a stand-in training worker writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.classes import CLASS_INDEX, CLASSES
from core.predictions import make_predictions, write_predictions
from core.rundir import RunDir


def _write_stand_in_predictions(run_dir: Path, name: str, rng: np.random.Generator,
                                noise: float, boost: float) -> None:
    """predictions_val.csv and predictions_test.csv of `name` in `run_dir`: uniform noise in
    [0, noise) per class plus `boost` on the true class, normalised (mostly right, never sure)."""
    run = RunDir(run_dir)
    splits = pd.read_csv(run.splits_csv, dtype=str)
    for split in ("val", "test"):
        part = splits[splits["split"] == split]
        proba = rng.uniform(0, noise, size=(len(part), len(CLASSES)))
        proba[np.arange(len(part)), [CLASS_INDEX[c] for c in part["dx"]]] += boost
        proba /= proba.sum(axis=1, keepdims=True)
        write_predictions(RunDir.predictions_file(run.model_dir(name), split), make_predictions(
            part["image_id"], part["lesion_id"], part["dx"], proba))


@pytest.fixture(scope="session")
def stand_in_predictions():
    """`write(run_dir, name, rng, noise, boost)`: the prediction files a stand-in worker leaves
    (see `_write_stand_in_predictions`)."""
    return _write_stand_in_predictions
