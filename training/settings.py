"""The run's configuration, typed: every setting of a run with its type, default and meaning.

`training.config.resolve_config` builds one `RunConfig` from the command line and the preset (the
only resolution step); `RunConfig.to_dict()` is what run.json["config"] holds (and what the
protocol fingerprint hashes, `training.fingerprint`), and `RunConfig.from_dict()` reads it back,
typed, in the worker. Everything downstream reads attributes, never `dict.get(key, default)`.

Defaults: the data options default to `core.defaults`; `TrainingSettings`, `Augmentation` and
`SvmSettings` default to the native preset's numbers (`training.presets` derives the paper and
smoke presets from them).

The dict keeps the keys, values and value types that run.json has always had, so the
fingerprints of existing runs do not change. In particular, keys that older runs never wrote stay
out while they hold their default: "backend" (TensorFlow), "training.jit_compile" (False), the grid
keys "grid" and "seeds" (only a grid's root config has them) and the replicate keys "data_seed"
and "fold" (only a grid replicate's config has them). Numbers are stored as given (an int stays
an int: 1 and 1.0 hash differently).
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field, fields, replace
from typing import Any

from core import defaults
from core.errors import RunDirError
from training.errors import ConfigError

# Field metadata: the key is left out of the dict while the field holds its default.
OMITTED_AT_DEFAULT = {"omitted_at_default": True}
# Field metadata: the field is written as other keys (RunConfig.seeds, RunConfig.replicate).
FLATTENED = {"flattened": True}



@dataclass(frozen=True)
class Augmentation:
    """Training-time augmentation inside the model, active in fit only (`training.augment`).

    Attributes:
        flip: random flips: "horizontal", "vertical", "horizontal_and_vertical" (True: both), or
            None/False for none.
        rotation: largest rotation in degrees, either way, in [0, 180]; 0: none.
        shift: largest translation as a fraction of height and width, in [0, 1); 0: none.
        zoom: largest zoom in or out as a fraction, in [0, 1); 0: none.
    """

    flip: str | bool | None = "horizontal_and_vertical"
    rotation: float = 180.0
    shift: float = 0.1
    zoom: float = 0.1


@dataclass(frozen=True)
class TrainingSettings:
    """The protocol's numbers for the fine-tuned and from-scratch entries (run.json "training").

    Defaults: the native preset.

    Attributes:
        preprocessing: pixel preprocessing for every backbone ("tf", "caffe", "torch", "unit");
            None: each backbone's own (zoo config).
        batch_size: training batch size (all devices together); the runner halves it after an
            out-of-memory exit, down to `min_batch_size`.
        min_batch_size: the floor of those out-of-memory retries.
        optimizer: "adamw" or "adam".
        weight_decay: AdamW's decoupled weight decay.
        phase1_epochs: epochs of phase 1 ("frozen": the base frozen, the head trained).
        phase2_epochs: epochs of phase 2 ("finetune": the top of the base unfrozen).
        scratch_epochs: epochs of a model trained from scratch (kind baseline, e.g. paper_cnn).
        phase1_lr, phase2_lr, scratch_lr: the peak learning rate of each phase.
        schedule: "cosine" (linear warmup, then cosine decay to `min_lr_fraction`) or
            "constant".
        warmup_epochs: epochs of linear warmup at the start of every phase (may be fractional).
        min_lr_fraction: the learning rate at the end of the decay, as a fraction of the peak
            (1.0: constant).
        unfreeze_fraction: share of the base's layers unfrozen in phase 2 (`policies.
            unfreeze_start`); BatchNorm stays frozen.
        dropout: dropout before the classifier.
        label_smoothing: label smoothing of the cross-entropy (0: none).
        early_stopping_patience: epochs without a better validation balanced accuracy before a
            phase stops; 0: never stop early.
        class_weighting: "balanced" (loss weights n / (k * n_class)) or None.
        balanced_sampling: draw class-balanced batches instead of weighting the loss.
        steps_per_epoch: must stay None: every epoch is one pass over the training split (the key
            is kept in run.json, which has always had it).
        augmentation: the augmentation (`Augmentation`).
        mixed_precision: "auto"/"on" (mixed_float16 when a GPU is visible) or "off".
        eval_batch_size: batch size of the validation and test predictions; None: batch_size.
        image_size: {entry: square input size in px} for every entry that can run at this
            preset and --image-size (selected or not, so that --models does not change the
            fingerprint).
        jit_compile: `Model.compile(jit_compile=...)` under TensorFlow: False (default), True or
            "auto"; under JAX every step is XLA-compiled anyway. No preset sets it; it is left
            out of run.json while False.
    """

    preprocessing: str | None = None
    batch_size: int = 32
    min_batch_size: int = 4
    optimizer: str = "adamw"
    weight_decay: float = 1e-4
    phase1_epochs: int = 5
    phase2_epochs: int = 30
    scratch_epochs: int = 60
    phase1_lr: float = 1e-3
    phase2_lr: float = 1e-4
    scratch_lr: float = 1e-3
    schedule: str = "cosine"
    warmup_epochs: float = 1
    min_lr_fraction: float = 0.01
    unfreeze_fraction: float = 0.3
    dropout: float = 0.3
    label_smoothing: float = 0.0
    early_stopping_patience: int = 8
    class_weighting: str | None = "balanced"
    balanced_sampling: bool = False
    steps_per_epoch: int | None = None
    augmentation: Augmentation = field(default_factory=Augmentation)
    mixed_precision: str = "auto"
    eval_batch_size: int | None = None
    image_size: dict[str, int] = field(default_factory=dict)
    jit_compile: bool | str = field(default=False, metadata=OMITTED_AT_DEFAULT)

    def __post_init__(self) -> None:
        if self.steps_per_epoch is not None:
            raise ConfigError(
                f"training.steps_per_epoch is {self.steps_per_epoch!r}, but every epoch is one "
                "pass over the training split; leave it null"
            )


@dataclass(frozen=True)
class SvmSettings:
    """The SVM baseline's settings (`training.svm_baseline`; run.json "svm").

    Defaults: the native preset.

    Attributes:
        feature_size: input size of the feature extractor in px (the SVM entry's image size);
            None when the SVM entry cannot run at --image-size.
        C_grid: the C values tried; the best on the validation split is kept.
        kernel: the SVC kernel.
        class_weight: "balanced" (every image weighted by its class's inverse frequency, in the
            SVC and its calibration: probabilities target a uniform prior) or None.
        batch_size: feature-extraction batch size; None: training.batch_size.
    """

    feature_size: int | None = None
    C_grid: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0)
    kernel: str = "rbf"
    class_weight: str | None = "balanced"
    batch_size: int | None = 32


@dataclass(frozen=True)
class ReplicateInfo:
    """Where a grid replicate sits: written as the keys "data_seed" and "fold" of its config.

    Attributes:
        data_seed: the grid's seed, which made the split and the synthetic data (the
            replicate's own `seed` is its training seed).
        fold: its fold, or None when the grid has no --folds.
    """

    data_seed: int
    fold: int | None


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run (run.json "config"): the data, the entries, the protocol.

    Attributes:
        dataset: "synthetic", "ham10000" or "isic2018".
        data_dir: the dataset folder (absolute); None: the synthetic set in its cache folder.
        split: "lesion" (grouped by lesion_id) or "image" (the source study's leaky split).
        ratios: train, val, test ratios.
        folds: K of a K-fold grid (--folds), or None.
        seed: the seed of the split, the synthetic data and training (a replicate: its training
            seed).
        seeds: a grid's training seeds (--seeds, default (seed,)); None for a single run.
            Written as "grid": true and "seeds".
        backend: the Keras backend ("tensorflow", "jax"); left out of run.json for TensorFlow.
        test_set: isic2018 only: "split" or "official" (the official ISIC 2018 test images).
        synthetic_images: the size of the generated synthetic dataset.
        resize_mode: "square" (whole image resized) or "crop" (centre crop).
        allow_missing: proceed without listed images that are missing on disk.
        preset: "native", "paper" or "smoke" (training.presets).
        entries: the entries trained in this run directory, in training order (training.entries).
        deterministic: deterministic kernels.
        weights: initial weights of the pretrained backbones: None, "imagenet" or a weights file.
        weights_dir: a folder of official weight files (offline use), or None.
        training: the protocol's numbers (`TrainingSettings`).
        svm: the SVM baseline's settings (`SvmSettings`).
        replicate: a grid replicate's place (`ReplicateInfo`), None otherwise. Written as
            "data_seed" and "fold".
    """

    dataset: str = defaults.DATASET
    data_dir: str | None = None
    split: str = defaults.SPLIT
    ratios: tuple[float, float, float] = defaults.RATIOS
    folds: int | None = None
    seed: int = defaults.SEED
    seeds: tuple[int, ...] | None = field(default=None, metadata=FLATTENED)
    backend: str = field(default="tensorflow", metadata=OMITTED_AT_DEFAULT)
    test_set: str = defaults.TEST_SET
    synthetic_images: int = defaults.SYNTHETIC_IMAGES
    resize_mode: str = defaults.RESIZE_MODE
    allow_missing: bool = False
    preset: str = defaults.PRESET
    entries: tuple[str, ...] = ()
    deterministic: bool = False
    weights: str | None = None
    weights_dir: str | None = None
    training: TrainingSettings = field(default_factory=TrainingSettings)
    svm: SvmSettings = field(default_factory=SvmSettings)
    replicate: ReplicateInfo | None = field(default=None, metadata=FLATTENED)

    # --- derived values ------------------------------------------------------------------------

    @property
    def is_grid(self) -> bool:
        """Whether this is a grid's root config (entry x fold x seed)."""
        return self.seeds is not None

    @property
    def grid_folds(self) -> list[int]:
        """The folds of a grid run: 0..K-1 with --folds K, else [0] (the one split)."""
        return list(range(int(self.folds))) if self.folds else [0]

    @property
    def data_seed(self) -> int:
        """The seed of the split and the synthetic data (a replicate: the grid's seed)."""
        return self.replicate.data_seed if self.replicate is not None else self.seed

    @property
    def fold(self) -> int | None:
        """A replicate's fold (None for a single run or a grid without --folds)."""
        return self.replicate.fold if self.replicate is not None else None

    def image_sizes(self) -> tuple[int, ...]:
        """The image sizes the entries need (the cache is built at each), ascending."""
        from training.entries import is_svm_entry

        sizes = {int(self.training.image_size[e]) for e in self.entries}
        if any(is_svm_entry(e) for e in self.entries) and self.svm.feature_size:
            sizes.add(int(self.svm.feature_size))
        return tuple(sorted(sizes))

    def with_training(self, **changes: Any) -> RunConfig:
        """A copy with these `TrainingSettings` fields changed."""
        return replace(self, training=replace(self.training, **changes))

    # --- run.json ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """run.json["config"]: JSON-ready, with the keys and values run.json has always had."""
        out: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "seeds":
                if value is not None:
                    out.update(grid=True, seeds=list(value))
            elif item.name == "replicate":
                if value is not None:
                    out.update(data_seed=value.data_seed, fold=value.fold)
            elif not _omitted(item, value):
                out[item.name] = _plain(value)
        return out

    @classmethod
    def from_dict(cls, data: Any, source: str | os.PathLike = "run.json") -> RunConfig:
        """Read run.json["config"] back, typed.

        Args:
            data: the "config" object of run.json.
            source: the file it came from (named in errors).

        Returns:
            The config; `from_dict(c.to_dict()) == c`.

        Raises:
            RunDirError: not an object, a missing or unknown key, or a value of the wrong type
                (the message names the file and the key).
        """
        source = os.fspath(source)
        if not isinstance(data, dict):
            raise _problem(source, "", f"is {type(data).__name__}, not a JSON object")
        data = dict(data)
        seeds = _grid_seeds(data, source)
        replicate = _replicate_info(data, source)
        config = _from_mapping(cls, data, "", source)
        return replace(config, seeds=seeds, replicate=replicate)


# --- dict conversion ---------------------------------------------------------------------------


def _omitted(item: dataclasses.Field, value: Any) -> bool:
    return bool(item.metadata.get("omitted_at_default")) and value == item.default


def _plain(value: Any) -> Any:
    """JSON-ready: dataclasses as dicts (keys omitted at their default left out), tuples as
    lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {item.name: _plain(getattr(value, item.name)) for item in fields(value)
                if not _omitted(item, getattr(value, item.name))}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _problem(source: str, key: str, what: str) -> RunDirError:
    where = f"config key {key!r}" if key else "its config"
    return RunDirError(
        f"{source}: {where} {what}; this run.json was not written by this version of dermbench: "
        "start a fresh run directory (rerun the command with --force-new or another --out)"
    )


class _Mismatch(Exception):
    """A value that does not fit a type (turned into a RunDirError naming the key)."""


def _from_mapping(cls: type, data: Any, path: str, source: str) -> Any:
    if not isinstance(data, dict):
        raise _problem(source, path, f"is {data!r}, not a JSON object")
    hints = typing.get_type_hints(cls)
    known = {item.name for item in fields(cls) if not item.metadata.get("flattened")}
    unknown = sorted(k for k in data if k not in known)
    if unknown:
        keys = ", ".join(repr(_join(path, k)) for k in unknown)
        raise RunDirError(
            f"{source}: unknown config key(s) {keys}; this run.json was not written by this "
            "version of dermbench: start a fresh run directory (rerun the command with "
            "--force-new or another --out)"
        )
    values = {}
    for item in fields(cls):
        if item.metadata.get("flattened"):
            continue
        key = _join(path, item.name)
        if item.name not in data:
            if item.metadata.get("omitted_at_default"):
                continue
            raise _problem(source, key, "is missing")
        values[item.name] = _convert(data[item.name], hints[item.name], key, source)
    return cls(**values)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _convert(value: Any, hint: Any, key: str, source: str) -> Any:
    try:
        return _typed(value, hint, key, source)
    except _Mismatch:
        raise _problem(source, key, f"is {value!r}, expected {_describe(hint)}") from None


def _typed(value: Any, hint: Any, key: str, source: str) -> Any:
    """`value` as `hint` (lists become tuples, objects dataclasses); _Mismatch if it does not
    fit. Numbers are kept as they are (an int where a float is declared stays an int)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _typed(value, option, key, source)
            except _Mismatch:
                continue
        raise _Mismatch
    if hint is type(None):
        if value is None:
            return None
        raise _Mismatch
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if hint in (int, float):
        allowed = (int,) if hint is int else (int, float)
        if isinstance(value, allowed) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if hint is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_typed(v, args[0], key, source) for v in value)
        if len(args) != len(value):
            raise _Mismatch
        return tuple(_typed(v, a, key, source) for v, a in zip(value, args, strict=True))
    if origin is dict:
        key_type, value_type = typing.get_args(hint)
        if not isinstance(value, dict):
            raise _Mismatch
        return {_typed(k, key_type, key, source): _typed(v, value_type, key, source)
                for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise _Mismatch
        return _from_mapping(hint, value, key, source)
    raise TypeError(f"no conversion for {hint!r}")  # a field type this module does not handle


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "null"
    if origin is tuple:
        return "a list"
    if origin is dict or dataclasses.is_dataclass(hint):
        return "an object"
    return getattr(hint, "__name__", str(hint))


def _grid_seeds(data: dict[str, Any], source: str) -> tuple[int, ...] | None:
    """Pop "grid" and "seeds" (both or neither) and return the seeds."""
    if "grid" not in data and "seeds" not in data:
        return None
    if data.pop("grid", None) is not True or "seeds" not in data:
        raise _problem(source, "grid", "and 'seeds' must come together, with grid true")
    return _convert(data.pop("seeds"), tuple[int, ...], "seeds", source)


def _replicate_info(data: dict[str, Any], source: str) -> ReplicateInfo | None:
    """Pop "data_seed" and "fold" (both or neither) and return them."""
    if "data_seed" not in data and "fold" not in data:
        return None
    if "data_seed" not in data or "fold" not in data:
        raise _problem(source, "data_seed", "and 'fold' must come together (a grid replicate)")
    return ReplicateInfo(data_seed=_convert(data.pop("data_seed"), int, "data_seed", source),
                         fold=_convert(data.pop("fold"), int | None, "fold", source))
