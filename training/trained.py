"""A finished entry, loaded back from its run directory for inference.

Training leaves in `models/<entry>/` the zoo model's weights of the best epoch
(`best.weights.h5`, `training.resume_state.BEST_WEIGHTS`) and in `run.json` the typed config it
was trained with (`training.settings.RunConfig`). Everything that uses a trained model after
training (test-time augmentation, `--predict`, Grad-CAM, `--export`) starts here, so that the
input size, the resize mode and the preprocessing are exactly those of training, read from the
run and never re-specified:

- `read_run_config(run_dir)`: the run's `RunConfig` and protocol fingerprint;
- `load_trained_entry(run_dir, entry)`: the zoo model with its best weights (`TrainedEntry`);
- `split_images(run_dir, entry)`: the run's validation and test images from the image cache, at
  the entry's size and resize mode, in the order of its prediction files;
- `TrainedEntry.predict(images)`: probabilities for uint8 images, in inference mode.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.atomic import read_json
from core.classes import NUM_CLASSES
from core.errors import RunDirError
from core.rundir import RunDir
from training.entries import backbone_of, check_entry, entry_kind, is_svm_entry
from training.resume_state import BEST_WEIGHTS
from training.settings import RunConfig

logger = logging.getLogger(__name__)

DEFAULT_PREDICT_BATCH = 32


def read_run_config(run_dir: str | Path) -> tuple[RunConfig, str | None]:
    """The run's typed config and protocol fingerprint, from run.json.

    Raises:
        RunDirError: no run.json, or one without a readable "config" (the message says to
            prepare the run again).
    """
    run = RunDir(run_dir)
    if not run.run_json.is_file():
        raise RunDirError(f"{run.root} has no run.json: it is not a prepared run directory "
                          "(train it with --all, or pass the run's folder with --out)")
    meta = read_json(run.run_json)
    if not isinstance(meta, dict) or "config" not in meta:
        raise RunDirError(f"{run.run_json} has no \"config\"; prepare the run again")
    return RunConfig.from_dict(meta["config"], run.run_json), meta.get("fingerprint")


@dataclass(frozen=True)
class TrainedEntry:
    """A finished CNN entry with its best weights loaded.

    Attributes:
        entry: the entry name (its zoo backbone's name).
        backbone: the zoo backbone.
        kind: "backbone" or "baseline".
        image_size: the square input size it was trained at.
        resize_mode: how images were fitted to that size ("square" or "crop").
        preprocessing: the preprocessing mode inside the model (the zoo's).
        net: the zoo model: uint8-range float images (N, s, s, 3) in, 7 probabilities out.
        weights: the weights file it was loaded from.
    """

    entry: str
    backbone: str
    kind: str
    image_size: int
    resize_mode: str
    preprocessing: str
    net: Any
    weights: Path

    def predict(self, images: np.ndarray, batch_size: int = DEFAULT_PREDICT_BATCH) -> np.ndarray:
        """Probabilities of uint8 images (N, s, s, 3), in inference mode, in float64.

        Every batch has the same shape (the last is padded by repeating its final image and the
        padding dropped), so a compiled predict step is traced once.
        """
        images = np.asarray(images)
        n = len(images)
        if n == 0:
            return np.zeros((0, NUM_CLASSES))
        batch_size = max(1, min(int(batch_size), n))
        pad = (-n) % batch_size
        if pad:
            images = np.concatenate([images, np.repeat(images[-1:], pad, axis=0)])
        out = [np.asarray(self.net(images[i:i + batch_size].astype("float32"), training=False))
               for i in range(0, len(images), batch_size)]
        return np.concatenate(out)[:n].astype(np.float64)


def load_trained_entry(run_dir: str | Path, entry: str) -> TrainedEntry:
    """Build an entry's zoo model as it was trained and load its best weights.

    Args:
        run_dir: a single run's directory (a grid replicate's folder for a grid).
        entry: a CNN entry of the run (not the SVM baseline: it has no Keras model).

    Returns:
        The loaded entry.

    Raises:
        RunDirError: no run.json, an entry the run was not resolved for, an SVM entry, or
            missing weights (each message names the file and what to do).
    """
    check_entry(entry, derived=False)
    run = RunDir(run_dir)
    config, _ = read_run_config(run.root)
    if is_svm_entry(entry):
        raise RunDirError(f"{entry} is the SVM baseline: it has no Keras model to load (its "
                          "predictions come from frozen features and an SVM)")
    size = config.training.image_size.get(entry)
    if size is None:
        raise RunDirError(f"{run.run_json}: the run was not resolved for {entry!r} (config."
                          "training.image_size has no size for it); train it with --all "
                          f"--models {entry}")
    weights = run.model_dir(entry) / BEST_WEIGHTS
    if not weights.is_file():
        raise RunDirError(f"{weights} is missing: {entry} has no trained weights in this run "
                          f"(train it with --all --models {entry} --out {run.root}; a run copied "
                          "without its weights can only be reported)")
    import zoo

    backbone = backbone_of(entry)
    net = zoo.create_backbone(backbone, NUM_CLASSES, input_shape=(int(size), int(size), 3),
                              weights=None, dropout=float(config.training.dropout),
                              preprocessing=config.training.preprocessing)
    net.load_weights(weights)
    return TrainedEntry(entry=entry, backbone=backbone, kind=entry_kind(entry),
                        image_size=int(size), resize_mode=config.resize_mode,
                        preprocessing=str(config.training.preprocessing or
                                          zoo.get_config(backbone).preprocessing),
                        net=net, weights=weights)


def split_images(run_dir: str | Path, entry: str, cache_dir: str | None = None,
                 workers: int | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The run's validation and test images at the entry's size and resize mode.

    The images come from the image cache (built if needed, exactly as training built it); the
    rows follow the entry's prediction files (splits.csv order).

    Returns:
        {"val": (image_ids, uint8 images), "test": (...)}.

    Raises:
        RunDirError: an unprepared run, or an entry it was not resolved for.
    """
    from training.worker import load_run_images

    run = RunDir(run_dir)
    config, _ = read_run_config(run.root)
    size = config.training.image_size.get(entry)
    if size is None or not run.splits_csv.is_file():
        raise RunDirError(f"{run.root}: no splits.csv or no size for {entry!r}; prepare and "
                          "train the run first")
    _, data = load_run_images(run.splits_csv, config, int(size), cache_dir, workers)
    return {split: (part.image_id, np.asarray(data.images[part.rows]))
            for split, part in (("val", data.val), ("test", data.test))}
