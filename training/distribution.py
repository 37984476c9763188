"""Data parallelism for one training job (`python -m training.worker ... --devices N`).

One entry trains on N devices of this machine: every device holds a replica of the model, each
global batch is split evenly over the devices, and the gradients are averaged. The results are
those of one device training on the same global batch (up to floating-point summation order).

    from training.distribution import data_parallel

    with data_parallel(2) as replicas:   # build, compile, fit and predict inside the block
        model = build()
        model.compile(...)
        model.fit(...)

Backends:

* JAX: `keras.distribution.DataParallel` over the first N of `keras.distribution.list_devices()`
  (the GPUs, else the CPU devices), made current for the block and the previous distribution
  restored afterwards. For testing on a CPU, split it into N devices before JAX starts:
  `XLA_FLAGS=--xla_force_host_platform_device_count=N`.
* TensorFlow: a `tf.distribute.MirroredStrategy` over the first N logical GPUs (else logical
  CPUs), whose scope covers the block. For testing on a CPU, create N logical CPU devices with
  `tf.config.set_logical_device_configuration` before TensorFlow initialises.

`devices=None` or 1 is a no-op on every backend. The global batch size must be a multiple of N
(`check_batch_size`): it is never rounded silently.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from core.errors import BenchmarkError

logger = logging.getLogger(__name__)

__all__ = ["DevicesError", "check_batch_size", "check_devices", "data_parallel",
           "visible_devices"]


class DevicesError(BenchmarkError):
    """A device count that this machine or this batch size cannot serve (the message says why)."""


def check_devices(devices: int | None) -> int:
    """Validate a `--devices` value.

    Args:
        devices: None (one device) or a positive integer.

    Returns:
        The number of devices (1 for None).

    Raises:
        DevicesError: zero, negative or not an integer.
    """
    if devices is None:
        return 1
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise DevicesError(f"--devices must be a positive integer, got {devices!r}")
    return devices


def _backend() -> str:
    import keras

    return keras.backend.backend()


def visible_devices() -> list[str]:
    """The devices that data parallelism would use, in order (accelerators first).

    Returns:
        Device names: under JAX `keras.distribution.list_devices()` (e.g. "gpu:0", or "cpu:0"
        when there is no accelerator); under TensorFlow the logical GPUs, or the logical CPUs
        when no GPU is visible (e.g. "/device:GPU:0").

    Raises:
        DevicesError: a backend without data-parallel support here (torch, numpy).
    """
    backend = _backend()
    if backend == "jax":
        import keras

        return [str(d) for d in keras.distribution.list_devices()]
    if backend == "tensorflow":
        import tensorflow as tf

        pool = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return [d.name for d in pool]
    raise DevicesError(f"--devices needs the jax or tensorflow backend, not {backend!r}; "
                       "set KERAS_BACKEND=jax or KERAS_BACKEND=tensorflow")


def _too_few(devices: int, visible: list[str]) -> DevicesError:
    backend = _backend()
    kind = "GPU" if any("gpu" in name.lower() for name in visible) else "CPU"
    if backend == "jax":
        cpu_hint = (f"set XLA_FLAGS=--xla_force_host_platform_device_count={devices} before "
                    "JAX starts")
    else:
        cpu_hint = (f"create {devices} logical CPU devices with "
                    "tf.config.set_logical_device_configuration before TensorFlow starts")
    return DevicesError(
        f"--devices {devices} asks for more devices than the {backend} backend sees: "
        f"{len(visible)} {kind} device(s) visible ({', '.join(visible) or 'none'}). Use "
        f"--devices {max(len(visible), 1)} or fewer, or make more GPUs visible "
        f"(CUDA_VISIBLE_DEVICES); to test on a CPU, {cpu_hint}"
    )


def check_batch_size(batch_size: int, devices: int | None, what: str = "batch size") -> None:
    """Require a global batch size that splits evenly over the devices.

    Args:
        batch_size: the global batch size (all devices together).
        devices: the device count (None: one).
        what: how the message names the batch size (e.g. "eval batch size").

    Raises:
        DevicesError: `batch_size` is not a multiple of `devices`.
    """
    n = check_devices(devices)
    if int(batch_size) % n:
        lower = int(batch_size) // n * n
        raise DevicesError(
            f"the {what} {batch_size} does not split evenly over --devices {n}: use a multiple "
            f"of {n} (e.g. --batch-size {max(lower, n)}) or another device count"
        )


@contextlib.contextmanager
def data_parallel(devices: int | None) -> Iterator[int]:
    """Make the block train data-parallel on the first `devices` devices.

    Build, compile, fit, load weights and predict inside the block: variables created outside
    it live on one device only.

    Args:
        devices: None or 1: nothing changes. N > 1: the JAX `DataParallel` distribution or the
            TensorFlow `MirroredStrategy` over the first N visible devices (module docstring).

    Yields:
        The number of replicas (1 for None).

    Raises:
        DevicesError: an invalid count, more devices than visible (the message says how many
            are visible and what to do), or a backend without support.
    """
    n = check_devices(devices)
    if n == 1:
        yield 1
        return
    visible = visible_devices()
    if n > len(visible):
        raise _too_few(n, visible)
    chosen = visible[:n]
    logger.info("data parallel over %d devices: %s", n, ", ".join(chosen))
    if _backend() == "jax":
        import keras

        distribution = keras.distribution.DataParallel(devices=chosen)
        with distribution.scope():
            yield n
        return
    import tensorflow as tf  # the TensorFlow-only path (`visible_devices` checked the backend)

    strategy = tf.distribute.MirroredStrategy(devices=chosen)
    with strategy.scope():
        yield n
