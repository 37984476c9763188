"""The protocol's Keras callbacks.

- `EpochMonitor` runs after every epoch of a phase's `fit` (`training.protocol`): it predicts the
  validation split (and adds its metrics to the epoch's logs, for the callbacks after it),
  appends the history row, updates early stopping (`policies`), saves the resume state
  (`training.entry_run.EntryRun.save_state`) and stops the fit on a NaN/infinite loss or when
  early stopping says so.
- `ProgressEvents` reports the phase, each batch (at most a few times a second) and each finished
  epoch to a callable: the worker hands it `training.worker_process.emit_event`, and the runner's
  console draws the progress bar from those events.
- `EpochTensorBoard`: Keras's TensorBoard callback numbering epochs across phases (`--tensorboard`).

For tests: $DERMBENCH_SIMULATE_NAN=1 makes every epoch's loss NaN.
"""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from collections.abc import Callable
from typing import Any

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
        shared = logs if isinstance(logs, dict) else {}
        logs = dict(shared)
        loss = float(logs.get("loss", math.nan))
        if os.environ.get(SIMULATE_NAN_ENV) == "1":
            loss = math.nan
        proba = run.predict(run.data.val)
        val = _val_metrics(run.data.val.labels, proba)
        global_epoch = run.global_epoch + 1
        lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        seconds = time.perf_counter() - self.started
        # The callbacks after this one (progress events, TensorBoard) see the validation metrics
        # and the epoch's time, as history.csv records them.
        shared.update(val, seconds=round(seconds, 3))
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


# Least seconds between two batch events: enough for a live bar, few lines through the pipe.
BATCH_EVENT_INTERVAL = 0.2


class ProgressEvents(keras.callbacks.Callback):
    """Report a phase's progress to `emit(kind, **fields)`: the events the runner's console draws.

    Events (every one names the entry and the phase):

    - "phase" when the phase's fit starts: index and count of phases, epochs, steps per epoch;
    - "batch" after a training batch, at most every `BATCH_EVENT_INTERVAL` seconds and always
      after an epoch's last: epoch, step, steps, the running loss;
    - "epoch" after each epoch (place it after `EpochMonitor`, whose validation metrics and
      epoch time it reads from the logs): epoch, loss, val_balanced_accuracy, seconds.

    Attributes:
        emit: the sink, e.g. `training.worker_process.emit_event`.
    """

    def __init__(self, emit: Callable[..., None], entry: str, phase: str, index: int,
                 phases: int, epochs: int, steps: int, initial_epoch: int = 0,
                 interval: float = BATCH_EVENT_INTERVAL) -> None:
        super().__init__()
        self.emit = emit
        self.fields = {"entry": entry, "phase": phase}
        self.index, self.phases, self.epochs, self.steps = index, phases, epochs, steps
        self.initial_epoch = initial_epoch
        self.interval = interval
        self._epoch = initial_epoch
        self._started = 0.0
        self._last = 0.0

    def on_train_begin(self, logs=None) -> None:
        self.emit("phase", **self.fields, index=self.index + 1, phases=self.phases,
                  epochs=self.epochs, steps=self.steps, initial_epoch=self.initial_epoch)

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self._epoch = epoch
        self._started = self._last = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs=None) -> None:
        now = time.perf_counter()
        step = batch + 1
        if step < self.steps and now - self._last < self.interval:
            return
        self._last = now
        self.emit("batch", **self.fields, epoch=self._epoch + 1, epochs=self.epochs, step=step,
                  steps=self.steps, loss=_number(logs, "loss"))

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        self.emit("epoch", **self.fields, epoch=epoch + 1, epochs=self.epochs,
                  loss=_number(logs, "loss"),
                  val_balanced_accuracy=_number(logs, "val_balanced_accuracy"),
                  seconds=_number(logs, "seconds") or round(time.perf_counter() - self._started, 3))


def _number(logs: Any, key: str) -> float | None:
    """logs[key] as a float (None when absent; NaN stays NaN)."""
    try:
        return float(logs[key])
    except (KeyError, TypeError, ValueError):
        return None


class EpochTensorBoard(keras.callbacks.TensorBoard):
    """keras.callbacks.TensorBoard for one phase, its epochs numbered across the whole entry.

    Each phase is its own `fit` whose epochs start at 0; `epoch_offset` (the epochs of the
    phases before) makes TensorBoard's step the entry's epoch, as in history.csv. Place it after
    `EpochMonitor`, so the validation metrics are in the logs (TensorBoard's "validation" run).
    Only epoch scalars are written (no graph, no histograms): the loss, accuracy, learning rate
    and the validation metrics.
    """

    def __init__(self, log_dir: str | os.PathLike, epoch_offset: int = 0) -> None:
        super().__init__(log_dir=os.fspath(log_dir), write_graph=False, update_freq="epoch")
        self.epoch_offset = int(epoch_offset)
        if keras.backend.backend() != "tensorflow":
            _tensorflow_without_gpus()

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        super().on_epoch_end(epoch + self.epoch_offset, logs)


def _tensorflow_without_gpus() -> None:
    """Under JAX, TensorFlow only writes the summaries: keep it off the GPUs, whose memory it
    would otherwise reserve at its first operation, leaving none for JAX."""
    import tensorflow as tf

    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # TensorFlow has started already; nothing to change any more
        logger.debug("TensorFlow's devices are set already", exc_info=True)
