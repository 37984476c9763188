"""The ISIC 2018 exports score the same everywhere: the official scorer (the optional test
dependency isic-challenge-scoring) gives each export the balanced accuracy of our report and,
for entries with probabilities, its macro AUC (issue 15: hard voting's export wrote tied vote
shares, which the scorer counts as undecided: 0.286 where our report said 0.333)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from core.atomic import read_json
from core.classes import ISIC_COLUMNS
from core.predictions import read_predictions
from core.rundir import RunDir
from reports.build import build_report

scoring = pytest.importorskip("isic_challenge_scoring.classification",
                              reason="pip install isic-challenge-scoring (optional test extra)")

# the scorer itself calls pandas' deprecated DataFrame.applymap
pytestmark = pytest.mark.filterwarnings("ignore:DataFrame.applymap:FutureWarning")

REPO = Path(__file__).resolve().parents[2]
TOLERANCE = 1e-9


def _truth_csv(run: RunDir, path: Path) -> Path:
    """The ground truth in the scorer's layout, from an entry's test labels."""
    name = next(iter(run.model_names()))
    preds = read_predictions(run.predictions_file(run.model_dir(name), "test"))
    frame = pd.DataFrame({"image": preds.image_id})
    for column in ISIC_COLUMNS:
        frame[column] = (preds.label == column.lower()).astype(float)
    frame.to_csv(path, index=False)
    return path


def _official_scores(truth: Path, export: Path) -> tuple[float, float]:
    score = scoring.ClassificationScore.from_file(
        truth, export, scoring.ClassificationMetric.BALANCED_ACCURACY)
    return float(score.aggregate["balanced_accuracy"]), float(score.macro_average["auc"])


def check_exports(run: RunDir, tmp_path: Path) -> dict[str, tuple[float, float]]:
    """Score every isic_export/*.csv with the official scorer; compare with metrics.json."""
    truth = _truth_csv(run, tmp_path / "truth.csv")
    exports = {p.stem: p for p in run.isic_export_dir.glob("*.csv")}
    entries = {**{n: run.model_dir(n) for n in run.model_names()},
               **{n: run.ensemble_dir(n) for n in run.ensemble_names()}}
    assert sorted(exports) == sorted(entries)
    scored = {}
    for name, folder in entries.items():
        metrics = read_json(folder / "metrics.json")
        balanced, auc = _official_scores(truth, exports[name])
        assert balanced == pytest.approx(metrics["test"]["balanced_accuracy"], abs=TOLERANCE), name
        if metrics.get("probabilities", True):
            assert auc == pytest.approx(metrics["test"]["macro_auc"], abs=TOLERANCE), name
        scored[name] = (balanced, auc)
    return scored


def test_every_export_scores_as_the_report_says(synthetic_run, tmp_path):
    run = synthetic_run(tmp_path / "run", n_test=150, n_val=150, histories=False)
    hard = read_predictions(run.predictions_file(run.ensemble_dir("hard_voting"), "test"))
    shares = hard.proba
    tied = ((shares == shares.max(axis=1, keepdims=True)).sum(axis=1) > 1).sum()
    assert tied > 0  # vote shares that tie: what the scorer used to count as undecided
    build_report(run.root, n_resamples=20, figures=False)
    scored = check_exports(run, tmp_path)
    assert "hard_voting" in scored and len(scored) == 11


@pytest.mark.slow
def test_the_smoke_runs_exports_score_as_its_report_says(trained_smoke_run, tmp_path):
    """The shared smoke run (tests/conftest.py): 350 generated images, so every class has a test
    image (the scorer's AUC needs each class present)."""
    out = trained_smoke_run
    run = RunDir(out)
    test = read_predictions(run.predictions_file(run.model_dir("xception"), "test"))
    assert set(test.label) == {c.lower() for c in ISIC_COLUMNS}
    scored = check_exports(run, tmp_path)
    assert "hard_voting" in scored
