"""The report's "Where the models fail" section, and the failure gallery's files it reads.

After training, the pipeline (pipeline.failure_gallery) draws for the reference entry and the
best CNN entry on the validation split the most confident test errors (up to three per true
class), each image with the Grad-CAM map of the predicted class over it, one figure per entry:

    figures/failures/<entry file stem>.png   the figure
    figures/failures/index.json              what each figure shows, and the SHA-256 of the
                                             predictions_test.csv it was drawn from

(a folder of its own: the report removes the PNGs of figures/ that it did not draw itself).
Drawing needs Keras, the weights and the images; this module only reads the index, so the report
stays free of TensorFlow. A gallery whose predictions_test.csv has changed since (a retrained
entry) is stale and not shown; a run without one (a prediction-only run directory, or weights or
images missing) gets a one-line note.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.atomic import read_json
from core.classes import CLASSES
from core.metrics import LOWER_IS_BETTER
from core.numbers import as_float
from core.provenance import file_sha256
from core.rundir import RunDir, entry_file_stem
from reports.formatting import fmt, table
from reports.report_data import ReportData
from reports.results import Entry
from reports.sections import md_image, reference_title

GALLERY_FOLDER = "failures"
INDEX_FILE = "index.json"
INDEX_VERSION = 1
PER_CLASS = 3
TITLE = "## Where the models fail"
_NO_GALLERY = ("No failure gallery in this run directory: drawing it needs the trained weights "
               "and the images (a prediction-only run directory has neither); `--all` draws it "
               "after training.")


def gallery_dir(run: RunDir) -> Path:
    """figures/failures/ of a run."""
    return run.figures_dir / GALLERY_FOLDER


def gallery_index_path(run: RunDir) -> Path:
    """figures/failures/index.json of a run."""
    return gallery_dir(run) / INDEX_FILE


def gallery_figure_path(run: RunDir, entry: str) -> Path:
    """figures/failures/<entry file stem>.png: the gallery figure of `entry`."""
    return gallery_dir(run) / f"{entry_file_stem(entry)}.png"


def has_gradcam(run: RunDir, entry: Entry) -> bool:
    """Whether `entry` is a CNN entry of the run (a models/ folder named after a registered zoo
    backbone): the entries Grad-CAM exists for (not the SVM baseline, a test-time-augmentation
    entry or an ensemble)."""
    from zoo import registered_kind  # no Keras: the registry only

    return (entry.directory.resolve().parent == run.models_dir.resolve()
            and registered_kind(entry.name) is not None)


def best_cnn_on_validation(run: RunDir, entries: Sequence[Entry], rank_by: str) -> str | None:
    """The CNN entry (`has_gradcam`) ranked first by `rank_by` on the validation split (lower first
    for losses; ties to the first name), or None when none has that metric on validation.

    The test split never takes part in the choice.
    """
    sign = 1.0 if rank_by in LOWER_IS_BETTER else -1.0
    scored = [(sign * value, entry.name) for entry in entries
              if has_gradcam(run, entry)
              and not math.isnan(value := as_float(entry.split_metrics("val").get(rank_by)))]
    return min(scored)[1] if scored else None


def gallery_entries(run: RunDir, entries: Sequence[Entry], reference: str,
                    rank_by: str) -> list[str]:
    """The entries the gallery shows: the reference (when it is a CNN entry of the run with test
    predictions), then the best CNN entry on validation (when another).

    Args:
        run: the run directory.
        entries: the run's entries (reports.results.discover_entries, or the report's).
        reference: the reference entry's name.
        rank_by: the metric of the validation ranking.

    Returns:
        Entry names, without repeats.
    """
    tested = [e for e in entries if e.has_split("test")]
    names = [e.name for e in tested if e.name == reference and has_gradcam(run, e)]
    best = best_cnn_on_validation(run, tested, rank_by)
    if best is not None and best not in names:
        names.append(best)
    return names


def read_gallery_index(run: RunDir) -> dict[str, dict[str, Any]] | None:
    """The index's records by entry name; None when there is no readable index of this version."""
    path = gallery_index_path(run)
    if not path.is_file():
        return None
    try:
        index = read_json(path)
    except Exception:  # noqa: BLE001 - an unreadable index is reported as a missing gallery
        return None
    if not isinstance(index, dict) or index.get("version") != INDEX_VERSION:
        return None
    records = index.get("entries")
    if not isinstance(records, dict):
        return None
    return {name: record for name, record in records.items() if isinstance(record, dict)}


