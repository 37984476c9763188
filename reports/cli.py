"""The report stage's CLI actions: --save-baseline FILE, --check FILE (--report is
`pipeline.report_action`: it refits stale ensembles first)."""

from __future__ import annotations

import argparse
import math

from tabulate import tabulate

from core import defaults
from core.rundir import RunDir, find_run_dir
from reports.baseline import (
    check_run,
    check_test_set,
    load_baseline,
    run_metrics,
    run_test_set,
    save_baseline,
)


def resolve_run_dir(args: argparse.Namespace) -> RunDir:
    """The run to read: --out, or the default one (see `core.rundir.find_run_dir`)."""
    return find_run_dir(getattr(args, "out", None), getattr(args, "dataset", None),
                        getattr(args, "preset", None))


def run_save_baseline(args: argparse.Namespace) -> int:
    """`--save-baseline FILE`: write the run's headline metrics as a regression baseline."""
    run = resolve_run_dir(args)
    baseline = save_baseline(args.save_baseline, run, defaults.option(args, "tolerance"))
    print(f"wrote {len(baseline['metrics'])} metrics of {run.root} to {args.save_baseline}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    """`--check FILE`: exit 1 listing every metric worse than its tolerance (or missing), else 0.

    The baseline's test set must be the run's (exit 2 otherwise) unless
    `--allow-different-test-set` (read with getattr: an option the parser may not define yet).
    """
    baseline = load_baseline(args.check)
    run = resolve_run_dir(args)
    current = run_metrics(run)
    check_test_set(baseline, run_test_set(run),
                   allow_different=bool(getattr(args, "allow_different_test_set", False)),
                   source=str(args.check), run=str(run.root))
    failures = check_run(baseline, current, defaults.option(args, "tolerance"))
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
