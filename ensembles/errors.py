"""Exceptions of the ensembles stage."""

from core.errors import BenchmarkError


class EnsembleError(BenchmarkError, ValueError):
    """A request or input the ensembles cannot honour (unknown name or member, too few members,
    inconsistent member predictions, a fit file that does not match); the message says what to do."""
