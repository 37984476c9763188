"""The three presets: one protocol, different numbers. The one table of preset names and
descriptions (`PRESETS`): benchmark.py's `--preset` choices and help, `--list` and the README
read it.

- `native` (default): every backbone at its native input size and preprocessing, ImageNet weights,
  epochs sized for the real HAM10000 on a GPU (the defaults of `training.settings`).
- `paper`: the source study's literal settings: 224x224 for every model, pixels scaled to [0, 1]
  ("unit" preprocessing), rotate/shift/flip augmentation (no zoom), Adam without weight decay.
- `smoke`: CPU-sized: small images (each backbone's minimum size: 32 px for NASNetLarge and
  ResNeXt101, 64 for paper_cnn, 71-75 for the Inception/Xception family), one epoch per
  fine-tuning phase with 10% of the base unfrozen, 50 from-scratch epochs for paper_cnn,
  `weights=None` unless given. Used by CI and the README; without --dataset it runs on the
  synthetic set (core.rundir.default_dataset).

A preset is typed (`TrainingSettings`, `SvmSettings`); `resolve_preset` applies the command-line
overrides (--image-size, --epochs, --batch-size) and fills in the per-entry image sizes.
Importing this module is cheap (the zoo is imported lazily).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from core import defaults
from training.entries import SVM_ENTRY, backbone_of, check_entry, default_entries
from training.errors import ConfigError
from training.settings import Augmentation, SvmSettings, TrainingSettings

PAPER_SIZE = 224
SMOKE_MIN_SIZE = 32


class PresetError(ConfigError):
    """An unknown preset, or an image size below a backbone's minimum."""


@dataclass(frozen=True)
class Preset:
    """One preset's numbers.

    Attributes:
        name: native | paper | smoke.
        description: one line for --help, --list and the report.
        weights: default initial weights of the pretrained backbones (None or "imagenet").
        training: the training settings (`image_size` is filled in by `resolve_preset`).
        svm: the SVM settings (`feature_size` is filled in by `resolve_preset`).
        fixed_size: every entry at this size (paper: 224); None: the rule below.
        smallest_sizes: each backbone at its minimum size, at least `min_size` (smoke); False:
            each at its native size (native).
        min_size: with `smallest_sizes`: the smallest size used for any entry.
    """

    name: str
    description: str
    weights: str | None
    training: TrainingSettings
    svm: SvmSettings
    fixed_size: int | None = None
    smallest_sizes: bool = False
    min_size: int = SMOKE_MIN_SIZE


_NATIVE = TrainingSettings()

PRESETS: dict[str, Preset] = {
    "native": Preset(
        name="native",
        description="native sizes and preprocessing, ImageNet weights, GPU-sized epochs",
        weights="imagenet",
        training=_NATIVE,
        svm=SvmSettings(),
    ),
    "paper": Preset(
        name="paper",
        description="the study's settings: 224 px for all, pixels in [0, 1], rotate/shift/flip, Adam",
        weights="imagenet",
        training=replace(
            _NATIVE,
            preprocessing="unit",
            weight_decay=0.0,
            phase1_epochs=5,
            phase2_epochs=45,
            scratch_epochs=50,
            phase2_lr=1e-4,
            warmup_epochs=0,
            min_lr_fraction=1.0,  # constant learning rate, as in the study
            augmentation=Augmentation(flip="horizontal", rotation=20.0, shift=0.1, zoom=0.0),
            early_stopping_patience=10,
        ),
        svm=SvmSettings(),
        fixed_size=PAPER_SIZE,
    ),
    "smoke": Preset(
        name="smoke",
        description="CPU smoke test: small images, 1 epoch per phase, weights=None",
        weights=None,
        training=replace(
            _NATIVE,
            batch_size=32,
            min_batch_size=2,
            weight_decay=1e-4,
            phase1_epochs=1,
            phase2_epochs=1,
            # paper_cnn from scratch: 50 short epochs (about a minute) reach >= 0.8 balanced
            # accuracy on the synthetic set; the big backbones get one epoch per phase (CPU time).
            scratch_epochs=50,
            phase1_lr=1e-3,
            phase2_lr=3e-4,
            scratch_lr=1e-3,
            warmup_epochs=1,
            min_lr_fraction=0.05,
            unfreeze_fraction=0.1,
            dropout=0.1,
            early_stopping_patience=0,  # no early stop: the smoke epochs are the budget
            augmentation=Augmentation(flip="horizontal_and_vertical", rotation=20.0, shift=0.05,
                                      zoom=0.05),
        ),
        svm=SvmSettings(C_grid=(0.1, 1.0, 10.0)),
        smallest_sizes=True,
    ),
}
PRESET_NAMES: tuple[str, ...] = tuple(PRESETS)
DEFAULT_PRESET = defaults.PRESET


