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

Backends: everything here is Keras 3 and runs under TensorFlow or JAX; TensorFlow is imported
only on TensorFlow-only paths (GPU query, op determinism), each guarded by the backend and with
its JAX counterpart (`setup_backend`). Under JAX every step is XLA-compiled
(`jit_compile_setting`). `train_entry(devices=N)` trains data-parallel on N devices
(`training.distribution`): the model is built, compiled, trained and used for prediction inside
`data_parallel`, each training batch is cut to a multiple of N (`TrimmedBatches`) and prediction
batches are padded to one full shape (`predict_rows`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

import zoo
from core.atomic import atomic_write_csv, atomic_write_json, read_json
from core.classes import CLASS_INDEX, CLASSES, NUM_CLASSES
from core.errors import BenchmarkError, DataError
from core.predictions import make_predictions, write_predictions
from core.rundir import RunDir
from data_utils.pipeline import CacheBatches, SetEpoch
from training import policies
from training.augment import build_augmentation
from training.distribution import check_batch_size, check_devices, data_parallel
from training.entries import backbone_of, entry_description, entry_kind
from training.settings import RunConfig, TrainingSettings
from zoo.flops import count_model_flops

logger = logging.getLogger(__name__)

HISTORY_COLUMNS: tuple[str, ...] = (
    "epoch", "phase", "loss", "accuracy", "val_loss", "val_accuracy", "val_balanced_accuracy",
    "lr", "seconds",
)
STATE_DIR = "state"
PROGRESS_FILE = "progress.json"
BEST_WEIGHTS = "best.weights.h5"
HISTORY_FILE = "history.csv"
STATE_FORMAT = 1
SIMULATE_OOM_ENV = "DERMBENCH_SIMULATE_OOM_ABOVE_BATCH"
SIMULATE_NAN_ENV = "DERMBENCH_SIMULATE_NAN"
JAX_DETERMINISTIC_FLAG = "--xla_gpu_deterministic_ops=true"


class SimulatedOutOfMemoryError(MemoryError):
    """Raised instead of training when $DERMBENCH_SIMULATE_OOM_ABOVE_BATCH is below the batch size."""


class ProtocolError(BenchmarkError):
    """A split or config that the protocol cannot train on (the message says what to fix)."""


# --- data ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SplitData:
    """One split of an entry's data: cache rows, labels and the identity columns.

    Attributes:
        rows: (n,) int64 rows of the image cache.
        labels: (n,) int32 class indices (canonical order).
        image_id, lesion_id, label: (n,) str arrays for the prediction files.
    """

    rows: np.ndarray
    labels: np.ndarray
    image_id: np.ndarray
    lesion_id: np.ndarray
    label: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)


@dataclass(frozen=True)
class EntryData:
    """The cached images of an entry and its train/val/test splits."""

    images: np.ndarray
    train: SplitData
    val: SplitData
    test: SplitData

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1])


def load_entry_data(cache: Any, splits: pd.DataFrame) -> EntryData:
    """Split the cached images as `splits.csv` says.

    Args:
        cache: an `data_utils.cache.ImageCache` holding every image of the table.
        splits: the run's splits table (image_id, lesion_id, dx, split).

    Returns:
        The entry's data.

    Raises:
        ProtocolError: no "split" column, an unknown class, or an empty train/val/test split.
        DataError: image ids missing from the cache.
    """
    missing = [c for c in ("image_id", "lesion_id", "dx", "split") if c not in splits.columns]
    if missing:
        raise ProtocolError(
            f"splits.csv lacks the column(s) {', '.join(missing)}; prepare the run again"
        )
    bad = ~splits["dx"].isin(CLASSES)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise ProtocolError(
            f"splits.csv row {row + 1}: unknown class {splits['dx'].iloc[row]!r}; expected one of "
            f"{', '.join(CLASSES)}"
        )
    parts = {}
    for split in ("train", "val", "test"):
        part = splits[splits["split"] == split]
        if part.empty:
            raise ProtocolError(
                f"splits.csv has no '{split}' rows; every entry needs train, val and test images "
                "(use more images or other --ratios)"
            )
        parts[split] = SplitData(
            rows=cache.rows(part["image_id"].to_numpy()),
            labels=np.array([CLASS_INDEX[c] for c in part["dx"]], dtype=np.int32),
            image_id=part["image_id"].astype(str).to_numpy(),
            lesion_id=part["lesion_id"].astype(str).to_numpy(),
            label=part["dx"].astype(str).to_numpy(),
        )
    return EntryData(images=cache.images, **parts)


