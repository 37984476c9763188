#!/usr/bin/env python3
"""dermbench: fine-tune ImageNet backbones on HAM10000 under one protocol, ensemble, and report.

A thin CLI: parse the command line, then call one stage. Each stage lives in its own package and
talks to the next through files in the run directory (`core.rundir`). The parser leaves options
unset (None); the stages resolve them from `core.defaults` (and the preset), whose values --help
shows. The choices come from their one source: presets from `training.presets`, ensembles from
`ensembles.ENSEMBLE_NAMES`, backbones from the zoo registry (`--list`). Heavy imports
(TensorFlow, Keras) happen only inside the stages that need them, so `--report`, `--ensemble` and
`--check` run without TensorFlow. `--all` keeps the console to its own lines (pipeline/console.py):
the libraries' records and the workers' output go to train.log, and `-v` shows them too.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from core import defaults, exitcodes, facts
from core.rundir import RUN_DIR_RULE
from ensembles import ENSEMBLE_NAMES
from training.presets import PRESETS

ENSEMBLE_CHOICES = (*ENSEMBLE_NAMES, "all")


class _OneLineErrorParser(argparse.ArgumentParser):
    """argparse that reports bad usage in one line (no usage dump) and exits with 2."""

    def error(self, message: str) -> None:  # noqa: D401 - argparse API
        self.exit(exitcodes.USER_ERROR, f"{self.prog}: error: {message} (see --help)\n")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (also used by the scripts in tools/)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _fold_count(text: str) -> int:
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"--folds needs at least 2 folds, got {text!r}")
    return value


def _seed_list(text: str) -> tuple[int, ...]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise argparse.ArgumentTypeError(f"--seeds needs seeds like 0,1,2, got {text!r}")
    seeds = tuple(_non_negative_int(p) for p in parts)
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"--seeds lists a seed twice: {text!r}")
    return seeds


def _ratios(text: str) -> tuple[float, float, float]:
    parts = text.split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected three numbers like 0.8,0.1,0.1, got {text!r}"
        ) from None
    if len(values) != 3 or any(v <= 0 for v in values) or abs(sum(values) - 1) > 1e-6:
        raise argparse.ArgumentTypeError(
            f"expected three positive train,val,test ratios summing to 1, got {text!r}"
        )
    return values  # type: ignore[return-value]


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return value


def _name_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return names


def _prog() -> str:
    """The program's name in usage lines: `dermbench` for the console script, else benchmark.py."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "dermbench" if name == "dermbench" else "benchmark.py"


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface (every option documented in --help)."""
    parser = _OneLineErrorParser(
        prog=_prog(),
        description=(
            "Benchmark ImageNet backbones and their ensembles on HAM10000 / ISIC 2018 skin-lesion "
            "classification under one protocol, with lesion-grouped splits and honest statistics."
        ),
        epilog=(
            "Examples:\n"
            "  python benchmark.py --all --preset smoke            # CPU smoke run on synthetic data\n"
            "  python benchmark.py --prepare --dataset ham10000 --data-dir DIR\n"
            "  python benchmark.py --ensemble stacking --out runs/ham10000-native\n"
            "  python benchmark.py --report --out RUNDIR\n"
            "  python benchmark.py --check baseline.json --out RUNDIR\n"
            f"Without --out every action uses the run directory {RUN_DIR_RULE}.\n"
            "Installed with pip, the same commands run as `dermbench ...`.\n"
            "For research; not for clinical diagnosis."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    action = parser.add_argument_group("what to do (exactly one)").add_mutually_exclusive_group(
        required=True
    )
    action.add_argument("--all", action="store_true",
                        help="prepare the data, train every entry, build all ensembles and the report")
    action.add_argument("--prepare", action="store_true",
                        help="read, validate and split the dataset, build the image cache, "
                             "print the dataset card")
    action.add_argument("--download", action="store_true",
                        help="download the official dataset archives into --data-dir, verify and "
                             "extract them (resumes interrupted downloads)")
    action.add_argument("--list", action="store_true",
                        help="list the registered backbones, ensembles and presets")
    action.add_argument("--ensemble", choices=ENSEMBLE_CHOICES, metavar="NAME",
                        help="build one ensemble (or 'all') from the saved predictions in --out; "
                             f"one of: {', '.join(ENSEMBLE_CHOICES)}")
    action.add_argument("--report", action="store_true",
                        help="regenerate metrics, figures and report.md from --out (no training)")
    action.add_argument("--predict", nargs="+", metavar="PATH",
                        help="classify images (files or folders, recursively) with a trained "
                             "entry or ensemble of --out (--entry; default: the entry ranked "
                             "first on validation); writes RUNDIR/predictions/<entry>-<time>.csv")
    action.add_argument("--export", action="store_true",
                        help="export a trained entry of --out (--entry, --format) as a "
                             "self-contained model taking raw RGB images, with MODEL_CARD.md")
    action.add_argument("--save-baseline", metavar="FILE",
                        help="write the run's current metrics to FILE as a regression baseline")
    action.add_argument("--check", metavar="FILE",
                        help="compare the run's metrics with a baseline FILE; exit 1 if any "
                             "dropped by more than its tolerance")

    data = parser.add_argument_group("data")
    data.add_argument("--dataset", choices=facts.DATASETS,
                      help=f"synthetic (generated), ham10000 (official HAM10000 layout) or "
                           f"isic2018 (ISIC 2018 Task 3 layout); default "
                           f"{defaults.SMOKE_DATASET} with --preset {defaults.SMOKE_PRESET}, "
                           f"else {defaults.DATASET}")
    data.add_argument("--data-dir", metavar="DIR",
                      help="folder holding the dataset (or where --download puts it)")
    data.add_argument("--split", choices=("lesion", "image"),
                      help="lesion: stratified, grouped by lesion_id (leak-free); image: the "
                           "source paper's random image-level split (leaky, for reproduction); "
                           f"default {defaults.SPLIT}")
    data.add_argument("--ratios", type=_ratios, metavar="TR,VA,TE",
                      help="train,val,test ratios (default "
                           f"{','.join(str(r) for r in defaults.RATIOS)})")
    data.add_argument("--folds", type=_fold_count, metavar="K",
                      help="K lesion-grouped stratified folds: every entry is trained once per "
                           "fold (fold k is the test split), a grid run aggregated in the report")
    data.add_argument("--test-set", choices=("split", "official"),
                      help="isic2018 only: 'official' trains/validates on HAM10000 (split by "
                           "lesion) and tests on the official ISIC 2018 test images; default "
                           f"{defaults.TEST_SET}")
    data.add_argument("--allow-missing", action="store_true",
                      help="proceed without images listed in the metadata but missing on disk "
                           "(their count is recorded in dataset.json)")
    data.add_argument("--synthetic-images", type=positive_int, metavar="N",
                      help="size of the generated synthetic dataset (default "
                           f"{defaults.SYNTHETIC_IMAGES})")
    data.add_argument("--image-size", type=positive_int, metavar="PX",
                      help="square input size; default: each backbone's size under the preset "
                           f"(--prepare: {defaults.PREPARE_IMAGE_SIZE})")
    data.add_argument("--resize-mode", choices=("square", "crop"),
                      help="square: whole image resized to a square; crop: centre crop; default "
                           f"{defaults.RESIZE_MODE}")
    data.add_argument("--cache-dir", metavar="DIR",
                      help="decoded-image cache (default $DERMBENCH_CACHE or ~/.cache/dermbench)")
    data.add_argument("--workers", type=positive_int, metavar="N",
                      help="processes for decoding images (default: all cores)")

    train = parser.add_argument_group("training")
    train.add_argument("--preset", choices=tuple(PRESETS),
                       help="; ".join(f"{name}{' (default)' if name == defaults.PRESET else ''}: "
                                      f"{preset.description}"
                                      for name, preset in PRESETS.items()))
    train.add_argument("--models", nargs="+", metavar="NAME",
                       help="train only these entries: the backbones registered in the zoo "
                            "(see --list), paper_cnn, inception_resnet_v2+svm")
    train.add_argument("--epochs", type=positive_int, metavar="N",
                       help="epochs per phase (overrides the preset)")
    train.add_argument("--batch-size", type=positive_int, metavar="N",
                       help="batch size (overrides the preset)")
    train.add_argument("--weights", metavar="none|imagenet|PATH",
                       help="initial backbone weights (overrides the preset)")
    train.add_argument("--weights-dir", metavar="DIR",
                       help="folder with official weight files (offline use); also "
                            "$DERMBENCH_WEIGHTS_DIR")
    train.add_argument("--seed", type=_non_negative_int,
                       help="seed for the split, the synthetic data and training (default "
                            f"{defaults.SEED})")
    train.add_argument("--seeds", type=_seed_list, metavar="S1,S2,...",
                       help="repeat every entry once per training seed (a grid run with --folds: "
                            "entry x fold x seed); the split and synthetic data keep --seed")
    train.add_argument("--deterministic", action="store_true",
                       help="deterministic ops: two CPU runs give identical predictions (slower)")
    train.add_argument("--force-new", action="store_true",
                       help="start a fresh run directory instead of refusing a protocol mismatch")
    train.add_argument("--out", metavar="RUNDIR",
                       help=f"run directory of every action (default {RUN_DIR_RULE})")

    execution = parser.add_argument_group("execution (--all)")
    execution.add_argument("--executor", choices=("local", "ray"),
                           help="local: jobs run in subprocesses on this machine; ray: each job "
                                "is a Ray task (pip install 'dermbench[ray]'); default "
                                f"{defaults.EXECUTOR}")
    execution.add_argument("--jobs", type=positive_int, metavar="N",
                           help="local executor: jobs run at a time, each pinned to its own "
                                f"GPU(s) via CUDA_VISIBLE_DEVICES (default {defaults.JOBS})")
    execution.add_argument("--ray-address", metavar="ADDR",
                           help="ray executor: the cluster to join (e.g. auto or "
                                "ray://head:10001); default: a local Ray instance on 127.0.0.1")
    execution.add_argument("--devices", type=positive_int, metavar="N",
                           help="GPUs per job, data parallel (keras DataParallel under JAX, "
                                "MirroredStrategy under TensorFlow); default 1")
    execution.add_argument("--cpus-per-job", type=positive_int, metavar="N",
                           help="CPU threads (and Ray CPUs) per job on machines without GPUs "
                                "(default: the cores divided among the parallel jobs)")
    execution.add_argument("--retries", type=_non_negative_int, metavar="N",
                           help="restarts of a job whose worker was killed (it resumes from its "
                                f"last finished epoch; default {defaults.RETRIES})")
    execution.add_argument("--tensorboard", action="store_true",
                           help="also write TensorBoard logs of every epoch to "
                                "RUNDIR/tensorboard/<entry> (view: tensorboard --logdir "
                                "RUNDIR/tensorboard); needs the tensorboard package and "
                                "TensorFlow, under JAX too; changes no result and not the "
                                "protocol fingerprint")

    train.add_argument("--tta", type=int, choices=(1, 2, 4, 8), metavar="N",
                       help="--all: also predict validation and test with N dihedral views "
                            "(1, 2, 4 or 8: flips, then transposes) from each CNN entry's best "
                            "weights, without retraining; adds derived entries <entry>+tta<N> "
                            "(a finished run only gains them)")

    use = parser.add_argument_group("using trained models (--predict, --export)")
    use.add_argument("--entry", metavar="NAME",
                     help="--predict/--export: the entry or ensemble to use (--predict default: "
                          "the entry ranked first on the validation split)")
    use.add_argument("--explain", action="store_true",
                     help="--predict: also write a Grad-CAM overlay per image and CNN entry "
                          "under RUNDIR/predictions/<entry>-<time>/gradcam/")
    use.add_argument("--format", choices=("keras", "savedmodel", "onnx"), dest="export_format",
                     metavar="FORMAT",
                     help="--export: keras (.keras file), savedmodel (TensorFlow SavedModel "
                          "folder) or onnx; default keras")

    ens = parser.add_argument_group("ensembles and reports")
    ens.add_argument("--members", type=_name_list, metavar="A,B,C",
                     help="ensemble members (default: the entries of kind backbone present in "
                          "the run)")
    ens.add_argument("--calibrated", action="store_true",
                     help="--ensemble/--all: build the ensembles from temperature-scaled members "
                          "(each member's temperature fitted on validation; recorded in "
                          "fit.json)")
    ens.add_argument("--rank-by", metavar="METRIC",
                     help="metric that orders the report's ranking (default "
                          f"{defaults.RANK_BY})")
    ens.add_argument("--reference", metavar="NAME",
                     help="the entry every other is compared with in the report's paired tests "
                          f"and comparisons.csv (default {defaults.REFERENCE}; another name must "
                          "be an entry with test predictions)")
    ens.add_argument("--bootstrap", type=positive_int, metavar="N",
                     help="lesion-bootstrap resamples for confidence intervals (default "
                          f"{defaults.BOOTSTRAP})")
    ens.add_argument("--tolerance", type=_probability, metavar="T",
                     help="--check: allowed drop per metric unless the baseline says otherwise "
                          f"(default {defaults.TOLERANCE})")
    ens.add_argument("--allow-different-test-set", action="store_true",
                     help="--check: compare with a baseline measured on other test images "
                          "(warns instead of refusing; the numbers are then not comparable)")

    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show everything: debug logging and, with --all, the workers' and "
                             "the frameworks' output (by default it goes to train.log only)")
    return parser


def _configure_logging(verbose: bool, run_console: bool = False) -> None:
    """Console logging. `--all` (run_console) shows only its own lines, warnings and errors
    (pipeline.console.configure_logging); the other actions show the INFO records too."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if run_console:
        from pipeline.console import configure_logging

        configure_logging(verbose)
        return
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s" if verbose else "%(message)s",
    )


