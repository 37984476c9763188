"""The registered backbones as a table (`benchmark.py --list` prints it before the ensembles and
presets, which belong to their own stages).

`python -m zoo.cli` prints the table; `python -m zoo.cli --costs [NAME ...]` measures build time,
parameters and FLOPs per backbone at its native size (for the report's cost table and release
notes).
"""

from __future__ import annotations

import argparse
import sys
import time
from urllib.parse import urlsplit

from tabulate import tabulate

from zoo.registry import BackboneConfig, get_config, list_backbones

BACKBONE_HEADERS = ("backbone", "input size", "min size", "preprocessing", "params (1000-class)",
                    "weights source", "family", "group", "kind")


def weights_source(config: BackboneConfig) -> str:
    """Short description of where `weights="imagenet"` comes from."""
    if not config.pretrained or not config.weights_url:
        return "none (trained from scratch)"
    host = urlsplit(config.weights_url).netloc
    kind = "Keras applications" if config.weights_format == "keras_h5" else "timm hub (torchvision)"
    check = f"{config.hash_algorithm} verified" if config.weights_hash else "key/shape checked"
    return f"{kind}, {host}, {check}"


def backbone_rows() -> list[list[object]]:
    """One row per registered backbone for the --list table (columns: `BACKBONE_HEADERS`)."""
    return [
        [
            config.name,
            f"{config.input_size}x{config.input_size}",
            config.min_size,
            config.preprocessing,
            f"{config.params_1000:,}",
            weights_source(config),
            config.family,
            config.group,
            config.kind,
        ]
        for config in map(get_config, list_backbones())
    ]


def backbone_table() -> str:
    """The registered backbones as a plain-text table (`benchmark.py --list`)."""
    return tabulate(backbone_rows(), headers=list(BACKBONE_HEADERS))


def run_costs(names: list[str]) -> int:
    """Build each backbone at its native size; print build seconds, parameters and FLOPs."""
    import keras

    from zoo.factory import create_backbone, param_counts
    from zoo.flops import count_model_flops

    rows = []
    for name in names:
        size = get_config(name).input_size
        start = time.perf_counter()
        model = create_backbone(name, 7, weights=None)
        seconds = time.perf_counter() - start
        counts = param_counts(model)
        rows.append(
            [
                name,
                f"{size}x{size}",
                f"{seconds:.1f}",
                f"{counts['total']:,}",
                f"{count_model_flops(model) / 1e9:.2f}",
            ]
        )
        del model
        keras.backend.clear_session()
    print(
        tabulate(rows, headers=["backbone", "size", "build s", "params (7-class)", "GFLOPs/image"])
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m zoo.cli [--costs [NAME ...]]`: the backbone table, or their measured costs."""
    parser = argparse.ArgumentParser(prog="python -m zoo.cli", description=__doc__)
    parser.add_argument(
        "--costs",
        nargs="*",
        metavar="NAME",
        help="measure build time, params and FLOPs (default: every backbone)",
    )
    args = parser.parse_args(argv)
    if args.costs is not None:
        return run_costs(args.costs or list_backbones())
    print(backbone_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
