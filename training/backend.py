"""Backend setup for one training process: seeding, deterministic kernels, the dtype policy.

`setup_backend` runs once per process before a model is built (the protocol's `train_entry`,
the SVM baseline's feature extraction, tools/gpu_benchmark.py). Everything is Keras 3 and runs
under TensorFlow or JAX; TensorFlow is imported only on TensorFlow-only paths, each guarded by
the backend and with its JAX counterpart, so a JAX worker never loads TensorFlow.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sys

import keras
import numpy as np

from training.accelerator import gpu_available
from training.errors import ProtocolError

logger = logging.getLogger(__name__)

# XLA's flag for deterministic GPU kernels; `training.worker` adds it to XLA_FLAGS before JAX starts.
JAX_DETERMINISTIC_FLAG = "--xla_gpu_deterministic_ops=true"
MIXED_PRECISION_MODES: tuple[str, ...] = ("auto", "on", "off")


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
    if mixed_precision not in MIXED_PRECISION_MODES:
        raise ProtocolError(f"mixed_precision must be auto, on or off, got {mixed_precision!r}")
    use = mixed_precision != "off" and gpu_available()
    if mixed_precision == "on" and not use:
        logger.warning("mixed precision requested but no GPU is visible; training in float32")
    keras.mixed_precision.set_dtype_policy("mixed_float16" if use else "float32")
    return use
