"""report.md of a grid run: the collected grid results as GitHub-flavoured markdown.

Pure text generation from `GridReport`; reports.grid collects the replicates, runs the
comparisons (reports.grid_stats), draws the figure and writes the files. Sections: title,
1. Grid, 2. Ranking by the mean, 3. Aggregated metrics, 4. Per-job values, 5. the reference entry
vs the rest (from the rows of the grid's comparisons.csv), 6. Figures, Reproducibility. The parts
the single-run report shares (title, provenance, reproducibility, licence) are in reports.sections.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from core.defaults import ALPHA, REFERENCE
from core.metrics import LOWER_IS_BETTER
from core.rundir import RunDir, replicate_name
from reports.aggregate import OK, better
from reports.context import RunContext
from reports.formatting import fmt, fmt_p, one_line, table
from reports.grid_layout import GridLayout
from reports.sections import (
    REFERENCE_SHORT,
    dataset_rows,
    md_image,
    md_link,
    provenance_rows,
    reference_title,
    reproducibility_section,
    title_lines,
)

# Metrics shown in the aggregated tables of report.md, with their column titles.
SHOWN_METRICS = {
    "balanced_accuracy": "Balanced accuracy", "accuracy": "Accuracy", "macro_f1": "Macro F1",
    "weighted_f1": "Weighted F1", "macro_auc": "Macro AUC", "log_loss": "Log loss",
    "brier": "Brier", "ece": "ECE", "mel_sens_at_spec80": "Mel sens. @ 80 % spec.",
}


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
        comparisons: the rows of the grid's comparisons.csv (reports.grid_stats); None when the
            reference entry has no job in the grid.
        rank_by: the ranking metric.
        reference: the entry every other is compared with.
        figure: the per-job figure (None: not drawn).
        ratio_source: where the folds' n_test/n_train come from ("" without folds).
    """

    run: RunDir
    context: RunContext
    layout: GridLayout
    jobs: pd.DataFrame
    aggregated: pd.DataFrame
    ranked: pd.DataFrame
    comparisons: pd.DataFrame | None
    rank_by: str
    reference: str = REFERENCE
    figure: Path | None = None
    ratio_source: str = ""

    @property
    def reference_label(self) -> str:
        """"InceptionResNetV2" for the default reference, else the entry's name in backticks."""
        return reference_title(self.reference)


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


def _link(report: GridReport, path: Path, text: str) -> str:
    return md_link(report.run.root, path, text)


def _direction(metric: str) -> str:
    return "lower is better" if metric in LOWER_IS_BETTER else "higher is better"


def _test_jobs(report: GridReport) -> pd.DataFrame:
    return report.jobs[report.jobs["split"] == "test"]


# ---------------------------------------------------------------------------------------------
# sections


