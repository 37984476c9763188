"""Resolve the command line and a preset into the run's typed config (run.json["config"]).

`resolve_config(args) -> RunConfig` is the one resolution step between benchmark.py's parsed
command line and everything that trains (the runner, the worker, the protocol, the SVM baseline,
the grid replicates all read the `RunConfig` it returns, or its copy in run.json):

- dataset: --dataset, else the default of the run-directory rule (`core.rundir.default_dataset`:
  synthetic for --preset smoke, else ham10000); real data must be found (--data-dir, or the
  conventional folder data/<dataset>);
- entries: every entry (`training.entries`: the zoo registry's backbones, then the baselines);
  --models picks a subset;
- the preset's numbers (`training.presets.resolve_preset`) with --epochs, --batch-size and
  --image-size applied;
- the data options, --seed, --deterministic, --weights and --weights-dir; options left unset take
  their default from `core.defaults`;
- a grid (--folds K and/or --seeds): the training seeds;
- the Keras backend, when it is not TensorFlow;
- the run directory (`resolve_out`): `core.rundir.find_run_dir`, the one rule of every action.

Options that do not change results stay out of the config (and so out of the fingerprint):
`--tensorboard` (`tensorboard_enabled`) is handed to each job by the orchestration instead.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from pathlib import Path
from typing import Any

from core.defaults import option
from core.errors import DataError
from core.rundir import default_dataset, find_run_dir
from training import presets
from training.entries import expand_models
from training.errors import ConfigError
from training.settings import RunConfig

SYNTHETIC = "synthetic"
# Where --download is suggested to put a dataset, and where it is looked for without --data-dir.
DEFAULT_DATA_ROOT = Path("data")
WEIGHTS_DIR_ENV = "DERMBENCH_WEIGHTS_DIR"
# What keras.callbacks.TensorBoard writes its logs with, under every backend.
TENSORBOARD_PACKAGES: tuple[str, ...] = ("tensorflow", "tensorboard")


def resolve_entries(models: list[str] | None) -> list[str]:
    """The entries to train: the --models entries and groups expanded (`expand_models`, in the
    given order, deduplicated), or the default group "paper" without --models.

    Raises:
        ConfigError: an unknown name (the message lists the entries and the groups).
    """
    return expand_models(models)


def resolve_data_dir(dataset: str, data_dir: str | None,
                     defaulted_for: str | None = None) -> str | None:
    """The dataset folder as an absolute path (None: synthetic in its default cache folder).

    Args:
        dataset: the resolved dataset name.
        data_dir: --data-dir, or None.
        defaulted_for: the preset whose default dataset this is (no --dataset given), or None;
            named in the error.

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
    hint = (f"; without --dataset the {defaulted_for} preset trains on {dataset}: use `--preset "
            "smoke` to try the benchmark on the generated synthetic set") if defaulted_for else ""
    raise DataError(
        f"{dataset} data not found: {where}; download it with `python benchmark.py --download "
        f"--dataset {dataset} --data-dir {DEFAULT_DATA_ROOT / dataset}` (then pass that "
        f"--data-dir), or point --data-dir at the folder that holds the {dataset} files{hint}"
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


def resolve_config(args: argparse.Namespace) -> RunConfig:
    """The typed config of an `--all` command: the one resolution step.

    Args:
        args: the parsed command line of benchmark.py (missing or None attributes take their
            defaults: `core.defaults`, the preset).

    Returns:
        The config (`RunConfig`; its `to_dict()` is run.json["config"]).

    Raises:
        ConfigError: unknown model or preset, bad --weights, an image size below a selected
            entry's minimum (presets.PresetError).
        DataError: a real dataset's folder not found.
    """
    preset = presets.get_preset(_arg(args, "preset"))
    given_dataset = _arg(args, "dataset")
    dataset = given_dataset or default_dataset(preset.name)
    entries = resolve_entries(_arg(args, "models"))
    resolved = presets.resolve_preset(
        preset.name, entries, image_size=_arg(args, "image_size"), epochs=_arg(args, "epochs"),
        batch_size=_arg(args, "batch_size"),
    )
    seed = int(option(args, "seed"))
    folds = _arg(args, "folds")
    weights_dir = _arg(args, "weights_dir") or os.environ.get(WEIGHTS_DIR_ENV) or None
    return RunConfig(
        dataset=dataset,
        data_dir=resolve_data_dir(dataset, _arg(args, "data_dir"),
                                  None if given_dataset else preset.name),
        split=option(args, "split"),
        ratios=tuple(float(r) for r in option(args, "ratios")),
        folds=folds,
        seed=seed,
        seeds=_grid_seeds(folds, _arg(args, "seeds"), seed),
        backend=_backend(),
        test_set=option(args, "test_set"),
        synthetic_images=int(option(args, "synthetic_images")),
        resize_mode=option(args, "resize_mode"),
        allow_missing=bool(_arg(args, "allow_missing")),
        preset=resolved.name,
        entries=tuple(entries),
        deterministic=bool(_arg(args, "deterministic")),
        weights=resolve_weights(_arg(args, "weights"), resolved.weights),
        weights_dir=os.fspath(Path(weights_dir).expanduser().resolve()) if weights_dir else None,
        training=resolved.training,
        svm=resolved.svm,
    )


def tensorboard_enabled(args: argparse.Namespace) -> bool:
    """--tensorboard: whether TensorBoard logs are written, checked before anything runs.

    The logs do not change results, so the flag is not part of the config or the fingerprint.
    keras.callbacks.TensorBoard writes through TensorFlow's summary writer and the tensorboard
    package under every backend, JAX included.

    Returns:
        True when --tensorboard was given (and what writes the logs is installed).

    Raises:
        ConfigError: --tensorboard without TensorFlow or the tensorboard package (the message
            says what to install).
    """
    if not _arg(args, "tensorboard"):
        return False
    missing = [name for name in TENSORBOARD_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(
            f"--tensorboard needs {' and '.join(missing)}, which {'is' if len(missing) == 1 else 'are'}"
            f" not installed (Keras writes TensorBoard logs through TensorFlow's summary writer, "
            f"under JAX too): pip install {' '.join(missing)}, or run without --tensorboard"
        )
    return True


def _grid_seeds(folds: int | None, seeds: Any, seed: int) -> tuple[int, ...] | None:
    """A grid's training seeds (--folds or --seeds; default: the one seed), else None.

    In a grid run "seed" remains the seed of the split and the synthetic data; "seeds" are the
    training seeds, one replicate per fold and seed.
    """
    if folds is None and seeds is None:
        return None
    return tuple(int(s) for s in (seeds or (seed,)))


def _backend() -> str:
    """The Keras backend: it changes results (other kernels, other random streams), so it is part
    of the config and the fingerprint (left out of run.json for TensorFlow, the default)."""
    import keras

    return keras.backend.backend()


def resolve_out(args: argparse.Namespace, config: RunConfig) -> Path:
    """The run directory: --out, else runs/<dataset>-<preset> (`core.rundir.find_run_dir`)."""
    return find_run_dir(_arg(args, "out"), config.dataset, config.preset, existing=False).root


def _arg(args: argparse.Namespace, name: str) -> Any:
    return getattr(args, name, None)
