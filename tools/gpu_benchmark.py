#!/usr/bin/env python3
"""Training throughput of the zoo's backbones on the current accelerator, under any Keras backend.

Each backbone is measured by `training.throughput.measure_training_step`, which builds and
compiles it with the protocol's own functions, so what is measured is the step that training
runs: `training.backend.setup_backend` (seed, dtype policy: mixed_float16 with --precision mixed
where a GPU is visible), `training.model.build_training_model` (uint8 input, cast, augmentation
only with --augment, the zoo model and its 7-class head, at the native size or --image-size,
weights=None: no download), `set_trainable` (the protocol's walk through every nested layer: the
WHOLE network trains, BatchNorm included, the worst case of phase 2) and `compile_model` (the
protocol's loss, metric and jit_compile; the optimizer of `make_optimizer`, or SGD with
--optimizer sgd). Then one `model.fit` of --warmup + --steps steps on one synthetic batch served
again and again (the input pipeline costs nothing), clocked from the end of the last warmup step
to the end of the last step (the compilation and fit's own start and end are outside it).

Reported per backbone: images/s, ms per step, the counted forward GFLOPs per image (`zoo.flops`:
2 x multiply-accumulates of the conv/dense layers), the achieved training TFLOP/s by the 3x rule
(a training step ~= forward 1x + backward 2x)

    train TFLOP/s = 3 x forward FLOPs/image x images/s / 1e12

the peak accelerator memory where the backend reports it (`training.accelerator`, over the whole
fit), and an estimate with its arithmetic of the GPU-hours of one `benchmark.py --all --preset
native` run (`training.run_estimate`).

--augment: Keras's RandomRotation/Translation/Zoom declare supports_jit=False, so a model holding
them is never jit-compiled (even with jit_compile=True): TF runs a graph without XLA, JAX runs op
by op (very slow). --jit-compile auto compiles as the protocol does (always XLA under JAX; under
TensorFlow the preset's jit_compile, off).

Each backbone runs in a child process by default (a clean peak-memory reading; an out-of-memory
error or a hang cannot take the others down); --in-process runs them in this one. Under
KERAS_BACKEND=jax TensorFlow is never imported (the JSON's "modules_imported" lists which of
tensorflow, torch, pandas, sklearn each process imported).

    python tools/gpu_benchmark.py                                  # the 5 backbones, native size
    KERAS_BACKEND=jax python tools/gpu_benchmark.py --json gpu_jax.json
    python tools/gpu_benchmark.py --backbones paper_cnn --image-size 64 --precision float32 \\
        --steps 2 --warmup 1 --batch-size 4                        # a quick CPU check

Exit codes (`core.exitcodes`): 0 every backbone measured; 1 some ran out of memory (recognised by
`training.out_of_memory`), failed or timed out (recorded, the others still measured); 2 bad
arguments (one-line message).
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

import zoo  # noqa: E402  (the registry: no Keras import)
from benchmark import positive_int  # noqa: E402  (argparse only)
from core import exitcodes  # noqa: E402
from core.atomic import atomic_write_json  # noqa: E402
from core.errors import BenchmarkError  # noqa: E402
from training.accelerator import backend_version, device_name  # noqa: E402  (no Keras yet)
from training.entries import backbone_entries  # noqa: E402
from training.out_of_memory import is_out_of_memory, mentions_out_of_memory  # noqa: E402
from training.presets import get_preset  # noqa: E402
from training.run_estimate import estimate_run  # noqa: E402

TRAIN_FLOPS_FACTOR = 3  # forward + backward ~= 3 x forward
FLOPS_RULE = (
    "train TFLOP/s = 3 x forward FLOPs/image x images/s / 1e12 (a training step ~= 3x the "
    "forward pass: forward 1x + backward 2x); forward FLOPs = 2 x MACs of conv/dense layers"
)
WATCHED_MODULES = ("tensorflow", "torch", "pandas", "sklearn")
SIMULATE_OOM_ENV = "GPU_BENCHMARK_SIMULATE_OOM"  # comma-separated backbones (tests)
# --jit-compile: None compiles as the protocol does (`training.model.jit_compile_setting`).
JIT_COMPILE: dict[str, bool | None] = {"auto": None, "on": True, "off": False}
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
                        help="mixed = the mixed_float16 policy where a GPU is visible, as the "
                        "protocol does (default; float32 on a CPU), float32")
    parser.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw",
                        help="adamw = the protocol's optimizer and schedule (native preset, "
                        "phase 2's learning rate; default), sgd = SGD with momentum")
    parser.add_argument("--jit-compile", choices=("auto", "on", "off"), default="auto",
                        help="Keras compile(jit_compile=...); auto = as the protocol compiles "
                        "(XLA under JAX; under TensorFlow the native preset's jit_compile, off)")
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


def measure(name: str, options: argparse.Namespace) -> dict[str, Any]:
    """Measure one backbone in this process (`training.throughput.measure_training_step`).

    Args:
        name: backbone name.
        options: the parsed command line.

    Returns:
        Its result row (status "ok").

    Raises:
        Exception: whatever building or training raises (an out-of-memory error included).
    """
    from training.throughput import measure_training_step

    size = image_size_of(name, options.image_size)
    if name in os.environ.get(SIMULATE_OOM_ENV, "").split(","):
        raise MemoryError(f"simulated out-of-memory for {name} (${SIMULATE_OOM_ENV})")
    timing = measure_training_step(
        name, size, options.batch_size, steps=options.steps, warmup=options.warmup,
        mixed_precision=options.precision == "mixed", optimizer=options.optimizer,
        jit_compile=JIT_COMPILE[options.jit_compile], augment=options.augment, seed=options.seed)
    seconds, flops, peak = timing.seconds, timing.forward_flops, timing.peak_memory_bytes
    images_per_s = options.batch_size * options.steps / seconds
    return {
        **_row_base(name, size, options),
        "precision": "mixed_float16" if timing.mixed_precision else "float32",
        "status": "ok",
        "message": "",
        "jit_compile": timing.jit_compile,
        "compile_and_warmup_s": timing.compile_and_warmup_s,
        "seconds": seconds,
        "step_ms": 1000.0 * seconds / options.steps,
        "images_per_s": images_per_s,
        "forward_flops": flops,
        "forward_gflops": flops / 1e9,
        "train_tflops": TRAIN_FLOPS_FACTOR * flops * images_per_s / 1e12,
        "params_total": timing.params_total,
        "params_trainable": timing.params_trainable,
        "peak_memory_bytes": peak,
        "peak_memory_gib": None if peak is None else peak / 2**30,
        "final_loss": timing.final_loss,
        "loss_finite": bool(math.isfinite(timing.final_loss)),
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
    status = "oom" if mentions_out_of_memory(tail) else "error"
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

def estimate_native_run(rows: list[dict[str, Any]], options: argparse.Namespace) -> dict[str, Any]:
    """Estimate the GPU-hours of one `benchmark.py --all --preset native` run from the rows
    (`training.run_estimate.estimate_run`, which says what is counted).

    Args:
        rows: the measured rows.
        options: the parsed command line (batch size and size override are checked).

    Returns:
        {"hours", "seconds", "entries": {entry: {"seconds", "arithmetic"}}, "missing": [...],
        "caveats": [...]}.
    """
    measured = {r["backbone"]: (float(r["images_per_s"]), float(r["compile_and_warmup_s"]))
                for r in rows if r["status"] == "ok"}
    estimate = estimate_run(measured, "native")
    batch_size = get_preset("native").training.batch_size
    if options.batch_size != batch_size:
        estimate["caveats"].append(f"measured at batch {options.batch_size}, the native preset "
                                   f"trains at {batch_size}")
    if options.image_size is not None:
        estimate["caveats"].append(
            f"measured at --image-size {options.image_size}, not the native sizes")
    return estimate


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
        return exitcodes.USER_ERROR
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
    return exitcodes.OK if all(r["status"] == "ok" for r in rows) else exitcodes.FAILED


if __name__ == "__main__":
    sys.exit(main())
