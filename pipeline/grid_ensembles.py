"""One ensemble variant per grid: which members a grid's ensembles have, and which fits are stale.

One ensemble name is one model in the whole grid: its members are the backbones finished in every
replicate (`grid_members`; a backbone missing in one replicate is left out everywhere), and a
replicate whose fit.json was made from other members or other member files (e.g. before the
out-of-fold predictions of training/oof.py existed, or before a member was retrained) is refit
(`stale_ensembles`). pipeline/finish.py acts on both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from core.atomic import read_json
from core.entry_metrics import FIT_FILE
from core.rundir import RunDir
from pipeline.replicates import Replicate
from training.fingerprint import file_sha256
from training.jobs import entry_is_finished

# The member prediction files every fit reads; "oof" joins them when every member has one.
MEMBER_SPLITS = ("val", "test")
OOF_SPLIT = "oof"


def grid_members(replicates: Sequence[Replicate],
                 backbones: Sequence[str]) -> tuple[list[str], dict[str, list[str]]]:
    """The ensemble members of a grid: the backbones finished in every replicate.

    A backbone that failed (or has not run) in one replicate is left out of every replicate's
    ensembles, so that one ensemble name means one model in the whole grid.

    Args:
        replicates: the grid's replicates.
        backbones: the candidate backbones, in the study's order.

    Returns:
        (members, dropped): the members, sorted by name (as ensembles.members sorts them), and
        backbone -> the replicates it is not finished in, for every backbone finished in some
        replicates but not all.
    """
    members, dropped = [], {}
    for name in backbones:
        lacking = [r.name for r in replicates if not entry_is_finished(r.run.model_dir(name))]
        if not lacking:
            members.append(name)
        elif len(lacking) < len(replicates):
            dropped[name] = lacking
    return sorted(members), dropped


def stale_ensembles(run: RunDir, names: Sequence[str], members: list[str]) -> dict[str, str]:
    """The ensembles of a replicate that must be (re)fit, each with the reason.

    An ensemble is current when its fit.json records exactly `members` and, for every member,
    the prediction files the ensembles stage reads now (validation and test, plus out-of-fold
    when every member has one) with the SHA-256 they have now. So an ensemble fit on validation
    before the replicate's members got their out-of-fold predictions, one fit with a backbone
    the grid has since dropped, or one whose member was retrained, is stale.

    Args:
        run: the replicate's run directory.
        names: the ensembles the grid builds.
        members: the grid's members (`grid_members`).

    Returns:
        name -> why it is stale ("no fit.json", "members ... differ ...", ...); current
        ensembles are left out.
    """
    expected = list(MEMBER_SPLITS)
    if members and all(RunDir.predictions_file(run.model_dir(m), OOF_SPLIT).is_file()
                       for m in members):
        expected.append(OOF_SPLIT)
    hashes: dict[tuple[str, str], str] = {}

    def current(member: str, split: str) -> str:
        if (member, split) not in hashes:
            path = RunDir.predictions_file(run.model_dir(member), split)
            hashes[(member, split)] = file_sha256(path) if path.is_file() else ""
        return hashes[(member, split)]

    stale = {}
    for name in names:
        reason = _fit_problem(run.ensemble_dir(name) / FIT_FILE, members, expected, current)
        if reason:
            stale[name] = reason
    return stale


def _fit_problem(path: Path, members: list[str], expected: list[str],
                 current: Callable[[str, str], str]) -> str:
    if not path.is_file():
        return "no fit.json"
    try:
        record = read_json(path)
    except (OSError, ValueError) as exc:
        return f"unreadable fit.json ({exc})"
    recorded = record.get("members") if isinstance(record, dict) else None
    state = record.get("state") if isinstance(record, dict) else None
    if (record.get("ensemble") in ("weighted_voting", "stacking") and isinstance(state, dict)
            and state.get("objective") != "class-balanced log loss"):
        return "fit before the class-balanced convention (plain log loss)"
    if not isinstance(recorded, list) or sorted(map(str, recorded)) != sorted(members):
        return (f"fit on members {', '.join(map(str, recorded or [])) or 'unknown'}, the grid's "
                f"are {', '.join(members)}")
    files = record.get("member_files")
    if not isinstance(files, dict):
        return "fit.json records no member files"
    for member in members:
        splits = files.get(member) if isinstance(files.get(member), dict) else {}
        if sorted(splits) != sorted(expected):
            return (f"fit with {member}'s {', '.join(sorted(splits)) or 'no'} predictions, the "
                    f"replicate now has {', '.join(sorted(expected))}")
        for split, entry in splits.items():
            if not isinstance(entry, dict) or entry.get("sha256") != current(member, split):
                return f"{member}'s predictions_{split}.csv changed since the fit"
    return ""
