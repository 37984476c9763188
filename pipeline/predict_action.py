"""`--predict PATH ... [--entry NAME] [--explain]`: classify new images with a trained entry.

The entry (pipeline.predict_target: any CNN entry or ensemble of the run that can predict; by
default the one ranked first on validation) runs on every image found (training.predict_images:
files as given, folders recursively), decoded at its own input size and resize mode with the
image cache's decoder, batch by batch. An ensemble runs each member the same way and combines
them with its saved fit (ensembles.apply: the rule --ensemble used). Then:

    RUNDIR/predictions/<entry>-<YYYYmmdd-HHMMSS>.csv    path,akiec,...,vasc,prediction
    RUNDIR/predictions/<entry>-<YYYYmmdd-HHMMSS>/gradcam/[<member>/]   with --explain

and a table of each image's top class and its probability. A file that is not a readable image
is listed with its reason and skipped; the exit code is then 1 (core.exitcodes.FAILED).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from core import exitcodes
from core.atomic import atomic_write_csv
from core.classes import CLASSES
from core.errors import DataError, RunDirError
from core.filesystem import check_writable_dir
from core.rundir import RunDir, entry_file_stem, find_run_dir
from ensembles.apply import apply_saved_fit
from pipeline.predict_target import ENSEMBLE, Target, resolve_or_default
from training.errors import ConfigError
from training.predict_images import (
    IMAGE_SUFFIXES,
    FileProbabilities,
    UnreadableImage,
    find_images,
    predict_files,
)
from training.trained import DEFAULT_PREDICT_BATCH, load_trained_entry, read_run_config

logger = logging.getLogger(__name__)

PREDICTIONS_DIR = "predictions"
GRADCAM_DIR = "gradcam"
MAX_TABLE_ROWS = 100  # the table shows this many images; the CSV has them all
PLAIN_PROGRESS_STEP = 0.1  # without a terminal: a log line every 10 % (for 2+ batches)


def single_run(args: argparse.Namespace) -> RunDir:
    """The run directory of --out (or the default rule), refusing a grid's root.

    Raises:
        RunDirError: no such run, or a grid root (the message names a replicate to pass).
    """
    run = find_run_dir(getattr(args, "out", None), getattr(args, "dataset", None),
                       getattr(args, "preset", None))
    if run.is_grid:
        first = run.replicates()
        example = first[0][2].root if first else run.replicates_dir / "fold0-seed0"
        raise RunDirError(f"{run.root} is a grid run: its models are in its replicates; pass one "
                          f"with --out {example}")
    return run


class _Progress:
    """tqdm on a terminal; otherwise a log line every `PLAIN_PROGRESS_STEP` of the work."""

    def __init__(self, total: int, batch_size: int) -> None:
        from tqdm import tqdm

        self.total, self.done = total, 0
        terminal = sys.stderr.isatty()
        self.bar = tqdm(total=total, unit="img", desc="predicting", leave=False,
                        disable=not terminal)
        self.step = max(1, int(total * PLAIN_PROGRESS_STEP))
        self.plain = not terminal and total > 2 * batch_size
        self.next_line = self.step

    def describe(self, text: str) -> None:
        self.bar.set_description(text)

    def update(self, n: int) -> None:
        self.done += n
        self.bar.update(n)
        if self.plain and (self.done >= self.next_line or self.done == self.total):
            logger.info("predicted %d/%d", self.done, self.total)
            self.next_line = self.done + self.step

    def close(self) -> None:
        self.bar.close()


def _output_stem(folder: Path, name: str) -> str:
    """`<entry>-<timestamp>`, with `-2`, `-3`, ... when a prediction of this second exists."""
    stem = f"{entry_file_stem(name)}-{time.strftime('%Y%m%d-%H%M%S')}"
    candidate, n = stem, 2
    while (folder / f"{candidate}.csv").exists() or (folder / candidate).exists():
        candidate, n = f"{stem}-{n}", n + 1
    return candidate


def overlay_writer() -> Callable[..., None]:
    """`training.gradcam.write_overlays`, or a one-line refusal when it is not installed.

    Raises:
        ConfigError: the Grad-CAM module is missing.
    """
    try:
        from training.gradcam import write_overlays
    except ModuleNotFoundError as exc:
        if exc.name != "training.gradcam":
            raise
        raise ConfigError("--explain needs Grad-CAM (training/gradcam.py), which this "
                          "installation lacks; run --predict without --explain") from None
    return write_overlays


def _predict_members(run: RunDir, target: Target, files: list[Path], batch_size: int,
                     explain_dir: Path | None) -> dict[str, FileProbabilities]:
    """Run each CNN of the target on the files (one network in memory at a time)."""
    write_overlays = overlay_writer() if explain_dir is not None else None
    progress = _Progress(len(files) * len(target.members), batch_size)
    results: dict[str, FileProbabilities] = {}
    try:
        for member in target.members:
            trained = load_trained_entry(run.root, member)
            logger.info("%s: %dx%d input (%s resize, %s preprocessing) from %s", member,
                        trained.image_size, trained.image_size, trained.resize_mode,
                        trained.preprocessing, trained.weights)
            progress.describe(f"predicting {member}")
            batches: list[tuple] = []
            results[member] = predict_files(
                trained.predict, files, trained.image_size, trained.resize_mode, batch_size,
                on_batch=progress.update,
                on_images=(lambda *batch, sink=batches.append: sink(batch))
                if write_overlays else None)
            if write_overlays is not None and batches:
                # One call for all images, so that the overlays' file names are distinct across
                # batches (training.gradcam.overlay_names); --explain keeps its images in memory.
                out_dir = explain_dir / member if target.kind == ENSEMBLE else explain_dir
                write_overlays(trained, np.concatenate([b[0] for b in batches]),
                               [p for b in batches for p in b[1]], out_dir,
                               np.concatenate([b[2] for b in batches]))
            del trained
    finally:
        progress.close()
    return results


def _combine(target: Target, results: dict[str, FileProbabilities]
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[UnreadableImage], bool]:
    """(readable mask, probabilities, predicted class indices of the readable rows, the
    unreadable files, whether the columns are probabilities)."""
    readable = np.logical_and.reduce([r.readable for r in results.values()])
    unreadable: dict[str, UnreadableImage] = {}
    for result in results.values():
        for item in result.unreadable:
            unreadable.setdefault(item.path, item)
    if target.kind == ENSEMBLE and readable.any():
        output = apply_saved_fit(Path(str(target.fit_path)),
                                 {m: r.proba[readable] for m, r in results.items()})
        return readable, output.proba, output.prediction, list(unreadable.values()), \
            output.probabilities
    proba = next(iter(results.values())).proba[readable]
    return readable, proba, np.argmax(proba, axis=1), list(unreadable.values()), True


def _write_csv(path: Path, files: list[Path], proba: np.ndarray, prediction: np.ndarray) -> None:
    import pandas as pd

    frame = pd.DataFrame(proba, columns=list(CLASSES))
    frame.insert(0, "path", [os.fspath(f) for f in files])
    frame["prediction"] = np.asarray(CLASSES)[prediction]
    atomic_write_csv(path, frame)


def _print_table(files: list[Path], proba: np.ndarray, prediction: np.ndarray,
                 probabilities: bool) -> None:
    from tabulate import tabulate

    column = "probability" if probabilities else "vote share"
    rows = [(os.fspath(f), CLASSES[k], f"{p[k]:.3f}")
            for f, p, k in zip(files[:MAX_TABLE_ROWS], proba, prediction, strict=False)]
    print(tabulate(rows, headers=("image", "top class", column), disable_numparse=True))
    if len(files) > MAX_TABLE_ROWS:
        print(f"... and {len(files) - MAX_TABLE_ROWS} more images (all in the CSV)")


def _print_unreadable(unreadable: list[UnreadableImage]) -> None:
    from tabulate import tabulate

    print(f"\nskipped {len(unreadable)} file(s) that are not readable images:")
    print(tabulate([(u.path, u.reason) for u in unreadable], headers=("file", "reason"),
                   disable_numparse=True))


def run_predict(args: argparse.Namespace) -> int:
    """`python benchmark.py --predict PATH [PATH ...] --out RUNDIR [--entry NAME] [--explain]`.

    Args:
        args: the parsed command line: predict (paths), out (or dataset/preset), entry, explain,
            batch_size (optional).

    Returns:
        0 when every image was predicted; 1 when some files were not readable images (they are
        listed with their reasons; the others are predicted and written).

    Raises:
        BenchmarkError: no run, an unknown entry, an entry that cannot predict (no weights, the
            SVM baseline, a stale ensemble), no image found, or --explain without Grad-CAM;
            nothing is written then.
    """
    run = single_run(args)
    config, _ = read_run_config(run.root)
    target = resolve_or_default(run, config, getattr(args, "entry", None))
    explain = bool(getattr(args, "explain", False))
    if explain:
        overlay_writer()  # refuse before any work
    folder = check_writable_dir(run.root / PREDICTIONS_DIR, "the predictions folder")
    files, missing = find_images(args.predict)
    if not files and not missing:
        raise DataError(f"no image found in {', '.join(map(str, args.predict))} (a folder is "
                        f"searched recursively for {', '.join(IMAGE_SUFFIXES)})")
    members = f" (members {', '.join(target.members)})" if target.kind == ENSEMBLE else ""
    print(f"entry: {target.name}{members}, {target.chosen_by}")
    stem = _output_stem(folder, target.name)
    explain_dir = folder / stem / GRADCAM_DIR if explain else None
    batch_size = int(getattr(args, "batch_size", None) or DEFAULT_PREDICT_BATCH)
    kept: list[Path] = []
    unreadable = list(missing)
    if files:
        results = _predict_members(run, target, files, batch_size, explain_dir)
        readable, proba, prediction, skipped, probabilities = _combine(target, results)
        kept = [f for f, ok in zip(files, readable, strict=True) if ok]
        unreadable += skipped
    if kept:
        csv = folder / f"{stem}.csv"
        _write_csv(csv, kept, proba, prediction)
        _print_table(kept, proba, prediction, probabilities)
        print(f"\nwrote {csv} ({len(kept)} image(s), entry {target.name})")
        if explain_dir is not None:
            print(f"Grad-CAM overlays: {explain_dir}")
    if unreadable:
        _print_unreadable(unreadable)
        return exitcodes.FAILED
    return exitcodes.OK

