"""Out-of-memory detection shared by the worker and tools/gpu_benchmark.py, and its simulation."""

from __future__ import annotations

import pytest

from training.out_of_memory import (
    SIMULATE_OOM_ENV,
    SimulatedOutOfMemoryError,
    is_out_of_memory,
    mentions_out_of_memory,
    simulate_out_of_memory,
)


def test_is_out_of_memory():
    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(SimulatedOutOfMemoryError("x"))
    assert is_out_of_memory(RuntimeError("RESOURCE_EXHAUSTED: failed to allocate 2.0GiB"))
    assert is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate"))
    try:
        try:
            raise MemoryError("inner")
        except MemoryError as inner:
            raise ValueError("wrapped") from inner
    except ValueError as outer:
        assert is_out_of_memory(outer)
    assert not is_out_of_memory(ValueError("bad value"))
    assert not is_out_of_memory(None)
    import tensorflow as tf

    assert is_out_of_memory(tf.errors.ResourceExhaustedError(None, None, "OOM"))


@pytest.mark.parametrize("error", [
    RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 1.2GiB"),
    type("ResourceExhaustedError", (Exception,), {})("OOM"),  # the class name alone
    type("OutOfMemoryError", (RuntimeError,), {})("allocation"),  # torch's class
    RuntimeError("OOM when allocating tensor with shape[32,2048]"),
])
def test_every_backends_wording_is_recognised(error):
    assert is_out_of_memory(error)


@pytest.mark.parametrize("text, expected", [
    ("jaxlib.xla_extension.XlaRuntimeError: RESOURCE_EXHAUSTED: Out of memory", True),
    ("torch.OutOfMemoryError: CUDA error", True),
    ("ValueError: zoom factor must be positive", False),
    ("", False),
])
def test_mentions_out_of_memory(text, expected):
    assert mentions_out_of_memory(text) is expected


def test_simulated_out_of_memory_above_the_limit_only(monkeypatch):
    monkeypatch.delenv(SIMULATE_OOM_ENV, raising=False)
    simulate_out_of_memory(10_000)  # unset: never
    monkeypatch.setenv(SIMULATE_OOM_ENV, "8")
    simulate_out_of_memory(8)
    with pytest.raises(SimulatedOutOfMemoryError, match=f"batch size 16 > {SIMULATE_OOM_ENV}=8"):
        simulate_out_of_memory(16)
