"""The protocol fingerprint: one hash of everything that changes a run's results.

Two commands whose fingerprints agree would train the same models on the same data, so a run
directory can be resumed by the second one; anything else is refused (`pipeline.rundir_lifecycle`).

What counts (`fingerprint_view`): the resolved config (run.json["config"], written by
`training.settings.RunConfig.to_dict`) minus the keys that do not change results, plus content
signatures that stand in for paths:

- `data_dir` is left out, the content of the split (`splits.csv`: ids, lesions, labels, split,
  fold) goes in instead, so moving the data folder keeps the run;
- `weights_dir` is left out (official weight files are verified by hash in the zoo);
- a `weights` file path is replaced by the file's sha256;
- `entries` is left out: `--models` picks which entries to train now, and a later command that adds
  models must resume the same run directory; likewise a grid run's training `seeds` (each
  replicate has its own fingerprint, which includes its seed).

Things that never enter the config at all (output path, workers, cache folder, verbosity) do not
count either.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Config keys that do not change results (see the module docstring).
NON_RESULT_KEYS: tuple[str, ...] = ("data_dir", "weights_dir", "entries", "seeds")
# Values of config["weights"] that name a source rather than a file.
NAMED_WEIGHTS: tuple[str, ...] = ("imagenet",)
WEIGHTS_FILE_MARKER = "<file: see signatures.weights_sha256>"


@dataclass(frozen=True)
class ConfigDifference:
    """One key that differs between two fingerprint views.

    Attributes:
        key: dotted path, e.g. "training.phase1_epochs" or "signatures.splits_sha256".
        old: the value in the existing run (None where the key is missing).
        new: the value of the new command (None where the key is missing).
    """

    key: str
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"{self.key}: {_short(self.old)} -> {_short(self.new)}"


def is_weights_file(weights: Any) -> bool:
    """True when config["weights"] names a file (not None and not a named source)."""
    return isinstance(weights, str) and weights not in NAMED_WEIGHTS


def file_sha256(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """The sha256 hex digest of a file's content.

    Args:
        path: the file.
        chunk_size: bytes read at a time (memory stays bounded for large weight files).

    Returns:
        64 lowercase hex digits.

    Raises:
        OSError: the file cannot be read.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys, no whitespace, tuples as lists: equal content, equal text.

    Args:
        obj: JSON-like data (dicts, lists, tuples, str, int, float, bool, None, Paths).

    Returns:
        The canonical text.
    """
    return json.dumps(_normalise(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)


def fingerprint_view(config: dict[str, Any], signatures: dict[str, Any]) -> dict[str, Any]:
    """The part of a run that changes results: config minus `NON_RESULT_KEYS`, plus signatures.

    Args:
        config: the resolved config (run.json["config"]).
        signatures: content hashes standing in for paths, e.g. {"splits_sha256": ...,
            "weights_sha256": ...}; a key may be absent while it is not yet known.

    Returns:
        A new, JSON-normalised dict (the input is not modified).
    """
    view = {k: v for k, v in config.items() if k not in NON_RESULT_KEYS}
    training = view.get("training")
    if isinstance(training, dict) and isinstance(training.get("image_size"), dict):
        # Sizes of entries outside the default ("paper") group follow from the preset and
        # --image-size (both in the view) and the zoo; left out, the fingerprint neither depends
        # on --models nor differs from runs made before the other groups existed.
        from training.entries import default_entries

        paper = set(default_entries())
        view["training"] = {**training, "image_size": {
            name: size for name, size in training["image_size"].items() if name in paper}}
    if is_weights_file(view.get("weights")):
        view["weights"] = WEIGHTS_FILE_MARKER
    view["signatures"] = dict(signatures)
    return _normalise(view)


def protocol_fingerprint(config: dict[str, Any], signatures: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of `fingerprint_view(config, signatures)`.

    Args:
        config: the resolved config.
        signatures: content hashes (see `fingerprint_view`).

    Returns:
        64 lowercase hex digits.
    """
    text = canonical_json(fingerprint_view(config, signatures))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def diff_configs(old: dict[str, Any], new: dict[str, Any]) -> list[ConfigDifference]:
    """The keys whose values differ between two nested dicts, as dotted paths.

    Args:
        old: e.g. the fingerprint view of the existing run.
        new: the fingerprint view of the new command.

    Returns:
        One `ConfigDifference` per differing leaf, sorted by key; empty when equal. A key present
        on one side only appears with None on the other.
    """
    differences: list[ConfigDifference] = []
    _diff(_normalise(old), _normalise(new), "", differences)
    return sorted(differences, key=lambda d: d.key)


def format_differences(differences: list[ConfigDifference], limit: int = 8) -> str:
    """`key: old -> new` pairs joined by "; " (at most `limit`, then a count of the rest)."""
    shown = [str(d) for d in differences[:limit]]
    if len(differences) > limit:
        shown.append(f"and {len(differences) - limit} more")
    return "; ".join(shown)


_MISSING = object()


def _diff(old: Any, new: Any, prefix: str, out: list[ConfigDifference]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            path = f"{prefix}.{key}" if prefix else str(key)
            _diff(old.get(key, _MISSING), new.get(key, _MISSING), path, out)
        return
    # Strict on types: 1 and 1.0 (or True and 1) hash differently, so they differ here too.
    if old != new or type(old) is not type(new):
        out.append(ConfigDifference(
            key=prefix or "<root>",
            old=None if old is _MISSING else old,
            new=None if new is _MISSING else new,
        ))


def _normalise(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _normalise(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_normalise(v) for v in obj]
    if isinstance(obj, Path):
        return os.fspath(obj)
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        return obj.item()  # NumPy scalars
    return obj


def _short(value: Any, width: int = 40) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= width else text[: width - 3] + "..."
