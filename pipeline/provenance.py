"""run.json of a `--all` run: its config, fingerprint and provenance.

run.json (its keys are read by reports/context.py and training/worker.py) records the resolved
config (`training.settings.RunConfig.to_dict`), the protocol fingerprint and content signatures,
the seeds, the command line that created the run and every later invocation (command, date,
working directory), the versions of the packages that matter, Python and the platform, and the
git commit of the source checkout. A resumed run keeps its creation record and gains an
invocation; its entries (and a grid's seeds) are the union over invocations, in order.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import os
import platform
import shlex
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from core.atomic import atomic_write_json
from core.rundir import RunDir
from training.settings import RunConfig

# Packages whose versions go into run.json.
VERSIONED_PACKAGES: tuple[str, ...] = (
    "dermbench", "tensorflow", "keras", "jax", "jaxlib", "numpy", "scipy", "scikit-learn",
    "pandas", "pillow", "matplotlib", "seaborn",
)


def write_run_json(run: RunDir, config: RunConfig, signatures: dict[str, Any],
                   fingerprint: str, previous: dict[str, Any] | None) -> None:
    """Write run.json; a resumed run keeps its creation record and gains this invocation.

    Args:
        run: the run directory.
        config: this command's resolved config.
        signatures: the content signatures (weights, splits.csv).
        fingerprint: the protocol fingerprint of `config` and `signatures`.
        previous: the existing run.json of a resumed run, or None for a new one.
    """
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    invocation = {"command": _command_line(), "date": now, "cwd": os.getcwd()}
    if previous is not None:
        # A later command may train more entries: the run's entries are the union, in order.
        known = list(previous.get("config", {}).get("entries", []))
        config = replace(config, entries=tuple(known + [e for e in config.entries
                                                        if e not in known]))
        if config.seeds is not None:  # a grid's training seeds: likewise a union, in order
            seen = list(previous.get("config", {}).get("seeds", []))
            config = replace(config, seeds=tuple(seen + [s for s in config.seeds
                                                         if s not in seen]))
    document = {
        "config": config.to_dict(),
        "fingerprint": fingerprint,
        "signatures": signatures,
        "seeds": {"split": config.seed,
                  "training": list(config.seeds) if config.seeds is not None else config.seed,
                  "synthetic": config.seed},
        "command": previous.get("command") if previous else invocation["command"],
        "created": previous.get("created") if previous else now,
        "invocations": [*(previous or {}).get("invocations", []), invocation],
        "versions": package_versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git": git_info(),
    }
    atomic_write_json(run.run_json, document)


def package_versions(names: tuple[str, ...] = VERSIONED_PACKAGES) -> dict[str, str]:
    """Installed versions of `names` (importlib.metadata); packages not installed are left out."""
    versions = {}
    for name in names:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    return versions


def git_info(repo: Path | None = None) -> dict[str, Any] | None:
    """{"sha": ..., "dirty": bool} of the source checkout, or None outside git.

    Reads only: GIT_OPTIONAL_LOCKS=0 keeps `git status` from refreshing the index.

    Args:
        repo: the checkout (default: the one this module is in).
    """
    repo = repo or Path(__file__).resolve().parents[1]
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, env=env, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=repo, env=env, capture_output=True, text=True, timeout=10,
                                check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"sha": sha, "dirty": bool(status.strip())}


def _command_line() -> str:
    return shlex.join([Path(sys.executable).name, *sys.argv])
