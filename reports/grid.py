"""The report of a grid run (`--seeds` and/or `--folds K`): every entry repeated per (fold, seed).

Files written at the grid root (each replicate keeps its own metrics.json and results.csv):

- jobs.csv: one row per job and split: entry, kind, fold, seed, replicate, split, status, error,
  then the summary metrics of reports.metrics (NaN for a job that failed, went NaN or is missing).
- results.csv: one row per entry and split: entry, kind, split, n_jobs (ok jobs), n_failed (the
  others), <metric>_mean and <metric>_sd (ddof=1) for every summary metric but the counts, then
  <metric>_min and <metric>_max of balanced accuracy and of the ranking metric.
- figures/jobs_<rank_by>.png: the per-job values of the ranking metric per entry (box + points).
- report.md: 1. Grid (folds, seeds, jobs, failed jobs with their error), 2. Ranking by the mean,
  3. Aggregated metrics (mean ± sd, n), 4. Per-job values (entry x replicate), 5. InceptionResNetV2
  vs the rest paired over jobs (t-test, Wilcoxon, pooled McNemar, Holm-adjusted), 6. Figures,
  Reproducibility.

No TensorFlow/Keras. Per-replicate metrics.json files are recomputed only when stale, with few
bootstrap resamples (`REPLICATE_RESAMPLES`): the grid report uses point estimates per job.
"""

from __future__ import annotations

import io
import itertools
import logging
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd

from data_utils.atomic import atomic_write_bytes, atomic_write_csv, atomic_write_text
from data_utils.errors import RunDirError
from data_utils.predictions import read_predictions
from data_utils.rundir import SPLITS, RunDir, replicate_name
from reports.aggregate import (
    AGGREGATE_METRICS,
    OK,
    PairedTest,
    aggregate_jobs,
    better,
    complete_grid,
    job_rows,
    jobs_frame,
    paired_tests,
    pooled_mcnemar,
    rank_aggregate,
    shared_jobs,
)
from reports.build import figure_name
from reports.context import NOT_RECORDED, RunContext, read_context
from reports.entry import METRICS_FILE, read_entry_metrics, write_entry_metrics
from reports.markdown import fmt, fmt_p, licence_section, one_line, table
from reports.metrics import LOWER_IS_BETTER, SUMMARY_METRICS, compute_metrics, metric_names
from reports.references import DISCLAIMER
from reports.results import Entry, discover_entries, write_results_csv
from reports.stats import ALPHA, REFERENCE_ENTRY

log = logging.getLogger(__name__)

REPLICATE_RESAMPLES = 100
DEFAULT_RANK_BY = "balanced_accuracy"
# Metrics shown in the aggregated tables of report.md, with their column titles.
SHOWN_METRICS = {
    "balanced_accuracy": "Balanced accuracy", "accuracy": "Accuracy", "macro_f1": "Macro F1",
    "weighted_f1": "Weighted F1", "macro_auc": "Macro AUC", "log_loss": "Log loss",
    "brier": "Brier", "ece": "ECE", "mel_sens_at_spec80": "Mel sens. @ 80 % spec.",
}


@dataclass
class GridLayout:
    """The replicates of a grid run.

    Attributes:
        folds: run.json's "folds" (K) or None (one split, repeated seeds).
        seeds: run.json's "seeds", else the seeds of the replicate folders.
        found: (fold, seed, RunDir) of every replicate folder, by fold then seed.
        missing: (fold, seed) the configuration expects but no folder holds.
    """

    folds: int | None
    seeds: list[int]
    found: list[tuple[int, int, RunDir]]
    missing: list[tuple[int, int]] = field(default_factory=list)

    @property
    def replicates(self) -> list[tuple[int, int]]:
        """Every (fold, seed) of the grid: found and missing, sorted."""
        return sorted({(f, s) for f, s, _ in self.found} | set(self.missing))


@dataclass
class GridReport:
    """Everything the grid's report.md shows.

    Attributes:
        run: the grid root.
        context: its run.json / dataset.json facts.
        layout: the replicates.
        jobs: the completed job table (jobs.csv).
        aggregated: per entry and split statistics (all columns of `aggregate_jobs`).
        ranked: the test rows of `aggregated`, best first, with "rank".
        tests: InceptionResNetV2 vs each other entry; None when it has no job in the grid.
        rank_by: the ranking metric.
        figure: the per-job figure (None: not drawn).
    """

    run: RunDir
    context: RunContext
    layout: GridLayout
    jobs: pd.DataFrame
    aggregated: pd.DataFrame
    ranked: pd.DataFrame
    tests: list[PairedTest] | None
    rank_by: str
    figure: Path | None = None