def get_preset(name: str | None) -> Preset:
    """The preset called `name` (None: the default, native).

    Raises:
        PresetError: unknown name.
    """
    name = name or DEFAULT_PRESET
    if name not in PRESETS:
        raise PresetError(f"unknown preset {name!r}; choose from {', '.join(PRESET_NAMES)}")
    return PRESETS[name]


def image_size_for(preset: str | None, entry: str, override: int | None = None) -> int:
    """The square input size of `entry` under `preset`.

    native: the backbone's native size; paper: 224 for all; smoke: the backbone's minimum size
    (at least `SMOKE_MIN_SIZE`). An `override` (--image-size) replaces the rule.

    Args:
        preset: preset name (None: native).
        entry: an entry name (training.entries).
        override: an explicit size for every entry.

    Returns:
        The size in pixels.

    Raises:
        ConfigError: an unknown entry.
        PresetError: an unknown preset, or a size below the backbone's minimum.
    """
    import zoo

    check_entry(entry)
    spec = get_preset(preset)
    cfg = zoo.get_config(backbone_of(entry))
    if override is not None:
        size = int(override)
    elif spec.fixed_size is not None:
        size = spec.fixed_size
    elif spec.smallest_sizes:
        size = max(int(cfg.min_size), spec.min_size)
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
    entries: list[str] | tuple[str, ...] | None = None,
    *,
    image_size: int | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
) -> Preset:
    """The preset with the command-line overrides applied and the image sizes filled in.

    The image sizes cover every entry that can run at this preset and --image-size, selected or
    not: they are part of the protocol fingerprint, and `--models` must not change it (a later
    command that adds models resumes the same run). Entries whose minimum size the override is
    below are left out; selecting one of them is refused.

    Args:
        preset: preset name (None: native).
        entries: the selected entries (None: all); each must be able to run.
        image_size: --image-size: one size for every entry.
        epochs: --epochs: epochs of every phase (phase 1, phase 2 and from-scratch).
        batch_size: --batch-size (also caps min_batch_size).

    Returns:
        The preset, its `training.image_size` {entry: px} and `svm.feature_size` (the SVM
        entry's size, None when it cannot run) filled in.

    Raises:
        ConfigError: an unknown entry.
        PresetError: an unknown preset, or a selected entry whose minimum size is above the
            override.
    """
    spec = get_preset(preset)
    selected = list(default_entries() if entries is None else entries)
    for entry in selected:
        check_entry(entry)
    training = spec.training
    if epochs is not None:
        training = replace(training, phase1_epochs=epochs, phase2_epochs=epochs,
                           scratch_epochs=epochs)
    if batch_size is not None:
        training = replace(training, batch_size=int(batch_size),
                           min_batch_size=min(int(training.min_batch_size), int(batch_size)))
    sizes = {}
    # The paper group's entries always (as every run recorded them before the modern group
    # existed, so their configs and fingerprints stay the same), then any other selected entry.
    for entry in dict.fromkeys([*default_entries(), *selected]):
        try:
            sizes[entry] = image_size_for(spec.name, entry, image_size)
        except PresetError:
            if entry in selected:
                raise
    return replace(spec, training=replace(training, image_size=sizes),
                   svm=replace(spec.svm, feature_size=sizes.get(SVM_ENTRY)))
