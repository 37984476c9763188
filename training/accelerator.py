"""What the Keras backend computes on: whether a GPU is visible, its name, the backend's version
and the peak accelerator memory.

Backend-agnostic: each query asks the active backend's own library (TensorFlow, JAX or torch)
and imports only that one, so a JAX process never loads TensorFlow. The protocol asks
`gpu_available` before choosing mixed precision (`training.backend.setup_backend`);
tools/gpu_benchmark.py reports the device, the versions and the peak memory with the others.
Nothing here raises: a query that the backend cannot answer gives the documented fallback.
"""

from __future__ import annotations

import contextlib
import os
import platform


def _active_backend() -> str:
    import keras

    return keras.backend.backend()


def gpu_available(backend: str | None = None) -> bool:
    """Whether the Keras backend sees a GPU.

    Args:
        backend: "tensorflow", "jax" or "torch"; None: the active Keras backend.

    Returns:
        True when the backend lists at least one GPU.
    """
    backend = backend or _active_backend()
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


def device_name(backend: str) -> str:
    """A human name of the accelerator the backend computes on ("CPU (n cores, arch)" without one).

    Args:
        backend: the Keras backend's name.

    Returns:
        The name.
    """
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
    """The version of the backend's library, without importing another one ("unknown" if none)."""
    module = {"jax": "jax", "tensorflow": "tensorflow", "torch": "torch"}.get(backend)
    with contextlib.suppress(Exception):
        return str(__import__(module).__version__)
    return "unknown"


def reset_peak_memory(backend: str) -> None:
    """Reset the peak-memory counter where the backend can (TensorFlow, torch; JAX cannot)."""
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

    JAX: `device.memory_stats()["peak_bytes_in_use"]` (process lifetime); TensorFlow:
    `get_memory_info("GPU:0")["peak"]` since the last reset; torch: `max_memory_allocated`.

    Args:
        backend: the Keras backend's name.

    Returns:
        The peak in bytes, or None.
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