# ---------------------------------------------------------------------------------------------
# collecting


def grid_layout(run: RunDir) -> GridLayout:
    """The grid's replicates: the folders found and the ones run.json's config expects.

    Args:
        run: the grid root.

    Returns:
        The layout. Expected replicates: folds 0..K-1 (K = config "folds"; without folds, the
        folds of the folders found, else 0) times config "seeds" (else the seeds found).

    Raises:
        RunDirError: the root is missing or holds no replicates/fold<f>-seed<s>/ folder.
    """
    if not run.root.is_dir():
        raise RunDirError(f"{run.root}: no such run directory; pass the --out of a finished run")
    found = run.replicates()
    if not found:
        raise RunDirError(
            f"{run.root}: a grid run (it has {run.replicates_dir.name}/) without any replicate "
            "folder fold<f>-seed<s>/; train it with --seeds/--folds or remove the empty folder"
        )
    config = read_context(run).config
    folds = config.get("folds")
    folds = int(folds) if isinstance(folds, int) and not isinstance(folds, bool) else None
    seeds = config.get("seeds")
    if isinstance(seeds, list) and seeds and all(isinstance(s, int) for s in seeds):
        seeds = [int(s) for s in seeds]
    else:
        seeds = sorted({s for _, s, _ in found})
    fold_ids = list(range(folds)) if folds else sorted({f for f, _, _ in found}) or [0]
    present = {(f, s) for f, s, _ in found}
    missing = [(f, s) for f, s in itertools.product(fold_ids, seeds) if (f, s) not in present]
    return GridLayout(folds=folds, seeds=seeds, found=found, missing=missing)


def entry_metrics_current(entry_dir: Path) -> bool:
    """Whether an entry's metrics.json is up to date with its prediction files.

    Args:
        entry_dir: models/<name> or ensembles/<name>.

    Returns:
        True when metrics.json exists, is not older than any prediction file, and holds every
        metric of `metric_names()` for each split that has predictions (an entry without
        prediction files, e.g. a failed one, is current when it has metrics.json).
    """
    path = Path(entry_dir) / METRICS_FILE
    if not path.is_file():
        return False
    data = read_entry_metrics(entry_dir)
    if not data:
        return False
    stamp = path.stat().st_mtime_ns
    wanted = set(metric_names())
    for split in SPLITS:
        predictions = RunDir.predictions_file(Path(entry_dir), split)
        if not predictions.is_file():
            continue
        metrics = data.get(split)
        if not isinstance(metrics, dict) or not wanted <= set(metrics):
            return False
        if predictions.stat().st_mtime_ns > stamp:
            return False
    return True


def entry_metrics_match(entry_dir: Path) -> bool:
    """Whether metrics.json holds the metrics its prediction files give now (point estimates).

    For prediction files rewritten with the same content (a deterministic rerun): metrics.json is
    then older than them but still right, and keeps its intervals.

    Args:
        entry_dir: models/<name> or ensembles/<name>.

    Returns:
        True when every split with a prediction file has, in metrics.json, every metric of
        `compute_metrics` equal to the recomputed one (NaN equal to NaN or null).

    Raises:
        PredictionFileError: a prediction file breaks the contract.
    """
    data = read_entry_metrics(entry_dir)
    for split in SPLITS:
        path = RunDir.predictions_file(Path(entry_dir), split)
        if not path.is_file():
            continue
        stored = data.get(split)
        if not isinstance(stored, dict):
            return False
        for name, value in compute_metrics(read_predictions(path)).items():
            old = stored.get(name)
            old = math.nan if old is None else old
            if not isinstance(old, (int, float)) or isinstance(old, bool):
                return False
            if math.isnan(value) != math.isnan(old):
                return False
            if not math.isnan(value) and not math.isclose(value, old, rel_tol=1e-9,
                                                          abs_tol=1e-12):
                return False
    return True


