"""The report of a single run directory: metrics.json per entry, results.csv, the ISIC 2018
exports, the paired statistics (comparisons.csv), the figures and report.md. Needs no
TensorFlow/Keras. reports.build picks this or the grid's report (reports.grid)."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Collection
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

from core.atomic import atomic_write_json_if_changed, atomic_write_text, read_json_object
from core.calibration import CalibrationPrior
from core.defaults import BOOTSTRAP, RANK_BY, REFERENCE, SEED
from core.entry_metrics import FIT_FILE, METRICS_FILE, entry_metrics_record
from core.errors import RunDirError
from core.metrics import LOWER_IS_BETTER, calibration_probabilities
from core.numbers import as_float, as_interval
from core.predictions import Predictions, export_isic
from core.rundir import RunDir
from reports.calibration_figures import scaled_reliability_job, scaled_reliability_path
from reports.cleanup import remove_stale_files
from reports.comparisons import (
    ComparisonRow,
    Contender,
    compare_entries,
    comparison_metrics,
    write_comparisons_csv,
)
from reports.context import read_context
from reports.entry_groups import figure_entries
from reports.integrity import check_entries, check_writable_outputs
from reports.markdown import Figures, ReportData, render_report
from reports.options import ReportError, check_rank_by
from reports.results import Entry, discover_entries, write_results_csv

log = logging.getLogger(__name__)

HISTORY_FILE = "history.csv"


def check_reference(reference: str, entries: list[Entry], run: RunDir) -> None:
    """Raise ReportError listing the entries when `reference` has no test predictions.

    Args:
        reference: the --reference name.
        entries: the run's entries.
        run: the run directory (named in the message).
    """
    tested = [e.name for e in entries if e.has_split("test")]
    if reference not in tested:
        raise ReportError(
            f"--reference {reference!r} is not an entry with test predictions in {run.root}; "
            f"choose one of: {', '.join(tested) or '(none)'}"
        )


def rank_entries(entries: list[Entry], rank_by: str) -> list[Entry]:
    """Entries ordered best first by their test `rank_by` (lower first for losses); NaN last."""
    sign = 1.0 if rank_by in LOWER_IS_BETTER else -1.0

    def key(entry: Entry) -> tuple[int, float, str]:
        value = as_float(entry.split_metrics("test").get(rank_by))
        if math.isnan(value):
            return (1, 0.0, entry.name)
        return (0, sign * value, entry.name)

    return sorted(entries, key=key)


def build_single_report(
    run_dir: str | os.PathLike,
    rank_by: str = RANK_BY,
    n_resamples: int = BOOTSTRAP,
    seed: int = SEED,
    processes: int | None = None,
    figures: bool = True,
    reference: str | None = None,
) -> Path:
    """Regenerate metrics.json of every entry, results.csv, comparisons.csv, ISIC exports, figures
    and report.md of a single run directory.

    Every input is read and checked, and every metric computed, before the first file is
    written (`check_single_report`), so a refusal leaves the run directory as it was. Figures
    and ISIC exports of entries no longer in the run are removed.

    Args:
        run_dir: the run directory (needs at least one models/*/ or ensembles/*/ prediction file).
        rank_by: metric that orders the ranking.
        n_resamples: lesion-bootstrap resamples for every interval.
        seed: bootstrap seed.
        processes: worker processes for the figures (default: up to 4, by CPU count; 1 = serial).
        figures: draw the figures (False: report.md says they were skipped; for quick checks).
        reference: the entry every other is compared with (None: core.defaults.REFERENCE). When
            the run lacks the default reference the comparisons are skipped and the report says
            so; any other name must be an entry with test predictions.

    Returns:
        The path of report.md.

    Raises:
        ReportError: unknown `rank_by`, or a `reference` other than the default without test
            predictions.
        RunDirError: the directory is missing or holds no prediction file.
        PredictionFileError: a prediction file breaks the contract.
        IntegrityError: a stale ensemble, leaked lesions, entries on different test sets
            (reports.integrity).
        FileSystemError: a folder of the run cannot be written.
    """
    run = RunDir(run_dir)
    entries, with_predictions = check_single_report(run, rank_by, reference, figures=figures)
    reference = reference or REFERENCE
    records = {e.name: entry_metrics_record(e.directory, {"kind": e.kind}, n_resamples, seed)
               for e in with_predictions}
    for entry in with_predictions:
        entry.metrics = records[entry.name]
    tested = [e for e in entries if e.has_split("test")]
    ranked = rank_entries(tested, rank_by)
    failed = [e for e in entries if not e.has_split("test")]
    comparisons = run_comparisons(ranked, reference, rank_by, n_resamples, seed)

    for entry in with_predictions:  # every check passed: write
        atomic_write_json_if_changed(entry.directory / METRICS_FILE, records[entry.name])
    write_results_csv(run)
    isic = _export_isic(run, ranked)
    comparisons_csv = write_comparisons_csv(run.comparisons_csv, comparisons or [])
    drawn = (make_figures(run, ranked, rank_by, processes=processes, reference=reference)
             if figures else None)
    if drawn is not None:
        remove_stale_files(run.figures_dir, "*.png", _figure_paths(drawn))
    data = ReportData(
        run=run, context=read_context(run), ranked=ranked, failed=failed, rank_by=rank_by,
        comparisons=comparisons, figures=drawn, fits=_fits(ranked), isic_exports=isic,
        n_resamples=n_resamples, seed=seed, reference=reference, comparisons_csv=comparisons_csv,
    )
    atomic_write_text(run.report_md, render_report(data))
    log.info("report written to %s", run.report_md)
    return run.report_md


def check_single_report(
    run: RunDir, rank_by: str = RANK_BY, reference: str | None = None,
    replaced: Collection[str] = (), figures: bool = True,
) -> tuple[list[Entry], list[Entry]]:
    """Every check of `build_single_report` before it writes, without writing anything.

    Args:
        run: the run directory.
        rank_by: the ranking metric.
        reference: the --reference (None: the default).
        replaced: ensembles the caller rewrites first (pipeline.report_action refits stale
            ones): not checked for staleness.
        figures: whether figures/ will be written.

    Returns:
        (every entry, the entries with prediction files), prediction files read and checked.

    Raises:
        See `build_single_report`.
    """
    check_rank_by(rank_by)
    if not run.root.is_dir():
        raise RunDirError(f"{run.root}: no such run directory; pass the --out of a finished run")
    entries = discover_entries(run)
    with_predictions = [e for e in entries if e.has_split("test") or e.has_split("val")]
    if not with_predictions:
        raise RunDirError(
            f"{run.root}: no prediction files (expected models/<name>/predictions_test.csv or "
            "ensembles/<name>/predictions_test.csv); train with --all or copy a finished run here"
        )
    if (reference or REFERENCE) != REFERENCE:  # the default may be absent (--models without it)
        check_reference(reference, entries, run)
    check_entries(run, with_predictions, replaced)
    check_writable_outputs(run, with_predictions, figures)
    return entries, with_predictions


def _figure_paths(figures: Figures) -> list[Path]:
    single = [figures.ranking, figures.macro_roc, figures.reliability, figures.ranking_all,
              figures.macro_roc_all]
    if figures.reliability is not None:  # the diagram after temperature scaling goes with it
        single.append(scaled_reliability_path(figures.reliability.parent))
    per_entry = [*figures.roc.values(), *figures.confusion.values(), *figures.history.values()]
    return [p for p in (*single, *per_entry) if p is not None]


def _export_isic(run: RunDir, ranked: list[Entry]) -> dict[str, Path]:
    """Write every ranked entry's ISIC 2018 export; remove the exports of entries gone."""
    exports = {}
    for entry in ranked:
        path = run.isic_export_file(entry.name)
        export_isic(path, entry.predictions("test"), has_probabilities(entry))
        exports[entry.name] = path
    remove_stale_files(run.isic_export_dir, "*.csv", exports.values())
    return exports


