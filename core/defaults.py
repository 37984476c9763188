"""Every default of the command line and of the run configuration, in one place.

benchmark.py's parser leaves options unset (None) and the stages resolve them from these values
(`option`), or from the preset for the training numbers (training.presets), so --help, the
resolved config in run.json and the stages never disagree.
"""

from __future__ import annotations

from typing import Any

# The run directory (core.rundir.find_run_dir): runs/<dataset>-<preset>
PRESET = "native"
DATASET = "ham10000"
SMOKE_PRESET = "smoke"
SMOKE_DATASET = "synthetic"  # the smoke preset runs on the generated stand-in for HAM10000

# Data and split
SPLIT = "lesion"
RATIOS: tuple[float, float, float] = (0.8, 0.1, 0.1)
TEST_SET = "split"
SEED = 0
SYNTHETIC_IMAGES = 700
RESIZE_MODE = "square"
PREPARE_IMAGE_SIZE = 299  # --prepare without --image-size builds the cache at this size

# Execution of --all
EXECUTOR = "local"
JOBS = 1
RETRIES = 1

# Ensembles, reports and the regression gate
RANK_BY = "balanced_accuracy"
REFERENCE = "inception_resnet_v2"
BOOTSTRAP = 1000
TOLERANCE = 0.01
ALPHA = 0.05

# Command-line options whose default is a constant above (argparse dest -> default).
OPTIONS: dict[str, Any] = {
    "split": SPLIT, "ratios": RATIOS, "test_set": TEST_SET, "seed": SEED,
    "synthetic_images": SYNTHETIC_IMAGES, "resize_mode": RESIZE_MODE, "executor": EXECUTOR,
    "jobs": JOBS, "retries": RETRIES, "rank_by": RANK_BY, "reference": REFERENCE,
    "bootstrap": BOOTSTRAP, "tolerance": TOLERANCE, "alpha": ALPHA,
}


def option(args: Any, dest: str) -> Any:
    """The value of a command-line option: what was given, else its default here.

    Args:
        args: the parsed command line (an argparse Namespace; a missing attribute counts as
            unset).
        dest: the option's argparse dest, a key of `OPTIONS` (e.g. "split", "bootstrap").

    Returns:
        `args.<dest>` when it is not None, else `OPTIONS[dest]`.

    Raises:
        KeyError: `dest` has no default here.
    """
    default = OPTIONS[dest]
    value = getattr(args, dest, None)
    return default if value is None else value