def refresh_replicate(replicate: RunDir, n_resamples: int = REPLICATE_RESAMPLES,
                      seed: int = 0) -> list[Entry]:
    """Bring a replicate's metrics.json files up to date and rewrite its results.csv.

    A metrics.json is recomputed only when it is stale (`entry_metrics_current`) and its values
    differ from those of the prediction files (`entry_metrics_match`).

    Args:
        replicate: one replicate's run directory.
        n_resamples: bootstrap resamples for the intervals of a recomputed metrics.json.
        seed: bootstrap seed.

    Returns:
        The replicate's entries with their metrics loaded.

    Raises:
        PredictionFileError: a prediction file breaks the contract.
    """
    entries = discover_entries(replicate)
    for entry in entries:
        has_predictions = entry.has_split("test") or entry.has_split("val")
        if (has_predictions and not entry_metrics_current(entry.directory)
                and not entry_metrics_match(entry.directory)):
            write_entry_metrics(entry.directory, n_resamples=n_resamples, seed=seed)
            entry.reload_metrics()
    write_results_csv(replicate)
    return entries


def collect_jobs(
    run: RunDir, rank_by: str = DEFAULT_RANK_BY, n_resamples: int = REPLICATE_RESAMPLES,
    seed: int = 0,
) -> tuple[GridLayout, pd.DataFrame]:
    """Refresh every replicate and build the completed job table.

    Args:
        run: the grid root.
        rank_by: the ranking metric (added as a column when it is not a summary metric).
        n_resamples: bootstrap resamples for a recomputed replicate metrics.json (at most
            `REPLICATE_RESAMPLES` are used).
        seed: bootstrap seed.

    Returns:
        (layout, jobs): the replicates and the job table, with a "missing" row for every entry of
        the grid that a replicate lacks (missing replicates included).

    Raises:
        RunDirError: no replicate, or no entry in any replicate.
    """
    layout = grid_layout(run)
    extra = [] if rank_by in SUMMARY_METRICS else [rank_by]
    rows = []
    for fold, seed_, replicate in layout.found:
        entries = refresh_replicate(replicate, min(n_resamples, REPLICATE_RESAMPLES), seed)
        rows += job_rows(fold, seed_, entries, extra)
    if not rows:
        raise RunDirError(
            f"{run.root}: no replicate holds a result (expected {run.replicates_dir.name}/"
            "fold<f>-seed<s>/models/<name>/predictions_test.csv or metrics.json); train the grid "
            "first"
        )
    return layout, complete_grid(jobs_frame(rows), layout.replicates)


def results_frame(aggregated: pd.DataFrame, rank_by: str = DEFAULT_RANK_BY) -> pd.DataFrame:
    """The grid's results.csv from `aggregate_jobs` output.

    Args:
        aggregated: per entry and split statistics.
        rank_by: the ranking metric (its min/max are kept; also its mean/sd when it is not a
            summary metric). Rows follow the test ranking, val before test per entry.

    Returns:
        Columns entry, kind, split, n_jobs, n_failed, <metric>_mean, <metric>_sd for the summary
        metrics (and rank_by), then <metric>_min, <metric>_max for balanced accuracy and rank_by.
    """
    means = list(dict.fromkeys([*AGGREGATE_METRICS, rank_by]))
    ranges = list(dict.fromkeys([DEFAULT_RANK_BY, rank_by]))
    columns = ["entry", "kind", "split", "n_jobs", "n_failed",
               *(f"{m}_{s}" for m in means for s in ("mean", "sd")),
               *(f"{m}_{s}" for m in ranges for s in ("min", "max"))]
    order = list(rank_aggregate(aggregated, rank_by)["entry"])
    order += [e for e in dict.fromkeys(aggregated["entry"]) if e not in order]
    split_order = {s: i for i, s in enumerate(SPLITS)}
    frame = aggregated.assign(
        _entry=aggregated["entry"].map({e: i for i, e in enumerate(order)}),
        _split=aggregated["split"].map(split_order),
    ).sort_values(["_entry", "_split"], kind="stable")
    return frame.reindex(columns=columns).reset_index(drop=True)


