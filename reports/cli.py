"""The report stage's CLI actions: --report, --save-baseline FILE, --check FILE."""

from __future__ import annotations

import argparse
import math

from tabulate import tabulate

from core import defaults
from core.rundir import RunDir, find_run_dir
from reports.baseline import check_run, load_baseline, run_metrics, save_baseline
from reports.build import build_report
from reports.options import check_rank_by


def resolve_run_dir(args: argparse.Namespace) -> RunDir:
    """The run to read: --out, or the default one (see `core.rundir.find_run_dir`)."""
    return find_run_dir(getattr(args, "out", None), getattr(args, "dataset", None),
                        getattr(args, "preset", None))


def run_report(args: argparse.Namespace) -> int:
    """`--report`: rebuild metrics.json, results.csv, comparisons.csv, figures and report.md;
    print its path. `--reference NAME` picks the entry the others are compared with."""
    rank_by = defaults.option(args, "rank_by")
    check_rank_by(rank_by)
    run = resolve_run_dir(args)
    path = build_report(
        run.root,
        rank_by=rank_by,
        n_resamples=defaults.option(args, "bootstrap"),
        seed=defaults.option(args, "seed"),
        reference=getattr(args, "reference", None),
    )
    print(path)
    return 0


def run_save_baseline(args: argparse.Namespace) -> int:
    """`--save-baseline FILE`: write the run's headline metrics as a regression baseline."""
    run = resolve_run_dir(args)
    baseline = save_baseline(args.save_baseline, run, defaults.option(args, "tolerance"))
    print(f"wrote {len(baseline['metrics'])} metrics of {run.root} to {args.save_baseline}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    """`--check FILE`: exit 1 listing every metric worse than its tolerance (or missing), else 0."""
    baseline = load_baseline(args.check)
    run = resolve_run_dir(args)
    failures = check_run(baseline, run_metrics(run), defaults.option(args, "tolerance"))
    total = len(baseline["metrics"])
    if not failures:
        print(f"check passed: {total} metrics of {run.root} within tolerance of {args.check}")
        return 0
    rows = [
        [f.key, f"{f.baseline:.4f}", "missing" if math.isnan(f.current) else f"{f.current:.4f}",
         "" if math.isnan(f.current) else f"{f.change:+.4f}", f"{f.tolerance:.4f}", f.reason]
        for f in failures
    ]
    print(tabulate(rows, headers=["metric", "baseline", "current", "change", "tolerance",
                                  "failure"], tablefmt="github", disable_numparse=True))
    print(f"check FAILED: {len(failures)} of {total} metrics worse than tolerance or missing "
          f"(baseline {args.check}, run {run.root})")
    return 1
