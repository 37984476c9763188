"""The one training protocol, applied to a single entry (everything inside the worker process).

For a pretrained backbone:

1. Phase "frozen": the base (the zoo model's "backbone" layer) is frozen, so its BatchNorm runs in
   inference mode; the new head is trained at `phase1_lr`.
2. Phase "finetune": training resumes from the best phase-1 weights with the top
   `unfreeze_fraction` of the base unfrozen (`policies.unfreeze_start`), every BatchNormalization
   layer still frozen, at the lower `phase2_lr`.

A from-scratch model (paper_cnn) trains everything in one phase "scratch" of `scratch_epochs`.

Each phase: AdamW with linear warmup + cosine decay (`policies.learning_rate`), class-weighted
sparse categorical cross-entropy (`policies.class_weights`), augmentation inside the model
(`training.augment`). After every epoch the validation split is predicted, its balanced accuracy
drives checkpointing and early stopping, a history row is appended, and a resume state
(weights, optimizer variables, progress.json) is written atomically to `state/`, so a killed
process continues from its last completed epoch. A NaN/infinite loss stops the entry with status
"nan". When training is over, the best checkpoint predicts validation and test once; the test
split is never touched before.

Every number comes from the typed config's `training` settings (`training.settings`).

This module holds `train_entry` and the phase loop; the parts live in their own modules:

    training.entry_data    the splits, the training batches, predictions and prediction files
    training.backend       seeding, deterministic kernels, the dtype policy (`setup_backend`)
    training.model         the training model, the trainable flags per phase, the compile step
    training.entry_run     the state shared by the phases and the epoch callback (`EntryRun`)
    training.callbacks     the per-epoch callback (`EpochMonitor`), progress events
                           (`ProgressEvents`), TensorBoard logs (`EpochTensorBoard`)
    training.resume_state  history.csv and the resume state's files

Backends: everything is Keras 3 and runs under TensorFlow or JAX; TensorFlow is imported only on
TensorFlow-only paths (GPU query, op determinism), each guarded by the backend and with its JAX
counterpart (`training.backend`). Under JAX every step is XLA-compiled
(`training.model.jit_compile_setting`). `train_entry(devices=N)` trains data-parallel on N
devices (`training.distribution`): the model is built, compiled, trained and used for prediction
inside `data_parallel`, each training batch is cut to a multiple of N
(`training.entry_data.TrimmedBatches`) and prediction batches are padded to one full shape
(`training.entry_data.predict_rows`).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras

import zoo
from core.entry_metrics import write_entry_metrics
from data_utils.pipeline import CacheBatches, SetEpoch
from training import policies
from training.backend import setup_backend
from training.callbacks import EpochMonitor, EpochTensorBoard, ProgressEvents
from training.distribution import check_batch_size, check_devices, data_parallel
from training.entries import (
    backbone_of,
    entry_description,
    entry_family,
    entry_group,
    entry_kind,
)
from training.entry_data import EntryData, write_prediction_file
from training.entry_run import EntryRun
from training.errors import ProtocolError
from training.model import TrainingModel, build_training_model, compile_phase, configure_phase
from training.out_of_memory import simulate_out_of_memory
from training.resume_state import BEST_WEIGHTS, load_state_arrays
from training.settings import RunConfig
from zoo.flops import count_model_flops

logger = logging.getLogger(__name__)


def train_entry(
    entry: str,
    config: RunConfig,
    data: EntryData,
    entry_dir: str | os.PathLike,
    *,
    fingerprint: str | None = None,
    batch_size: int | None = None,
    verbose: Any = "auto",
    callbacks: list[keras.callbacks.Callback] | tuple = (),
    devices: int | None = None,
    progress: Callable[..., None] | None = None,
    tensorboard_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Train one entry under the protocol, predict val/test from the best checkpoint, write metrics.

    Resumes from `entry_dir/state/` when a state of the same fingerprint, batch size and steps
    per epoch exists. Runs under any Keras backend (TensorFlow, JAX).

    Args:
        entry: a backbone name or "paper_cnn" (the SVM baseline has its own module).
        config: the typed config (`RunConfig`, run.json["config"]).
        data: the entry's cached images and splits (`training.entry_data.load_entry_data`).
        entry_dir: models/<entry>.
        fingerprint: the run's protocol fingerprint (recorded in metrics.json).
        batch_size: overrides training.batch_size (the runner's OOM retries).
        verbose: Keras fit verbosity (progress bar per epoch).
        callbacks: extra Keras callbacks (called before the protocol's own, so their
            on_epoch_end sees the epoch before validation and checkpointing).
        devices: data parallelism over this many devices (`training.distribution`); None or 1:
            one device. The batch size is the global one and must be a multiple of it.
        progress: called as progress(kind, **fields) with the progress events
            (`training.callbacks.ProgressEvents`, plus "status" events: building the model,
            predicting); None: none.
        tensorboard_dir: write TensorBoard logs of every epoch there (`EpochTensorBoard`);
            None: none. Neither changes the results.

    Returns:
        The metrics.json object written (status "ok" or "nan"; "devices" records the count).

    Raises:
        SimulatedOutOfMemoryError: see `training.out_of_memory.simulate_out_of_memory`.
        DevicesError: more devices than visible, or a batch size they do not divide.
        ProtocolError, zoo errors, backend errors: the worker records them.
    """
    entry_dir = Path(entry_dir)
    entry_dir.mkdir(parents=True, exist_ok=True)
    training = config.training
    batch_size = int(batch_size or training.batch_size)
    n_devices = check_devices(devices)
    check_batch_size(batch_size, n_devices)
    check_batch_size(int(training.eval_batch_size or batch_size), n_devices, "eval batch size")
    simulate_out_of_memory(batch_size)
    mixed = setup_backend(int(config.seed), bool(config.deterministic), training.mixed_precision)
    spec = zoo.get_config(backbone_of(entry))
    phases = policies.phase_plan(training, bool(spec.pretrained))
    if not phases:
        raise ProtocolError(f"{entry}: the config trains it for 0 epochs; set --epochs to 1 or more")
    run = EntryRun(entry, config, data, entry_dir, batch_size, fingerprint, devices=n_devices)
    observers = _Observers(progress, tensorboard_dir)
    with data_parallel(n_devices):
        return _train_and_predict(run, phases, mixed, verbose, callbacks, observers)