class TrimmedBatches(CacheBatches):
    """Training batches whose sizes are all multiples of `multiple` (data parallelism).

    Every batch is split evenly over the devices, so the last, partial batch of an epoch is cut
    to a multiple of `multiple` (left out when smaller). At most `multiple - 1` images sit out an
    epoch; which ones changes with the epoch's shuffled order.
    """

    def __init__(self, images: np.ndarray, rows, labels=None, *, batch_size: int,
                 multiple: int = 1, **kwargs: Any) -> None:
        """Like `CacheBatches`, plus `multiple` (a positive divisor of `batch_size`)."""
        super().__init__(images, rows, labels, batch_size=batch_size, **kwargs)
        if int(multiple) < 1 or int(batch_size) % int(multiple):
            raise ValueError(f"multiple must divide batch_size {batch_size}, got {multiple}")
        self.multiple = int(multiple)
        self.count = len(np.asarray(rows))

    def __len__(self) -> int:
        full, rest = divmod(self.count, self.batch_size)
        return full + (1 if rest >= self.multiple else 0)

    def __getitem__(self, index: int):
        batch = super().__getitem__(index)
        parts = batch if isinstance(batch, tuple) else (batch,)
        keep = len(parts[0]) // self.multiple * self.multiple
        if keep == len(parts[0]):
            return batch
        trimmed = tuple(part[:keep] for part in parts)
        return trimmed if isinstance(batch, tuple) else trimmed[0]


def predict_rows(model: keras.Model, images: np.ndarray, rows: np.ndarray,
                 batch_size: int) -> np.ndarray:
    """Predict `images[rows]` in batches of exactly `batch_size`.

    The last batch is padded by repeating its final image and the padded outputs are dropped:
    every call has one input shape, so XLA (JAX, or TensorFlow's jit) compiles the predict step
    once for validation and test alike, and a data-parallel batch always splits evenly over
    the devices. Prediction is in inference mode (no augmentation, BatchNorm moving
    statistics), so the padding does not change any image's output (beyond the rounding of
    kernels chosen per batch size).

    Args:
        model: the model (uint8 images in, probabilities out).
        images: (N, H, W, 3) uint8 array or memmap.
        rows: (n,) rows of `images`, n >= 1, in the order of the output.
        batch_size: images per forward pass.

    Returns:
        (n, classes) array of the model's outputs.
    """
    rows = np.asarray(rows, dtype=np.int64)
    n = len(rows)
    pad = (-n) % int(batch_size)
    padded = np.concatenate([rows, np.repeat(rows[-1:], pad)]) if pad else rows
    proba = model.predict(CacheBatches(images, padded, batch_size=int(batch_size)), verbose=0)
    return np.asarray(proba)[:n]


# --- backend setup ------------------------------------------------------------------------------

def gpu_available() -> bool:
    """Whether the Keras backend sees a GPU (backend-agnostic)."""
    backend = keras.backend.backend()
    with contextlib.suppress(Exception):
        if backend == "tensorflow":
            import tensorflow as tf

            return bool(tf.config.list_physical_devices("GPU"))
        if backend == "jax":
            import jax

            return any(d.platform == "gpu" for d in jax.devices())
        if backend == "torch":
            import torch

            return bool(torch.cuda.is_available())
    return False


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and Keras's global seed generator (and TensorFlow under TensorFlow).

    `keras.utils.set_random_seed` imports TensorFlow whenever it is installed (to seed `tf.data`);
    under another backend nothing here uses TensorFlow, so the same seeding is done without
    importing it (a JAX worker never loads TensorFlow).

    Args:
        seed: a non-negative integer.
    """
    if keras.backend.backend() == "tensorflow" or "tensorflow" in sys.modules:
        keras.utils.set_random_seed(int(seed))
        return
    random.seed(int(seed))
    np.random.seed(int(seed))
    # What set_random_seed does besides: remember the seed and drop the global SeedGenerator, so
    # `keras.random` calls without a seed restart from it (the generator is recreated lazily).
    with contextlib.suppress(ImportError, AttributeError):
        from keras.src.backend.common import global_state
        from keras.src.random import seed_generator
        from keras.src.utils import rng_utils

        global_state.set_global_attribute(rng_utils.GLOBAL_RANDOM_SEED, int(seed))
        global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
    if keras.backend.backend() == "torch":
        import torch

        torch.manual_seed(int(seed))


def _xla_flag_set(flag: str) -> bool:
    return flag in os.environ.get("XLA_FLAGS", "").split()


def _enable_determinism() -> None:
    """Deterministic kernels for the current backend (see `setup_backend`)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    elif backend == "jax" and not _xla_flag_set(JAX_DETERMINISTIC_FLAG) and gpu_available():
        logger.warning(
            "deterministic run under JAX on a GPU without XLA_FLAGS=%s: GPU reductions may "
            "differ between runs (the worker sets the flag before JAX starts; set it yourself "
            "when calling the protocol in-process)", JAX_DETERMINISTIC_FLAG)