def _title(report: GridReport) -> str:
    lines = title_lines("dermbench grid report", report.run.root, report.context)
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
        *dataset_rows(ctx),
        ("Folds", f"{layout.folds} (each fold's test split is that fold's lesions)"
         if layout.folds else "none: one train/val/test split, repeated with each seed"),
        ("Seeds", ", ".join(map(str, layout.seeds))),
        ("Replicates", f"{len(layout.found)} found" + (f" of {len(layout.replicates)} expected"
                                                     if layout.missing else "")
         + f": {', '.join(found)}"),
        ("Jobs", f"{n_jobs} ({n_entries} entries x {len(layout.replicates)} replicates): "
                 f"{n_ok} finished, {n_jobs - n_ok} failed or missing"),
        ("Test images per job", "; ".join(sizes) or "n/a"),
        *provenance_rows(ctx),
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
        name = f"**{row['entry']}**" if row["entry"] == report.reference else row["entry"]
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
               f"{_link(report, report.run.results_csv, 'results.csv')}; each job's values in "
               f"{_link(report, report.run.jobs_csv, 'jobs.csv')}.")
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
    label = report.reference_label
    head = f"## 5. {label} vs the rest, paired over jobs"
    rank_by = report.rank_by
    rows = report.comparisons
    if rows is None:
        return (f"{head}\n\n{label} (entry `{report.reference}`) has no job in this grid, so "
                "there is no comparison.")
    if not len(rows):
        return f"{head}\n\nThe grid has no entry besides `{report.reference}`."
    main = rows[rows["metric"] == rank_by]
    short = _short(report)
    headers = ["Other entry", "Kind", "Paired jobs", f"{short} wins / ties / losses",
               f"{short} mean", "Other mean", "Difference [95 % CI]", "p", "Holm p",
               "Significant"]
    body = [[r["other"], r["kind"], r["n_jobs"], f"{r['wins']} / {r['ties']} / {r['losses']}",
             fmt(r["value_reference"]), fmt(r["value_other"]), _difference(r),
             fmt_p(r["p_value"]), fmt_p(r["p_holm"]), "yes" if r["significant"] else "no"]
            for r in main.to_dict("records")]
    out = [head, _plain_reading(report), f"### `{rank_by}` ({_direction(rank_by)})",
           table(body, headers)]
    others = [m for m in dict.fromkeys(rows["metric"]) if m != rank_by]
    if others:
        by_pair = {(r["other"], r["metric"]): r for r in rows.to_dict("records")}
        extra = [[other, *(_cell(by_pair.get((other, m))) for m in others)]
                 for other in dict.fromkeys(main["other"])]
        out += ["### Other metrics: difference [95 % CI], Holm p",
                table(extra, ["Other entry", *(SHOWN_METRICS.get(m, m) for m in others)])]
    out.append(_method_note(report, rows))
    undefined = [f"`{r['other']}` ({r['metric']}): {r['note']}" for r in rows.to_dict("records")
                 if r["note"] and math.isnan(r["p_value"])]
    if undefined:
        out.append("Not tested (n/a): " + "; ".join(undefined) + ".")
    return "\n\n".join(out)


def _short(report: GridReport) -> str:
    return REFERENCE_SHORT if report.reference == REFERENCE else report.reference_label


def _difference(row: dict[str, Any]) -> str:
    if math.isnan(row["difference"]):
        return "n/a"
    text = f"{row['difference']:+.3f}"
    if not (math.isnan(row["ci_low"]) or math.isnan(row["ci_high"])):
        text += f" [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]"
    return text


def _cell(row: dict[str, Any] | None) -> str:
    if row is None or math.isnan(row["difference"]):
        return "n/a"
    text = _difference(row)
    if not math.isnan(row["p_holm"]):
        text += f", Holm p {fmt_p(row['p_holm'])}" + (" *" if row["significant"] else "")
    return text


def _method_note(report: GridReport, rows: pd.DataFrame) -> str:
    """Two or three sentences: the test, why it is valid for these jobs, the correction."""
    tested = rows[rows["p_value"].notna()]
    kinds = set(tested["test"].str.startswith("corrected")) if len(tested) else set()
    sentences = [
        f"Differences are {report.reference_label} minus the other entry over the jobs both "
        "finished (same fold and seed), so a positive value favours "
        f"{report.reference_label} except for lower-is-better metrics; the interval and the "
        "p-value come from the same t statistic, so they never disagree."
    ]
    ratios = sorted({t.split("n_test/n_train ")[-1].split(";")[0] for t in tested["test"]
                     if "n_test/n_train" in t})
    corrected = True in kinds or (not kinds and bool(report.layout.folds))
    shared = False in kinds or (not kinds and not report.layout.folds)
    if corrected:
        sentences.append(
            "Jobs on different folds are compared with the corrected repeated k-fold t-test "
            "(Nadeau & Bengio 2003; Bouckaert & Frank 2004): the variance of the per-job "
            "differences is scaled by 1/jobs + n_test/n_train"
            + (f" (n_test/n_train {', '.join(ratios)}; from {report.ratio_source})"
               if ratios else "")
            + " with jobs - 1 degrees of freedom, because the seeds of a fold share their test "
            "images and the folds share training data.")
    if shared:
        sentences.append(
            "Jobs that share one test set are compared with a seed-and-lesion t-test: its "
            "variance adds the lesion-bootstrap variance of the seed-averaged difference to the "
            "between-seed variance over the number of jobs (Welch-Satterthwaite degrees of "
            "freedom).")
    sentences.append(
        f"p-values are Holm-corrected per metric over the comparisons of {report.reference_label} "
        f"with the other entries; significant means Holm p < {ALPHA}. All rows, with the test "
        f"named, are in {_link(report, report.run.comparisons_csv, 'comparisons.csv')}.")
    return " ".join(sentences)


