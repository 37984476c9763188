"""The protocol's per-epoch Keras callback: validate, log the history, checkpoint, stop.

`EpochMonitor` runs after every epoch of a phase's `fit` (`training.protocol`): it predicts the
validation split, appends the history row, updates early stopping (`policies`), saves the
resume state (`training.entry_run.EntryRun.save_state`) and stops the fit on a NaN/infinite loss
or when early stopping says so.

For tests: $DERMBENCH_SIMULATE_NAN=1 makes every epoch's loss NaN.
"""

from __future__ import annotations

import logging
import math
import os
import time
import warnings

import keras
import numpy as np

from training import policies
from training.entry_run import EntryRun

logger = logging.getLogger(__name__)

SIMULATE_NAN_ENV = "DERMBENCH_SIMULATE_NAN"


def _val_metrics(labels: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """val_loss (mean cross-entropy, unweighted), val_accuracy, val_balanced_accuracy."""
    from sklearn.metrics import balanced_accuracy_score

    if not np.isfinite(proba).all():
        return {"val_loss": math.nan, "val_accuracy": math.nan, "val_balanced_accuracy": math.nan}
    picked = np.clip(proba[np.arange(len(labels)), labels], 1e-7, 1.0)
    pred = proba.argmax(axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "y_pred contains classes not in y_true"
        balanced = balanced_accuracy_score(labels, pred)
    return {
        "val_loss": float(-np.log(picked).mean()),
        "val_accuracy": float((pred == labels).mean()),
        "val_balanced_accuracy": float(balanced),
    }


class EpochMonitor(keras.callbacks.Callback):
    """After each epoch: validate, log history, checkpoint the best, save resume state, stop.

    Order matters for crash safety: the new epoch's files are written under new names first,
    then progress.json (atomic) switches to them, then the old files are removed. A kill at any
    point leaves a consistent state; history rows beyond progress.json are dropped on resume.
    """

    def __init__(self, run: EntryRun, phase_index: int, phase: policies.Phase) -> None:
        super().__init__()
        self.run = run
        self.phase_index = phase_index
        self.phase = phase
        self.started = 0.0

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        run = self.run
        logs = dict(logs or {})
        loss = float(logs.get("loss", math.nan))
        if os.environ.get(SIMULATE_NAN_ENV) == "1":
            loss = math.nan
        proba = run.predict(run.data.val)
        val = _val_metrics(run.data.val.labels, proba)
        global_epoch = run.global_epoch + 1
        lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        seconds = time.perf_counter() - self.started
        row = {"epoch": global_epoch, "phase": self.phase.name, "loss": loss,
               "accuracy": float(logs.get("accuracy", math.nan)), **val, "lr": lr,
               "seconds": round(seconds, 3)}
        run.append_history(row)
        run.train_seconds += seconds
        logger.info("%s %s epoch %d/%d: loss %.4f, val balanced accuracy %.4f (%.1f s)",
                    run.entry, self.phase.name, epoch + 1, self.phase.epochs, loss,
                    val["val_balanced_accuracy"], seconds)
        if not math.isfinite(loss):
            run.nan_at = f"phase {self.phase.name}, epoch {epoch + 1} (loss {loss})"
            self.model.stop_training = True
            return
        run.stopping, improved, stop = policies.update_early_stopping(
            run.stopping, val["val_balanced_accuracy"], global_epoch,
            int(run.training.early_stopping_patience))
        run.global_epoch = global_epoch
        finished = stop or epoch + 1 >= self.phase.epochs
        run.save_state(self.model, self.phase_index, epoch + 1, finished, improved)
        if stop:
            logger.info("%s: early stop after %d epochs without improvement", run.entry,
                        run.stopping.waited)
            self.model.stop_training = True
