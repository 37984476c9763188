"""Exceptions raised by the model zoo.

Every one is a `BenchmarkError`, so the CLI prints it in one line; the ones about bad arguments
are also `ValueError`, as callers of `create_backbone` expect.
"""

from __future__ import annotations

from core.errors import BenchmarkError, DownloadError


class ZooValueError(BenchmarkError, ValueError):
    """A bad backbone name, size, preprocessing mode or weights value (names the allowed ones)."""


class DuplicateBackboneError(ZooValueError):
    """A backbone registered twice under the same name."""


class WeightsError(BenchmarkError):
    """A weights file that is corrupt, truncated, has the wrong hash or does not fit the model."""


class WeightsUnavailableError(DownloadError):
    """Pretrained weights that are neither in --weights-dir, nor cached, nor downloadable."""