def record_problem(run: RunDir, entry: str, record: dict[str, Any] | None) -> str | None:
    """Why the gallery record of `entry` cannot be shown (None: it is current).

    Args:
        run: the run directory.
        entry: the entry name (a models/ folder).
        record: its index record, or None.

    Returns:
        One sentence, or None.
    """
    predictions = RunDir.predictions_file(run.model_dir(entry), "test")
    if record is None:
        return f"no failure gallery of `{entry}` was drawn"
    if record.get("unavailable"):
        return f"no failure gallery of `{entry}`: {record['unavailable']}"
    if (not predictions.is_file()
            or record.get("predictions_test_sha256") != file_sha256(predictions)):
        return (f"the failure gallery of `{entry}` is stale: it was drawn from other test "
                f"predictions than models/{entry}/predictions_test.csv holds now, so it is not "
                "shown")
    figure = record.get("figure")
    if figure and not (gallery_dir(run) / str(figure)).is_file():
        return f"the failure gallery figure of `{entry}` (figures/failures/{figure}) is missing"
    return None


def failures_section(data: ReportData) -> str:
    """The "Where the models fail" section of report.md.

    Args:
        data: the report's data (its run, entries, reference and ranking metric).

    Returns:
        Markdown: per gallery entry its figure and the errors shown, or the line saying why there
        is none.
    """
    run = data.run
    entries = [*data.ranked, *data.failed]
    wanted = gallery_entries(run, entries, data.reference, data.rank_by)
    index = read_gallery_index(run)
    if index is None or not wanted:
        return f"{TITLE}\n\n{_NO_GALLERY}"
    out = [TITLE, _intro(data, wanted)]
    redraw = ("rerun this run's `--all` command (the header's command line) on the same `--out` "
              "to draw it again")
    for name in wanted:
        record = index.get(name)
        problem = record_problem(run, name, record)
        heading = f"### {_role(data, entries, name)}"
        if problem:
            hint = f"; {redraw}" if record is None or not record.get("unavailable") else ""
            out.append(f"{heading}\n\n{problem[0].upper()}{problem[1:]}{hint}.")
        else:
            out.append(f"{heading}\n\n{_entry_gallery(data, name, record)}")
    return "\n\n".join(out)


def _intro(data: ReportData, wanted: list[str]) -> str:
    text = (f"The most confident errors on the test split (up to {PER_CLASS} per true class), "
            "each image with the Grad-CAM map of the *predicted* class over it (red: the regions "
            "that raised that class's score most). A map shows where a model looked, not why it "
            "erred.")
    if data.reference not in wanted:
        text += (f" The reference (`{data.reference}`) is not a CNN entry with test predictions "
                 "in this run, so it has no gallery.")
    if data.context.is_pipeline_check:
        text += (" This run checks the pipeline (see the note at the top): its maps say nothing "
                 "about where the backbones look.")
    return text


def _role(data: ReportData, entries: Sequence[Entry], name: str) -> str:
    roles = []
    if name == data.reference:
        roles.append(f"the reference, {reference_title(name)}")
    if name == best_cnn_on_validation(data.run, entries, data.rank_by):
        value = next((e.split_metrics("val").get(data.rank_by) for e in entries
                      if e.name == name), None)
        roles.append(f"best CNN entry on validation, `{data.rank_by}` {fmt(value)}")
    return f"`{name}` ({'; '.join(roles)})"


def _entry_gallery(data: ReportData, name: str, record: dict[str, Any]) -> str:
    shown = [row for row in record.get("shown", []) if isinstance(row, dict)]
    errors, images = record.get("errors"), record.get("test_images")
    if not shown:
        return f"`{name}` made no error on the {images} test images."
    grid = record.get("grid") or ["?", "?"]
    lines = [
        md_image(data.run.root, gallery_dir(data.run) / str(record["figure"]),
                 f"Most confident test errors of {name} with Grad-CAM"),
        f"{errors} errors on {images} test images; the {len(shown)} shown are the most confident "
        f"per true class. Grad-CAM on `{record.get('layer')}` ({grid[0]} × {grid[1]} cells) at "
        f"{record.get('image_size')} px.",
        "<details><summary>The errors shown</summary>\n\n"
        + table([[row.get("image_id"), _class(row.get("true")), _class(row.get("predicted")),
                  fmt(row.get("probability"))] for row in shown],
                ["Image", "True class", "Predicted class", "Probability of the prediction"])
        + "\n\n</details>",
    ]
    return "\n\n".join(lines)


def _class(name: Any) -> str:
    return f"`{name}`" if name in CLASSES else str(name)
