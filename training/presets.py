"""The three presets: one protocol, different numbers.

- `native` (default): every backbone at its native input size and preprocessing, ImageNet weights,
  epochs sized for the real HAM10000 on a GPU.
- `paper`: the source study's literal settings: 224x224 for every model, pixels scaled to [0, 1]
  ("unit" preprocessing), rotate/shift/flip augmentation (no zoom), Adam without weight decay.
- `smoke`: CPU-sized: small images (each backbone's minimum size: 32 px for NASNetLarge and
  ResNeXt101, 64 for paper_cnn, 71-75 for the Inception/Xception family), one epoch per
  fine-tuning phase with 10% of the base unfrozen, 50 from-scratch epochs for paper_cnn,
  `weights=None` unless given. Used by CI and the README.

A preset gives the "training" and "svm" mappings of the resolved config (.notes/STAGE_API.md);
`resolve_preset` applies the command-line overrides (--image-size, --epochs, --batch-size) and
fills in the per-entry image sizes. Importing this module is cheap (the zoo is imported lazily).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from core.errors import BenchmarkError
from core.rundir import BACKBONES, SCRATCH_BASELINE, SVM_BASELINE
from core.rundir import entry_kind as entry_kind  # re-exported for the training stage

SVM_ENTRY = SVM_BASELINE
# Every entry of a full run, in training order.
ENTRIES: tuple[str, ...] = (*BACKBONES, SCRATCH_BASELINE, SVM_ENTRY)

PRESET_NAMES: tuple[str, ...] = ("native", "paper", "smoke")
DEFAULT_PRESET = "native"
PAPER_SIZE = 224
SMOKE_MIN_SIZE = 32


class PresetError(BenchmarkError, ValueError):
    """An unknown preset or entry, or an image size below a backbone's minimum."""


def backbone_of(entry: str) -> str:
    """The zoo backbone an entry uses ("inception_resnet_v2+svm" -> "inception_resnet_v2")."""
    return entry.split("+", 1)[0]


def check_entry(entry: str) -> str:
    """Return `entry` if it is a known entry.

    Raises:
        PresetError: naming the unknown entry and listing the valid ones.
    """
    if entry not in ENTRIES:
        raise PresetError(f"unknown entry {entry!r}; choose from {', '.join(ENTRIES)}")
    return entry


@dataclass(frozen=True)
class Preset:
    """One preset's numbers.

    Attributes:
        name: native | paper | smoke.
        description: one line for --list and the report.
        weights: default initial weights of the pretrained backbones (None or "imagenet").
        training: the resolved config's "training" mapping, without "image_size" (see
            `image_size_for`).
        svm: the "svm" mapping (feature_size is filled in by `resolve_preset`).
        smoke_min_size: smoke only: the smallest image size used for any entry.
    """

    name: str
    description: str
    weights: str | None
    training: dict[str, Any] = field(default_factory=dict)
    svm: dict[str, Any] = field(default_factory=dict)
    smoke_min_size: int = SMOKE_MIN_SIZE


_AUGMENT_NATIVE = {"flip": "horizontal_and_vertical", "rotation": 180.0, "shift": 0.1, "zoom": 0.1}

_NATIVE_TRAINING: dict[str, Any] = {
    "preprocessing": None,  # each backbone's own preprocess_input
    "batch_size": 32,
    "min_batch_size": 4,
    "optimizer": "adamw",
    "weight_decay": 1e-4,
    "phase1_epochs": 5,
    "phase2_epochs": 30,
    "scratch_epochs": 60,
    "phase1_lr": 1e-3,
    "phase2_lr": 1e-4,
    "scratch_lr": 1e-3,
    "schedule": "cosine",
    "warmup_epochs": 1,
    "min_lr_fraction": 0.01,
    "unfreeze_fraction": 0.3,
    "dropout": 0.3,
    "label_smoothing": 0.0,
    "early_stopping_patience": 8,
    "class_weighting": "balanced",
    "balanced_sampling": False,
    "steps_per_epoch": None,  # None: one pass over the training split
    "augmentation": _AUGMENT_NATIVE,
    "mixed_precision": "auto",
    "eval_batch_size": None,  # None: same as batch_size
}

_NATIVE_SVM: dict[str, Any] = {
    "feature_size": None,  # None: the backbone's native size (filled in by resolve_preset)
    "C_grid": [0.1, 1.0, 10.0, 100.0],
    "kernel": "rbf",
    "class_weight": "balanced",
    "batch_size": 32,
}

