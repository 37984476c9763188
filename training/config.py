"""Resolve the command line and a preset into the run's config (run.json["config"]).

The resolved config has exactly the keys of .notes/STAGE_API.md ("Resolved config"); the worker
reads nothing else. The preset's numbers come from `training.presets`; this module adds the data
options, the entries and the overrides:

- dataset: --dataset, else the generated synthetic set for --preset smoke; the other presets train
  on real data, which must be found (--data-dir, or the conventional folder data/<dataset>);
- entries: the five backbones in the study's order (InceptionV3, ResNeXt101, InceptionResNetV2,
  Xception, NASNetLarge), then the baselines paper_cnn and inception_resnet_v2+svm; --models
  picks a subset;
- overrides: --epochs, --batch-size, --image-size, --weights, --weights-dir, --split, --folds,
  --seed, --deterministic;
- a grid (--folds K and/or --seeds): "grid": true and the training "seeds" (see `_grid_keys`);
- the run directory: --out, else runs/<dataset>-<preset>.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from core.errors import BenchmarkError, DataError
from core.rundir import default_run_path
from training import presets

REAL_DATASETS: tuple[str, ...] = ("ham10000", "isic2018")
SYNTHETIC = "synthetic"
# Where --download is suggested to put a dataset, and where it is looked for without --data-dir.
DEFAULT_DATA_ROOT = Path("data")
WEIGHTS_DIR_ENV = "DERMBENCH_WEIGHTS_DIR"


class ConfigError(BenchmarkError, ValueError):
    """A command line that cannot be resolved into a config (the message says how to fix it)."""


def backbone_names() -> list[str]:
    """The fine-tuned backbones: zoo.list_backbones() minus paper_cnn, in the study's order."""
    import zoo

    registered = set(zoo.list_backbones())
    return [name for name in presets.BACKBONES if name in registered]


def all_entries() -> list[str]:
    """Every entry of a full run: the five backbones, then paper_cnn and the SVM baseline."""
    import zoo

    registered = set(zoo.list_backbones())
    return [e for e in presets.ENTRIES if presets.backbone_of(e) in registered]


def entry_kind(name: str) -> str:
    """"backbone" for the fine-tuned backbones, "baseline" for paper_cnn and the SVM."""
    return presets.entry_kind(name)


def resolve_entries(models: list[str] | None) -> list[str]:
    """The entries to train: all of them, or the --models subset (in the given order, deduped).

    Raises:
        ConfigError: an unknown name (the message lists the valid ones).
    """
    valid = all_entries()
    if not models:
        return valid
    unknown = [m for m in models if m not in valid]
    if unknown:
        raise ConfigError(
            f"unknown model(s) {', '.join(repr(m) for m in unknown)} in --models; choose from "
            f"{', '.join(valid)}"
        )
    return list(dict.fromkeys(models))


def resolve_dataset(dataset: str | None, preset: str) -> str:
    """--dataset, or the synthetic set for the smoke preset.

    Raises:
        ConfigError: no --dataset with the native or paper preset (they need real data).
    """
    if dataset:
        return dataset
    if preset == "smoke":
        return SYNTHETIC
    raise ConfigError(
        f"the {preset} preset trains on real data, so it needs --dataset ham10000 or isic2018: "
        f"download it with `python benchmark.py --download --dataset ham10000 --data-dir "
        f"{DEFAULT_DATA_ROOT / 'ham10000'}` and rerun with `--dataset ham10000 --data-dir "
        f"{DEFAULT_DATA_ROOT / 'ham10000'}`, point --data-dir at a folder that holds it, or use "
        f"`--preset smoke` to try the benchmark on the generated synthetic set"
    )


def resolve_data_dir(dataset: str, data_dir: str | None) -> str | None:
    """The dataset folder as an absolute path (None: synthetic in its default cache folder).

    Args:
        dataset: the resolved dataset name.
        data_dir: --data-dir, or None.

    Returns:
        The folder, or None for the synthetic set without --data-dir.

    Raises:
        DataError: a real dataset whose folder does not exist (the message says how to download it
            or where to point --data-dir).
    """
    if dataset == SYNTHETIC:
        return os.fspath(Path(data_dir).expanduser().resolve()) if data_dir else None
    candidate = Path(data_dir).expanduser() if data_dir else DEFAULT_DATA_ROOT / dataset
    if candidate.is_dir():
        return os.fspath(candidate.resolve())
    where = f"--data-dir {data_dir} does not exist" if data_dir else (
        f"no --data-dir given and {candidate} does not exist")
    raise DataError(
        f"{dataset} data not found: {where}; download it with `python benchmark.py --download "
        f"--dataset {dataset} --data-dir {DEFAULT_DATA_ROOT / dataset}` (then pass that "
        f"--data-dir), or point --data-dir at the folder that holds the {dataset} files"
    )


def resolve_weights(weights: str | None, preset_default: str | None) -> str | None:
    """--weights: "none" -> None, "imagenet", or a weights file (made absolute).

    Raises:
        ConfigError: a path that is not a file.
    """
    if weights is None:
        return preset_default
    if weights.lower() == "none":
        return None
    if weights.lower() == "imagenet":
        return "imagenet"
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"--weights {weights}: no such file; pass none, imagenet, or the path of a weights "
            f"file (.weights.h5)"
        )
    return os.fspath(path.resolve())