def write_grid_results(
    run: RunDir, rank_by: str = DEFAULT_RANK_BY, n_resamples: int = REPLICATE_RESAMPLES,
    seed: int = 0,
) -> tuple[GridLayout, pd.DataFrame, pd.DataFrame]:
    """Refresh the replicates, then write the grid's jobs.csv and results.csv atomically.

    Args:
        run: the grid root.
        rank_by: the ranking metric.
        n_resamples: see `collect_jobs`.
        seed: bootstrap seed.

    Returns:
        (layout, jobs, aggregated).

    Raises:
        RunDirError: see `collect_jobs`.
    """
    layout, jobs = collect_jobs(run, rank_by, n_resamples, seed)
    aggregated = aggregate_jobs(jobs, list(dict.fromkeys([*AGGREGATE_METRICS, rank_by])))
    atomic_write_csv(run.jobs_csv, jobs)
    atomic_write_csv(run.results_csv, results_frame(aggregated, rank_by))
    return layout, jobs, aggregated


def write_grid_results_csv(run: RunDir) -> Path:
    """`write_results_csv` on a grid root: jobs.csv and the aggregated results.csv.

    Args:
        run: the grid root.

    Returns:
        The path of results.csv.
    """
    write_grid_results(run)
    return run.results_csv


def reference_tests(run: RunDir, jobs: pd.DataFrame, rank_by: str) -> list[PairedTest] | None:
    """InceptionResNetV2 against every other entry, paired over jobs, with pooled McNemar.

    Args:
        run: the grid root (the replicates' test predictions are read for McNemar).
        jobs: the job table.
        rank_by: the tested metric.

    Returns:
        The paired tests, or None when the reference entry has no job in the grid.
    """
    if REFERENCE_ENTRY not in set(jobs["entry"]):
        return None
    mcnemar = {}
    for other in dict.fromkeys(jobs["entry"]):
        if other == REFERENCE_ENTRY:
            continue
        pairs = []
        for fold, seed in shared_jobs(jobs, other, rank_by):
            replicate = run.replicate(fold, seed)
            files = [_test_predictions(replicate, name) for name in (REFERENCE_ENTRY, other)]
            if all(f is not None for f in files):
                pairs.append((read_predictions(files[0]), read_predictions(files[1])))
        mcnemar[other] = pooled_mcnemar(pairs)
    return paired_tests(jobs, rank_by, mcnemar=mcnemar)


def _test_predictions(replicate: RunDir, name: str) -> Path | None:
    for folder in (replicate.model_dir(name), replicate.ensemble_dir(name)):
        path = RunDir.predictions_file(folder, "test")
        if path.is_file():
            return path
    return None


# ---------------------------------------------------------------------------------------------
# the report


def build_grid_report(
    run_dir: str | os.PathLike,
    rank_by: str = DEFAULT_RANK_BY,
    n_resamples: int = 1000,
    seed: int = 0,
    figures: bool = True,
) -> Path:
    """Refresh the replicates, write jobs.csv, results.csv, the figure and report.md of a grid.

    Args:
        run_dir: the grid root (holding replicates/fold<f>-seed<s>/).
        rank_by: the ranking metric.
        n_resamples: bootstrap resamples for a stale replicate metrics.json (capped at
            `REPLICATE_RESAMPLES`; the grid report itself uses no bootstrap).
        seed: bootstrap seed.
        figures: draw the per-job figure.

    Returns:
        The path of report.md.

    Raises:
        ReportError: unknown `rank_by`.
        RunDirError: no replicate, or no result in any replicate.
        PredictionFileError: a prediction file breaks the contract.
    """
    from reports.build import check_rank_by

    check_rank_by(rank_by)
    run = RunDir(run_dir)
    layout, jobs, aggregated = write_grid_results(run, rank_by, n_resamples, seed)
    ranked = rank_aggregate(aggregated, rank_by)
    tests = reference_tests(run, jobs, rank_by)
    if tests:
        position = {entry: i for i, entry in enumerate(ranked["entry"])}
        tests.sort(key=lambda t: position.get(t.other, len(position)))
    report = GridReport(
        run=run, context=read_context(run), layout=layout, jobs=jobs, aggregated=aggregated,
        ranked=ranked, tests=tests, rank_by=rank_by,
    )
    if figures:
        order = [e for e, r in zip(ranked["entry"], ranked["rank"], strict=True)
                 if not math.isnan(r)]
        if order:
            path = run.figures_dir / figure_name("jobs", rank_by)
            report.figure = jobs_chart(jobs, order, rank_by, path, highlight=REFERENCE_ENTRY)
    atomic_write_text(run.report_md, render_grid_report(report))
    log.info("grid report written to %s", run.report_md)
    return run.report_md


