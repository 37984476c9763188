"""One entry in its own process: `python -m training.worker --out RUNDIR --entry NAME`.

Reads RUNDIR/run.json ("config", read back typed: `training.settings.RunConfig.from_dict`, and
"fingerprint") and RUNDIR/splits.csv, opens (or builds) the decoded-image cache at the entry's
size, trains the entry under the protocol (or fits the SVM baseline) and writes models/<entry>/.
Exit codes (`core.exitcodes`; the runner acts on them):

    0  ok
    3  out of memory (`training.out_of_memory.is_out_of_memory`; the runner retries with half
       the batch size)
    4  NaN or infinite loss (status "nan" in metrics.json)
    1  any other failure (status "failed" and the error in metrics.json)

In every failure case metrics.json records the status and the error message. Logging goes to
stderr and is appended to RUNDIR/train.log, with one summary line per entry (under the runner,
which copies the worker's output to the logs itself, only to stderr).

`--events` (the runner passes it): Keras prints nothing, and the progress (phase, batch, epoch,
status) goes to stdout as events (`training.worker_process.emit_event`), which the runner turns
into its console's progress bar. `--tensorboard DIR` writes TensorBoard logs of every epoch to DIR
(`training.callbacks.EpochTensorBoard`); neither changes the results.

Backends: the worker runs under TensorFlow or JAX (KERAS_BACKEND); under JAX it never imports
TensorFlow (but with --tensorboard, whose summaries TensorFlow writes). `--devices N` trains the
one entry data-parallel on N devices of this machine (`training.distribution`; the batch size is
the global one and must be a multiple of N). For a
deterministic run under JAX the worker adds `--xla_gpu_deterministic_ops=true` to XLA_FLAGS before
JAX starts (XLA on the CPU is deterministic anyway), and keeps XLA compilations on disk for the
next worker (`_jax_compilation_cache`).

For tests: $DERMBENCH_SIMULATE_OOM_ABOVE_BATCH=N makes any batch size above N run out of memory
(`training.out_of_memory`); $DERMBENCH_SIMULATE_NAN=1 makes every epoch's loss NaN
(`training.callbacks`).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from core import exitcodes
from core.errors import BenchmarkError
from training.out_of_memory import is_out_of_memory
from training.settings import RunConfig

JAX_CACHE_DIR = "jax-compilation"

logger = logging.getLogger("training.worker")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.worker",
                                     description="Train one entry of a prepared run directory.")
    parser.add_argument("--out", required=True, metavar="RUNDIR", help="the run directory")
    parser.add_argument("--entry", required=True, metavar="NAME", help="the entry to train")
    parser.add_argument("--batch-size", type=int, metavar="N",
                        help="override the config's batch size (OOM retries)")
    parser.add_argument("--cache-dir", metavar="DIR",
                        help="decoded-image cache root (default $DERMBENCH_CACHE or ~/.cache/dermbench)")
    parser.add_argument("--workers", type=int, metavar="N", help="image decoding processes")
    parser.add_argument("--devices", type=_positive_int, metavar="N",
                        help="train data-parallel on the first N devices (GPUs, else CPU "
                             "devices); the batch size must be a multiple of N (default: 1)")
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=None,
                        help="Keras progress: 0 silent, 1 bar, 2 one line per epoch "
                             "(default: 0 with --events, else a bar on a terminal and one line "
                             "otherwise)")
    parser.add_argument("--events", action="store_true",
                        help="write progress events to stdout for the runner's console")
    parser.add_argument("--tensorboard", metavar="DIR",
                        help="write TensorBoard logs of every epoch to DIR")
    return parser.parse_args(argv)


def _setup_logging(run_root: Path) -> logging.Handler | None:
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
               for h in root.handlers):
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(fmt)
        root.addHandler(stream)
    if not run_root.is_dir() or os.environ.get("DERMBENCH_RUNNER_LOGS") == "1":
        return None  # under the runner, which appends our output to train.log already
    handler = logging.FileHandler(run_root / "train.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    return handler


def image_table(config: RunConfig):
    """The dataset table with image paths, read exactly as `prepare` read it (same cache key)."""
    from data_utils.readers import read_dataset

    dataset = config.dataset
    data_dir = config.data_dir
    if dataset == "synthetic":
        from data_utils.synthetic import default_synthetic_dir, generate_synthetic

        n = int(config.synthetic_images)
        seed = int(config.data_seed)  # a grid replicate: the grid's seed
        root = Path(data_dir) if data_dir else default_synthetic_dir(n, seed)
        data_dir = generate_synthetic(root, n_images=n, seed=seed)
    if not data_dir:
        from core.errors import DataError

        raise DataError(f"run.json's config has no data_dir for --dataset {dataset}; prepare the "
                        "run again with --data-dir")
    return read_dataset(dataset, Path(data_dir).expanduser().resolve(),
                        allow_missing=config.allow_missing, test_set=config.test_set)


def load_run_images(splits_csv: Path, config: RunConfig, size: int,
                    cache_dir: str | None = None, workers: int | None = None):
    """The run's image cache at `size` (built if needed, as training builds it) and its splits.

    Returns:
        (ImageCache, training.entry_data.EntryData).
    """
    import pandas as pd

    from data_utils.cache import build_cache
    from training.entry_data import load_entry_data

    splits = pd.read_csv(splits_csv, dtype={"image_id": str, "lesion_id": str, "dx": str,
                                            "split": str})
    table = image_table(config)
    cache = build_cache(table["path"].tolist(), table["image_id"].tolist(), int(size),
                        resize_mode=config.resize_mode, cache_root=cache_dir, workers=workers)
    return cache, load_entry_data(cache, splits)


def run_entry(out: Path, entry: str, batch_size: int | None = None, cache_dir: str | None = None,
              workers: int | None = None, verbose: Any = "auto",
              devices: int | None = None, progress: Callable[..., None] | None = None,
              tensorboard_dir: str | None = None) -> dict[str, Any]:
    """Train one entry of a prepared run directory (in this process).

    Args:
        out: the run directory (run.json and splits.csv must exist).
        entry: the entry name.
        batch_size: batch size override.
        cache_dir: decoded-image cache root.
        workers: image decoding processes.
        verbose: Keras fit verbosity.
        devices: data parallelism over this many devices (None or 1: one device).
        progress: called as progress(kind, **fields) with the progress events, or None.
        tensorboard_dir: TensorBoard logs of every epoch go there (None: none; the SVM
            baseline has no epochs and writes none).

    Returns:
        The entry's metrics.json object.

    Raises:
        RunDirError: an unprepared run directory or an entry it was not resolved for.
        DevicesError: more devices than visible, or a batch size they do not divide.
        Anything from training (the caller turns it into an exit code).
    """

    from core.atomic import read_json
    from core.errors import RunDirError
    from core.rundir import RunDir
    from training.entries import check_entry, is_svm_entry

    run = RunDir(out)
    check_entry(entry, derived=False)
    if not run.run_json.is_file() or not run.splits_csv.is_file():
        raise RunDirError(f"{run.root} lacks run.json or splits.csv; prepare the run first")
    meta = read_json(run.run_json)
    if not isinstance(meta, dict) or "config" not in meta:
        raise RunDirError(f"{run.run_json} has no \"config\"; prepare the run again")
    config, fingerprint = RunConfig.from_dict(meta["config"], run.run_json), meta.get("fingerprint")
    try:
        size = int(config.training.image_size[entry])
    except KeyError:
        raise RunDirError(f"{run.run_json}: config.training.image_size has no size for {entry!r}; "
                          "the run was resolved without this entry") from None
    cache, data = load_run_images(run.splits_csv, config, size, cache_dir, workers)
    entry_dir = run.model_dir(entry)
    if is_svm_entry(entry):
        from training.svm_baseline import run_svm_entry

        if tensorboard_dir is not None:
            logger.info("%s: no TensorBoard logs (the SVM baseline has no epochs)", entry)
        return run_svm_entry(entry, config, cache, data, entry_dir, fingerprint=fingerprint,
                             batch_size=batch_size, cache_root=cache_dir, devices=devices,
                             progress=progress)
    from training.protocol import train_entry

    return train_entry(entry, config, data, entry_dir, fingerprint=fingerprint,
                       batch_size=batch_size, verbose=verbose, devices=devices,
                       progress=progress, tensorboard_dir=tensorboard_dir)


def _prepare_determinism(out: Path) -> None:
    """Before JAX starts: deterministic XLA GPU kernels for a run with `deterministic` set.

    XLA reads XLA_FLAGS when JAX initialises its backends (at the first computation), so the
    flag is added here, before anything runs on the backend; nothing changes under other
    backends, for non-deterministic runs, or once JAX has started (then `setup_backend` warns on
    a GPU). XLA on the CPU is deterministic without it.
    """
    from core.atomic import read_json

    try:
        deterministic = RunConfig.from_dict(read_json(out / "run.json")["config"]).deterministic
    except (OSError, ValueError, KeyError, TypeError, AttributeError, BenchmarkError):
        return  # run_entry reports the broken run.json
    if not deterministic or "jax" in sys.modules and _jax_started():
        return
    import keras

    from training.backend import JAX_DETERMINISTIC_FLAG

    flags = os.environ.get("XLA_FLAGS", "").split()
    if keras.backend.backend() == "jax" and JAX_DETERMINISTIC_FLAG not in flags:
        os.environ["XLA_FLAGS"] = " ".join([*flags, JAX_DETERMINISTIC_FLAG])


def _jax_compilation_cache(cache_dir: str | None) -> None:
    """Under JAX: keep XLA compilations on disk, shared by every worker process.

    Each entry trains in a fresh process, so JAX would compile everything again for every entry,
    fold and seed: the many small initializer ops of a model build (inception_v3: about 30 s on
    a CPU) and each train/predict step. With JAX's persistent compilation cache, later runs of
    the same model load them instead (that build: about 8 s). The cache is
    `<cache root>/jax-compilation` (a few MB per model, size and batch shape; delete it any
    time). JAX's own variables win: $JAX_COMPILATION_CACHE_DIR picks another folder and
    JAX_ENABLE_COMPILATION_CACHE=false turns it off. Nothing changes once JAX has started.
    """
    import keras

    if keras.backend.backend() != "jax" or _jax_started():
        return
    import jax

    from data_utils.cache import default_cache_root

    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        root = Path(cache_dir).expanduser() if cache_dir else default_cache_root()
        jax.config.update("jax_compilation_cache_dir", str(root / JAX_CACHE_DIR))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def _jax_started() -> bool:
    """Whether JAX has initialised its backends (True when that cannot be told)."""
    try:
        from jax._src import xla_bridge
    except ImportError:
        return True
    initialized = getattr(xla_bridge, "backends_are_initialized", None)
    return bool(initialized()) if callable(initialized) else True


def _record_failure(out: Path, entry: str, status: str, message: str,
                    batch_size: int | None, devices: int | None = None) -> None:
    """metrics.json for a failed entry (never raises: the exit code still tells the runner)."""
    try:
        from core.atomic import read_json
        from core.entry_metrics import write_entry_metrics
        from training.entries import all_entries, entry_kind

        fingerprint = None
        run_json = out / "run.json"
        if run_json.is_file():
            meta = read_json(run_json)
            fingerprint = meta.get("fingerprint")
            if batch_size is None:
                with contextlib.suppress(BenchmarkError, KeyError, TypeError):
                    batch_size = RunConfig.from_dict(meta["config"]).training.batch_size
        if entry not in all_entries():
            return  # no folder for a name that is not an entry
        write_entry_metrics(out / "models" / entry, extra={
            "entry": entry, "status": status, "error": message, "fingerprint": fingerprint,
            "kind": entry_kind(entry), "batch_size": batch_size, "devices": devices or 1})
    except Exception:  # noqa: BLE001 - reporting the failure must not hide it
        logger.exception("could not record the failure of %s in metrics.json", entry)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the worker. Returns the exit code (0 ok, 1 failed, 3 out of memory, 4 NaN)."""
    args = _parse(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    out = Path(args.out)
    handler = _setup_logging(out)
    started = time.perf_counter()
    batch = args.batch_size
    try:
        _prepare_determinism(out)
        _jax_compilation_cache(args.cache_dir)
        verbose = args.verbose
        if verbose is None:
            verbose = 0 if args.events else 1 if sys.stdout.isatty() else 2
        progress = None
        if args.events:
            from training.worker_process import emit_event as progress
        metrics = run_entry(out, args.entry, batch_size=batch, cache_dir=args.cache_dir,
                            workers=args.workers, verbose=verbose, devices=args.devices,
                            progress=progress, tensorboard_dir=args.tensorboard)
        status = metrics.get("status", "ok")
        best = metrics.get("best_val_balanced_accuracy")
        logger.info("%s: %s in %.1f s, best val balanced accuracy %s, batch size %s",
                    args.entry, status, time.perf_counter() - started,
                    "n/a" if best is None else f"{best:.4f}", metrics.get("batch_size"))
        return exitcodes.WORKER_NAN if status == "nan" else exitcodes.OK
    except BaseException as exc:  # noqa: BLE001 - every failure becomes an exit code
        if isinstance(exc, KeyboardInterrupt):
            raise
        oom = is_out_of_memory(exc)
        message = f"{type(exc).__name__}: {exc}"
        if oom:
            message = f"out of memory at batch size {batch or 'default'}: {message}"
        logger.error("%s: %s after %.1f s: %s", args.entry, "out of memory" if oom else "failed",
                     time.perf_counter() - started, message)
        logger.debug("%s", traceback.format_exc())
        if not oom:
            sys.stderr.write(traceback.format_exc())
        _record_failure(out, args.entry, "failed", message, batch, args.devices)
        return exitcodes.WORKER_OUT_OF_MEMORY if oom else exitcodes.FAILED
    finally:
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            handler.close()


if __name__ == "__main__":
    sys.exit(main())
