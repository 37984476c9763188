"""Benchmark: a full report at HAM10000 scale (issue 6: must build in under 60 s on 2 cores).

5 backbones + 2 baselines + 4 ensembles, ~1,000 validation and ~1,000 test images each (HAM10000's
10 % test split), 1,000 lesion-bootstrap resamples, every figure, training histories. Named
baseline in the same group and run: the same report without figures ("metrics only": metrics.json
with intervals, results.csv, ISIC exports, paired statistics, report.md). The last test puts the
measured times side by side in extra_info.
"""

from __future__ import annotations

import time

import pytest

from reports.build import build_report

# Measured benchmarks (tens of seconds of work): pytest-benchmark turns itself off under xdist, so
# in the default run they would only repeat work other tests cover. They run with `tox -e full`;
# measured with `pytest -p no:xdist -m full tests/reports/test_bench_reports.py`.
pytestmark = pytest.mark.full

TIMES: dict[str, float] = {}


@pytest.fixture(scope="module")
def ham_scale_run(tmp_path_factory, synthetic_run):
    return synthetic_run(tmp_path_factory.mktemp("bench") / "run", n_test=1000, n_val=1000)


def _bench(benchmark, run, name, **kwargs):
    """Build the report once under pytest-benchmark; its time from the benchmark's stats, or
    from perf_counter where pytest-benchmark is off (it turns itself off under xdist)."""
    start = time.perf_counter()
    path = benchmark.pedantic(build_report, args=(run.root,), kwargs={"n_resamples": 1000, **kwargs},
                              rounds=1, iterations=1, warmup_rounds=0)
    stats = getattr(benchmark, "stats", None) if benchmark.enabled else None
    TIMES[name] = stats.stats.min if stats is not None else time.perf_counter() - start
    benchmark.extra_info["seconds"] = round(TIMES[name], 2)
    return path


@pytest.mark.benchmark(group="report-ham10000-scale")
def test_bench_report_metrics_only_baseline(benchmark, ham_scale_run):
    path = _bench(benchmark, ham_scale_run, "metrics_only", figures=False)
    assert "Figures were not drawn" in path.read_text()


@pytest.mark.benchmark(group="report-ham10000-scale")
def test_bench_report_full_serial(benchmark, ham_scale_run):
    path = _bench(benchmark, ham_scale_run, "full_serial", processes=1)
    # hard voting has no probabilities: no ROC figure of its own
    # + the reliability diagram after temperature scaling, + the all-entries ranking and ROC
    # figures (11 entries: more than the top 8 and the reference the comparison figures show)
    assert len(list(ham_scale_run.figures_dir.glob("*.png"))) == 3 + 2 * 11 - 1 + 5 + 1 + 2
    assert "figures/macro_roc.png" in path.read_text()


@pytest.mark.benchmark(group="report-ham10000-scale")
def test_bench_report_full_default_processes(benchmark, ham_scale_run):
    path = _bench(benchmark, ham_scale_run, "full_default")
    assert "figures/reliability.png" in path.read_text()


def test_bench_report_times_side_by_side(record_property):
    if not {"metrics_only", "full_serial", "full_default"} <= set(TIMES):
        pytest.skip("needs the three benchmarks of this module in the same run")
    for name, seconds in TIMES.items():
        record_property(name, round(seconds, 2))
    # drawing is the expensive part; the statistics alone must stay a small share of it
    assert TIMES["metrics_only"] < TIMES["full_serial"]
