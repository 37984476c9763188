"""The --all action of benchmark.py: run the whole flow (pipeline/run_all.py) with the console of
pipeline/console.py, then print the final summary and turn failures into the exit code."""

from __future__ import annotations

import argparse
import sys

from core import exitcodes
from core.rundir import RunDir
from pipeline.console import RunConsole, boxed
from pipeline.outcome import RunOutcome
from pipeline.run_all import run_all
from reports.context import read_context
from reports.sections import pipeline_check_note


def run_all_action(args: argparse.Namespace) -> int:
    """`python benchmark.py --all ...`: prepare the data, train every entry, build the ensembles
    and the report.

    The console shows a line per stage, a progress bar per entry (plain lines when stdout is not
    a terminal) and a summary line per entry; at the end the summary: for a run that only checks
    the pipeline (synthetic data or the smoke preset) a note saying so, then the run directory,
    the entries, ensembles, results and report. When something failed it is named on stderr.

    Args:
        args: the parsed command line of benchmark.py.

    Returns:
        0 when every entry (and the ensembles and report) succeeded, 1 otherwise.

    Raises:
        BenchmarkError: bad options or data, or a run directory of a different protocol (the CLI
            prints the message and exits with 2).
    """
    console = RunConsole(sys.stdout, verbose=bool(getattr(args, "verbose", False)))
    outcome = run_all(args, console=console)
    print(summary(outcome))
    if outcome.failures:
        print(f"failed: {'; '.join(outcome.failures)} (details in "
              f"{outcome.run_dir / 'train.log'}; rerun the same command to retry)",
              file=sys.stderr)
        return exitcodes.FAILED
    return exitcodes.OK


def summary(outcome: RunOutcome) -> str:
    """The final summary of `--all`: the pipeline-check note of a smoke or synthetic run, the run
    directory, one line per entry, the ensembles, results.csv and report.md."""
    lines = [""]
    note = pipeline_check_note(read_context(RunDir(outcome.run_dir)))
    if note:
        lines += [boxed(note), ""]
    lines.append(f"run directory: {outcome.run_dir}")
    lines += [f"  {entry.summary_line()}" for entry in outcome.entries]
    if outcome.ensembles:
        lines.append(f"  ensembles: {', '.join(outcome.ensembles)}")
    if outcome.results_csv is not None:
        lines.append(f"  results: {outcome.results_csv}")
    if outcome.report is not None:
        lines.append(f"  report: {outcome.report}")
    return "\n".join(lines)