def jobs_chart(jobs: pd.DataFrame, order: list[str], rank_by: str, path: Path,
               highlight: str | None = None) -> Path:
    """Per-job test values of `rank_by`, one row per entry: a box over jobs and a point per job.

    Args:
        jobs: the job table (ok test rows are drawn; points coloured by fold).
        order: the entries top to bottom (best first).
        rank_by: the metric.
        path: destination PNG.
        highlight: an entry whose label is drawn in bold.

    Returns:
        `path`.
    """
    from reports.figures import DPI, plt, sns  # matplotlib on the Agg backend

    rows = jobs[(jobs["split"] == "test") & (jobs["status"] == OK) & jobs["entry"].isin(order)]
    data = pd.DataFrame({"entry": rows["entry"], "value": rows[rank_by].astype(float),
                         "fold": "fold " + rows["fold"].astype(str)}).dropna(subset=["value"])
    style = {"axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
             "axes.spines.right": False}
    with plt.rc_context(style), warnings.catch_warnings():
        # seaborn 0.13 passes matplotlib's deprecated `vert` to boxplot
        warnings.filterwarnings("ignore", message=".*vert: bool was deprecated")
        fig, ax = plt.subplots(figsize=(7.0, 0.45 * len(order) + 1.5))
        sns.boxplot(data=data, x="value", y="entry", order=order, color="#dddddd",
                    showfliers=False, width=0.55, ax=ax)
        sns.stripplot(data=data, x="value", y="entry", order=order, hue="fold",
                      palette="tab10", jitter=0.15, size=5, ax=ax)
        for label in ax.get_yticklabels():
            if label.get_text() == highlight:
                label.set_fontweight("bold")
        direction = "lower is better" if rank_by in LOWER_IS_BETTER else "higher is better"
        ax.set(xlabel=f"{rank_by} (test, one point per job; {direction})", ylabel="",
               title=f"{rank_by} per job (fold x seed)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, title="fold")
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
        plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def render_grid_report(report: GridReport) -> str:
    """The grid's report.md text.

    Args:
        report: the collected results.

    Returns:
        Markdown text.
    """
    sections = [_title(report), _grid(report), _ranking(report), _aggregated(report),
                _per_job(report), _reference(report), _figures(report),
                _reproducibility(report)]
    return "\n\n".join(s.strip("\n") for s in sections if s) + "\n"


# ---------------------------------------------------------------------------------------------
# formatting helpers


def fmt_mean_sd(mean: Any, sd: Any, digits: int = 3) -> str:
    """'0.812 ± 0.013'; the mean alone when the sd is undefined (one job); "n/a" without jobs."""
    text = fmt(mean, digits)
    if text != "n/a" and fmt(sd, digits) != "n/a":
        text += f" ± {sd:.{digits}f}"
    return text


def _rel(report: GridReport, path: Path) -> str:
    return quote(Path(os.path.relpath(path, report.run.root)).as_posix())


def _direction(metric: str) -> str:
    return "lower is better" if metric in LOWER_IS_BETTER else "higher is better"


def _test_jobs(report: GridReport) -> pd.DataFrame:
    return report.jobs[report.jobs["split"] == "test"]


# ---------------------------------------------------------------------------------------------
# sections


def _title(report: GridReport) -> str:
    lines = [f"# dermbench grid report: `{report.run.root.name}`", "", f"> **{DISCLAIMER}**"]
    if report.context.is_leaky:
        lines += ["", "> [!WARNING]",
                  "> **Image-level split: these numbers are inflated by lesion leakage.** Use the "
                  "default lesion-level split (`--split lesion`) for honest numbers."]
    return "\n".join(lines)


def _grid(report: GridReport) -> str:
    ctx, layout = report.context, report.layout
    test = _test_jobs(report)
    n_entries = test["entry"].nunique()
    n_jobs = len(test)
    n_ok = int((test["status"] == OK).sum())
    sizes = []
    for fold, group in test[test["status"] == OK].groupby("fold"):
        counts = sorted({int(v) for v in group["n_images"].dropna()})
        sizes.append(f"fold {fold}: {', '.join(map(str, counts)) or 'n/a'}")
    found = [replicate_name(f, s) for f, s, _ in layout.found]
    rows = [
        ("Dataset", ctx.dataset),
        ("Split", f"{ctx.split_type}-level" if ctx.split_type in ("lesion", "image")
         else ctx.split_type),
        ("Folds", f"{layout.folds} (each fold's test split is that fold's lesions)"
         if layout.folds else "none: one train/val/test split, repeated with each seed"),
        ("Seeds", ", ".join(map(str, layout.seeds))),
        ("Replicates", f"{len(layout.found)} found" + (f" of {len(layout.replicates)} expected"
                                                     if layout.missing else "")
         + f": {', '.join(found)}"),
        ("Jobs", f"{n_jobs} ({n_entries} entries x {len(layout.replicates)} replicates): "
                 f"{n_ok} finished, {n_jobs - n_ok} failed or missing"),
        ("Test images per job", "; ".join(sizes) or "n/a"),
        ("Protocol fingerprint", f"`{ctx.fingerprint}`" if ctx.fingerprint != NOT_RECORDED
         else NOT_RECORDED),
        ("Preset", ctx.preset),
        ("Keras backend", ctx.backend),
        ("Command line", f"`{ctx.command}`" if ctx.command != NOT_RECORDED else NOT_RECORDED),
        ("Date", ctx.date),
        ("Versions", ctx.versions),
    ]
    out = ["## 1. Grid", table(rows, ["", ""])]
    failed = _failed_jobs(report)
    if failed:
        out.append(f"Failed or missing jobs ({len(failed)}), left out of the statistics:\n\n"
                   + "\n".join(failed))
    else:
        out.append(f"All {n_jobs} jobs finished.")
    if layout.missing:
        names = ", ".join(f"`{replicate_name(f, s)}`" for f, s in layout.missing)
        out.append(f"Replicates expected by run.json but absent: {names}.")
    out.append(
        "A job is one entry trained and evaluated in one replicate (fold, seed). Jobs in "
        "different folds are tested on different images, so their spread mixes model variation "
        "with test-set variation; jobs of one fold (different seeds) share their test images."
    )
    return "\n\n".join(out)


def _failed_jobs(report: GridReport) -> list[str]:
    """One line per job with a non-ok row: its test status and error, else the val one."""
    lines = []
    jobs = report.jobs
    for (entry, fold, seed), group in jobs.groupby(["entry", "fold", "seed"], sort=True):
        bad = group[group["status"] != OK]
        if not len(bad):
            continue
        test = bad[bad["split"] == "test"]
        row = (test if len(test) else bad).iloc[0]
        what = f"status {row['status']}" + ("" if len(test) else f" on {row['split']}")
        error = f" ({one_line(row['error'])})" if row["error"] else ""
        lines.append(f"- `{entry}` in `{replicate_name(fold, seed)}`: {what}{error}")
    return lines


def _ranking(report: GridReport) -> str:
    rank_by = report.rank_by
    head = (f"## 2. Ranking by the mean `{rank_by}` ({_direction(rank_by)}, test split, over "
            "jobs)")
    ranked = report.ranked
    if not len(ranked):
        return f"{head}\n\nNo entry has a finished job with test results."
    shown = [m for m in ("balanced_accuracy", "accuracy", "macro_auc") if m != rank_by]
    headers = ["Rank", "Entry", "Kind", "Jobs (ok / all)", f"{rank_by} mean ± sd", "Min", "Max",
               *(f"{SHOWN_METRICS[m]} mean ± sd" for m in shown)]
    rows = []
    for row in ranked.to_dict("records"):
        name = f"**{row['entry']}**" if row["entry"] == REFERENCE_ENTRY else row["entry"]
        rows.append([
            "-" if math.isnan(row["rank"]) else int(row["rank"]), name, row["kind"],
            f"{row['n_jobs']} / {row['n_jobs'] + row['n_failed']}",
            fmt_mean_sd(row[f"{rank_by}_mean"], row[f"{rank_by}_sd"]),
            fmt(row[f"{rank_by}_min"]), fmt(row[f"{rank_by}_max"]),
            *(fmt_mean_sd(row[f"{m}_mean"], row[f"{m}_sd"]) for m in shown),
        ])
    note = ("Mean ± sample standard deviation (n - 1) over the finished jobs; one job has no "
            "standard deviation. Entries without a finished job are not ranked (-).")
    return "\n\n".join([head, table(rows, headers), note])


def _aggregated(report: GridReport) -> str:
    out = ["## 3. Aggregated metrics (mean ± sd over jobs)"]
    order = list(report.ranked["entry"])
    for split, title in (("test", "Test split"), ("val", "Validation split")):
        rows = []
        frame = report.aggregated[report.aggregated["split"] == split]
        by_entry = {r["entry"]: r for r in frame.to_dict("records")}
        for entry in order + [e for e in by_entry if e not in order]:
            if entry not in by_entry:
                continue
            r = by_entry[entry]
            rows.append([entry, r["n_jobs"],
                         *(fmt_mean_sd(r.get(f"{m}_mean"), r.get(f"{m}_sd"))
                           for m in SHOWN_METRICS)])
        body = table(rows, ["Entry", "n", *SHOWN_METRICS.values()]) if rows else "No jobs."
        if split == "test":
            out.append(f"### {title}\n\n{body}")
        else:
            out.append(f"<details><summary>{title}</summary>\n\n{body}\n\n</details>")
    out.append("n: finished jobs. Every summary metric, with min and max, is in "
               f"[results.csv]({_rel(report, report.run.results_csv)}); each job's values in "
               f"[jobs.csv]({_rel(report, report.run.jobs_csv)}).")
    return "\n\n".join(out)


def _per_job(report: GridReport) -> str:
    rank_by = report.rank_by
    head = f"## 4. Per-job values: `{rank_by}` (test split)"
    test = _test_jobs(report)
    replicates = report.layout.replicates
    names = [replicate_name(f, s) for f, s in replicates]
    order = list(report.ranked["entry"])
    order += [e for e in dict.fromkeys(test["entry"]) if e not in order]
    cells = {(r["entry"], r["fold"], r["seed"]): r for r in test.to_dict("records")}
    rows = []
    for entry in order:
        row = [entry]
        for fold, seed in replicates:
            job = cells.get((entry, fold, seed))
            if job is None:
                row.append("missing")
            elif job["status"] != OK:
                row.append(str(job["status"]))
            else:
                row.append(fmt(job[rank_by]))
        agg = report.ranked[report.ranked["entry"] == entry]
        row.append(fmt_mean_sd(agg[f"{rank_by}_mean"].iloc[0], agg[f"{rank_by}_sd"].iloc[0])
                   if len(agg) else "n/a")
        rows.append(row)
    return "\n\n".join([head, table(rows, ["Entry", *names, "Mean ± sd"])])


def _reference(report: GridReport) -> str:
    head = "## 5. InceptionResNetV2 vs the rest, paired over jobs"
    rank_by = report.rank_by
    if report.tests is None:
        return (f"{head}\n\nInceptionResNetV2 (entry `{REFERENCE_ENTRY}`) has no job in this "
                "grid, so there is no comparison.")
    if not report.tests:
        return f"{head}\n\nThe grid has no entry besides `{REFERENCE_ENTRY}`."
    diffs = list(dict.fromkeys([rank_by, "balanced_accuracy", "accuracy"]))
    headers = ["Other entry", "Kind", "Pairs", *(f"Mean diff {m}" for m in diffs),
               "IRv2 wins / ties / losses", "t", "t-test p", "Holm p (t)", "Wilcoxon p",
               "Holm p (Wilcoxon)", "Pooled: only IRv2 right / only other right", "McNemar p",
               "Holm p (McNemar)"]
    rows = []
    for t in report.tests:
        m = t.mcnemar
        rows.append([
            t.other, t.kind, t.n_pairs,
            *("n/a" if math.isnan(t.mean_diff.get(d, math.nan)) else f"{t.mean_diff[d]:+.3f}"
              for d in diffs),
            f"{t.wins} / {t.ties} / {t.losses}", fmt(t.t_statistic, 2), fmt_p(t.t_p),
            fmt_p(t.t_p_holm), fmt_p(t.wilcoxon_p), fmt_p(t.wilcoxon_p_holm),
            f"{m.only_a} / {m.only_b}" if m is not None else "n/a",
            fmt_p(m.p_value) if m is not None else "n/a", fmt_p(t.mcnemar_p_holm),
        ])
    undefined = [f"`{t.other}`: {t.note}" for t in report.tests if t.note]
    notes = [
        f"Differences are InceptionResNetV2 minus the other entry on `{rank_by}` (and the other "
        "listed metrics), over the jobs both finished with the same fold and seed; a win is a "
        f"job where InceptionResNetV2 is better ({_direction(rank_by)}). The paired t-test "
        "(scipy.stats.ttest_rel) and the Wilcoxon signed-rank test (scipy.stats.wilcoxon, zero "
        "differences dropped) are two-sided, and each is Holm-corrected over the "
        f"{len(report.tests)} comparisons. With few jobs these tests have little power: the "
        "exact Wilcoxon test cannot reach p < 0.05 with fewer than 6 pairs.",
        "The pooled McNemar test concatenates the per-image correctness of the paired jobs' test "
        "predictions. Jobs of one fold share their test images, so pooled images are not "
        "independent and its p-value is optimistic; read it as descriptive.",
        "Jobs in different folds are tested on different images; pairs always compare two "
        "entries on the same images (same fold and seed).",
    ]
    if undefined:
        notes.append("p-values shown n/a (undefined): " + "; ".join(undefined) + ".")
    return "\n\n".join([head, _plain_reading(report), table(rows, headers), *notes])


def _plain_reading(report: GridReport) -> str:
    """One sentence: where IRv2 ranks and against whom the Holm-adjusted t-test is significant."""
    rank_by = report.rank_by
    ranked = report.ranked
    rank = ranked.loc[ranked["entry"] == REFERENCE_ENTRY, "rank"]
    n_ranked = int(ranked["rank"].notna().sum())
    if len(rank) and not math.isnan(rank.iloc[0]):
        where = f"InceptionResNetV2 ranks {int(rank.iloc[0])} of {n_ranked} by mean `{rank_by}`"
    else:
        where = "InceptionResNetV2 has no finished job with test results"
    tests = report.tests or []
    defined = [t for t in tests if not math.isnan(t.t_p_holm)]
    if not defined:
        return (f"**Plain reading.** {where}; no comparison has a defined paired t-test (too few "
                "jobs both finished, or no difference), so nothing can be called significant.")
    sig_better = [t.other for t in defined if t.t_p_holm < ALPHA
                  and better(t.mean_diff[rank_by], rank_by) > 0]
    sig_worse = [t.other for t in defined if t.t_p_holm < ALPHA
                 and better(t.mean_diff[rank_by], rank_by) < 0]
    parts = []
    if sig_better:
        parts.append("significantly better than " + _names(sig_better))
    if sig_worse:
        parts.append("significantly worse than " + _names(sig_worse))
    rest = [t.other for t in tests if t.other not in sig_better + sig_worse]
    if rest:
        parts.append("not significantly different from " + _names(rest))
    return (f"**Plain reading.** {where} and, by the Holm-corrected paired t-test over jobs "
            f"(alpha {ALPHA}), is " + "; ".join(parts) + ".")


def _names(names: list[str]) -> str:
    return ", ".join(f"`{n}`" for n in names)


def _figures(report: GridReport) -> str:
    head = "## 6. Figures"
    if report.figure is None:
        return f"{head}\n\nFigures were not drawn for this report."
    title = f"{report.rank_by} per job (test)"
    return f"{head}\n\n![{title}]({_rel(report, report.figure)})"


def _reproducibility(report: GridReport) -> str:
    ctx = report.context
    command = ctx.command if ctx.command != NOT_RECORDED else None
    lines = ["## Reproducibility", ""]
    if command:
        lines += ["The grid was produced by:", "", "```sh", command, "```", ""]
    else:
        lines += ["The command that produced this grid was not recorded (no run.json).", ""]
    replicate_links = []
    for fold, seed, replicate in report.layout.found:
        target = replicate.report_md if replicate.report_md.is_file() else replicate.results_csv
        replicate_links.append(f"[{replicate_name(fold, seed)}]({_rel(report, target)})")
    lines += [
        "Rebuild this report, jobs.csv, results.csv and the figure from the run directory alone "
        "(no training, no TensorFlow):",
        "",
        "```sh",
        f"python benchmark.py --report --out {report.run.root.as_posix()}"
        + (f" --rank-by {report.rank_by}" if report.rank_by != DEFAULT_RANK_BY else ""),
        "```",
        "",
        f"Files: [results.csv]({_rel(report, report.run.results_csv)}) (one row per entry and "
        f"split, over jobs), [jobs.csv]({_rel(report, report.run.jobs_csv)}) (one row per job "
        "and split); each replicate is a complete run directory: " + ", ".join(replicate_links)
        + ".",
        "",
        *licence_section(),
    ]
    return "\n".join(lines)
