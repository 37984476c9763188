"""How fast the protocol's training step runs for one backbone on this accelerator.

`measure_training_step` builds the model with the protocol's functions (`training.backend`,
`training.model`: the same dtype policy, training model, trainable walk, loss, metric,
optimizer and jit_compile) with the WHOLE network trainable, then times one `fit` on a single
synthetic batch served again and again, so the input pipeline costs nothing
(`timed_fit`). tools/gpu_benchmark.py runs it for every backbone and reports the numbers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import keras
import numpy as np

import zoo
from core.classes import NUM_CLASSES
from training.accelerator import peak_memory_bytes, reset_peak_memory
from training.backend import setup_backend
from training.model import (
    TrainingModel,
    build_training_model,
    compile_model,
    make_optimizer,
    set_trainable,
)
from training.policies import Phase
from training.presets import get_preset
from training.settings import Augmentation, TrainingSettings
from zoo.flops import count_model_flops

OPTIMIZERS: tuple[str, ...] = ("adamw", "sgd")
NO_AUGMENTATION = Augmentation(flip=None, rotation=0, shift=0, zoom=0)


@dataclass(frozen=True)
class StepTiming:
    """What `measure_training_step` measured.

    Attributes:
        compile_and_warmup_s: from the start of fit to the end of the warmup (the compilation).
        seconds: the timed steps.
        final_loss: the loss after the last step.
        forward_flops: counted forward FLOPs per image (`zoo.flops`).
        params_total, params_trainable: parameter counts of the training model.
        peak_memory_bytes: peak accelerator memory over the fit (None where not reported).
        jit_compile: whether Keras compiled the step with XLA.
        mixed_precision: whether the mixed_float16 policy was on.
    """

    compile_and_warmup_s: float
    seconds: float
    final_loss: float
    forward_flops: int
    params_total: int
    params_trainable: int
    peak_memory_bytes: int | None
    jit_compile: bool
    mixed_precision: bool


def benchmark_settings(augment: bool, preset: str = "native") -> TrainingSettings:
    """A preset's training settings, without augmentation unless `augment`."""
    training = get_preset(preset).training
    return training if augment else replace(training, augmentation=NO_AUGMENTATION)


def build_benchmark_model(backbone: str, image_size: int, training: TrainingSettings,
                          steps: int, optimizer: str = "adamw",
                          jit_compile: bool | None = None, seed: int = 0) -> TrainingModel:
    """The protocol's training model, every layer trainable, compiled as the protocol does.

    Args:
        backbone: zoo backbone name.
        image_size: square input size.
        training: the training settings (`benchmark_settings`).
        steps: the optimizer steps of the fit (the length of the schedule).
        optimizer: "adamw": the protocol's (`make_optimizer`, phase 2's learning rate); "sgd":
            SGD with momentum 0.9 at the same learning rate.
        jit_compile: None: as the protocol compiles (`jit_compile_setting`); else forced.
        seed: augmentation seed.

    Returns:
        The compiled `TrainingModel` (weights=None: no download).

    Raises:
        ValueError: an unknown optimizer.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
    tm = build_training_model(backbone, image_size, training, weights=None, seed=seed)
    set_trainable(tm.model, True)
    lr = float(training.phase2_lr)
    opt = (keras.optimizers.SGD(learning_rate=lr, momentum=0.9) if optimizer == "sgd"
           else make_optimizer(training, Phase("finetune", 1, lr), steps))
    compile_model(tm.model, training, opt, jit_compile)
    return tm


def _repeated_batch_dataset(x: np.ndarray, y: np.ndarray, steps: int) -> keras.utils.PyDataset:
    """A `keras.utils.PyDataset` serving the same (x, y) batch `steps` times (like the
    protocol's `CacheBatches`, minus the gathering)."""

    class RepeatedBatch(keras.utils.PyDataset):
        def __len__(self) -> int:
            return steps

        def __getitem__(self, index: int):
            return x, y

    return RepeatedBatch()


def timed_fit(model: keras.Model, x: np.ndarray, y: np.ndarray, warmup: int,
              steps: int) -> tuple[float, float, float]:
    """One fit of `warmup` + `steps` steps on the repeated batch, clocked from the end of the
    last warmup step to the end of the last step.

    A callback reads the loss to the host at the end of those two steps, which blocks until they
    have run, so asynchronous dispatch cannot flatter the number; Keras hands every step's logs to
    such a callback, so steps are dispatched one after the other as in the protocol's fit.

    Args:
        model: the compiled model.
        x: (batch, s, s, 3) uint8 images.
        y: (batch,) int32 labels.
        warmup: untimed steps (the first one compiles), >= 1.
        steps: timed steps, >= 1.

    Returns:
        (seconds from the start of fit to the end of the warmup, seconds of the timed steps,
        the loss at the end).
    """
    last_warmup, last = warmup - 1, warmup + steps - 1
    marks: dict[int, tuple[float, float]] = {}

    class StepClock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch in (last_warmup, last):
                # Reading the loss waits for the step that computes it.
                loss = float(np.asarray((logs or {})["loss"]))
                marks[batch] = (time.perf_counter(), loss)

    start = time.perf_counter()
    model.fit(_repeated_batch_dataset(x, y, warmup + steps), epochs=1, verbose=0,
              shuffle=False, callbacks=[StepClock()])
    (warm_end, _), (end, loss) = marks[last_warmup], marks[last]
    return warm_end - start, end - warm_end, loss


def measure_training_step(backbone: str, image_size: int, batch_size: int, *, steps: int,
                          warmup: int, mixed_precision: bool = True, optimizer: str = "adamw",
                          jit_compile: bool | None = None, augment: bool = False,
                          seed: int = 0) -> StepTiming:
    """Build, compile and time one backbone's training step (see the module docstring).

    The dtype policy in force before the call is restored afterwards.

    Args:
        backbone: zoo backbone name.
        image_size: square input size.
        batch_size: images per step.
        steps: timed steps.
        warmup: untimed steps first (they include the compilation).
        mixed_precision: mixed_float16 where a GPU is visible, as the protocol's "on".
        optimizer: "adamw" or "sgd" (`build_benchmark_model`).
        jit_compile: None: as the protocol; True/False: forced.
        augment: include the native preset's augmentation layers.
        seed: seeds the backend, the augmentation and the synthetic batch.

    Returns:
        The timing.

    Raises:
        Exception: whatever building or training raises (an out-of-memory error included).
    """
    backend = keras.backend.backend()
    previous = keras.config.dtype_policy()
    try:
        mixed = setup_backend(seed, False, "on" if mixed_precision else "off")
        tm = build_benchmark_model(backbone, image_size, benchmark_settings(augment),
                                   warmup + steps, optimizer, jit_compile, seed)
        rng = np.random.default_rng(seed)
        x = rng.integers(0, 256, (batch_size, image_size, image_size, 3), dtype=np.uint8)
        y = rng.integers(0, NUM_CLASSES, (batch_size,), dtype=np.int32)
        reset_peak_memory(backend)
        compile_s, seconds, loss = timed_fit(tm.model, x, y, warmup, steps)
        peak = peak_memory_bytes(backend)
        params = zoo.param_counts(tm.model)
        return StepTiming(
            compile_and_warmup_s=compile_s, seconds=seconds, final_loss=loss,
            forward_flops=int(count_model_flops(tm.net)), params_total=int(params["total"]),
            params_trainable=int(params["trainable"]), peak_memory_bytes=peak,
            jit_compile=bool(tm.model.jit_compile), mixed_precision=mixed)
    finally:
        keras.config.set_dtype_policy(previous)
