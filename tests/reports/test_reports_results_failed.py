"""results.csv records a failed entry's status and error; rebuilding metrics keeps mtimes."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from core.classes import CLASSES
from core.entry_metrics import write_entry_metrics
from core.predictions import make_predictions, write_predictions
from core.rundir import RunDir
from reports.results import write_results_csv


def _write_entry(run: RunDir, name: str) -> None:
    rng = np.random.default_rng(0)
    for split in ("val", "test"):
        n = 21
        preds = make_predictions(
            [f"{split}{i}" for i in range(n)], [f"L{split}{i}" for i in range(n)],
            [CLASSES[i % 7] for i in range(n)], rng.dirichlet(np.ones(7), size=n),
        )
        write_predictions(RunDir.predictions_file(run.model_dir(name), split), preds)


def test_failed_entry_has_status_and_error_row(tmp_path):
    run = RunDir(tmp_path)
    _write_entry(run, "inception_v3")
    write_entry_metrics(run.model_dir("inception_v3"), {"kind": "backbone"}, n_resamples=20)
    write_entry_metrics(run.model_dir("xception"),
                        {"kind": "backbone", "status": "failed", "error": "CUDA error: boom"})
    frame = pd.read_csv(write_results_csv(run))
    failed = frame[frame["entry"] == "xception"]
    assert failed["status"].tolist() == ["failed"]
    assert failed["error"].tolist() == ["CUDA error: boom"]
    assert set(frame[frame["entry"] == "inception_v3"]["status"]) == {"ok"}


def test_recomputing_unchanged_metrics_keeps_the_file_untouched(tmp_path):
    run = RunDir(tmp_path)
    _write_entry(run, "inception_v3")
    path = run.model_dir("inception_v3") / "metrics.json"
    write_entry_metrics(run.model_dir("inception_v3"), {"kind": "backbone"}, n_resamples=20)
    os.utime(path, ns=(10**9, 10**9))
    write_entry_metrics(run.model_dir("inception_v3"), {"kind": "backbone"}, n_resamples=20)
    assert path.stat().st_mtime_ns == 10**9


def test_ranking_chart_accepts_interval_not_containing_the_estimate(tmp_path):
    # Percentile bootstrap intervals on tiny skewed data can lie above the point estimate.
    from reports.figures import ranking_chart

    rows = [
        {"entry": "paper_cnn", "kind": "baseline", "value": 0.143, "low": 0.167, "high": 0.333},
        {"entry": "xception", "kind": "backbone", "value": 0.5, "low": 0.4, "high": 0.6},
    ]
    path = ranking_chart(rows, "balanced_accuracy", tmp_path / "ranking.png", highlight="xception")
    assert path.is_file() and path.stat().st_size > 0