def setup_backend(seed: int, deterministic: bool, mixed_precision: str) -> bool:
    """Seed everything, enable deterministic ops if asked, pick the dtype policy.

    Call once per process, before building a model.

    Determinism per backend: TensorFlow: `tf.config.experimental.enable_op_determinism()`
    (identical results on CPU and GPU). JAX: XLA on the CPU is deterministic already; on a GPU
    XLA needs `XLA_FLAGS=--xla_gpu_deterministic_ops=true` before JAX initialises its backends,
    which `training.worker` sets for a deterministic run (in-process callers get a warning when
    it is missing on a GPU).

    Args:
        seed: seeds Python, NumPy and the backend (`seed_everything`).
        deterministic: deterministic kernels, as above.
        mixed_precision: "auto"/"on": mixed_float16 when a GPU is visible; "off": float32.
            Never on CPU (slower there).

    Returns:
        Whether mixed precision is on.

    Raises:
        ProtocolError: an unknown mixed_precision value.
    """
    seed_everything(int(seed))
    if deterministic:
        _enable_determinism()
    if mixed_precision not in ("auto", "on", "off"):
        raise ProtocolError(f"mixed_precision must be auto, on or off, got {mixed_precision!r}")
    use = mixed_precision != "off" and gpu_available()
    if mixed_precision == "on" and not use:
        logger.warning("mixed precision requested but no GPU is visible; training in float32")
    keras.mixed_precision.set_dtype_policy("mixed_float16" if use else "float32")
    return use


# --- model --------------------------------------------------------------------------------------

@dataclass
class TrainingModel:
    """The assembled model and handles on its parts."""

    model: keras.Model
    net: keras.Model  # the zoo model (preprocess, backbone, pool, dropout, logits, predictions)
    base: keras.layers.Layer  # net's "backbone"
    # The same layers and variables as `model`, never compiled: its predict function is traced
    # once and survives the recompilation of each phase (large graphs take long to trace).
    infer: keras.Model


def build_training_model(
    backbone: str,
    image_size: int,
    training: TrainingSettings,
    weights: str | None = None,
    weights_dir: str | None = None,
    seed: int = 0,
) -> TrainingModel:
    """Input uint8 (s, s, 3) -> float32 -> augmentation -> the zoo model.

    Args:
        backbone: zoo backbone name.
        image_size: square input size.
        training: the training settings (dropout, preprocessing, augmentation).
        weights: initial weights for zoo.create_backbone (None, "imagenet" or a file).
        weights_dir: folder with official weight files.
        seed: augmentation seed.

    Returns:
        The model and its parts.
    """
    inputs = keras.Input((image_size, image_size, 3), dtype="uint8", name="image")
    x = keras.ops.cast(inputs, "float32")
    augment = build_augmentation(training.augmentation, seed=seed)
    if augment is not None:
        x = augment(x)
    net = zoo.create_backbone(
        backbone,
        NUM_CLASSES,
        input_shape=(image_size, image_size, 3),
        weights=weights,
        dropout=float(training.dropout),
        preprocessing=training.preprocessing,
        weights_dir=weights_dir,
    )
    outputs = net(x)
    model = keras.Model(inputs, outputs, name=f"{backbone}_training")
    infer = keras.Model(inputs, outputs, name=f"{backbone}_inference")
    return TrainingModel(model=model, net=net, base=net.get_layer("backbone"), infer=infer)


