"""The --all action of benchmark.py: run the whole flow (pipeline/run_all.py), then print one
summary line per entry and turn failures into the exit code."""

from __future__ import annotations

import argparse
import sys

from core import exitcodes
from pipeline.run_all import run_all


def run_all_action(args: argparse.Namespace) -> int:
    """`python benchmark.py --all ...`: prepare the data, train every entry, build the ensembles
    and the report.

    Prints one summary line per entry and, when something failed, names it on stderr.

    Args:
        args: the parsed command line of benchmark.py.

    Returns:
        0 when every entry (and the ensembles and report) succeeded, 1 otherwise.

    Raises:
        BenchmarkError: bad options or data, or a run directory of a different protocol (the CLI
            prints the message and exits with 2).
    """
    outcome = run_all(args, console=sys.stdout)
    print(f"\nrun directory: {outcome.run_dir}")
    for entry in outcome.entries:
        print(f"  {entry.summary_line()}")
    if outcome.ensembles:
        print(f"  ensembles: {', '.join(outcome.ensembles)}")
    if outcome.results_csv is not None:
        print(f"  results: {outcome.results_csv}")
    if outcome.report is not None:
        print(f"  report: {outcome.report}")
    if outcome.failures:
        print(f"failed: {'; '.join(outcome.failures)} (details in "
              f"{outcome.run_dir / 'train.log'}; rerun the same command to retry)",
              file=sys.stderr)
        return exitcodes.FAILED
    return exitcodes.OK
