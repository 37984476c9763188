"""One entry's training run: the state that the phases (`training.protocol`) and the epoch
callback (`training.callbacks.EpochMonitor`) share.

`EntryRun` holds where training stands (epoch, best score, early stopping, the best checkpoint,
a NaN) and does the per-entry chores on top of `training.entry_data` and
`training.resume_state`: the training batches and class weights, predictions for a split, the
history rows, and saving, restoring or discarding the resume state.
"""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path
from typing import Any

import keras
import numpy as np

from core.atomic import atomic_write_json
from core.classes import NUM_CLASSES
from data_utils.pipeline import CacheBatches
from training import policies
from training.entry_data import EntryData, SplitData, TrimmedBatches, predict_rows
from training.errors import ProtocolError
from training.resume_state import (
    HISTORY_FILE,
    PROGRESS_FILE,
    STATE_DIR,
    STATE_FORMAT,
    append_history,
    read_progress,
    save_state_arrays,
    save_weights_atomic,
    truncate_history,
)
from training.settings import RunConfig

logger = logging.getLogger(__name__)


class EntryRun:
    """One entry's training run: state shared by the phases and the epoch callback."""

    def __init__(self, entry: str, config: RunConfig, data: EntryData, entry_dir: Path,
                 batch_size: int, fingerprint: str | None, devices: int = 1) -> None:
        self.entry = entry
        self.devices = int(devices)
        self.steps_per_epoch: int | None = None  # set by train_batches()
        self.config = config
        self.training = config.training
        self.data = data
        self.entry_dir = Path(entry_dir)
        self.state_dir = self.entry_dir / STATE_DIR
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(self.training.eval_batch_size or batch_size)
        self.fingerprint = fingerprint
        self.seed = int(config.seed)
        self.global_epoch = 0
        self.train_seconds = 0.0
        self.stopping = policies.EarlyStopping()
        self.nan_at: str | None = None
        self.best_file: str | None = None
        self.progress: dict[str, Any] | None = None
        self.net: keras.Model | None = None  # the zoo model, set once built
        self.infer: keras.Model | None = None  # the inference twin of the training model

    # data
    def predict(self, split: SplitData) -> np.ndarray:
        """The inference model's probabilities for a split (`predict_rows`)."""
        return predict_rows(self.infer, self.data.images, split.rows, self.eval_batch_size)

    def train_batches(self) -> CacheBatches:
        """The shuffled training batches (sizes multiples of the device count, `TrimmedBatches`).

        Raises:
            ProtocolError: fewer training images than devices.
        """
        batches = TrimmedBatches(
            self.data.images, self.data.train.rows, self.data.train.labels,
            batch_size=self.batch_size, multiple=self.devices, shuffle=True, seed=self.seed,
            balanced=bool(self.training.balanced_sampling),
        )
        self.steps_per_epoch = len(batches)
        if not len(batches):
            raise ProtocolError(
                f"{self.entry}: the training split has {len(self.data.train)} image(s), fewer "
                f"than the {self.devices} devices; use fewer --devices or more images")
        return batches

    def class_weight(self) -> dict[int, float] | None:
        """Loss weights per class (`policies.class_weights`); None under balanced sampling."""
        if self.training.balanced_sampling:
            return None  # sampling already balances the classes
        counts = np.bincount(self.data.train.labels, minlength=NUM_CLASSES)
        return policies.class_weights(counts, self.training.class_weighting)

    # history
    def append_history(self, row: dict[str, Any]) -> None:
        """Append one epoch's row to history.csv."""
        append_history(self.entry_dir, row)

    def truncate_history(self) -> None:
        """Drop history rows of epochs that the resume state does not cover."""
        truncate_history(self.entry_dir, self.global_epoch)

    # state
    def save_state(self, model: keras.Model, phase_index: int, phase_epochs: int, finished: bool,
                   improved: bool) -> None:
        """Write this epoch's weights, optimizer and progress (see `EpochMonitor`).

        The new epoch's files are written under new names first, then progress.json (atomic)
        switches to them, then the files it no longer names are removed.
        """
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tag = f"{self.global_epoch:04d}"
        state = f"epoch-{tag}.npz"
        save_state_arrays(model, self.state_dir / state)
        if improved:
            # The zoo model's weights only (no optimizer): loadable into create_backbone(...).
            self.best_file = f"best-{tag}.weights.h5"
            save_weights_atomic(self.net, self.state_dir / self.best_file)
        progress = {
            "format": STATE_FORMAT,
            "entry": self.entry,
            "fingerprint": self.fingerprint,
            "batch_size": self.batch_size,
            "devices": self.devices,
            "steps_per_epoch": self.steps_per_epoch,
            "phase_index": phase_index,
            "phase_epochs": phase_epochs,
            "phase_finished": bool(finished),
            "global_epoch": self.global_epoch,
            "iterations": int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
            "best": self.stopping.best if math.isfinite(self.stopping.best) else None,
            "best_epoch": self.stopping.best_epoch,
            "waited": self.stopping.waited,
            "best_weights": self.best_file,
            "state": state,
            "train_seconds": self.train_seconds,
        }
        atomic_write_json(self.state_dir / PROGRESS_FILE, progress)
        self.progress = progress
        keep = {PROGRESS_FILE, state, self.best_file}
        for path in self.state_dir.iterdir():
            if path.name not in keep and not path.name.startswith("."):
                path.unlink(missing_ok=True)

    def restore(self) -> dict[str, Any] | None:
        """Load a matching resume state (None: start the entry from scratch).

        Call `train_batches()` first: a state saved with other steps per epoch is discarded.
        """
        progress = read_progress(self.entry_dir)
        if progress is None:
            return None
        reasons = []
        if progress.get("fingerprint") != self.fingerprint:
            reasons.append("a different protocol fingerprint")
        if int(progress.get("batch_size", -1)) != self.batch_size:
            reasons.append(f"batch size {progress.get('batch_size')} (now {self.batch_size})")
        if progress.get("entry") != self.entry:
            reasons.append(f"entry {progress.get('entry')!r}")
        steps = progress.get("steps_per_epoch")
        if None not in (steps, self.steps_per_epoch) and int(steps) != self.steps_per_epoch:
            # Another device count trims the epochs differently (`TrimmedBatches`).
            reasons.append(f"{steps} steps per epoch (now {self.steps_per_epoch}, "
                           f"{self.devices} device(s))")
        files = [progress.get("state"), progress.get("best_weights")]
        if any(not f or not (self.state_dir / f).is_file() for f in files):
            reasons.append("missing files")
        if reasons:
            logger.warning("%s: discarding the resume state in %s (%s); training from the start",
                           self.entry, self.state_dir, ", ".join(reasons))
            self.discard_state()
            return None
        self.global_epoch = int(progress["global_epoch"])
        self.train_seconds = float(progress.get("train_seconds", 0.0))
        best = progress.get("best")
        self.stopping = policies.EarlyStopping(
            best=-math.inf if best is None else float(best),
            best_epoch=int(progress.get("best_epoch", -1)), waited=int(progress.get("waited", 0)))
        self.best_file = progress["best_weights"]
        self.progress = progress
        self.truncate_history()
        logger.info("%s: resuming after epoch %d (phase %d, %d epoch(s) into it)", self.entry,
                    self.global_epoch, int(progress["phase_index"]) + 1,
                    int(progress["phase_epochs"]))
        return progress

    def discard_state(self) -> None:
        """Delete the resume state and history.csv (the entry starts from scratch)."""
        shutil.rmtree(self.state_dir, ignore_errors=True)
        history = self.entry_dir / HISTORY_FILE
        history.unlink(missing_ok=True)
        self.progress = None
