"""CLI stage functions of the data layer: `--prepare` and `--download`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from core.rundir import default_run_path

logger = logging.getLogger(__name__)

DEFAULT_DATASET = "synthetic"
DEFAULT_IMAGE_SIZE = 299


def default_out(dataset: str, preset: str | None) -> Path:
    """The default run directory: runs/<dataset>-<preset or "native">."""
    return default_run_path(dataset, preset)


def run_prepare(args: argparse.Namespace) -> int:
    """`python benchmark.py --prepare`: read, validate, split, cache, print the dataset card.

    Args:
        args: the parsed command line (dataset, data_dir, out, split, ratios, folds, seed,
            allow_missing, test_set, synthetic_images, image_size, resize_mode, cache_dir,
            workers, force_new, preset).

    Returns:
        0 on success (errors are raised as BenchmarkError and turned into exit code 2 by main).
    """
    from data_utils.prepare import format_card, prepare

    dataset = getattr(args, "dataset", None) or DEFAULT_DATASET
    out = Path(args.out) if getattr(args, "out", None) else default_out(dataset, getattr(args, "preset", None))
    prepared = prepare(
        dataset,
        args.data_dir,
        out,
        split=args.split,
        ratios=tuple(args.ratios),
        folds=args.folds,
        seed=args.seed,
        allow_missing=args.allow_missing,
        test_set=args.test_set,
        synthetic_images=args.synthetic_images,
        image_sizes=(args.image_size or DEFAULT_IMAGE_SIZE,),
        resize_mode=args.resize_mode,
        cache_root=args.cache_dir,
        workers=args.workers,
        force_new=getattr(args, "force_new", False),
    )
    print(format_card(prepared.card))
    for size, cache in prepared.caches.items():
        print(f"Image cache {size}x{size} ({cache.resize_mode}): {cache.path}")
    print(f"Wrote {prepared.run.splits_csv} and {prepared.run.dataset_json}")
    sys.stdout.flush()
    return 0


def run_download(args: argparse.Namespace) -> int:
    """`python benchmark.py --download`: delegates to `data_utils.download.download_command`."""
    from data_utils.download import download_command

    return download_command(args)
