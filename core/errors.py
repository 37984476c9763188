"""Exceptions for problems the user can fix.

The CLI turns every `BenchmarkError` into a one-line message and a non-zero exit code; anything
else is a bug and keeps its traceback.
"""

from core import exitcodes


class BenchmarkError(Exception):
    """A problem with the user's input, files or environment; the message says what to do."""

    exit_code = exitcodes.USER_ERROR


class DataError(BenchmarkError):
    """Bad or missing dataset files, metadata rows or images."""


class DownloadError(BenchmarkError):
    """A download that failed, was interrupted beyond repair or did not verify."""


class PredictionFileError(BenchmarkError):
    """A prediction file that breaks the run-directory contract (core.predictions)."""


class RunDirError(BenchmarkError):
    """A run directory that is missing, incomplete, or belongs to a different protocol."""
