"""Speed of the ensembles at HAM10000 scale (5 members, 1,002 validation / 1,001 test images).

Bounds from the issue: fitting and predicting all four ensembles < 5 s; the CLI's
`--ensemble all` < 15 s including file I/O. Timing depends on the machine's load, so the bounds
are asserted only by the `perf` tests (`tox -e perf`); the benchmarks record the worst round in
`extra_info`. Each is measured beside a named baseline in the same group (and the same
process), so the report shows the overhead:
- fit group: soft voting alone (a mean; the floor of any ensemble);
- CLI group: reading the ten member files and writing the eight ensemble prediction files.
The report's figures (reports.build.build_report) are stubbed out: they are the reports stage's
cost, benchmarked there.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

import benchmark as cli
from core.predictions import make_predictions, read_predictions, write_predictions
from core.rundir import RunDir
from ensembles import ENSEMBLE_NAMES
from ensembles.members import load_members, resolve_members
from ensembles.registry import make_estimator

FIT_BOUND_S = 5.0
CLI_BOUND_S = 15.0


@pytest.fixture(scope="module")
def ham_members(ham_scale_run: Path):
    run = RunDir(ham_scale_run)
    return load_members(run, resolve_members(run))


def _fit_predict(data, names) -> None:
    for name in names:
        model = make_estimator(name).fit(data.val.probas, data.val.y, data.val.lesion_id)
        model.predict_proba(data.val.probas)
        model.predict_proba(data.test.probas)
        model.predict(data.test.probas)


def _worst_seconds(benchmark, fn, rounds: int) -> float:
    """Run `fn` under pytest-benchmark; the slowest round (perf_counter when benchmarks are off)."""
    start = time.perf_counter()
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=0)
    if benchmark.enabled and benchmark.stats is not None:
        return float(benchmark.stats.stats.max)
    return time.perf_counter() - start


@pytest.mark.benchmark(group="ensembles-fit-predict")
def test_bench_baseline_soft_voting_only(benchmark, ham_members):
    seconds = _worst_seconds(benchmark, lambda: _fit_predict(ham_members, ["soft_voting"]), 3)
    benchmark.extra_info["worst_s"] = seconds


@pytest.mark.benchmark(group="ensembles-fit-predict")
def test_bench_fit_predict_all_four(benchmark, ham_members):
    seconds = _worst_seconds(benchmark, lambda: _fit_predict(ham_members, ENSEMBLE_NAMES), 1)
    start = time.perf_counter()
    _fit_predict(ham_members, ["soft_voting"])
    baseline = time.perf_counter() - start
    benchmark.extra_info.update(worst_s=seconds, baseline_soft_voting_s=baseline,
                                overhead_x=seconds / max(baseline, 1e-9))


@pytest.mark.perf
def test_fit_predict_all_four_within_bound(ham_members):
    start = time.perf_counter()
    _fit_predict(ham_members, ENSEMBLE_NAMES)
    seconds = time.perf_counter() - start
    assert seconds < FIT_BOUND_S, f"all four ensembles took {seconds:.2f} s (bound {FIT_BOUND_S} s)"


def _read_and_write_only(run: Path) -> None:
    """The I/O floor of the CLI: read every member file, write eight ensemble files."""
    data = load_members(RunDir(run), resolve_members(RunDir(run)))
    for name in ENSEMBLE_NAMES:
        for split in (data.val, data.test):
            preds = make_predictions(split.image_id, split.lesion_id, split.label,
                                     split.probas.mean(axis=0))
            write_predictions(run / "io_baseline" / name / f"predictions_{split.split}.csv", preds)


@pytest.fixture
def no_report_figures(monkeypatch):
    import reports.build

    monkeypatch.setattr(reports.build, "build_report", lambda run_dir, **kwargs: None)


@pytest.mark.benchmark(group="ensembles-cli")
def test_bench_baseline_read_write_prediction_files(benchmark, ham_scale_run):
    seconds = _worst_seconds(benchmark, lambda: _read_and_write_only(ham_scale_run), 2)
    benchmark.extra_info["worst_s"] = seconds


@pytest.mark.benchmark(group="ensembles-cli")
def test_bench_cli_ensemble_all(benchmark, ham_scale_run, no_report_figures, capsys):
    argv = ["--ensemble", "all", "--out", str(ham_scale_run)]
    seconds = _worst_seconds(benchmark, lambda: cli.main(argv), 1)
    start = time.perf_counter()
    _read_and_write_only(ham_scale_run)
    baseline = time.perf_counter() - start
    benchmark.extra_info.update(worst_s=seconds, baseline_io_s=baseline,
                                overhead_x=seconds / max(baseline, 1e-9))
    assert "stacking" in capsys.readouterr().out
    written = read_predictions(ham_scale_run / "ensembles/stacking/predictions_test.csv")
    assert len(written) == 1001 and np.isfinite(written.proba).all()


@pytest.mark.perf
def test_cli_ensemble_all_within_bound(ham_scale_run, no_report_figures, capsys):
    start = time.perf_counter()
    assert cli.main(["--ensemble", "all", "--out", str(ham_scale_run)]) == 0
    seconds = time.perf_counter() - start
    assert seconds < CLI_BOUND_S, f"--ensemble all took {seconds:.2f} s (bound {CLI_BOUND_S} s)"
