"""Which run directory `--all` uses, and holding it while it runs.

- An existing run directory is resumed only when its run.json records the same protocol
  (`training.fingerprint`: the protocol view of the config plus the content signatures: weights
  file, splits.csv). Otherwise it is refused with the differing keys named, or with `--force-new`
  the first free (or matching) sibling `RUNDIR-2`, `RUNDIR-3`, ... is used (`candidate_dirs`);
  the old directory is never touched.
- While the run lasts, the directory is locked (`locked`: an flock on `.lock`, released by the
  OS even on SIGKILL) and this process's log records are copied to its train.log
  (`file_logging`).

The flow that uses them is pipeline/run_all.py.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from core.atomic import read_json
from core.errors import RunDirError
from core.rundir import RunDir
from training.errors import ConfigError
from training.fingerprint import (
    diff_configs,
    file_sha256,
    fingerprint_view,
    format_differences,
    is_weights_file,
    protocol_fingerprint,
)
from training.settings import RunConfig

LOCK_NAME = ".lock"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class ProtocolMismatch(Exception):
    """The run directory holds a run of another protocol (`description` names the difference).

    Internal to the choice of the run directory: `run_all` turns it into a RunDirError, or tries
    the next sibling with --force-new.
    """

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


def candidate_dirs(out: Path, force_new: bool) -> Iterator[Path]:
    """The run directories to try, in order: `out`, then with --force-new `out-2`, `out-3`, ..."""
    yield out
    if not force_new:
        return
    number = 2
    while True:
        yield out.with_name(f"{out.name}-{number}")
        number += 1


def check_existing(root: Path, config: RunConfig,
                   signatures: dict[str, Any]) -> dict[str, Any] | None:
    """The existing run.json of `root` (None if there is none), checked against this protocol.

    The data signature (splits.csv) is left out: it is checked after the data is prepared.

    Raises:
        ProtocolMismatch: the run.json records another protocol.
        RunDirError: run.json cannot be read.
    """
    run_json = RunDir(root).run_json
    if not run_json.is_file():
        return None
    try:
        previous = read_json(run_json)
    except (OSError, ValueError) as exc:
        raise RunDirError(f"cannot read {run_json} ({exc}); it is not a run directory this "
                          f"program can resume: choose another --out") from None
    check_same_protocol(previous, config, signatures, include_data=False)
    return previous


def check_same_protocol(previous: dict[str, Any], config: RunConfig,
                        signatures: dict[str, Any], include_data: bool) -> None:
    """Raise ProtocolMismatch naming the differing keys when the existing run differs.

    The existing run.json is compared as written (a dict), so a run of another version is named
    by its differing keys rather than refused as unreadable.

    Args:
        previous: the existing run.json.
        config: this command's resolved config.
        signatures: this command's content signatures.
        include_data: compare the splits.csv signature too (after the data is prepared).

    Raises:
        ProtocolMismatch: the protocols differ.
    """
    old_config = previous.get("config", {})
    new_config = config.to_dict()
    old_signatures = dict(previous.get("signatures", {}))
    new_signatures = dict(signatures)
    if not include_data:
        old_signatures.pop("splits_sha256", None)
        new_signatures.pop("splits_sha256", None)
    differences = diff_configs(fingerprint_view(old_config, old_signatures),
                               fingerprint_view(new_config, new_signatures))
    if include_data and not differences and previous.get("fingerprint") != protocol_fingerprint(
            new_config, signatures):
        # Same view, different hash: run.json was written by another fingerprint definition.
        raise ProtocolMismatch(f"fingerprint {previous.get('fingerprint')} -> "
                               f"{protocol_fingerprint(new_config, signatures)}")
    if differences:
        raise ProtocolMismatch(format_differences(differences))


def weights_signature(config: RunConfig) -> dict[str, Any]:
    """{"weights_sha256": ...} when --weights names a file, else {}.

    Raises:
        ConfigError: the weights file cannot be read.
    """
    weights = config.weights
    if not is_weights_file(weights):
        return {}
    try:
        return {"weights_sha256": file_sha256(weights)}
    except OSError as exc:
        raise ConfigError(
            f"cannot read the weights file {weights}: {exc.strerror}; pass --weights imagenet, "
            f"--weights none or the path of a readable weights file"
        ) from None


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """Hold an exclusive lock on the run directory (released by the OS even on SIGKILL).

    Raises:
        RunDirError: another process holds it (the message names its pid).
    """
    root.mkdir(parents=True, exist_ok=True)
    handle = open(root / LOCK_NAME, "a+", encoding="utf-8")  # noqa: SIM115
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RunDirError(
                f"{root} is in use by {holder}; wait for it to finish (or stop it) before "
                f"rerunning, or choose another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        yield
    finally:
        handle.close()


@contextlib.contextmanager
def file_logging(path: Path) -> Iterator[None]:
    """Copy this process's log records to train.log while the run lasts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8", delay=True)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
