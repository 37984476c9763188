"""Fixtures for the reports tests: generated run directories of prediction files.

`make_run(root, ...)` writes a HAM10000-like run directory: lesions with one to several images in
HAM10000's class mix, every entry's predictions on val and test (a model of given skill: the true
class gets a logit bonus), optional histories, ensembles with fit.json, run.json and dataset.json.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.atomic import atomic_write_csv, atomic_write_json, read_json
from core.classes import CLASSES
from core.predictions import make_predictions, write_predictions
from core.rundir import RunDir
from ensembles.registry import ESTIMATORS

HAM_MIX = np.array([327, 514, 1099, 115, 1113, 6705, 142], dtype=float) / 10015

BACKBONES = {
    "inception_resnet_v2": 2.0,
    "inception_v3": 1.7,
    "resnext101": 1.8,
    "xception": 1.9,
    "nasnet_large": 1.6,
}
BASELINES = {"paper_cnn": 0.8, "inception_resnet_v2+svm": 1.4}
ENSEMBLES = ("soft_voting", "hard_voting", "weighted_voting", "stacking")


def _split_table(rng: np.random.Generator, n_images: int, prefix: str) -> pd.DataFrame:
    """~1.34 images per lesion, every class present."""
    labels, lesions = [], []
    lesion = 0
    while len(labels) < n_images:
        label = CLASSES[rng.choice(7, p=HAM_MIX)] if len(labels) >= 7 else CLASSES[len(labels)]
        count = 1 + rng.binomial(3, 0.11)
        for _ in range(min(count, n_images - len(labels))):
            labels.append(label)
            lesions.append(f"{prefix}L{lesion:05d}")
        lesion += 1
    ids = [f"{prefix}I{i:05d}" for i in range(n_images)]
    return pd.DataFrame({"image_id": ids, "lesion_id": lesions, "label": labels})


def _proba(
    rng: np.random.Generator, labels: np.ndarray, skill: float, shared: np.ndarray
) -> np.ndarray:
    """Softmax of noise (partly shared by all models: they err on the same hard images) plus a
    bonus of `skill` on the true class."""
    y = np.array([CLASSES.index(c) for c in labels])
    logits = 0.8 * shared + 0.6 * rng.normal(size=(len(y), 7)) + np.log(HAM_MIX)[None, :] * 0.5
    logits[np.arange(len(y)), y] += skill
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


def _history(rng: np.random.Generator, epochs: tuple[int, int]) -> pd.DataFrame:
    rows = []
    epoch = 0
    for phase, count in zip(("frozen", "finetune"), epochs, strict=True):
        for _ in range(count):
            epoch += 1
            acc = 1 - 0.6 * np.exp(-epoch / 4) + rng.normal(0, 0.01)
            rows.append({"epoch": epoch, "phase": phase, "loss": 1.6 * np.exp(-epoch / 5),
                         "accuracy": acc, "val_loss": 1.7 * np.exp(-epoch / 6) + 0.2,
                         "val_accuracy": acc - 0.05, "val_balanced_accuracy": acc - 0.2,
                         "lr": 1e-3 if phase == "frozen" else 1e-4, "seconds": 12.5})
    return pd.DataFrame(rows)


def make_run(
    root: Path,
    n_test: int = 300,
    n_val: int = 300,
    backbones: dict[str, float] | None = None,
    baselines: dict[str, float] | None = None,
    ensembles: tuple[str, ...] = ENSEMBLES,
    histories: bool = True,
    run_files: bool = True,
    split: str = "lesion",
    seed: int = 0,
    data_seed: int | None = None,
    extra_entries: dict[str, tuple[str, float]] | None = None,
    families: dict[str, tuple[str, str]] | None = None,
) -> RunDir:
    """Write a generated run directory under `root` and return it.

    `data_seed` (default: drawn from `seed`'s stream) fixes the images, lesions, labels and the
    noise all models share, so runs with the same `data_seed` and different `seed`s predict the
    same images with different models (the replicates of one fold of a grid).
    `extra_entries` adds models/ entries of any other kind: name -> (kind, skill), e.g.
    {"xception+tta8": ("tta", 2.0)} (no history; not ensemble members). `families` records
    entry -> (family, group) in those entries' metrics.json as the trainer does (with
    `run_files`); entries not in it record neither, like runs made before they were recorded.
    """
    rng = np.random.default_rng(seed)
    data_rng = rng if data_seed is None else np.random.default_rng(data_seed)
    run = RunDir(root)
    backbones = dict(BACKBONES if backbones is None else backbones)
    baselines = dict(BASELINES if baselines is None else baselines)
    tables = {"val": _split_table(data_rng, n_val, "V"),
              "test": _split_table(data_rng, n_test, "T")}
    shared = {part: data_rng.normal(size=(len(t), 7)) for part, t in tables.items()}
    probas: dict[str, dict[str, np.ndarray]] = {}
    extra_entries = dict(extra_entries or {})
    families = dict(families or {})
    kinds = [("backbone", backbones), ("baseline", baselines),
             *((kind, {name: skill}) for name, (kind, skill) in extra_entries.items())]
    for kind, group in kinds:
        for name, skill in group.items():
            probas[name] = {}
            for part, table in tables.items():
                proba = _proba(rng, table["label"].to_numpy(), skill, shared[part])
                probas[name][part] = proba
                write_predictions(
                    run.predictions_file(run.model_dir(name), part),
                    make_predictions(table["image_id"], table["lesion_id"], table["label"], proba),
                )
            if run_files:
                atomic_write_json(run.model_dir(name) / "metrics.json", {
                    "kind": kind, "status": "ok", "params": 5.4e7 if kind == "backbone" else 1e6,
                    "flops_per_image": 2.6e10, "train_seconds": 3725.0, "batch_size": 32,
                    "inference_images_per_s": 210.5, "fingerprint": "abc123",
                    **({"description": f"{name} as its trainer describes it"}
                       if kind == "baseline" else {}),
                    **(dict(zip(("family", "group"), families[name], strict=True))
                       if name in families else {}),
                })
            if histories and kind == "backbone":
                atomic_write_csv(run.model_dir(name) / "history.csv", _history(rng, (3, 4)))
    members = list(backbones)
    for name in ensembles if members else ():
        for part, table in tables.items():
            stack = np.stack([probas[m][part] for m in members])
            proba = stack.mean(axis=0)
            prediction = None
            if name == "hard_voting":
                votes = np.eye(7)[stack.argmax(axis=2)].sum(axis=0)
                proba = votes / votes.sum(axis=1, keepdims=True)
                prediction = np.array(CLASSES)[votes.argmax(axis=1)]
            write_predictions(
                run.predictions_file(run.ensemble_dir(name), part),
                make_predictions(table["image_id"], table["lesion_id"], table["label"], proba,
                                 prediction),
            )
        # ensembles.fitfile's layout (learned values under "state"); stacking's C at the top
        # level as older files have it
        fit = {"ensemble": name, "members": members, "fit_split": "none", "fit_size": 0}
        if name == "weighted_voting":
            fit.update(state={"weights": [round(1 / len(members), 3)] * len(members)},
                       fit_split="val", fit_size=n_val, val_in_sample=True)
        if name == "stacking":
            fit.update(C=1.0, fit_split="oof", fit_size=n_val)
        atomic_write_json(run.ensemble_dir(name) / "fit.json", fit)
        if run_files:  # what ensembles.build records
            atomic_write_json(run.ensemble_dir(name) / "metrics.json", {
                "kind": "ensemble", "status": "ok", "description": ESTIMATORS[name].description})
    if run_files:
        atomic_write_json(run.run_json, {
            "config": {"dataset": "synthetic", "split": split, "preset": "smoke", "seed": seed},
            "fingerprint": "abc123", "seeds": {"split": seed, "training": seed},
            "command": "python benchmark.py --all --preset smoke", "created": "2025-01-01T00:00:00+00:00",
            "versions": {"numpy": np.__version__}, "python": "3.11",
        })
        leaked = 37 if split == "image" else 0
        atomic_write_json(run.dataset_json, {
            "split": split,
            "leakage": {"shared_lesions_total": leaked, "ok": leaked == 0,
                        "test_images_sharing_lesion_with_train": leaked,
                        "test_images_sharing_lesion_with_train_share": leaked / n_test},
        })
    return run


@pytest.fixture(scope="session")
def synthetic_run():
    """The `make_run` factory."""
    return make_run


def make_grid(
    root: Path,
    folds: int | None = 2,
    seeds: tuple[int, ...] = (0, 1),
    **run_options,
) -> RunDir:
    """Write a generated grid run under `root`: one `make_run` replicate per (fold, seed).

    Replicates of one fold share their images (`data_seed` = fold); the seed changes the models.
    Without folds (`folds=None`) every replicate is fold 0. The root gets run.json (config with
    "seeds" and "folds") and dataset.json; `run_options` go to every `make_run`.
    """
    run = RunDir(root)
    for fold in range(folds or 1):
        for seed in seeds:
            replicate = make_run(run.replicate(fold, seed).root, seed=1000 * fold + seed,
                                 data_seed=fold, **run_options)
            if replicate.run_json.is_file():
                info = read_json(replicate.run_json)
                info["config"] = {**info["config"], "seed": seed, "fold": fold}
                atomic_write_json(replicate.run_json, info)
    atomic_write_json(run.run_json, {
        "config": {"dataset": "synthetic", "split": "lesion", "preset": "smoke",
                   "seed": seeds[0], "seeds": list(seeds), "folds": folds},
        "fingerprint": "abc123", "command": "python benchmark.py --all --preset smoke --seeds "
        + ",".join(map(str, seeds)) + (f" --folds {folds}" if folds else ""),
        "created": "2025-01-01T00:00:00+00:00", "python": "3.11",
    })
    atomic_write_json(run.dataset_json, {"split": "lesion", "leakage": {
        "shared_lesions_total": 0, "ok": True, "test_images_sharing_lesion_with_train": 0}})
    return run


@pytest.fixture(scope="session")
def synthetic_grid():
    """The `make_grid` factory."""
    return make_grid
