#!/usr/bin/env python3
"""Training throughput of the zoo's backbones on the current accelerator, under any Keras backend.

For each backbone: build it at its native input size (or --image-size) with `weights=None` (no
download), a 7-class head and the WHOLE network trainable (BatchNorm included: the worst case of
fine-tuning phase 2), behind the protocol's uint8 input and cast (its augmentation layers only
with --augment: with them Keras refuses jit_compile, see below); compile it like
`training/protocol.py` (AdamW or SGD, sparse categorical cross-entropy, accuracy, Keras's own
loss scaling under mixed_float16; jit_compile Keras's "auto" unless --jit-compile); then run
one `model.fit` of --warmup + --steps steps on one synthetic uint8 batch served again and again
(so the input pipeline costs nothing). A callback reads the loss to the host at the end of the
last warmup step and of the last timed step (blocking until those steps have run, so
asynchronous dispatch cannot flatter the number) and the clock runs between the two: the
compilation (in the warmup) and fit's own start and end are outside it. Keras hands every step's
logs to such a callback, so steps are dispatched one after the other as in the protocol's fit.

Reported per backbone: images/s, ms per step, the counted forward GFLOPs per image
(`zoo.flops`: 2 x multiply-accumulates of the conv/dense layers) and the achieved training
TFLOP/s by the usual 3x rule: a training step costs about 3 x the forward FLOPs (forward 1x,
backward 2x: gradients w.r.t. activations and weights), so

    train TFLOP/s = 3 x forward FLOPs/image x images/s / 1e12

plus the peak accelerator memory where the backend reports it, and an estimate, with its
arithmetic, of the GPU-hours of one `benchmark.py --all --preset native` run.

--augment: Keras's RandomRotation/RandomTranslation/RandomZoom declare supports_jit=False, so a
model holding them is never jit-compiled (Keras overrides even jit_compile=True): TF then runs a
graph without XLA and JAX runs op by op (very slow). Without --augment this measures the
backbone's training step as XLA compiles it.

Each backbone runs in a child process by default (a clean peak-memory reading, and an
out-of-memory error or a hang cannot take the others down); --in-process runs them in this one.
Under KERAS_BACKEND=jax (or torch) TensorFlow is never imported (not even through
`keras.utils.set_random_seed`, which imports it whenever it is installed, so it is not called);
only keras, the backend, numpy and this repository's zoo/, data_utils/ and training/presets.py
are needed (Keras itself imports pandas and scikit-learn only if they are installed; tabulate is
optional). The JSON's "modules_imported" lists which of tensorflow, torch, pandas, sklearn each
process had imported. Peak memory is read over the whole fit, compilation included.

    python tools/gpu_benchmark.py                                  # the 5 backbones, native size
    KERAS_BACKEND=jax python tools/gpu_benchmark.py --json gpu_jax.json
    python tools/gpu_benchmark.py --backbones paper_cnn --image-size 64 --precision float32 \\
        --steps 2 --warmup 1 --batch-size 4                        # a quick CPU check

Exit codes: 0 every backbone measured; 1 some ran out of memory, failed or timed out (recorded in
the table and JSON, the others still measured); 2 bad arguments (one-line message).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

import zoo  # noqa: E402  (the registry: no Keras import)
from benchmark import positive_int  # noqa: E402  (argparse only)
from core import defaults  # noqa: E402
from core.atomic import atomic_write_json  # noqa: E402
from core.classes import NUM_CLASSES  # noqa: E402
from core.errors import BenchmarkError  # noqa: E402
from training.entries import (  # noqa: E402
    all_entries,
    backbone_entries,
    backbone_of,
    is_svm_entry,
)
from training.presets import get_preset  # noqa: E402

TRAIN_FLOPS_FACTOR = 3  # forward + backward ~= 3 x forward
FLOPS_RULE = (
    "train TFLOP/s = 3 x forward FLOPs/image x images/s / 1e12 (a training step ~= 3x the "
    "forward pass: forward 1x + backward 2x); forward FLOPs = 2 x MACs of conv/dense layers"
)
# HAM10000 and the default split ratios (train, val, test).
HAM10000_IMAGES = 10_015
SPLIT_RATIOS = defaults.RATIOS
# Phase 1 trains the head on a frozen base: forward only through the base, ~1/3 of a full step.
FROZEN_STEP_FRACTION = 1 / 3
INFERENCE_FRACTION = 1 / 3  # predicting one image ~= the forward third of training on it
WATCHED_MODULES = ("tensorflow", "torch", "pandas", "sklearn")
OOM_MARKERS = ("resource_exhausted", "resourceexhausted", "outofmemory", "out of memory",
               "oom when allocating", "failed to allocate")
SIMULATE_OOM_ENV = "GPU_BENCHMARK_SIMULATE_OOM"  # comma-separated backbones (tests)
EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2
TABLE_COLUMNS = (
    ("backbone", "backbone"), ("size", "image_size"), ("batch", "batch_size"),
    ("img/s", "images_per_s"), ("step ms", "step_ms"), ("fwd GFLOP/img", "forward_gflops"),
    ("train TFLOP/s", "train_tflops"), ("peak GiB", "peak_memory_gib"),
    ("compile+warmup s", "compile_and_warmup_s"), ("status", "status"),
)


# --- arguments ----------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line.

    Args:
        argv: the arguments (default: sys.argv[1:]).

    Returns:
        The options.
    """
    parser = argparse.ArgumentParser(
        prog="gpu_benchmark.py",
        description="Training throughput (images/s) and achieved TFLOP/s of the zoo's "
        "backbones under the active Keras backend (KERAS_BACKEND).",
        epilog=FLOPS_RULE,
    )
    parser.add_argument("--backbones", nargs="+", metavar="NAME", default=backbone_entries(),
                        help=f"backbones to measure (default: the fine-tuned ones, "
                        f"{' '.join(backbone_entries())}); registered: "
                        f"{', '.join(zoo.list_backbones())}")
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument("--steps", type=positive_int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=positive_int, default=3,
                        help="untimed steps first (they include the compilation)")
    parser.add_argument("--image-size", type=positive_int, default=None, metavar="N",
                        help="square size for every backbone instead of its native one")
    parser.add_argument("--precision", choices=("mixed", "float32"), default="mixed",
                        help="mixed = the mixed_float16 policy (default), float32")
    parser.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw")
    parser.add_argument("--jit-compile", choices=("auto", "on", "off"), default="auto",
                        help="Keras compile(jit_compile=...); auto = Keras's default (XLA on "
                        "TF-GPU and JAX where the layers allow it)")
    parser.add_argument("--augment", action="store_true",
                        help="put the native preset's augmentation layers in the model, as the "
                        "protocol does (Keras then refuses jit_compile: its RandomRotation/"
                        "Translation/Zoom declare supports_jit=False, so JAX runs op by op)")
    parser.add_argument("--in-process", action="store_true",
                        help="measure every backbone in this process instead of one child "
                        "process each (JAX's peak memory then accumulates)")
    parser.add_argument("--timeout", type=positive_int, default=900, metavar="S",
                        help="seconds per backbone child process (default 900)")
    parser.add_argument("--json", type=Path, metavar="OUT.json",
                        help="also write the results here (atomically)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def check_backbones(names: list[str], image_size: int | None) -> None:
    """Check the names and the size override before anything heavy is imported.

    Args:
        names: backbone names.
        image_size: the --image-size override or None.

    Raises:
        zoo.ZooValueError: unknown name (the message lists the registered ones), or a size below
            a backbone's minimum.
    """
    for name in names:
        config = zoo.get_config(name)
        if image_size is not None and image_size < config.min_size:
            raise zoo.ZooValueError(
                f"--image-size {image_size} is below the minimum of {name} "
                f"({config.min_size} px); use {config.min_size} or larger"
            )


def image_size_of(name: str, override: int | None) -> int:
    """The square input size measured for `name`: the override, else its native size."""
    return int(override) if override is not None else int(zoo.get_config(name).input_size)


# --- measurement (imports Keras) ----------------------------------------------------------------

def _backend() -> str:
    import keras

    return keras.backend.backend()


def device_name(backend: str) -> str:
    """A human name of the accelerator the backend computes on ("CPU (n cores)" without one)."""
    cpu = f"CPU ({os.cpu_count()} cores, {platform.machine()})"
    with contextlib.suppress(Exception):
        if backend == "jax":
            import jax

            device = jax.devices()[0]
            return cpu if device.platform == "cpu" else f"{device.device_kind} ({device.platform})"
        if backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            if gpus:
                details = tf.config.experimental.get_device_details(gpus[0])
                return str(details.get("device_name", gpus[0].name))
        if backend == "torch":
            import torch

            if torch.cuda.is_available():
                return torch.cuda.get_device_name(0)
    return cpu


def backend_version(backend: str) -> str:
    """The version of the backend library (without importing another one)."""
    module = {"jax": "jax", "tensorflow": "tensorflow", "torch": "torch"}.get(backend)
    with contextlib.suppress(Exception):
        return str(__import__(module).__version__)
    return "unknown"


def reset_peak_memory(backend: str) -> None:
    """Reset the peak-memory counter where the backend can (TF, torch; JAX cannot)."""
    with contextlib.suppress(Exception):
        if backend == "tensorflow":
            import tensorflow as tf

            if tf.config.list_physical_devices("GPU"):
                tf.config.experimental.reset_memory_stats("GPU:0")
        elif backend == "torch":
            import torch

            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()


def peak_memory_bytes(backend: str) -> int | None:
    """Peak accelerator memory in bytes, or None where not available (e.g. on CPU).

    JAX: `device.memory_stats()["peak_bytes_in_use"]` (process lifetime); TF:
    `get_memory_info("GPU:0")["peak"]` since the last reset; torch: `max_memory_allocated`.
    """
    with contextlib.suppress(Exception):
        if backend == "jax":
            import jax

            stats = jax.devices()[0].memory_stats() or {}
            value = stats.get("peak_bytes_in_use")
            return None if value is None else int(value)
        if backend == "tensorflow":
            import tensorflow as tf

            if tf.config.list_physical_devices("GPU"):
                return int(tf.config.experimental.get_memory_info("GPU:0")["peak"])
        if backend == "torch":
            import torch

            if torch.cuda.is_available():
                return int(torch.cuda.max_memory_allocated())
    return None


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether an exception is an accelerator/host out-of-memory error of any backend."""
    if isinstance(exc, MemoryError):
        return True
    text = f"{type(exc).__name__} {exc}".lower()
    return any(marker in text for marker in OOM_MARKERS)


def _repeated_batch_dataset(x: np.ndarray, y: np.ndarray, steps: int):
    """A `keras.utils.PyDataset` serving the same (x, y) batch `steps` times (like the
    protocol's `CacheBatches`, minus the gathering)."""
    import keras

    class RepeatedBatch(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__()

        def __len__(self) -> int:
            return steps

        def __getitem__(self, index: int):
            return x, y

    return RepeatedBatch()


def build_model(name: str, image_size: int, augment: bool, seed: int):
    """The protocol's training model: uint8 input -> float32 -> augmentation -> zoo model.

    Args:
        name: backbone name.
        image_size: square input size.
        augment: include the native preset's augmentation layers.
        seed: augmentation seed.

    Returns:
        (model, net): the training model and the zoo model inside it, every layer trainable.
    """
    import keras

    training = get_preset("native").training
    inputs = keras.Input((image_size, image_size, 3), dtype="uint8", name="image")
    x = keras.ops.cast(inputs, "float32")
    if augment:
        from training.augment import build_augmentation

        layers = build_augmentation(training.augmentation, seed=seed)
        if layers is not None:
            x = layers(x)
    net = zoo.create_backbone(name, NUM_CLASSES, input_shape=image_size, weights=None,
                              dropout=float(training.dropout))
    model = keras.Model(inputs, net(x), name=f"{name}_benchmark")
    for layer in [model, *_sublayers(model)]:
        layer.trainable = True
    return model, net


def _sublayers(layer) -> list:
    found, stack = [], list(getattr(layer, "layers", []))
    while stack:
        sub = stack.pop()
        found.append(sub)
        stack.extend(getattr(sub, "layers", []))
    return found


def compile_model(model, optimizer: str, jit_compile: str) -> None:
    """Compile like the protocol: AdamW (or SGD), sparse categorical cross-entropy, accuracy.

    Args:
        model: the training model.
        optimizer: "adamw" (native preset's learning rate and weight decay) or "sgd".
        jit_compile: "auto", "on" or "off".
    """
    import keras

    training = get_preset("native").training
    if optimizer == "adamw":
        opt = keras.optimizers.AdamW(learning_rate=float(training.phase2_lr),
                                     weight_decay=float(training.weight_decay))
    else:
        opt = keras.optimizers.SGD(learning_rate=float(training.phase2_lr), momentum=0.9)
    model.compile(
        optimizer=opt,
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile={"auto": "auto", "on": True, "off": False}[jit_compile],
    )


def timed_fit(model, x: np.ndarray, y: np.ndarray, warmup: int, steps: int):
    """One fit of `warmup` + `steps` steps on the repeated batch, clocked from the end of the
    last warmup step to the end of the last step.

    Args:
        model: the compiled model.
        x: (batch, s, s, 3) uint8 images.
        y: (batch,) int32 labels.
        warmup: untimed steps (the first one compiles).
        steps: timed steps.

    Returns:
        (seconds from the start of fit to the end of the warmup, seconds of the timed steps,
        the loss at the end).
    """
    import keras

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


def measure(name: str, options: argparse.Namespace) -> dict[str, Any]:
    """Measure one backbone in this process (see the module docstring).

    Args:
        name: backbone name.
        options: the parsed command line.

    Returns:
        Its result row (status "ok").

    Raises:
        Exception: whatever building or training raises (an out-of-memory error included).
    """
    import keras

    backend = _backend()
    size = image_size_of(name, options.image_size)
    if name in os.environ.get(SIMULATE_OOM_ENV, "").split(","):
        raise MemoryError(f"simulated out-of-memory for {name} (${SIMULATE_OOM_ENV})")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16" if options.precision == "mixed" else "float32")
    try:
        # No keras.utils.set_random_seed: it imports TensorFlow whenever it is installed.
        model, net = build_model(name, size, options.augment, options.seed)
        compile_model(model, options.optimizer, options.jit_compile)
        rng = np.random.default_rng(options.seed)
        x = rng.integers(0, 256, (options.batch_size, size, size, 3), dtype=np.uint8)
        y = rng.integers(0, NUM_CLASSES, (options.batch_size,), dtype=np.int32)

        reset_peak_memory(backend)
        compile_s, seconds, loss = timed_fit(model, x, y, options.warmup, options.steps)
        peak = peak_memory_bytes(backend)
        from zoo.flops import count_model_flops

        flops = count_model_flops(net)
        params = zoo.param_counts(model)
        jit = bool(model.jit_compile)
    finally:
        keras.config.set_dtype_policy(previous)
    images_per_s = options.batch_size * options.steps / seconds
    return {
        **_row_base(name, size, options),
        "status": "ok",
        "message": "",
        "jit_compile": jit,
        "compile_and_warmup_s": compile_s,
        "seconds": seconds,
        "step_ms": 1000.0 * seconds / options.steps,
        "images_per_s": images_per_s,
        "forward_flops": int(flops),
        "forward_gflops": flops / 1e9,
        "train_tflops": TRAIN_FLOPS_FACTOR * flops * images_per_s / 1e12,
        "params_total": params["total"],
        "params_trainable": params["trainable"],
        "peak_memory_bytes": peak,
        "peak_memory_gib": None if peak is None else peak / 2**30,
        "final_loss": loss,
        "loss_finite": bool(math.isfinite(loss)),
    }


def _precision(options: argparse.Namespace) -> str:
    return "mixed_float16" if options.precision == "mixed" else "float32"


def _row_base(name: str, size: int, options: argparse.Namespace) -> dict[str, Any]:
    """The fields every row has, whether or not the measurement succeeded."""
    backend = _backend()
    return {
        "backbone": name,
        "image_size": size,
        "batch_size": options.batch_size,
        "steps": options.steps,
        "warmup": options.warmup,
        "precision": _precision(options),
        "optimizer": options.optimizer,
        "augment": bool(options.augment),
        "backend": backend,
        "backend_version": backend_version(backend),
        "keras_version": __import__("keras").__version__,
        "device": device_name(backend),
        "peak_memory_scope": "process (includes earlier backbones under JAX)"
        if options.in_process else "this backbone's process",
    }


def failed_row(name: str, options: argparse.Namespace, status: str, message: str,
               with_backend: bool = True) -> dict[str, Any]:
    """A result row for a backbone that could not be measured.

    Args:
        name: backbone name.
        options: the parsed command line.
        status: "oom", "error" or "timeout".
        message: one line saying what happened.
        with_backend: fill in the backend fields (needs Keras imported in this process).

    Returns:
        The row (numbers None).
    """
    size = image_size_of(name, options.image_size)
    base = _row_base(name, size, options) if with_backend else {
        "backbone": name, "image_size": size, "batch_size": options.batch_size,
        "steps": options.steps, "warmup": options.warmup, "precision": _precision(options),
        "optimizer": options.optimizer, "augment": bool(options.augment)}
    numbers = ("compile_and_warmup_s", "seconds", "step_ms", "images_per_s", "forward_flops",
               "forward_gflops", "train_tflops", "peak_memory_bytes", "peak_memory_gib")
    return {**base, **dict.fromkeys(numbers), "status": status, "message": message}


def measure_safely(name: str, options: argparse.Namespace) -> dict[str, Any]:
    """`measure`, turning an out-of-memory error or any other failure into a recorded row."""
    import keras

    try:
        return measure(name, options)
    except Exception as exc:  # one backbone's failure must not stop the others
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        if is_out_of_memory(exc):
            message = (f"out of memory at batch {options.batch_size}: {type(exc).__name__}: "
                       f"{first} (try a smaller --batch-size)")
            print(f"gpu_benchmark: {name}: {message}", file=sys.stderr)
            return failed_row(name, options, "oom", message)
        traceback.print_exc()
        return failed_row(name, options, "error", f"{type(exc).__name__}: {first}")
    finally:
        with contextlib.suppress(Exception):
            keras.backend.clear_session()
        gc.collect()


# --- running every backbone ---------------------------------------------------------------------

def watched_modules() -> list[str]:
    """The heavy optional modules this process has imported (see WATCHED_MODULES)."""
    return [name for name in WATCHED_MODULES if name in sys.modules]


def run_in_process(names: list[str], options: argparse.Namespace) -> list[dict[str, Any]]:
    """Measure the backbones one after the other in this process."""
    rows = []
    for index, name in enumerate(names, start=1):
        _announce(index, len(names), name, options)
        rows.append(measure_safely(name, options))
        _report_row(rows[-1])
    return rows


def _child_command(name: str, options: argparse.Namespace, out: Path) -> list[str]:
    command = [sys.executable, str(Path(__file__).resolve()), "--in-process", "--backbones", name,
               "--batch-size", str(options.batch_size), "--steps", str(options.steps),
               "--warmup", str(options.warmup), "--precision", options.precision,
               "--optimizer", options.optimizer, "--jit-compile", options.jit_compile,
               "--seed", str(options.seed), "--json", str(out)]
    if options.image_size is not None:
        command += ["--image-size", str(options.image_size)]
    if options.augment:
        command.append("--augment")
    return command


def measure_in_child(name: str, options: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Measure one backbone in a child process (same interpreter, environment and backend).

    Args:
        name: backbone name.
        options: the parsed command line.
        workdir: a scratch folder for the child's JSON and log.

    Returns:
        The child's row, or a "timeout"/"oom"/"error" row naming its log's last line.
    """
    out, log = workdir / f"{name}.json", workdir / f"{name}.log"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    with open(log, "w", encoding="utf-8") as handle:
        try:
            subprocess.run(_child_command(name, options, out), stdout=handle,
                           stderr=subprocess.STDOUT, env=env, timeout=options.timeout,
                           check=False)
        except subprocess.TimeoutExpired:
            return failed_row(name, options, "timeout",
                              f"no result within --timeout {options.timeout} s", False)
    if out.is_file():
        row = json.loads(out.read_text(encoding="utf-8"))["results"][0]
        row["modules_imported"] = row.get("modules_imported", [])
        if row["status"] == "error":
            _print_tail(name, log)
        return row
    tail = _print_tail(name, log)
    status = "oom" if any(m in tail.lower() for m in OOM_MARKERS) else "error"
    return failed_row(name, options, status, f"child process died: {tail[-300:]}", False)


def _print_tail(name: str, log: Path, lines: int = 25) -> str:
    text = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    tail = "\n".join(text[-lines:])
    print(f"gpu_benchmark: {name}: last lines of its log:\n{tail}", file=sys.stderr)
    return (text or [""])[-1]


def run_isolated(names: list[str], options: argparse.Namespace) -> list[dict[str, Any]]:
    """Measure each backbone in its own child process."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="gpu_benchmark.") as tmp:
        for index, name in enumerate(names, start=1):
            _announce(index, len(names), name, options)
            rows.append(measure_in_child(name, options, Path(tmp)))
            _report_row(rows[-1])
    return rows


def _announce(index: int, total: int, name: str, options: argparse.Namespace) -> None:
    size = image_size_of(name, options.image_size)
    print(f"[{index}/{total}] {name}: {size}x{size}, batch {options.batch_size}, "
          f"{options.warmup} warmup + {options.steps} timed steps ...", flush=True)


def _report_row(row: dict[str, Any]) -> None:
    if row["status"] == "ok":
        print(f"      {row['images_per_s']:.1f} img/s, {row['train_tflops']:.3g} TFLOP/s "
              f"(compile+warmup {row['compile_and_warmup_s']:.1f} s)", flush=True)
    else:
        print(f"      {row['status'].upper()}: {row['message']}", flush=True)


# --- GPU-hours estimate -------------------------------------------------------------------------

def _split_sizes() -> tuple[int, int, int]:
    train = round(HAM10000_IMAGES * SPLIT_RATIOS[0])
    val = round(HAM10000_IMAGES * SPLIT_RATIOS[1])
    return train, val, HAM10000_IMAGES - train - val


def _entry_seconds(entry: str, row: dict[str, Any], training: Any) -> tuple[float, str]:
    """Estimated accelerator seconds of one entry of a native run, and the arithmetic."""
    n_train, n_val, n_test = _split_sizes()
    ips = float(row["images_per_s"])
    compile_s = float(row["compile_and_warmup_s"])
    if is_svm_entry(entry):
        seconds = HAM10000_IMAGES / (ips / INFERENCE_FRACTION)
        return seconds, (f"features of {HAM10000_IMAGES} img / (3 x {ips:.4g} img/s) = "
                         f"{seconds:.0f} s (SVM fit on CPU not counted)")
    if not zoo.get_config(backbone_of(entry)).pretrained:  # trained from scratch
        epochs, train_epochs, phases = training.scratch_epochs, training.scratch_epochs, 1
        epochs_text = f"{epochs}"
    else:
        p1, p2 = training.phase1_epochs, training.phase2_epochs
        epochs, train_epochs, phases = p1 + p2, p2 + p1 * FROZEN_STEP_FRACTION, 2
        epochs_text = f"({p2} + {p1}/3)"
    train_s = n_train * train_epochs / ips
    eval_images = n_val * epochs + n_val + n_test
    eval_s = eval_images / (ips / INFERENCE_FRACTION)
    total = train_s + eval_s + phases * compile_s
    text = (f"{n_train} img x {epochs_text} epochs / {ips:.4g} img/s = {train_s:.0f} s train"
            f" + ({n_val} x {epochs} + {n_val + n_test}) img / (3 x {ips:.4g}) = {eval_s:.0f} s"
            f" predict + {phases} x {compile_s:.0f} s compile = {total:.0f} s")
    return total, text


def estimate_native_run(rows: list[dict[str, Any]], options: argparse.Namespace) -> dict[str, Any]:
    """Estimate the GPU-hours of one `benchmark.py --all --preset native` run from the rows.

    Per entry: training images x epochs / images/s (phase-1 epochs at 1/3: frozen base), plus
    validation predictions every epoch and the final val + test predictions at 1/3 of a training
    step per image, plus the measured compile+warmup time per phase; the SVM baseline is one
    feature pass over all images. An upper bound in one way (no early stopping; phase 2 with
    the whole network trainable) and a lower one in another (no start-up, data preparation, SVM
    fitting or report time).

    Args:
        rows: the measured rows.
        options: the parsed command line (batch size and size override are checked).

    Returns:
        {"hours", "seconds", "entries": {entry: {"seconds", "arithmetic"}}, "missing": [...],
        "caveats": [...]}.
    """
    spec = get_preset("native")
    training = spec.training
    measured = {r["backbone"]: r for r in rows if r["status"] == "ok"}
    entries, missing = {}, []
    for entry in all_entries():
        row = measured.get(backbone_of(entry))
        if row is None:
            missing.append(entry)
            continue
        seconds, text = _entry_seconds(entry, row, training)
        entries[entry] = {"seconds": seconds, "arithmetic": text}
    total = sum(e["seconds"] for e in entries.values())
    n_train, n_val, n_test = _split_sizes()
    caveats = [
        f"HAM10000 {HAM10000_IMAGES} images split {n_train}/{n_val}/{n_test} (train/val/test); "
        f"native preset: phase 1 {training.phase1_epochs} + phase 2 "
        f"{training.phase2_epochs} epochs, paper_cnn {training.scratch_epochs} epochs, "
        f"batch {training.batch_size}",
        "no early stopping assumed and phase 2 timed with the whole network trainable "
        "(the protocol unfreezes the top 30% with BatchNorm frozen): an upper bound for training",
        "not counted: machine start-up, data download/cache preparation, SVM fitting (CPU), "
        "ensembles and report; --folds K multiplies the total by K",
    ]
    if options.batch_size != training.batch_size:
        caveats.append(f"measured at batch {options.batch_size}, the native preset trains at "
                       f"{training.batch_size}")
    if options.image_size is not None:
        caveats.append(f"measured at --image-size {options.image_size}, not the native sizes")
    return {"seconds": total, "hours": total / 3600, "entries": entries, "missing": missing,
            "caveats": caveats}


# --- output -------------------------------------------------------------------------------------

def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The results as a markdown table (tabulate's "pipe" format when installed)."""
    headers = [title for title, _ in TABLE_COLUMNS]
    body = [[_cell(row.get(key)) for _, key in TABLE_COLUMNS] for row in rows]
    try:
        from tabulate import tabulate
    except ImportError:
        widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(headers)]
        lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
                 "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
        lines += ["| " + " | ".join([r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(
            r[1:], widths[1:], strict=True)]) + " |" for r in body]
        return "\n".join(lines)
    align = ("left",) + ("right",) * (len(headers) - 1)
    return tabulate(body, headers=headers, tablefmt="pipe", colalign=align, disable_numparse=True)


def _header(rows: list[dict[str, Any]]) -> str:
    first = next((r for r in rows if "backend" in r), {})
    jit = sorted({str(r["jit_compile"]) for r in rows if "jit_compile" in r})
    return (f"backend: {first.get('backend', '?')} {first.get('backend_version', '')} "
            f"(keras {first.get('keras_version', '?')}); device: {first.get('device', '?')}; "
            f"precision: {first.get('precision', '?')}; jit_compile: {'/'.join(jit) or '?'}; "
            f"optimizer: {first.get('optimizer', '?')}; augmentation: "
            f"{first.get('augment', '?')}; whole network trainable\n{FLOPS_RULE}")


def report(rows: list[dict[str, Any]], estimate: dict[str, Any]) -> str:
    """The printed report: header, markdown table, failures and the labelled estimate."""
    parts = [_header(rows), "", markdown_table(rows)]
    for row in rows:
        if row["status"] != "ok":
            parts.append(f"- {row['backbone']}: {row['status']}: {row['message']}")
    parts += ["", "ESTIMATE (not a measurement) of one `benchmark.py --all --preset native` run "
              "on this device, from the throughputs above:"]
    if not estimate["entries"]:
        parts.append("  no backbone was measured: no estimate")
        return "\n".join(parts)
    for entry, item in estimate["entries"].items():
        parts.append(f"  {entry}: {item['arithmetic']}")
    if estimate["missing"]:
        parts.append(f"  not measured, left out: {', '.join(estimate['missing'])}")
    parts.append(f"  total ~= {estimate['seconds']:.0f} s ~= {estimate['hours']:.2f} GPU-hours")
    parts += [f"  note: {caveat}" for caveat in estimate["caveats"]]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark.

    Args:
        argv: command-line arguments (default: sys.argv[1:]).

    Returns:
        0 every backbone measured, 1 some failed (OOM, error, timeout), 2 bad arguments.
    """
    options = parse_args(argv)
    try:
        check_backbones(options.backbones, options.image_size)
    except BenchmarkError as exc:
        print(f"gpu_benchmark: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    runner = run_in_process if options.in_process else run_isolated
    rows = runner(options.backbones, options)
    modules = sorted({*watched_modules(), *(m for r in rows for m in r.get("modules_imported", []))})
    if options.in_process:
        for row in rows:
            row["modules_imported"] = watched_modules()
    estimate = estimate_native_run(rows, options)
    print()
    print(report(rows, estimate))
    if options.json is not None:
        atomic_write_json(options.json, {
            "tool": "tools/gpu_benchmark.py",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "argv": sys.argv[1:] if argv is None else list(argv),
            "flops_rule": FLOPS_RULE,
            "train_flops_factor": TRAIN_FLOPS_FACTOR,
            "python": platform.python_version(),
            "modules_imported": modules,
            "results": rows,
            "estimate": estimate,
        })
        print(f"\nwrote {options.json}")
    return EXIT_OK if all(r["status"] == "ok" for r in rows) else EXIT_SOME_FAILED


if __name__ == "__main__":
    sys.exit(main())