def _all_sublayers(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    """Every layer nested inside `layer` (recursively through nested models), `layer` excluded."""
    found: list[keras.layers.Layer] = []
    stack = list(getattr(layer, "layers", []))
    while stack:
        sub = stack.pop()
        found.append(sub)
        stack.extend(getattr(sub, "layers", []))
    return found


def _set_trainable(layer: keras.layers.Layer, value: bool) -> None:
    """Set `trainable` on a layer and explicitly on every nested layer.

    (Setting it on an outer functional model does not reliably reach the layers of a nested
    model that was frozen before, so every level is set.)
    """
    layer.trainable = value
    for sub in _all_sublayers(layer):
        sub.trainable = value


def configure_phase(tm: TrainingModel, phase: policies.Phase, training: TrainingSettings) -> int:
    """Set the trainable flags for a phase.

    frozen: base frozen (inference-mode BatchNorm), head trainable. finetune: the top of the base
    per `policies.unfreeze_start`, BatchNorm frozen everywhere in the base. scratch: everything.

    Returns:
        The number of trainable parameters in this phase.
    """
    _set_trainable(tm.model, True)
    if phase.name == "frozen":
        _set_trainable(tm.base, False)
    elif phase.name == "finetune":
        layers = list(tm.base.layers)
        types = [type(layer).__name__ for layer in layers]
        start = policies.unfreeze_start(types, float(training.unfreeze_fraction))
        flags = policies.trainable_flags(types, start)
        for layer, flag in zip(layers, flags, strict=True):
            layer.trainable = flag
        for layer in _all_sublayers(tm.base):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
        logger.info("phase 2 unfreezes base layers %d..%d of %d (BatchNorm stays frozen)",
                    start, len(layers) - 1, len(layers))
    return int(zoo.param_counts(tm.model)["trainable"])


class SparseCrossentropyWithSmoothing(keras.losses.Loss):
    """Sparse categorical cross-entropy with label smoothing (Keras's sparse loss has none)."""

    def __init__(self, label_smoothing: float = 0.0, name: str = "smoothed_crossentropy",
                 **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        y = keras.ops.one_hot(keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32"),
                              keras.ops.shape(y_pred)[-1], dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(
            y, y_pred, label_smoothing=self.label_smoothing)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def make_optimizer(training: TrainingSettings, phase: policies.Phase, steps_per_epoch: int):
    """AdamW (or Adam) with the phase's schedule (`policies.learning_rate`).

    Raises:
        ProtocolError: unknown optimizer or schedule.
    """
    warmup, decay = policies.schedule_steps(
        phase.epochs, steps_per_epoch, float(training.warmup_epochs))
    alpha = float(training.min_lr_fraction)
    schedule_name = training.schedule
    if schedule_name == "constant":
        alpha = 1.0
    elif schedule_name != "cosine":
        raise ProtocolError(f"training.schedule must be 'cosine' or 'constant', got {schedule_name!r}")
    if warmup:
        schedule = keras.optimizers.schedules.CosineDecay(
            0.0, decay, alpha=alpha, warmup_target=phase.lr, warmup_steps=warmup)
    else:
        schedule = keras.optimizers.schedules.CosineDecay(phase.lr, decay, alpha=alpha)
    name = training.optimizer
    if name == "adamw":
        return keras.optimizers.AdamW(learning_rate=schedule,
                                      weight_decay=float(training.weight_decay))
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=schedule)
    raise ProtocolError(f"training.optimizer must be 'adamw' or 'adam', got {name!r}")


def compile_phase(tm: TrainingModel, training: TrainingSettings, phase: policies.Phase,
                  steps_per_epoch: int) -> None:
    """Compile the model for a phase: fresh optimizer, class-weighted cross-entropy, accuracy."""
    smoothing = float(training.label_smoothing)
    loss = (SparseCrossentropyWithSmoothing(smoothing) if smoothing
            else keras.losses.SparseCategoricalCrossentropy())
    tm.model.compile(
        optimizer=make_optimizer(training, phase, steps_per_epoch),
        loss=loss,
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=jit_compile_setting(training),
    )


def jit_compile_setting(training: TrainingSettings) -> bool | str:
    """`jit_compile` for `Model.compile`: training.jit_compile (default False) under TensorFlow.

    Under JAX always True: JAX has no graph mode besides XLA, and jit_compile=False makes its
    trainer run every step op by op (tens of times slower).
    """
    if keras.backend.backend() == "jax":
        return True
    return training.jit_compile


# --- resume state -------------------------------------------------------------------------------

def _save_weights_atomic(model: keras.Model, path: Path) -> None:
    """`model.save_weights` to a temporary sibling, then rename (the name ends in .weights.h5)."""
    tmp = path.with_name(f".{path.name[:-len('.weights.h5')]}.tmp-{os.getpid()}.weights.h5")
    try:
        model.save_weights(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _save_state_arrays(model: keras.Model, path: Path) -> None:
    """Every model variable (weights, BatchNorm statistics, augmentation seed states) and every
    optimizer variable, as one .npz written atomically."""
    arrays = {f"m{i:05d}": keras.ops.convert_to_numpy(v) for i, v in enumerate(model.variables)}
    arrays.update({f"o{i:05d}": keras.ops.convert_to_numpy(v)
                   for i, v in enumerate(model.optimizer.variables)})
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _assign_all(variables: list, arrays: list[np.ndarray], what: str, path: Path) -> None:
    if len(arrays) != len(variables):
        raise ProtocolError(
            f"{path}: holds {len(arrays)} {what} variables but the model has {len(variables)}; "
            f"the resume state does not belong to this model (delete {path.parent} to restart "
            "the entry)"
        )
    for variable, value in zip(variables, arrays, strict=True):
        if tuple(variable.shape) != value.shape:
            raise ProtocolError(
                f"{path}: {what} variable {variable.path} has shape {value.shape}, expected "
                f"{tuple(variable.shape)}; delete {path.parent} to restart the entry"
            )
        variable.assign(value)


def _load_state_arrays(model: keras.Model, path: Path) -> None:
    """Restore what `_save_state_arrays` wrote (the model must be compiled for the same phase)."""
    model.optimizer.build(model.trainable_variables)
    with np.load(path) as data:
        names = sorted(data.files)
        model_arrays = [data[k] for k in names if k.startswith("m")]
        optimizer_arrays = [data[k] for k in names if k.startswith("o")]
    _assign_all(model.variables, model_arrays, "model", path)
    _assign_all(model.optimizer.variables, optimizer_arrays, "optimizer", path)


def read_progress(entry_dir: Path) -> dict[str, Any] | None:
    """The entry's resume state (state/progress.json), or None when there is none."""
    path = Path(entry_dir) / STATE_DIR / PROGRESS_FILE
    if not path.is_file():
        return None
    try:
        progress = read_json(path)
    except (OSError, ValueError) as exc:
        logger.warning("ignoring unreadable resume state %s (%s)", path, exc)
        return None
    return progress if isinstance(progress, dict) and progress.get("format") == STATE_FORMAT else None


def _read_history(entry_dir: Path) -> pd.DataFrame:
    path = entry_dir / HISTORY_FILE
    if path.is_file():
        return pd.read_csv(path)
    return pd.DataFrame(columns=list(HISTORY_COLUMNS))


# --- per-epoch callback -------------------------------------------------------------------------

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


# --- the entry ----------------------------------------------------------------------------------

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
        if self.training.balanced_sampling:
            return None  # sampling already balances the classes
        counts = np.bincount(self.data.train.labels, minlength=NUM_CLASSES)
        return policies.class_weights(counts, self.training.class_weighting)

    # history
    def append_history(self, row: dict[str, Any]) -> None:
        history = _read_history(self.entry_dir)
        history = pd.concat([history, pd.DataFrame([row], columns=list(HISTORY_COLUMNS))],
                            ignore_index=True) if len(history) else pd.DataFrame(
            [row], columns=list(HISTORY_COLUMNS))
        atomic_write_csv(self.entry_dir / HISTORY_FILE, history)

    def truncate_history(self) -> None:
        """Drop history rows of epochs that the resume state does not cover."""
        history = _read_history(self.entry_dir)
        if len(history) and (history["epoch"] > self.global_epoch).any():
            atomic_write_csv(self.entry_dir / HISTORY_FILE,
                             history[history["epoch"] <= self.global_epoch])

    # state
    def save_state(self, model: keras.Model, phase_index: int, phase_epochs: int, finished: bool,
                   improved: bool) -> None:
        """Write this epoch's weights, optimizer and progress (see `EpochMonitor`)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tag = f"{self.global_epoch:04d}"
        state = f"epoch-{tag}.npz"
        _save_state_arrays(model, self.state_dir / state)
        if improved:
            # The zoo model's weights only (no optimizer): loadable into create_backbone(...).
            self.best_file = f"best-{tag}.weights.h5"
            _save_weights_atomic(self.net, self.state_dir / self.best_file)
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
        shutil.rmtree(self.state_dir, ignore_errors=True)
        history = self.entry_dir / HISTORY_FILE
        history.unlink(missing_ok=True)
        self.progress = None


def _simulate_oom(batch_size: int) -> None:
    limit = os.environ.get(SIMULATE_OOM_ENV)
    if limit and batch_size > int(limit):
        raise SimulatedOutOfMemoryError(
            f"simulated out of memory: batch size {batch_size} > {SIMULATE_OOM_ENV}={limit}")


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
) -> dict[str, Any]:
    """Train one entry under the protocol, predict val/test from the best checkpoint, write metrics.

    Resumes from `entry_dir/state/` when a state of the same fingerprint, batch size and steps
    per epoch exists. Runs under any Keras backend (TensorFlow, JAX).

    Args:
        entry: a backbone name or "paper_cnn" (the SVM baseline has its own module).
        config: the typed config (`RunConfig`, run.json["config"]).
        data: the entry's cached images and splits (`load_entry_data`).
        entry_dir: models/<entry>.
        fingerprint: the run's protocol fingerprint (recorded in metrics.json).
        batch_size: overrides training.batch_size (the runner's OOM retries).
        verbose: Keras fit verbosity (progress bar per epoch).
        callbacks: extra Keras callbacks (called before the protocol's own, so their
            on_epoch_end sees the epoch before validation and checkpointing).
        devices: data parallelism over this many devices (`training.distribution`); None or 1:
            one device. The batch size is the global one and must be a multiple of it.

    Returns:
        The metrics.json object written (status "ok" or "nan"; "devices" records the count).

    Raises:
        SimulatedOutOfMemoryError: see $DERMBENCH_SIMULATE_OOM_ABOVE_BATCH.
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
    _simulate_oom(batch_size)
    mixed = setup_backend(int(config.seed), bool(config.deterministic), training.mixed_precision)
    spec = zoo.get_config(backbone_of(entry))
    phases = policies.phase_plan(training, bool(spec.pretrained))
    if not phases:
        raise ProtocolError(f"{entry}: the config trains it for 0 epochs; set --epochs to 1 or more")
    run = EntryRun(entry, config, data, entry_dir, batch_size, fingerprint, devices=n_devices)
    with data_parallel(n_devices):
        return _train_and_predict(run, phases, mixed, verbose, callbacks)


def _train_and_predict(run: EntryRun, phases: list[policies.Phase], mixed: bool, verbose: Any,
                       callbacks: list[keras.callbacks.Callback] | tuple) -> dict[str, Any]:
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
    tm = build_training_model(backbone, run.data.image_size, training, weights,
                              config.weights_dir, seed=run.seed)
    run.net, run.infer = tm.net, tm.infer
    trainable = _train_phases(run, tm, phases, train, progress, verbose, callbacks)
    extra_common = {
        "entry": run.entry,
        "kind": entry_kind(run.entry),
        "description": entry_description(run.entry),
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
    return _predict_and_record(run, tm, phases, trainable, extra_common)


def _train_phases(run: EntryRun, tm: TrainingModel, phases: list[policies.Phase],
                  train: CacheBatches, progress: dict[str, Any] | None, verbose: Any,
                  callbacks: list[keras.callbacks.Callback] | tuple) -> dict[str, int]:
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
            _load_state_arrays(tm.model, run.state_dir / progress["state"])
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
                       *callbacks, EpochMonitor(run, index, phase)],
            verbose=verbose,
        )
        if run.nan_at is not None:
            break
    return trainable


def _record_nan(run: EntryRun, extra_common: dict[str, Any]) -> dict[str, Any]:
    """metrics.json with status "nan" (the resume state is dropped: it would meet the NaN again)."""
    from core.entry_metrics import write_entry_metrics

    shutil.rmtree(run.state_dir, ignore_errors=True)  # history kept to look at
    message = f"loss became NaN or infinite in {run.nan_at}; lower the learning rate"
    logger.error("%s: %s", run.entry, message)
    return write_entry_metrics(run.entry_dir, extra={**extra_common, "status": "nan",
                                                     "error": message})


def _predict_and_record(run: EntryRun, tm: TrainingModel, phases: list[policies.Phase],
                        trainable: dict[str, int], extra_common: dict[str, Any]) -> dict[str, Any]:
    """Predict val and test from the best checkpoint, write the files and metrics.json."""
    from core.entry_metrics import write_entry_metrics

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


def write_prediction_file(entry_dir: Path, split: str, part: SplitData, proba: np.ndarray,
                          source: str = "") -> None:
    """Write predictions_<split>.csv from (n, 7) probabilities (rows renormalised in float64)."""
    proba = np.asarray(proba, dtype=np.float64)
    if not np.isfinite(proba).all():
        raise DataError(f"{source}: the model produced NaN/infinite probabilities")
    proba = proba / proba.sum(axis=1, keepdims=True)
    preds = make_predictions(part.image_id, part.lesion_id, part.label, proba, source=source)
    write_predictions(RunDir.predictions_file(entry_dir, split), preds)
