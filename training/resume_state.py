"""The files an entry keeps while it trains: history.csv and the resume state in state/.

models/<entry>/ holds, until the entry is finished:

    history.csv              one row per completed epoch (`HISTORY_COLUMNS`), kept afterwards
    state/progress.json      where training stands (`read_progress`; format `STATE_FORMAT`)
    state/epoch-NNNN.npz     every model and optimizer variable after epoch NNNN
    state/best-NNNN.weights.h5   the zoo model's weights of the best epoch so far

Every file is written atomically (a temporary sibling, then a rename), so a process killed at
any point leaves either the old or the new file. Which state files belong together, and the
order in which they are switched, is `training.entry_run.EntryRun.save_state`'s business.

Keras is imported only inside the functions that handle a model, so the names and
`read_progress` can be used without it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.atomic import atomic_write_csv, read_json
from training.errors import ProtocolError

logger = logging.getLogger(__name__)

HISTORY_COLUMNS: tuple[str, ...] = (
    "epoch", "phase", "loss", "accuracy", "val_loss", "val_accuracy", "val_balanced_accuracy",
    "lr", "seconds",
)
STATE_DIR = "state"
PROGRESS_FILE = "progress.json"
BEST_WEIGHTS = "best.weights.h5"  # the finished entry's best checkpoint, in models/<entry>/
HISTORY_FILE = "history.csv"
STATE_FORMAT = 1


def save_weights_atomic(model: Any, path: Path) -> None:
    """`model.save_weights` to a temporary sibling, then rename (the name ends in .weights.h5).

    Args:
        model: a Keras model.
        path: the destination, ending in ".weights.h5".
    """
    tmp = path.with_name(f".{path.name[:-len('.weights.h5')]}.tmp-{os.getpid()}.weights.h5")
    try:
        model.save_weights(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def save_state_arrays(model: Any, path: Path) -> None:
    """Every model variable (weights, BatchNorm statistics, augmentation seed states) and every
    optimizer variable, as one .npz written atomically.

    Args:
        model: the compiled training model.
        path: the .npz file.
    """
    import keras

    arrays = {f"m{i:05d}": keras.ops.convert_to_numpy(v) for i, v in enumerate(model.variables)}
    arrays.update({f"o{i:05d}": keras.ops.convert_to_numpy(v)
                   for i, v in enumerate(model.optimizer.variables)})
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _assign_all(variables: list, arrays: list[np.ndarray], what: str, path: Path) -> None:
    if len(arrays) != len(variables):
        raise ProtocolError(
            f"{path}: holds {len(arrays)} {what} variables but the model has {len(variables)}; "
            f"the resume state does not belong to this model (delete {path.parent} to restart "
            "the entry)"
        )
    for variable, value in zip(variables, arrays, strict=True):
        if tuple(variable.shape) != value.shape:
            raise ProtocolError(
                f"{path}: {what} variable {variable.path} has shape {value.shape}, expected "
                f"{tuple(variable.shape)}; delete {path.parent} to restart the entry"
            )
        variable.assign(value)


def load_state_arrays(model: Any, path: Path) -> None:
    """Restore what `save_state_arrays` wrote (the model must be compiled for the same phase).

    Args:
        model: the compiled training model.
        path: the .npz file.

    Raises:
        ProtocolError: the file holds other variables than the model has.
    """
    model.optimizer.build(model.trainable_variables)
    with np.load(path) as data:
        names = sorted(data.files)
        model_arrays = [data[k] for k in names if k.startswith("m")]
        optimizer_arrays = [data[k] for k in names if k.startswith("o")]
    _assign_all(model.variables, model_arrays, "model", path)
    _assign_all(model.optimizer.variables, optimizer_arrays, "optimizer", path)


def read_progress(entry_dir: Path) -> dict[str, Any] | None:
    """The entry's resume state (state/progress.json), or None when there is none.

    Args:
        entry_dir: models/<entry>.

    Returns:
        The progress object, or None (missing, unreadable or of another format).
    """
    path = Path(entry_dir) / STATE_DIR / PROGRESS_FILE
    if not path.is_file():
        return None
    try:
        progress = read_json(path)
    except (OSError, ValueError) as exc:
        logger.warning("ignoring unreadable resume state %s (%s)", path, exc)
        return None
    return progress if isinstance(progress, dict) and progress.get("format") == STATE_FORMAT else None


def read_history(entry_dir: Path) -> pd.DataFrame:
    """history.csv of an entry (an empty frame with `HISTORY_COLUMNS` when there is none)."""
    path = Path(entry_dir) / HISTORY_FILE
    if path.is_file():
        return pd.read_csv(path)
    return pd.DataFrame(columns=list(HISTORY_COLUMNS))


def append_history(entry_dir: Path, row: dict[str, Any]) -> None:
    """Append one epoch's row to history.csv (rewritten atomically).

    Args:
        entry_dir: models/<entry>.
        row: a value for each of `HISTORY_COLUMNS`.
    """
    history = read_history(entry_dir)
    history = pd.concat([history, pd.DataFrame([row], columns=list(HISTORY_COLUMNS))],
                        ignore_index=True) if len(history) else pd.DataFrame(
        [row], columns=list(HISTORY_COLUMNS))
    atomic_write_csv(Path(entry_dir) / HISTORY_FILE, history)


def truncate_history(entry_dir: Path, last_epoch: int) -> None:
    """Drop the history rows of epochs after `last_epoch` (those the resume state lacks).

    Args:
        entry_dir: models/<entry>.
        last_epoch: the last epoch (1-based, over all phases) that the resume state covers.
    """
    history = read_history(entry_dir)
    if len(history) and (history["epoch"] > last_epoch).any():
        atomic_write_csv(Path(entry_dir) / HISTORY_FILE, history[history["epoch"] <= last_epoch])
