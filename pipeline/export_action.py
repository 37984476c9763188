"""`--export --entry NAME [--format keras|savedmodel|onnx]`: a trained entry as a model file.

Writes, in the run directory:

    export/<entry>/model.keras | saved_model/ | model.onnx    (training.export_model)
    export/<entry>/MODEL_CARD.md                               (reports.model_card)

The model takes raw RGB images at the entry's input size (values in [0, 255]) and returns the
seven class probabilities in canonical order, its preprocessing inside; each file is reloaded and
checked against the network before the command reports success. The card lists every export
file present in the folder, so exporting a second format updates it.

Refused, with the reason: the SVM baseline (its fitted SVM is not saved) and ensembles. An
ensemble is not one network: its members were trained at different input sizes, each decoding the
original image at its own size with the image cache's decoder, and combined in NumPy by a fit
(fit.json) that no Keras graph holds. One raw-image input cannot reproduce that without resizing
inside the graph, which would no longer give the members' own pixels. Export each member and
combine their outputs with `ensembles.apply.apply_saved_fit`, as `--predict` does.
"""

from __future__ import annotations

import argparse
import logging
import os

from core import exitcodes
from core.atomic import atomic_write_text
from core.errors import RunDirError
from core.filesystem import check_writable_dir
from core.rundir import RunDir, entry_file_stem, entry_folders
from pipeline.predict_action import single_run
from pipeline.predict_target import is_ensemble, model_problem, resolve_target
from reports.model_card import MODEL_CARD, ExportFacts, model_card_markdown
from training.errors import ConfigError
from training.export_model import (
    DEFAULT_FORMAT,
    EXPORT_FORMATS,
    PORTABLE_MODES,
    artifact_name,
    check_format,
    check_format_available,
    export_entry,
    preprocessing_mode,
)
from training.trained import load_trained_entry, read_run_config

logger = logging.getLogger(__name__)

EXPORT_DIR = "export"


def _exportable(run: RunDir, config) -> list[str]:
    return [p.name for p in entry_folders(run.models_dir)
            if model_problem(run, config, p.name) is None]


def run_export(args: argparse.Namespace) -> int:
    """`python benchmark.py --export --entry NAME --out RUNDIR [--format FORMAT]`.

    Args:
        args: the parsed command line: entry, export_format (None: keras), out (or
            dataset/preset).

    Returns:
        0.

    Raises:
        BenchmarkError: no --entry, an unknown entry, an ensemble or the SVM baseline (the
            message says why they cannot be exported), missing weights, or a format this
            installation cannot write (ONNX without its packages); nothing is written then.
    """
    run = single_run(args)
    config, _ = read_run_config(run.root)
    fmt = check_format(getattr(args, "export_format", None) or DEFAULT_FORMAT)
    name = getattr(args, "entry", None)
    if not name:
        raise ConfigError(f"--export needs --entry NAME; entries of {run.root} that can be "
                          f"exported: {', '.join(_exportable(run, config)) or 'none'}")
    if is_ensemble(run, name):
        raise RunDirError(
            f"{name} is an ensemble and cannot be exported as one model: its members take "
            "different input sizes, each decoded from the original image, and are combined by "
            "fit.json outside any network; export each member (--export --entry MEMBER) and "
            "combine their outputs with ensembles.apply.apply_saved_fit, as --predict does")
    target = resolve_target(run, config, name, action="be exported")
    check_format_available(fmt)
    out_dir = check_writable_dir(run.root / EXPORT_DIR / entry_file_stem(target.name),
                                 "the export folder")
    trained = load_trained_entry(run.root, target.name)
    path, diff = export_entry(trained, out_dir, fmt)
    mode = preprocessing_mode(trained)
    present = tuple((f, artifact_name(f)) for f in EXPORT_FORMATS
                    if (out_dir / artifact_name(f)).exists())
    card = out_dir / MODEL_CARD
    atomic_write_text(card, model_card_markdown(os.fspath(run.root), ExportFacts(
        entry=target.name, artifacts=present, image_size=trained.image_size,
        resize_mode=trained.resize_mode, preprocessing=mode,
        needs_dermbench=mode not in PORTABLE_MODES)))
    print(f"exported {target.name} ({fmt}): {path}")
    print(f"  input: RGB {trained.image_size}x{trained.image_size}, values 0-255 "
          f"({trained.resize_mode} resize as the run's image cache); output: 7 probabilities")
    print(f"  reloaded and checked: largest difference from the network {diff:.1e}")
    print(f"model card: {card}")
    return exitcodes.OK