class _Observers:
    """What watches the training without changing it: progress events and TensorBoard logs."""

    def __init__(self, progress: Callable[..., None] | None,
                 tensorboard_dir: str | os.PathLike | None) -> None:
        self.progress = progress
        self.tensorboard_dir = tensorboard_dir

    def status(self, entry: str, text: str) -> None:
        if self.progress is not None:
            self.progress("status", entry=entry, text=text)

    def callbacks(self, run: EntryRun, index: int, phases: list[policies.Phase], steps: int,
                  initial_epoch: int) -> list[keras.callbacks.Callback]:
        """The phase's observing callbacks (after `EpochMonitor`: they read its metrics)."""
        out: list[keras.callbacks.Callback] = []
        phase = phases[index]
        if self.progress is not None:
            out.append(ProgressEvents(self.progress, run.entry, phase.name, index, len(phases),
                                      phase.epochs, steps, initial_epoch))
        if self.tensorboard_dir is not None:
            out.append(EpochTensorBoard(self.tensorboard_dir,
                                        sum(p.epochs for p in phases[:index])))
        return out


def _train_and_predict(run: EntryRun, phases: list[policies.Phase], mixed: bool, verbose: Any,
                       callbacks: list[keras.callbacks.Callback] | tuple,
                       observers: _Observers) -> dict[str, Any]:
    """Build the model, train its phases (resuming if possible), predict, write metrics.json.

    Called inside `data_parallel`, so that every variable is created under the distribution.
    """
    config, training = run.config, run.training
    backbone = backbone_of(run.entry)
    pretrained = bool(zoo.get_config(backbone).pretrained)
    weights = config.weights if pretrained else None
    train = run.train_batches()
    progress = run.restore()
    if progress is None:
        run.discard_state()
    observers.status(run.entry, "building the model")
    tm = build_training_model(backbone, run.data.image_size, training, weights,
                              config.weights_dir, seed=run.seed)
    run.net, run.infer = tm.net, tm.infer
    trainable = _train_phases(run, tm, phases, train, progress, verbose, callbacks, observers)
    extra_common = {
        "entry": run.entry,
        "kind": entry_kind(run.entry),
        "description": entry_description(run.entry),
        "family": entry_family(run.entry),
        "group": entry_group(run.entry),
        "backbone": backbone,
        "fingerprint": run.fingerprint,
        "batch_size": run.batch_size,
        "devices": run.devices,
        "backend": keras.backend.backend(),
        "image_size": run.data.image_size,
        "weights": weights,
        "mixed_precision": mixed,
        "deterministic": bool(config.deterministic),
        "train_seconds": round(run.train_seconds, 3),
        "epochs_trained": run.global_epoch,
    }
    if run.nan_at is None and run.best_file is None:
        run.nan_at = "every validation pass (the model's probabilities were NaN or infinite)"
    if run.nan_at is not None:
        return _record_nan(run, extra_common)
    observers.status(run.entry, "predicting the validation and test splits")
    return _predict_and_record(run, tm, phases, trainable, extra_common)


