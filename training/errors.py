"""The training stage's user-facing errors (the CLI prints the message and exits with 2)."""

from __future__ import annotations

from core.errors import BenchmarkError


class ConfigError(BenchmarkError, ValueError):
    """A command line or setting that cannot be resolved into a config (the message says how to
    fix it)."""


class ProtocolError(BenchmarkError):
    """A split or config that the protocol cannot train on (the message says what to fix)."""
