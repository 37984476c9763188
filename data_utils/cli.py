"""CLI stage functions of the data layer: `--prepare` and `--download`."""

from __future__ import annotations

import argparse
import logging
import sys

from core import defaults
from core.defaults import option
from core.errors import DataError
from core.rundir import default_dataset, find_run_dir

logger = logging.getLogger(__name__)


def run_prepare(args: argparse.Namespace) -> int:
    """`python benchmark.py --prepare`: read, validate, split, cache, print the dataset card.

    The dataset and the run directory follow the rule of every action (`core.rundir.find_run_dir`:
    --out, else runs/<dataset>-<preset>, the dataset defaulting to synthetic for --preset smoke and
    to ham10000 otherwise); options left unset take `core.defaults`.

    Args:
        args: the parsed command line (dataset, data_dir, out, split, ratios, folds, seed,
            allow_missing, test_set, synthetic_images, image_size, resize_mode, cache_dir,
            workers, force_new, preset).

    Returns:
        0 on success (errors are raised as BenchmarkError and turned into exit code 2 by main).
    """
    from data_utils.prepare import format_card, prepare

    preset = getattr(args, "preset", None)
    dataset = getattr(args, "dataset", None) or default_dataset(preset)
    if not getattr(args, "dataset", None) and dataset != defaults.SMOKE_DATASET \
            and not getattr(args, "data_dir", None):
        raise DataError(
            f"no --dataset given: --prepare uses {dataset}, the dataset of the "
            f"{preset or defaults.PRESET} preset, and needs --data-dir DIR holding it; pass "
            f"--dataset {defaults.SMOKE_DATASET} (or --preset {defaults.SMOKE_PRESET}) for the "
            "generated synthetic set"
        )
    prepared = prepare(
        dataset,
        getattr(args, "data_dir", None),
        find_run_dir(getattr(args, "out", None), dataset, preset, existing=False).root,
        split=option(args, "split"),
        ratios=tuple(option(args, "ratios")),
        folds=getattr(args, "folds", None),
        seed=option(args, "seed"),
        allow_missing=bool(getattr(args, "allow_missing", False)),
        test_set=option(args, "test_set"),
        synthetic_images=option(args, "synthetic_images"),
        image_sizes=(getattr(args, "image_size", None) or defaults.PREPARE_IMAGE_SIZE,),
        resize_mode=option(args, "resize_mode"),
        cache_root=getattr(args, "cache_dir", None),
        workers=getattr(args, "workers", None),
        force_new=bool(getattr(args, "force_new", False)),
    )
    print(format_card(prepared.card))
    for size, cache in prepared.caches.items():
        print(f"Image cache {size}x{size} ({cache.resize_mode}): {cache.path}")
    print(f"Wrote {prepared.run.splits_csv} and {prepared.run.dataset_json}")
    sys.stdout.flush()
    return 0


def run_download(args: argparse.Namespace) -> int:
    """`python benchmark.py --download`: delegates to `data_utils.download_cli.download_command`."""
    from data_utils.download_cli import download_command

    return download_command(args)
