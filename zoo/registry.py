"""The backbone registry: name -> frozen config + builder.

The registry is the one list of backbones: every registered backbone is an entry that
`benchmark.py --all` can train (training.entries), that ensembles pick by default when its kind is
"backbone", and that the report describes. Importing this module (and `zoo.get_config` /
`zoo.list_backbones`) does not import Keras: the builders import it lazily, so data preparation
can read a backbone's input size and preprocessing mode cheaply.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zoo.errors import DuplicateBackboneError, ZooValueError

# "internal": the backbone holds its own preprocessing layers (as keras.applications builds
# EfficientNet, EfficientNetV2, ConvNeXt and MobileNetV3) and takes raw RGB 0-255 as it is.
PREPROCESSING_MODES = ("tf", "caffe", "torch", "unit", "internal")
HASH_ALGORITHMS = ("md5", "sha256")
# "backbone": fine-tuned, a default ensemble member; "baseline": trained and reported as a
# baseline, an ensemble member only when named (--members).
KINDS = ("backbone", "baseline")
# `--models` groups (training.entries): "paper" holds the source study's five backbones and its
# baselines, "modern" the 2019-2022 networks added beside them; a backbone registered from
# outside gets DEFAULT_GROUP unless it names its own. "all" is every entry, so no config uses it.
PAPER_GROUP = "paper"
MODERN_GROUP = "modern"
DEFAULT_GROUP = "extra"
ALL_GROUP = "all"
_GROUP_NAME = re.compile(r"[a-z][a-z0-9_]*")


@dataclass(frozen=True)
class BackboneConfig:
    """Everything per backbone that the other stages need to know.

    Attributes:
        name: registry key (snake_case).
        display_name: human name for tables and reports.
        input_size: native square input size in pixels.
        min_size: smallest accepted height/width.
        preprocessing: "tf" (x/127.5 - 1), "caffe" (BGR, ImageNet mean subtracted), "torch"
            (x/255, ImageNet mean/std) or "unit" (x/255), as `keras.applications`
            `preprocess_input` modes; or "internal": the backbone's first layers do its
            preprocessing and it takes raw RGB 0-255 (its `preprocess_input` is a pass-through).
        weights_url: where `weights="imagenet"` downloads from (None: no pretrained weights).
        weights_file: the file name in the Keras cache and in a --weights-dir folder.
        weights_hash: the file's known hash, or None where none is published.
        hash_algorithm: "md5" or "sha256" (the algorithm of `weights_hash`).
        weights_format: "keras_h5" (Keras's official no-top files) or "torchvision_safetensors".
        params_1000: published parameter count with a 1000-class head (Keras applications count
            all weights incl. BatchNorm moving statistics; torchvision counts trainable
            parameters only, BatchNorm statistics being buffers there).
        paper: citation of the architecture's paper.
        licence: licence of the architecture code / pretrained weights.
        pretrained: whether ImageNet weights exist (False for the from-scratch CNN).
        square_only: whether non-square inputs are refused.
        kind: "backbone" (fine-tuned; the ensembles' default members) or "baseline" (e.g. the
            from-scratch CNN: trained and reported as a baseline). The trainer records it in the
            entry's metrics.json.
        family: the architecture family for grouping in tables ("Inception", "ResNet",
            "EfficientNet", "ConvNeXt", "DenseNet", "MobileNet", "NASNet", "paper CNN", ...).
        group: the `--models` group the backbone belongs to: "paper" (the source study's
            backbones and baselines), "modern" (the networks added beside them) or any other
            lower-case name ("extra" by default); "all" is reserved for every entry.
    """

    name: str
    display_name: str
    input_size: int
    min_size: int
    preprocessing: str
    weights_url: str | None
    weights_file: str | None
    weights_hash: str | None
    hash_algorithm: str | None
    weights_format: str | None
    params_1000: int
    paper: str
    licence: str
    pretrained: bool
    square_only: bool = False
    kind: str = "backbone"
    family: str = "other"
    group: str = DEFAULT_GROUP

    def __post_init__(self) -> None:
        if self.preprocessing not in PREPROCESSING_MODES:
            raise ZooValueError(
                f"backbone {self.name!r}: preprocessing {self.preprocessing!r} is not one of "
                f"{', '.join(PREPROCESSING_MODES)}"
            )
        if self.hash_algorithm is not None and self.hash_algorithm not in HASH_ALGORITHMS:
            raise ZooValueError(
                f"backbone {self.name!r}: hash_algorithm {self.hash_algorithm!r} is not one of "
                f"{', '.join(HASH_ALGORITHMS)}"
            )
        if self.kind not in KINDS:
            raise ZooValueError(
                f"backbone {self.name!r}: kind {self.kind!r} is not one of {', '.join(KINDS)}"
            )
        if not isinstance(self.family, str) or not self.family.strip():
            raise ZooValueError(
                f"backbone {self.name!r}: family must be a non-empty name, got {self.family!r}"
            )
        if (
            not isinstance(self.group, str)
            or not _GROUP_NAME.fullmatch(self.group)
            or self.group == ALL_GROUP
        ):
            raise ZooValueError(
                f"backbone {self.name!r}: group {self.group!r} must be a lower-case name "
                f"([a-z][a-z0-9_]*) other than {ALL_GROUP!r}, e.g. {PAPER_GROUP!r}, "
                f"{MODERN_GROUP!r} or {DEFAULT_GROUP!r}"
            )
        if not 1 <= self.min_size <= self.input_size:
            raise ZooValueError(
                f"backbone {self.name!r}: min_size {self.min_size} must be between 1 and the "
                f"input size {self.input_size}"
            )


@dataclass(frozen=True)
class Builder:
    """How to build a backbone's parts (Keras is imported inside these callables only).

    Attributes:
        base: `base(input_shape) -> keras.Model` named "backbone", taking preprocessed images.
        pool: `pool() -> keras.layers.Layer` named "pool"; None means GlobalAveragePooling2D.
        load_weights: `load_weights(model, path)` loading a weights file into the assembled
            model (backbone and, where the file has one, the head).
    """

    base: Callable[[tuple[int, int, int]], Any]
    pool: Callable[[], Any] | None = None
    load_weights: Callable[[Any, Any], None] | None = None


_REGISTRY: dict[str, tuple[BackboneConfig, Builder]] = {}


def register(config: BackboneConfig, builder: Builder) -> None:
    """Add a backbone to the registry.

    Args:
        config: its frozen configuration.
        builder: how to build it.

    Raises:
        DuplicateBackboneError: a backbone with this name is already registered.
    """
    if config.name in _REGISTRY:
        raise DuplicateBackboneError(
            f"backbone {config.name!r} is already registered; pick another name "
            f"(registered: {', '.join(_REGISTRY)})"
        )
    _REGISTRY[config.name] = (config, builder)


def unregister(name: str) -> None:
    """Remove a backbone (for tests and plug-ins); unknown names raise like `get_config`."""
    _entry(name)
    del _REGISTRY[name]


def list_backbones(kind: str | None = None) -> list[str]:
    """The registered backbone names, in registration order (the study's six come first).

    Args:
        kind: only backbones of this kind ("backbone" or "baseline"); None: all.

    Returns:
        The names.
    """
    return [name for name, (config, _) in _REGISTRY.items() if kind in (None, config.kind)]


def list_groups() -> list[str]:
    """The `--models` group names of the registered backbones, in order of first registration
    (the study's "paper" group first); "all" is not among them."""
    return list(dict.fromkeys(config.group for config, _ in _REGISTRY.values()))


def registered_kind(name: str) -> str | None:
    """The kind of a registered backbone, or None for a name that is not registered."""
    entry = _REGISTRY.get(name) if isinstance(name, str) else None
    return entry[0].kind if entry is not None else None


def get_config(name: str) -> BackboneConfig:
    """The frozen config of a registered backbone.

    Raises:
        ZooValueError: unknown name (the message lists the registered ones).
    """
    return _entry(name)[0]


def get_builder(name: str) -> Builder:
    """The builder of a registered backbone (raises like `get_config`)."""
    return _entry(name)[1]


def _entry(name: str) -> tuple[BackboneConfig, Builder]:
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ZooValueError(
            f"unknown backbone {name!r}; choose one of: {', '.join(_REGISTRY)}"
        ) from None