_PRESETS: dict[str, Preset] = {
    "native": Preset(
        name="native",
        description="native sizes and preprocessing, ImageNet weights, GPU-sized epochs",
        weights="imagenet",
        training=_NATIVE_TRAINING,
        svm=_NATIVE_SVM,
    ),
    "paper": Preset(
        name="paper",
        description="the study's settings: 224 px for all, pixels in [0, 1], rotate/shift/flip, Adam",
        weights="imagenet",
        training={
            **_NATIVE_TRAINING,
            "preprocessing": "unit",
            "weight_decay": 0.0,
            "phase1_epochs": 5,
            "phase2_epochs": 45,
            "scratch_epochs": 50,
            "phase2_lr": 1e-4,
            "warmup_epochs": 0,
            "min_lr_fraction": 1.0,  # constant learning rate, as in the study
            "augmentation": {"flip": "horizontal", "rotation": 20.0, "shift": 0.1, "zoom": 0.0},
            "early_stopping_patience": 10,
        },
        svm={**_NATIVE_SVM},
    ),
    "smoke": Preset(
        name="smoke",
        description="CPU smoke test: small images, 1 epoch per phase, weights=None",
        weights=None,
        training={
            **_NATIVE_TRAINING,
            "batch_size": 32,
            "min_batch_size": 2,
            "weight_decay": 1e-4,
            "phase1_epochs": 1,
            "phase2_epochs": 1,
            # paper_cnn from scratch: 50 short epochs (about a minute) reach >= 0.8 balanced accuracy on the
            # synthetic set; the big backbones get one epoch per phase (CPU time).
            "scratch_epochs": 50,
            "phase1_lr": 1e-3,
            "phase2_lr": 3e-4,
            "scratch_lr": 1e-3,
            "warmup_epochs": 1,
            "min_lr_fraction": 0.05,
            "unfreeze_fraction": 0.1,
            "dropout": 0.1,
            "early_stopping_patience": 0,  # no early stop: the smoke epochs are the budget
            "augmentation": {"flip": "horizontal_and_vertical", "rotation": 20.0, "shift": 0.05,
                             "zoom": 0.05},
        },
        svm={**_NATIVE_SVM, "C_grid": [0.1, 1.0, 10.0]},
    ),
}


def get_preset(name: str | None) -> Preset:
    """The preset called `name` (None: the default, native), as a deep copy.

    Raises:
        PresetError: unknown name.
    """
    name = name or DEFAULT_PRESET
    if name not in _PRESETS:
        raise PresetError(f"unknown preset {name!r}; choose from {', '.join(PRESET_NAMES)}")
    return copy.deepcopy(_PRESETS[name])


def image_size_for(preset: str | None, entry: str, override: int | None = None) -> int:
    """The square input size of `entry` under `preset`.

    native: the backbone's native size; paper: 224 for all; smoke: the backbone's minimum size
    (at least `SMOKE_MIN_SIZE`). An `override` (--image-size) replaces the rule.

    Args:
        preset: preset name (None: native).
        entry: an entry name (a backbone, paper_cnn or the SVM baseline).
        override: an explicit size for every entry.

    Returns:
        The size in pixels.

    Raises:
        PresetError: unknown entry/preset, or a size below the backbone's minimum.
    """
    import zoo

    check_entry(entry)
    spec = get_preset(preset)
    cfg = zoo.get_config(backbone_of(entry))
    if override is not None:
        size = int(override)
    elif spec.name == "paper":
        size = PAPER_SIZE
    elif spec.name == "smoke":
        size = max(int(cfg.min_size), spec.smoke_min_size)
    else:
        size = int(cfg.input_size)
    if size < int(cfg.min_size):
        raise PresetError(
            f"image size {size} px is below the minimum of {entry} ({cfg.min_size} px); "
            f"use --image-size {cfg.min_size} or larger"
        )
    return size


def resolve_preset(
    preset: str | None,
    entries: list[str] | tuple[str, ...] = ENTRIES,
    *,
    image_size: int | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """The preset's part of the resolved config, with command-line overrides applied.

    Args:
        preset: preset name (None: native).
        entries: the entries of the run (their image sizes are resolved).
        image_size: --image-size: one size for every entry.
        epochs: --epochs: epochs of every phase (phase 1, phase 2 and from-scratch).
        batch_size: --batch-size (also caps min_batch_size).

    Returns:
        {"preset": name, "weights": default weights, "training": {..., "image_size":
        {entry: px}}, "svm": {..., "feature_size": px of the SVM entry (or its backbone's
        size under this preset when the SVM is not among the entries)}}.

    Raises:
        PresetError: unknown preset or entry, or an image size below a backbone's minimum.
    """
    spec = get_preset(preset)
    training = dict(spec.training)
    if epochs is not None:
        training.update(phase1_epochs=epochs, phase2_epochs=epochs, scratch_epochs=epochs)
    if batch_size is not None:
        training["batch_size"] = int(batch_size)
        training["min_batch_size"] = min(int(training["min_batch_size"]), int(batch_size))
    training["image_size"] = {
        entry: image_size_for(spec.name, entry, image_size) for entry in entries
    }
    svm = dict(spec.svm)
    if SVM_ENTRY in training["image_size"]:
        svm["feature_size"] = training["image_size"][SVM_ENTRY]
    else:
        try:
            svm["feature_size"] = image_size_for(spec.name, SVM_ENTRY, image_size)
        except PresetError:
            # --image-size below the SVM backbone's minimum only matters when the SVM runs.
            svm["feature_size"] = None
    return {"preset": spec.name, "weights": spec.weights, "training": training, "svm": svm}
