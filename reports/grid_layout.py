"""The replicates of a grid run: the folders found and the ones its run.json expects."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from core.errors import RunDirError
from core.rundir import RunDir
from reports.context import read_context


@dataclass
class GridLayout:
    """The replicates of a grid run.

    Attributes:
        folds: run.json's "folds" (K) or None (one split, repeated seeds).
        seeds: run.json's "seeds", else the seeds of the replicate folders.
        found: (fold, seed, RunDir) of every replicate folder, by fold then seed.
        missing: (fold, seed) the configuration expects but no folder holds.
    """

    folds: int | None
    seeds: list[int]
    found: list[tuple[int, int, RunDir]]
    missing: list[tuple[int, int]] = field(default_factory=list)

    @property
    def replicates(self) -> list[tuple[int, int]]:
        """Every (fold, seed) of the grid: found and missing, sorted."""
        return sorted({(f, s) for f, s, _ in self.found} | set(self.missing))


def grid_layout(run: RunDir) -> GridLayout:
    """The grid's replicates: the folders found and the ones run.json's config expects.

    Args:
        run: the grid root.

    Returns:
        The layout. Expected replicates: folds 0..K-1 (K = config "folds"; without folds, the
        folds of the folders found, else 0) times config "seeds" (else the seeds found).

    Raises:
        RunDirError: the root is missing or holds no replicates/fold<f>-seed<s>/ folder.
    """
    if not run.root.is_dir():
        raise RunDirError(f"{run.root}: no such run directory; pass the --out of a finished run")
    found = run.replicates()
    if not found:
        raise RunDirError(
            f"{run.root}: a grid run (it has {run.replicates_dir.name}/) without any replicate "
            "folder fold<f>-seed<s>/; train it with --seeds/--folds or remove the empty folder"
        )
    config = read_context(run).config
    folds = config.get("folds")
    folds = int(folds) if isinstance(folds, int) and not isinstance(folds, bool) else None
    seeds = config.get("seeds")
    if isinstance(seeds, list) and seeds and all(isinstance(s, int) for s in seeds):
        seeds = [int(s) for s in seeds]
    else:
        seeds = sorted({s for _, s, _ in found})
    fold_ids = list(range(folds)) if folds else sorted({f for f, _, _ in found}) or [0]
    present = {(f, s) for f, s, _ in found}
    missing = [(f, s) for f, s in itertools.product(fold_ids, seeds) if (f, s) not in present]
    return GridLayout(folds=folds, seeds=seeds, found=found, missing=missing)