def run_comparisons(
    ranked: list[Entry], reference: str, rank_by: str, n_resamples: int, seed: int
) -> list[ComparisonRow] | None:
    """The reference against every other ranked entry (reports.comparisons), or None without it.

    Args:
        ranked: entries with test predictions (metrics.json loaded), best first.
        reference: the reference entry's name.
        rank_by: the ranking metric (compared too when the lesion bootstrap can compute it).
        n_resamples, seed: the lesion bootstrap.

    Returns:
        The comparisons.csv rows, ordered like `ranked`; None when `reference` is not ranked.
    """
    by_name = {e.name: e for e in ranked}
    if reference not in by_name:
        return None
    others = [contender(e) for e in ranked if e.name != reference]
    return compare_entries(contender(by_name[reference]), others, comparison_metrics(rank_by),
                           n_resamples=n_resamples, seed=seed)


def contender(entry: Entry) -> Contender:
    """The entry's test predictions with the conventions its metrics.json records."""
    prior = CalibrationPrior.from_json(entry.metrics.get("calibration_prior"))
    return Contender(entry.name, entry.predictions("test"), has_probabilities(entry),
                     None if prior is None else prior.vector)


def has_probabilities(entry: Entry) -> bool:
    """False when the entry's metrics.json says "probabilities": false (hard voting)."""
    return entry.metrics.get("probabilities") is not False