def resolve_config(args: argparse.Namespace) -> dict[str, Any]:
    """The resolved config of an `--all` command (STAGE_API.md, "Resolved config").

    Args:
        args: the parsed command line of benchmark.py (missing attributes take their defaults).

    Returns:
        dataset, data_dir, split, ratios, folds, seed, test_set, synthetic_images, resize_mode,
        allow_missing, preset, entries, deterministic, weights, weights_dir, training, svm.

    Raises:
        ConfigError: unknown model, no dataset for a real-data preset, bad --weights, an image
            size below a backbone's minimum (presets.PresetError).
        DataError: a real dataset's folder not found.
    """
    preset_name = _arg(args, "preset") or presets.DEFAULT_PRESET
    dataset = resolve_dataset(_arg(args, "dataset"), preset_name)
    entries = resolve_entries(_arg(args, "models"))
    resolved = presets.resolve_preset(
        preset_name, entries, image_size=_arg(args, "image_size"), epochs=_arg(args, "epochs"),
        batch_size=_arg(args, "batch_size"),
    )
    resolved["training"]["image_size"] = entry_image_sizes(
        preset_name, resolved["training"]["image_size"], _arg(args, "image_size"))
    weights_dir = _arg(args, "weights_dir") or os.environ.get(WEIGHTS_DIR_ENV) or None
    return {
        "dataset": dataset,
        "data_dir": resolve_data_dir(dataset, _arg(args, "data_dir")),
        "split": _arg(args, "split") or "lesion",
        "ratios": [float(r) for r in (_arg(args, "ratios") or (0.8, 0.1, 0.1))],
        "folds": _arg(args, "folds"),
        "seed": int(_arg(args, "seed") or 0),
        **_grid_keys(_arg(args, "folds"), _arg(args, "seeds"), int(_arg(args, "seed") or 0)),
        **_backend_key(),
        "test_set": _arg(args, "test_set") or "split",
        "synthetic_images": int(_arg(args, "synthetic_images") or 700),
        "resize_mode": _arg(args, "resize_mode") or "square",
        "allow_missing": bool(_arg(args, "allow_missing")),
        "preset": resolved["preset"],
        "entries": entries,
        "deterministic": bool(_arg(args, "deterministic")),
        "weights": resolve_weights(_arg(args, "weights"), resolved["weights"]),
        "weights_dir": os.fspath(Path(weights_dir).expanduser().resolve()) if weights_dir
        else None,
        "training": resolved["training"],
        "svm": resolved["svm"],
    }


def _grid_keys(folds: int | None, seeds: Any, seed: int) -> dict[str, Any]:
    """"grid" and "seeds" for a grid run (--folds or --seeds); nothing for a single run.

    A single run's config stays as it was, so its fingerprint does not change. In a grid run
    "seed" remains the seed of the split and the synthetic data; "seeds" are the training seeds
    (default: that one seed), one replicate per fold and seed.
    """
    if folds is None and seeds is None:
        return {}
    return {"grid": True, "seeds": [int(s) for s in (seeds or (seed,))]}


def _backend_key() -> dict[str, Any]:
    """{"backend": name} when Keras runs on another backend than TensorFlow, else nothing.

    The backend changes results (other kernels, other random streams), so it is part of the
    config and the fingerprint; TensorFlow, the default, is left implicit so that runs made
    before this key existed keep their fingerprint.
    """
    import keras

    backend = keras.backend.backend()
    return {} if backend == "tensorflow" else {"backend": backend}


def is_grid(config: dict[str, Any]) -> bool:
    """Whether a resolved config describes a grid run (entry x fold x seed)."""
    return bool(config.get("grid"))


def grid_folds(config: dict[str, Any]) -> list[int]:
    """The folds of a grid run: 0..K-1 with --folds K, else [0] (the one split)."""
    return list(range(int(config["folds"]))) if config.get("folds") else [0]


def entry_image_sizes(preset: str, selected: dict[str, int],
                      override: int | None) -> dict[str, int]:
    """Image sizes of every entry, not only the selected ones, in the study's order.

    The sizes are part of the protocol fingerprint, and `--models` must not change it (a later
    command that adds models resumes the same run), so the map covers every entry that can run
    at this preset and --image-size; entries whose minimum size the override is below are left
    out (selecting one of them is refused by `presets.resolve_preset`).

    Args:
        preset: the preset name.
        selected: the sizes `presets.resolve_preset` gave the selected entries.
        override: --image-size, or None.

    Returns:
        {entry: px}.
    """
    sizes = {}
    for entry in all_entries():
        if entry in selected:
            sizes[entry] = int(selected[entry])
            continue
        try:
            sizes[entry] = presets.image_size_for(preset, entry, override)
        except presets.PresetError:
            continue
    return sizes


def resolve_out(args: argparse.Namespace, config: dict[str, Any]) -> Path:
    """The run directory: --out, else runs/<dataset>-<preset> (relative to the working folder)."""
    out = _arg(args, "out")
    if out:
        return Path(out).expanduser()
    return default_run_path(config["dataset"], config["preset"])


def image_sizes(config: dict[str, Any]) -> tuple[int, ...]:
    """The image sizes the config's entries need (the cache is built at each), ascending."""
    sizes = {int(config["training"]["image_size"][e]) for e in config["entries"]}
    if presets.SVM_ENTRY in config["entries"] and config["svm"].get("feature_size"):
        sizes.add(int(config["svm"]["feature_size"]))
    return tuple(sorted(sizes))


def _arg(args: argparse.Namespace, name: str) -> Any:
    return getattr(args, name, None)
