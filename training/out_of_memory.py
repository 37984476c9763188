"""Out-of-memory errors: recognising one from any Keras backend, and simulating one in tests.

The worker (`training.worker`) turns an error that `is_out_of_memory` recognises into exit code
3, which the runner retries at half the batch size; tools/gpu_benchmark.py records such a
backbone as "oom" (and reads a dead child process's last log line with `mentions_out_of_memory`).
Both ask this module, so a backend's wording is recognised everywhere or nowhere.

Imports nothing heavy: TensorFlow's ResourceExhaustedError is checked only when TensorFlow is
already imported.
"""

from __future__ import annotations

import os
import sys

# Lower-case fragments of the class names and messages of out-of-memory errors: XLA/JAX
# ("RESOURCE_EXHAUSTED: Out of memory while trying to allocate"), TensorFlow
# (ResourceExhaustedError, "OOM when allocating tensor"), torch (OutOfMemoryError, "CUDA out of
# memory") and allocators ("failed to allocate").
OOM_MARKERS: tuple[str, ...] = (
    "out of memory", "outofmemory", "resource_exhausted", "resourceexhausted",
    "oom when allocating", "failed to allocate",
)
# For tests: any batch size above this number "runs out of memory" (`simulate_out_of_memory`).
SIMULATE_OOM_ENV = "DERMBENCH_SIMULATE_OOM_ABOVE_BATCH"


class SimulatedOutOfMemoryError(MemoryError):
    """Raised instead of training when $DERMBENCH_SIMULATE_OOM_ABOVE_BATCH is below the batch size."""


def mentions_out_of_memory(text: str) -> bool:
    """Whether a message (or a log line) says that memory ran out (`OOM_MARKERS`).

    Args:
        text: any text, e.g. an exception's message or the last line of a log.

    Returns:
        True when one of the markers occurs in it, case-insensitively.
    """
    lowered = text.lower()
    return any(marker in lowered for marker in OOM_MARKERS)


def is_out_of_memory(exc: BaseException | None) -> bool:
    """Whether an exception means the accelerator (or host) ran out of memory.

    MemoryError, TensorFlow's ResourceExhaustedError (checked only when TensorFlow is already
    imported), and any error whose class name or message carries an `OOM_MARKERS` fragment
    (JAX/XLA, TensorFlow, torch), also in its chained causes.

    Args:
        exc: the exception (None: False).

    Returns:
        True for an out-of-memory error.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, MemoryError):
            return True
        tf = sys.modules.get("tensorflow")
        if tf is not None:
            errors = getattr(tf, "errors", None)
            resource = getattr(errors, "ResourceExhaustedError", None)
            if resource is not None and isinstance(exc, resource):
                return True
        if mentions_out_of_memory(f"{type(exc).__name__}: {exc}"):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def simulate_out_of_memory(batch_size: int) -> None:
    """Raise `SimulatedOutOfMemoryError` when $DERMBENCH_SIMULATE_OOM_ABOVE_BATCH < batch_size.

    Args:
        batch_size: the batch size about to be trained.

    Raises:
        SimulatedOutOfMemoryError: the variable is set and below `batch_size`.
    """
    limit = os.environ.get(SIMULATE_OOM_ENV)
    if limit and batch_size > int(limit):
        raise SimulatedOutOfMemoryError(
            f"simulated out of memory: batch size {batch_size} > {SIMULATE_OOM_ENV}={limit}")