def _plain_reading(report: GridReport) -> str:
    """One sentence: where the reference ranks and which Holm-corrected comparisons hold."""
    rank_by = report.rank_by
    label = report.reference_label
    ranked = report.ranked
    rank = ranked.loc[ranked["entry"] == report.reference, "rank"]
    n_ranked = int(ranked["rank"].notna().sum())
    if len(rank) and not math.isnan(rank.iloc[0]):
        where = (f"In this grid, {label} ranks {int(rank.iloc[0])} of {n_ranked} by mean "
                 f"`{rank_by}`")
    else:
        where = f"In this grid, {label} has no finished job with test results"
    rows = report.comparisons
    rows = rows[rows["metric"] == rank_by] if rows is not None else pd.DataFrame()
    tested = rows[rows["p_holm"].notna()] if len(rows) else rows
    if not len(tested):
        return (f"**Plain reading.** {where}; no comparison could be tested (too few jobs both "
                "finished, or no spread), so nothing can be called significant.")
    named = {t.split(",")[0].split(" (")[0] for t in tested["test"]}
    sig = tested[tested["significant"]]
    sig_better = [r["other"] for r in sig.to_dict("records")
                  if better(r["difference"], rank_by) > 0]
    sig_worse = [r["other"] for r in sig.to_dict("records")
                 if better(r["difference"], rank_by) < 0]
    parts = []
    if sig_better:
        parts.append("significantly better than " + _names(sig_better))
    if sig_worse:
        parts.append("significantly worse than " + _names(sig_worse))
    rest = [o for o in rows["other"] if o not in sig_better + sig_worse]
    if rest:
        parts.append("not significantly different from " + _names(rest))
    return (f"**Plain reading.** {where} and, by the {' and the '.join(sorted(named))} with "
            f"Holm's correction (alpha {ALPHA}), is " + "; ".join(parts) + ".")


def _names(names: list[str]) -> str:
    return ", ".join(f"`{n}`" for n in names)


def _figures(report: GridReport) -> str:
    head = "## 6. Figures"
    if report.figure is None:
        return f"{head}\n\nFigures were not drawn for this report."
    title = f"{report.rank_by} per job (test)"
    return f"{head}\n\n{md_image(report.run.root, report.figure, title)}"


def _reproducibility(report: GridReport) -> str:
    replicate_links = []
    for fold, seed, replicate in report.layout.found:
        target = replicate.report_md if replicate.report_md.is_file() else replicate.results_csv
        replicate_links.append(_link(report, target, replicate_name(fold, seed)))
    run = report.run
    files = (
        f"{_link(report, run.results_csv, 'results.csv')} (one row per entry and split, over "
        f"jobs), {_link(report, run.jobs_csv, 'jobs.csv')} (one row per job and split)"
        + (f", {_link(report, run.comparisons_csv, 'comparisons.csv')} (the reference against "
           "each other entry, per metric)" if report.comparisons is not None else "")
        + "; each replicate is a complete run directory: " + ", ".join(replicate_links))
    return reproducibility_section(
        run.root, report.context, "grid",
        "this report, jobs.csv, results.csv, comparisons.csv and the figure", report.rank_by,
        report.reference, files)
