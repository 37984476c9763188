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


class FileSystemError(BenchmarkError, OSError):
    """A file or folder that cannot be read or written: permission denied, a read-only file
    system, a file where a folder is needed (or the reverse), a full disk. Also an OSError, so
    code that tolerates a failed optional write (`except OSError`) keeps doing so."""


class IntegrityError(BenchmarkError):
    """Files that disagree with what they were derived from or with each other: an ensemble
    whose member predictions changed since its fit, a lesion or image in two splits, entries or
    a baseline measured on another test set."""