def _train_phases(run: EntryRun, tm: TrainingModel, phases: list[policies.Phase],
                  train: CacheBatches, progress: dict[str, Any] | None, verbose: Any,
                  callbacks: list[keras.callbacks.Callback] | tuple,
                  observers: _Observers) -> dict[str, int]:
    """Fit every phase not finished before (stops at a NaN loss).

    Returns:
        Trainable parameters per phase name.
    """
    training = run.training
    steps = len(train)
    class_weight = run.class_weight()
    trainable: dict[str, int] = {}
    for index, phase in enumerate(phases):
        trainable[phase.name] = configure_phase(tm, phase, training)
        if progress is not None and (index < progress["phase_index"] or (
                index == progress["phase_index"] and progress["phase_finished"])):
            continue  # finished before the interruption
        compile_phase(tm, training, phase, steps)
        initial_epoch = 0
        if progress is not None and index == progress["phase_index"]:
            load_state_arrays(tm.model, run.state_dir / progress["state"])
            initial_epoch = int(progress["phase_epochs"])
        elif run.best_file is not None:
            tm.net.load_weights(run.state_dir / run.best_file)  # phase 2 starts from the best
        run.stopping = policies.EarlyStopping(run.stopping.best, run.stopping.best_epoch,
                                              0 if initial_epoch == 0 else run.stopping.waited)
        progress = None
        logger.info("%s: phase %s, %d epoch(s) at lr %g, %d trainable parameters", run.entry,
                    phase.name, phase.epochs, phase.lr, trainable[phase.name])
        tm.model.fit(
            train,
            epochs=phase.epochs,
            initial_epoch=initial_epoch,
            class_weight=class_weight,
            shuffle=False,  # CacheBatches shuffles itself, from (seed, epoch)
            # SetEpoch: the order of Keras epoch k is drawn from (seed, offset + k), so a resumed
            # fit(initial_epoch=k) sees exactly the orders an uninterrupted run would have seen.
            callbacks=[SetEpoch(train, offset=sum(p.epochs for p in phases[:index])),
                       *callbacks, EpochMonitor(run, index, phase),
                       *observers.callbacks(run, index, phases, steps, initial_epoch)],
            verbose=verbose,
        )
        if run.nan_at is not None:
            break
    return trainable


def _record_nan(run: EntryRun, extra_common: dict[str, Any]) -> dict[str, Any]:
    """metrics.json with status "nan" (the resume state is dropped: it would meet the NaN again)."""
    shutil.rmtree(run.state_dir, ignore_errors=True)  # history kept to look at
    message = f"loss became NaN or infinite in {run.nan_at}; lower the learning rate"
    logger.error("%s: %s", run.entry, message)
    return write_entry_metrics(run.entry_dir, extra={**extra_common, "status": "nan",
                                                     "error": message})


def _predict_and_record(run: EntryRun, tm: TrainingModel, phases: list[policies.Phase],
                        trainable: dict[str, int], extra_common: dict[str, Any]) -> dict[str, Any]:
    """Predict val and test from the best checkpoint, write the files and metrics.json."""
    entry_dir = run.entry_dir
    tm.net.load_weights(run.state_dir / run.best_file)
    os.replace(run.state_dir / run.best_file, entry_dir / f".{BEST_WEIGHTS}.tmp")
    os.replace(entry_dir / f".{BEST_WEIGHTS}.tmp", entry_dir / BEST_WEIGHTS)
    seconds, n = 0.0, 0
    for split, part in (("val", run.data.val), ("test", run.data.test)):
        started = time.perf_counter()
        proba = run.predict(part)
        seconds += time.perf_counter() - started
        n += len(part)
        write_prediction_file(entry_dir, split, part, proba, source=f"{run.entry} {split}")
    counts = zoo.param_counts(tm.model)
    extra = {
        **extra_common,
        "status": "ok",
        "error": None,
        "params": int(counts["total"]),
        "trainable_params_phase1": trainable.get("frozen", trainable.get("scratch")),
        "trainable_params_phase2": trainable.get("finetune"),
        "phases": [p.name for p in phases],
        "flops_per_image": int(count_model_flops(tm.net)),
        "optimizer_iterations": int(keras.ops.convert_to_numpy(tm.model.optimizer.iterations)),
        "inference_images_per_s": round(n / seconds, 3) if seconds > 0 else None,
        "best_epoch": run.stopping.best_epoch,
        "best_val_balanced_accuracy": run.stopping.best,
    }
    metrics = write_entry_metrics(entry_dir, extra=extra)
    shutil.rmtree(run.state_dir, ignore_errors=True)
    return metrics