# action (argparse dest) -> (stage module, function); imported lazily so that --report,
# --ensemble and --check never import TensorFlow.
_ACTIONS: dict[str, tuple[str, str]] = {
    "prepare": ("data_utils.cli", "run_prepare"),
    "download": ("data_utils.cli", "run_download"),
    "list": (__name__, "run_list"),
    "all": ("pipeline.all_action", "run_all_action"),
    "ensemble": ("pipeline.ensemble_action", "run_ensemble"),
    "report": ("pipeline.report_action", "run_report"),
    "predict": ("pipeline.predict_action", "run_predict"),
    "export": ("pipeline.export_action", "run_export"),
    "save_baseline": ("reports.cli", "run_save_baseline"),
    "check": ("reports.cli", "run_check"),
}


def run_list(args: argparse.Namespace) -> int:
    """`--list`: the registered backbones (zoo), the entries, the ensembles and the presets.

    Returns:
        0.
    """
    del args  # --list takes no options
    from training.entries import all_entries
    from zoo.cli import backbone_table

    print(backbone_table())
    print()
    print("entries (training stage): " + ", ".join(all_entries()))
    print("ensembles (ensembles stage): " + ", ".join(ENSEMBLE_NAMES))
    print("presets (training stage):")
    for name, preset in PRESETS.items():
        print(f"  {name:<7} {preset.description}")
    return exitcodes.OK


def _dispatch(args: argparse.Namespace) -> int:
    import importlib

    for action, (module, function) in _ACTIONS.items():
        if getattr(args, action):
            return getattr(importlib.import_module(module), function)(args)
    raise AssertionError("argparse guarantees one action")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI. Returns the process exit code (`core.exitcodes`: 0 ok, 1 failed check or
    entry, 2 user error, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose, run_console=args.all)
    from core.errors import BenchmarkError

    try:
        return _dispatch(args)
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return exitcodes.INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