def calibration_view(entry: Entry) -> Predictions:
    """The entry's test predictions with probabilities prior-shifted as its metrics.json records
    (what the reliability diagram shows); the prediction is then the argmax."""
    preds = entry.predictions("test")
    prior = CalibrationPrior.from_json(entry.metrics.get("calibration_prior"))
    proba = calibration_probabilities(preds.proba, None if prior is None else prior.vector)
    return Predictions(image_id=preds.image_id, lesion_id=preds.lesion_id, label=preds.label,
                       proba=proba, prediction=None, source=preds.source)


def _fits(ranked: list[Entry]) -> dict[str, dict[str, Any]]:
    fits = {}
    for entry in ranked:
        if entry.kind != "ensemble":
            continue
        fit = read_json_object(entry.directory / FIT_FILE,
                               "its ensemble is shown without fit details")
        if fit:
            fits[entry.name] = fit
    return fits


# ---------------------------------------------------------------------------------------------
# figures


def make_figures(
    run: RunDir, ranked: list[Entry], rank_by: str, processes: int | None = None,
    reference: str = REFERENCE,
) -> Figures:
    """Draw every figure of the report into run/figures/.

    Entries without probabilities (hard voting) get no ROC curve and no reliability diagram;
    reliability diagrams show the prior-shifted probabilities (core.calibration). Per-entry
    figures are `<kind>_<stem>.png` (reports.figures.figure_name); the run-wide ones
    (ranking.png, macro_roc.png, reliability.png; ranking_all.png and macro_roc_all.png when the
    first two show only the best entries and the reference: `_comparison_figures`) start with no
    per-entry kind, so no entry name can give one of their names.

    Args:
        run: the run directory.
        ranked: entries with test predictions, best first.
        rank_by: the ranking metric (for the ranking chart).
        processes: worker processes (None: up to 4 by CPU count; 1: in this process).
        reference: the entry drawn in bold in the ranking chart.

    Returns:
        The figure paths.
    """
    from reports.figures import figure_name  # matplotlib and seaborn: imported only to draw

    folder = run.figures_dir
    folder.mkdir(parents=True, exist_ok=True)
    figures = Figures()
    jobs: list[tuple[str, tuple]] = []
    if not ranked:
        return figures

    figures.ranking = folder / "ranking.png"
    for chosen, path, title in _comparison_figures(figures, "ranking", ranked, reference,
                                                   f"Ranking by {rank_by}"):
        jobs.append(("ranking_chart", ([_ranking_row(e, rank_by) for e in chosen], rank_by, path,
                                       reference, title)))

    test = {e.name: e.predictions("test") for e in ranked}
    scored = [e for e in ranked if has_probabilities(e)]
    if scored:
        figures.macro_roc = folder / "macro_roc.png"
        for chosen, path, title in _comparison_figures(
                figures, "macro_roc", scored, reference, "Macro-average one-vs-rest ROC, test split"):
            draw = "macro_roc_panels" if path == figures.macro_roc_all else "macro_roc_comparison"
            jobs.append((draw, ([(e.name, e.kind, test[e.name],
                                  as_float(e.split_metrics("test").get("macro_auc")))
                                 for e in chosen], path, title, reference)))
        figures.reliability = folder / "reliability.png"
        jobs.append(("reliability_grid", (
            [(e.name, calibration_view(e), as_float(e.split_metrics("test").get("ece")))
             for e in scored], figures.reliability,
            "Reliability diagrams, test split (probabilities mapped to the training class "
            "frequencies)")))
        jobs.append(scaled_reliability_job(folder, scored))  # after temperature scaling
    for entry in ranked:
        if has_probabilities(entry):
            roc = folder / figure_name("roc", entry.name)
            figures.roc[entry.name] = roc
            jobs.append(("roc_per_class", (test[entry.name],
                                            f"{entry.name}: one-vs-rest ROC, test", roc)))
        confusion = folder / figure_name("confusion", entry.name)
        figures.confusion[entry.name] = confusion
        jobs.append(("confusion_matrices", (test[entry.name], f"{entry.name}: confusion matrix, "
                                            "test", confusion)))
    for entry in ranked:
        history = _read_history(entry.directory / HISTORY_FILE)
        if history is not None:
            path = folder / figure_name("history", entry.name)
            figures.history[entry.name] = path
            jobs.append(("training_curves", (history, f"{entry.name}: training curves", path)))

    _run_jobs(jobs, processes)
    return figures


