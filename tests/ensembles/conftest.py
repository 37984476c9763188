"""Fixtures for the ensembles tests: synthetic run directories of member prediction files."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from core.classes import CLASSES
from core.predictions import make_predictions, write_predictions

BACKBONES = ("inception_v3", "resnext101", "inception_resnet_v2", "xception", "nasnet_large")
# HAM10000's class mix (akiec, bcc, bkl, df, mel, nv, vasc counts out of 10,015).
HAM_PRIOR = np.array([327, 514, 1099, 115, 1113, 6705, 142]) / 10015


def synthetic_split(
    rng: np.random.Generator, n: int, offset: int, members: Sequence[str], skills: Sequence[float]
) -> dict[str, object]:
    """Labels, ids and per-member probabilities for one split.

    Images come in pairs of one lesion (HAM_<k> holds images 2k and 2k+1); each member's logits
    are standard normal noise plus `skill` on the true class.
    """
    y = rng.choice(len(CLASSES), size=n, p=HAM_PRIOR)
    ids = np.array([f"ISIC_{offset + i:07d}" for i in range(n)])
    lesions = np.array([f"HAM_{(offset + i) // 2:07d}" for i in range(n)])
    probas = {}
    for member, skill in zip(members, skills, strict=True):
        logits = rng.normal(0.0, 1.0, (n, len(CLASSES)))
        logits[np.arange(n), y] += skill
        p = np.exp(logits)
        probas[member] = p / p.sum(axis=1, keepdims=True)
    return {"y": y, "ids": ids, "lesions": lesions, "probas": probas}


def write_synthetic_run(
    root: Path,
    members: Sequence[str] = BACKBONES,
    n_val: int = 120,
    n_test: int = 120,
    n_oof: int = 0,
    seed: int = 0,
    skills: Sequence[float] | None = None,
) -> Path:
    """Write models/<m>/predictions_{val,test}.csv (and _oof when n_oof) under `root`."""
    rng = np.random.default_rng(seed)
    skills = list(skills) if skills is not None else [1.0 + 0.5 * k for k in range(len(members))]
    splits = [("val", n_val, 0), ("test", n_test, n_val)]
    if n_oof:
        splits.append(("oof", n_oof, n_val + n_test))
    for split, n, offset in splits:
        data = synthetic_split(rng, n, offset, members, skills)
        for member in members:
            preds = make_predictions(
                data["ids"], data["lesions"], np.asarray(CLASSES)[data["y"]], data["probas"][member]
            )
            write_predictions(root / "models" / member / f"predictions_{split}.csv", preds)
    return root


@pytest.fixture
def synthetic_run(tmp_path: Path) -> Callable[..., Path]:
    """Factory: `synthetic_run(**kwargs)` writes a run under a fresh tmp folder and returns it."""
    counter = iter(range(1000))

    def make(**kwargs) -> Path:
        return write_synthetic_run(tmp_path / f"run{next(counter)}", **kwargs)

    return make


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` with its bytes (to prove that nothing was written)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def tree_snapshot() -> Callable[[Path], dict[str, bytes]]:
    """The `snapshot` function as a fixture."""
    return snapshot


# HAM10000 at 80/10/10: 10,015 images -> 8,012 train (no prediction files), 1,002 val, 1,001 test.
HAM_VAL, HAM_TEST = 1002, 1001


@pytest.fixture(scope="session")
def ham_scale_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory with the five backbones' val/test predictions at HAM10000 scale."""
    return write_synthetic_run(tmp_path_factory.mktemp("ham_scale"), n_val=HAM_VAL,
                               n_test=HAM_TEST, seed=7)
