"""The regression gate: save a run's headline metrics as a baseline, and check a run against one.

Baseline file (JSON):

    {"tolerance": 0.01,                                  # default allowed drop
     "metrics": {"<entry>/<split>/<metric>": value, ...},
     "tolerances": {"<metric>" or "<entry>/<split>/<metric>": allowed drop, ...},   # optional
     "test_set": {"sha256": ..., "images": n}}          # what the metrics were measured on

"test_set" is the identity of the run's test images and labels (core.provenance; a grid's
combines its replicates'). --check compares it with the run's before any metric: a baseline of
another test set is refused (exit 2) unless --allow-different-test-set; a baseline without one
(written before it was recorded) is compared with a warning. The run itself is checked first as
--report checks it (reports.integrity): a stale ensemble, leaked lesions or entries on different
test sets are refused.

A metric fails when it got worse by more than its tolerance: for most metrics "worse" is a drop,
for the lower-is-better ones (log_loss, brier, ece) an increase. An entry, split or metric of the
baseline that the run lacks (or that is NaN in the run) fails too; it is never skipped. The
tolerance of a metric is, first match wins: tolerances["<entry>/<split>/<metric>"],
tolerances["<metric>"], the file's "tolerance", then the command line's --tolerance.

A grid run (`--seeds`/`--folds`, replicates/fold<f>-seed<s>/) is gated on the mean of each metric
over its replicates, under the same keys; a job that failed makes its keys "missing". Its baseline
file records "aggregate": "mean over N replicates: ..." (informational).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.atomic import atomic_write_json
from core.defaults import TOLERANCE
from core.entry_metrics import entry_inputs
from core.errors import BenchmarkError, RunDirError
from core.filesystem import check_writable_file
from core.metrics import LOWER_IS_BETTER
from core.numbers import as_float
from core.provenance import TEST_SET_KEY, describe_test_set
from core.rundir import RunDir
from reports.integrity import check_entries, check_stale_ensembles
from reports.results import discover_entries

log = logging.getLogger(__name__)

HEADLINE_METRICS = ("accuracy", "balanced_accuracy", "macro_auc", "macro_f1", "log_loss")


class BaselineError(BenchmarkError, ValueError):
    """A baseline file that is missing or malformed."""


@dataclass(frozen=True)
class Failure:
    """One metric that failed the check.

    Attributes:
        key: "<entry>/<split>/<metric>".
        baseline: the baseline value.
        current: the run's value (NaN when missing).
        tolerance: the allowed change in the bad direction.
        reason: "worse" or "missing".
    """

    key: str
    baseline: float
    current: float
    tolerance: float
    reason: str

    @property
    def change(self) -> float:
        return self.current - self.baseline


def run_metrics(run: RunDir) -> dict[str, float]:
    """Headline metrics of every entry and split, computed from the prediction files.

    On a grid root (`run.is_grid`) every value is the mean over the replicates (see
    `grid_run_metrics`), under the same "<entry>/<split>/<metric>" keys.

    Args:
        run: the run directory.

    Returns:
        {"<entry>/<split>/<metric>": value} (NaN values included).

    Raises:
        RunDirError: the directory is missing or holds no prediction file.
        IntegrityError: a stale ensemble (its predictions no longer follow from its members).
    """
    if not run.root.is_dir():
        raise RunDirError(f"{run.root}: no such run directory; pass --out RUNDIR")
    if run.is_grid:
        return grid_run_metrics(run)
    check_stale_ensembles(run)
    values: dict[str, float] = {}
    for entry in discover_entries(run):
        # The same conventions as metrics.json (calibration prior, no probability metrics for
        # hard voting, the validation operating point), recomputed from the prediction files.
        for split, metrics in entry_inputs(entry.directory).split_metrics().items():
            for name in HEADLINE_METRICS:
                values[f"{entry.name}/{split}/{name}"] = metrics[name]
    if not values:
        raise RunDirError(
            f"{run.root}: no prediction files (models/*/predictions_{{val,test}}.csv or "
            "ensembles/*/...); run the benchmark first or pass the right --out"
        )
    return values


def grid_run_metrics(run: RunDir) -> dict[str, float]:
    """Headline metrics of a grid run: the mean of each key over its replicates.

    A key's value is the mean over the replicates of `run_metrics(replicate)`; it is NaN (so
    --check reports it "missing") when a replicate holding predictions lacks it, i.e. that job
    failed or is missing: a grid whose jobs used to finish fails the gate when one no longer does.
    A replicate without any prediction file counts as lacking every key.

    Args:
        run: the grid root.

    Returns:
        {"<entry>/<split>/<metric>": mean over replicates}.

    Raises:
        RunDirError: no replicate holds a prediction file.
    """
    per_replicate = []
    for _, _, replicate in run.replicates():
        try:
            per_replicate.append(run_metrics(replicate))
        except RunDirError:
            per_replicate.append({})
    keys = sorted({key for values in per_replicate for key in values})
    if not keys:
        raise RunDirError(
            f"{run.root}: grid run without prediction files (replicates/fold<f>-seed<s>/models/"
            "*/predictions_{val,test}.csv); run the benchmark first or pass the right --out"
        )
    means = {}
    for key in keys:
        found = [values.get(key, math.nan) for values in per_replicate]
        means[key] = math.nan if any(math.isnan(v) for v in found) else sum(found) / len(found)
    return means


def run_test_set(run: RunDir) -> dict[str, Any]:
    """The identity of the test set a run's metrics are measured on, after the report's checks.

    Args:
        run: a single run, or a grid root (its replicates' identities combined, by name).

    Returns:
        {"sha256": ..., "images": n} (a grid adds "replicates": n).

    Raises:
        RunDirError: no entry with test predictions.
        IntegrityError: a stale ensemble, leaked lesions, or entries on different test sets.
        PredictionFileError: a prediction file breaks the contract.
    """
    if run.is_grid:
        parts = []
        for _, _, replicate in run.replicates():
            if any(e.has_split("test") for e in discover_entries(replicate)):
                parts.append((replicate.root.name, run_test_set(replicate)))
        if not parts:
            raise RunDirError(f"{run.root}: no replicate holds test predictions; run the "
                              "benchmark first or pass the right --out")
        digest = hashlib.sha256("".join(f"{name}\t{record['sha256']}\n"
                                        for name, record in parts).encode())
        return {"sha256": digest.hexdigest(), "images": sum(r["images"] for _, r in parts),
                "replicates": len(parts)}
    entries = [e for e in discover_entries(run) if e.has_split("test") or e.has_split("val")]
    record = check_entries(run, entries)
    if record is None:
        raise RunDirError(f"{run.root}: no test predictions (models/*/predictions_test.csv); "
                          "run the benchmark first or pass the right --out")
    return record


def save_baseline(path: str | os.PathLike, run: RunDir,
                  tolerance: float = TOLERANCE) -> dict[str, Any]:
    """Write the run's headline metrics and test-set identity to `path` as a baseline (NaN
    metrics left out).

    Args:
        path: destination JSON file (checked to be writable before anything is computed).
        run: the run directory.
        tolerance: default allowed drop recorded in the file.

    Returns:
        The written baseline object.

    Raises:
        FileSystemError: `path` is a folder or cannot be written.
        RunDirError, IntegrityError, PredictionFileError: see `run_metrics`, `run_test_set`.
    """
    check_writable_file(path, "--save-baseline FILE")
    metrics = {k: v for k, v in sorted(run_metrics(run).items()) if not math.isnan(v)}
    baseline: dict[str, Any] = {"tolerance": tolerance, "metrics": metrics, "tolerances": {},
                                TEST_SET_KEY: run_test_set(run)}
    if run.is_grid:
        names = [replicate.root.name for _, _, replicate in run.replicates()]
        baseline["aggregate"] = f"mean over {len(names)} replicates: {', '.join(names)}"
    atomic_write_json(path, baseline)
    return baseline


def check_test_set(baseline: dict[str, Any], current: dict[str, Any], *,
                   allow_different: bool = False, source: str = "the baseline",
                   run: str = "the run") -> None:
    """Refuse a baseline measured on another test set than the run's.

    Args:
        baseline: a `load_baseline` result.
        current: `run_test_set` of the run.
        allow_different: --allow-different-test-set: warn instead of refusing.
        source, run: the baseline file and the run directory, for the message.

    Raises:
        BaselineError: the identities differ and not `allow_different`.
    """
    recorded = baseline.get(TEST_SET_KEY)
    if recorded is None:
        log.warning("%s records no test set (it predates test-set identities), so the metrics "
                    "are compared without knowing they were measured on the same images; "
                    "recreate it with --save-baseline to record one", source)
        return
    if recorded.get("sha256") == current.get("sha256"):
        return
    message = (f"{source} was measured on another test set ({describe_test_set(recorded)}) "
               f"than {run} ({describe_test_set(current)}): its metrics say nothing about this "
               "run. Recreate the baseline with --save-baseline, or pass "
               "--allow-different-test-set to compare anyway")
    if not allow_different:
        raise BaselineError(message)
    log.warning("%s (--allow-different-test-set: comparing anyway)", message.split(". ")[0])


def load_baseline(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a baseline file.

    Args:
        path: the JSON file.

    Returns:
        {"tolerance": float | None, "metrics": {key: float}, "tolerances": {name: float},
        "test_set": {"sha256", ...} or None}.

    Raises:
        BaselineError: missing file, invalid JSON, or a value of the wrong type or shape.
    """
    path = Path(path)
    fix = "recreate it with --save-baseline FILE"
    if not path.is_file():
        raise BaselineError(f"{path}: baseline file not found; {fix}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BaselineError(f"{path}: not valid JSON ({exc}); {fix}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
        raise BaselineError(f"{path}: expected a JSON object with a \"metrics\" mapping; {fix}")
    if not data["metrics"]:
        raise BaselineError(f"{path}: \"metrics\" is empty, nothing to check; {fix}")
    for key, value in data["metrics"].items():
        if len(key.split("/")) != 3 or not all(key.split("/")):
            raise BaselineError(
                f"{path}: metric key {key!r} is not \"<entry>/<split>/<metric>\"; {fix}"
            )
        if not _is_number(value):
            raise BaselineError(f"{path}: metric {key!r} has value {value!r}, not a number; {fix}")
    tolerance = data.get("tolerance")
    if tolerance is not None and not _valid_tolerance(tolerance):
        raise BaselineError(f"{path}: \"tolerance\" is {tolerance!r}; expected a number >= 0")
    tolerances = data.get("tolerances", {}) or {}
    if not isinstance(tolerances, dict):
        raise BaselineError(f"{path}: \"tolerances\" must map metric names to numbers")
    for key, value in tolerances.items():
        if not _valid_tolerance(value):
            raise BaselineError(
                f"{path}: tolerance of {key!r} is {value!r}; expected a number >= 0"
            )
    test_set = data.get(TEST_SET_KEY)
    if test_set is not None and not (isinstance(test_set, dict)
                                     and isinstance(test_set.get("sha256"), str)):
        raise BaselineError(f"{path}: \"{TEST_SET_KEY}\" must be an object with a \"sha256\" "
                            f"string; {fix}")
    return {"tolerance": tolerance, "metrics": data["metrics"], "tolerances": tolerances,
            TEST_SET_KEY: test_set}


def check_run(
    baseline: dict[str, Any], current: dict[str, float], default_tolerance: float = TOLERANCE
) -> list[Failure]:
    """Every baseline metric that is missing from `current` or worse by more than its tolerance.

    Args:
        baseline: a `load_baseline` result.
        current: `run_metrics` of the run.
        default_tolerance: --tolerance, used when the file sets none.

    Returns:
        The failures, in the baseline's key order (empty: the check passed).
    """
    file_default = baseline.get("tolerance")
    default = float(file_default) if file_default is not None else default_tolerance
    tolerances = baseline.get("tolerances", {})
    failures = []
    for key, expected in baseline["metrics"].items():
        metric = key.split("/")[2]
        tolerance = float(tolerances.get(key, tolerances.get(metric, default)))
        value = current.get(key, math.nan)
        if math.isnan(value):
            failures.append(Failure(key, float(expected), math.nan, tolerance, "missing"))
            continue
        worse_by = value - expected if metric in LOWER_IS_BETTER else expected - value
        if worse_by > tolerance + 1e-12:
            failures.append(Failure(key, float(expected), value, tolerance, "worse"))
    return failures


def _is_number(value: Any) -> bool:
    return math.isfinite(as_float(value))


def _valid_tolerance(value: Any) -> bool:
    return _is_number(value) and value >= 0