def _ranking_row(entry: Entry, rank_by: str) -> dict[str, Any]:
    m = entry.split_metrics("test")
    low, high = as_interval(m.get(f"{rank_by}_ci"))
    return {"entry": entry.name, "kind": entry.kind, "value": as_float(m.get(rank_by)),
            "low": low, "high": high}


def _comparison_figures(
    figures: Figures, key: str, entries: list[Entry], reference: str, title: str,
) -> list[tuple[list[Entry], Path, str]]:
    """(entries, path, title) of comparison figure `key` (its path already set): the best
    `figures.top` entries plus the reference; when that leaves some out, also every entry in
    `<key>_all.png` (set as `figures.<key>_all`). Records who each figure shows in
    `figures.shown`."""
    path: Path = getattr(figures, key)
    chosen = figure_entries(entries, reference, figures.top)
    figures.shown[key] = [e.name for e in chosen]
    if len(chosen) == len(entries):
        return [(entries, path, title)]
    everyone = path.with_name(f"{key}_all.png")
    setattr(figures, f"{key}_all", everyone)
    figures.shown[f"{key}_all"] = [e.name for e in entries]
    return [(chosen, path, f"{title}: the best {figures.top}"
             + (" and the reference" if len(chosen) > figures.top else "")),
            (entries, everyone, f"{title}: all {len(entries)} entries")]


def _read_history(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        log.warning("%s is unreadable (%s); no training curves for it", path, exc)
        return None
    return frame if len(frame) else None


def _draw(name: str, args: tuple) -> Path:
    from reports import figures  # matplotlib and seaborn: imported only to draw

    return getattr(figures, name)(*args)


def _run_jobs(jobs: list[tuple[str, tuple]], processes: int | None) -> None:
    if processes is None:
        processes = min(4, os.cpu_count() or 1)
    processes = max(1, min(processes, len(jobs)))
    if processes == 1:
        for name, args in jobs:
            _draw(name, args)
        return
    with ProcessPoolExecutor(max_workers=processes) as pool:
        futures = [pool.submit(_draw, name, args) for name, args in jobs]
        for future in futures:
            future.result()

