"""Stale ensembles: refit, in memory, the ensembles whose member files changed since their fit.

An ensemble is stale when a member prediction file it was fit on changed, disappeared or was
joined by out-of-fold predictions (core.provenance.ensemble_freshness compares fit.json's
"member_files" with the files now). `refit_stale` fits each stale ensemble again from the members
its fit.json records, temperature-scaled again when fit.json says "calibrated" (each member's
temperature refitted on its validation predictions now), writing nothing (the orchestration writes them with the rest, after every
check: pipeline.report_action, pipeline.ensemble_action). When those members cannot be used any
more (a folder or file removed, a member that failed), it refuses with a message naming the
ensemble, the change and the fix.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

from core.errors import BenchmarkError, IntegrityError
from core.provenance import EnsembleFreshness, stale_ensembles
from core.rundir import RunDir
from ensembles import ENSEMBLE_NAMES
from ensembles.build import EnsembleResult, fit_ensembles
from ensembles.fitfile import recorded_calibration
from ensembles.members import resolve_members

logger = logging.getLogger(__name__)


def _rebuild_hint(stale: EnsembleFreshness, run: RunDir) -> str:
    flag = " --calibrated" if recorded_calibration(stale.directory) else ""
    return (f"rebuild it from the members present (--ensemble {stale.name} --members A,B{flag} "
            f"--out {run.root}) or remove {stale.directory}")


def refit_stale(run_dir: str | os.PathLike, exclude: Iterable[str] = ()) -> list[EnsembleResult]:
    """Refit every stale ensemble of a run (single run or one replicate) in memory.

    Args:
        run_dir: the run directory.
        exclude: ensemble names not to refit (e.g. the ones an --ensemble command builds anyway).

    Returns:
        The refitted ensembles (nothing written), in canonical order; [] when none is stale.

    Raises:
        IntegrityError: a stale ensemble that cannot be refit: unknown to the ensembles stage,
            or recorded members that are gone or unusable (the message names the change).
    """
    run = RunDir(run_dir)
    skipped = set(exclude)
    stale = [s for s in stale_ensembles(run) if s.name not in skipped]
    groups: dict[tuple[tuple[str, ...], bool], list[EnsembleFreshness]] = {}
    for item in stale:
        if item.name not in ENSEMBLE_NAMES:
            raise IntegrityError(
                f"{item.describe()}, and {item.name!r} is not an ensemble of this benchmark "
                f"({', '.join(ENSEMBLE_NAMES)}), so it cannot be refit; "
                f"{_rebuild_hint(item, run)}")
        groups.setdefault((item.members, recorded_calibration(item.directory)), []).append(item)
    results: list[EnsembleResult] = []
    for (members, calibrated), items in groups.items():
        for item in items:
            logger.info("%s; refitting it from its %smembers %s", item.describe(),
                        "temperature-scaled " if calibrated else "", ", ".join(members))
        try:
            usable = resolve_members(run, list(members))
            results += fit_ensembles(run.root, [i.name for i in items], usable,
                                     calibrated=calibrated)
        except BenchmarkError as exc:
            first = items[0]
            raise IntegrityError(
                f"{first.describe()}, and it cannot be refit from its members: {exc}. "
                f"{_rebuild_hint(first, run)[0].upper()}{_rebuild_hint(first, run)[1:]}"
            ) from None
    order = {name: i for i, name in enumerate(ENSEMBLE_NAMES)}
    return sorted(results, key=lambda r: order[r.name])
