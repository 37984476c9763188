"""One ensemble name, one variant: a grid aggregates an ensemble only when every replicate built
it from the same members and fit it on the same source.

An ensemble's variant is what its fit.json records (ensembles.fitfile): `members`,
`fit_split` ("val": the validation split, "oof": out-of-fold predictions, "none": nothing fit)
and whether the members were temperature-scaled (`calibrated`, `--ensemble --calibrated`).
Replicates can disagree when one was not retrained and kept ensembles fit on validation while
the others now have out-of-fold predictions, or when a backbone failed in one replicate. Their
mean over jobs would then mix two different models under one name, so the grid report refuses.
fit.json is read as plain JSON (reports never import ensembles); where it is absent, the
members and fit_split an ensemble's metrics.json records are used; an ensemble with neither is
not checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from core.atomic import read_json_object
from core.entry_metrics import FIT_FILE, METRICS_FILE
from core.errors import RunDirError
from core.rundir import RunDir

# (sorted members, fit source; " (temperature-scaled members)" appended when calibrated)
Variant = tuple[tuple[str, ...], str]


class MixedEnsembleError(RunDirError):
    """An ensemble name whose replicates were built from different members or fit sources."""


def ensemble_variant(entry_dir: Path) -> Variant | None:
    """(sorted members, fit source) of an ensemble folder, from fit.json else metrics.json; the
    fit source names the temperature-scaled members of a calibrated ensemble.

    Args:
        entry_dir: a replicate's ensembles/<name>.

    Returns:
        The variant, or None when neither file records members.
    """
    for name in (FIT_FILE, METRICS_FILE):
        record = read_json_object(Path(entry_dir) / name, "its ensemble variant is not checked")
        members = record.get("members")
        if isinstance(members, list) and members:
            split = str(record.get("fit_split", "none"))
            if record.get("calibrated") is True:
                split += " (temperature-scaled members)"
            return tuple(sorted(str(m) for m in members)), split
    return None


def check_ensemble_consistency(grid: RunDir,
                               replicates: Sequence[tuple[int, int, RunDir]]) -> None:
    """Refuse a grid whose replicates hold different variants of one ensemble name.

    Args:
        grid: the grid root (named in the message).
        replicates: (fold, seed, replicate) of the replicate folders.

    Raises:
        MixedEnsembleError: one line naming the ensemble, the replicates of each variant, their
            members and fit sources, and the fix.
    """
    names = sorted({name for _, _, rep in replicates for name in rep.ensemble_names()})
    for name in names:
        variants: dict[Variant, list[str]] = {}
        for _, _, rep in replicates:
            variant = ensemble_variant(rep.ensemble_dir(name))
            if variant is not None:
                variants.setdefault(variant, []).append(rep.root.name)
        if len(variants) <= 1:
            continue
        shared = sorted(set.intersection(*(set(members) for members, _ in variants)))
        parts = [f"{', '.join(reps)}: members {', '.join(members)}, fit on {split}"
                 for (members, split), reps in variants.items()]
        fix = (f"rerun the grid's --all command with the same options (it refits the stale "
               f"replicates on the backbones finished in every replicate), or rebuild it in "
               f"every replicate with --ensemble {name} --members {','.join(shared)} --out "
               f"{grid.root}" if len(shared) >= 2 else
               "rerun the grid's --all command with the same options (it refits the stale "
               f"replicates), or --ensemble {name} per replicate with the same --members")
        raise MixedEnsembleError(
            f"{grid.root}: ensemble {name!r} mixes variants across replicates ("
            + "; ".join(parts) + f"), so its jobs cannot be aggregated; {fix}")
