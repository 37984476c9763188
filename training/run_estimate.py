"""How long one `benchmark.py --all` run takes on an accelerator, estimated from measured
training throughputs (an ESTIMATE, not a measurement).

tools/gpu_benchmark.py measures each backbone's training step in images/s and its compile +
warmup time; `estimate_run` turns them into the accelerator seconds of every entry of a preset's
run on HAM10000, with the arithmetic spelled out. The entries, their phases and epochs come from
the library (`training.entries`, `policies.phase_plan`, `training.presets`), so the estimate
follows the protocol when it changes.

Per entry: training images x epochs / images/s (an epoch of the "frozen" phase at
`FROZEN_STEP_FRACTION`: the base is frozen, so it is run forward only), plus the validation
predictions after every epoch and the final val + test predictions at `INFERENCE_FRACTION` of a
training step per image, plus the measured compile+warmup time once per phase; the SVM baseline
is one feature pass over all images. An upper bound in one way (no early stopping) and a lower
one in another (no start-up, data preparation, SVM fitting, ensembles or report).
"""

from __future__ import annotations

from collections.abc import Mapping

import zoo
from core import defaults
from core.facts import HAM10000_IMAGES
from training import policies
from training.entries import all_entries, backbone_of, is_svm_entry
from training.presets import get_preset
from training.settings import TrainingSettings

# Phase 1 trains the head on a frozen base: forward only through the base, ~1/3 of a full step.
FROZEN_STEP_FRACTION = 1 / 3
INFERENCE_FRACTION = 1 / 3  # predicting one image ~= the forward third of training on it


def split_sizes(n_images: int = HAM10000_IMAGES,
                ratios: tuple[float, float, float] = defaults.RATIOS) -> tuple[int, int, int]:
    """(train, val, test) image counts of a split of `n_images` by `ratios`."""
    train = round(n_images * ratios[0])
    val = round(n_images * ratios[1])
    return train, val, n_images - train - val


def entry_seconds(entry: str, images_per_s: float, compile_s: float,
                  training: TrainingSettings) -> tuple[float, str]:
    """Estimated accelerator seconds of one entry of a run on HAM10000, and the arithmetic.

    Args:
        entry: the entry name.
        images_per_s: its backbone's measured training throughput.
        compile_s: its backbone's measured compile + warmup seconds (counted once per phase).
        training: the preset's training settings (phases and epochs).

    Returns:
        (seconds, the arithmetic as one line).
    """
    n_train, n_val, n_test = split_sizes()
    ips = float(images_per_s)
    if is_svm_entry(entry):
        seconds = HAM10000_IMAGES / (ips / INFERENCE_FRACTION)
        return seconds, (f"features of {HAM10000_IMAGES} img / (3 x {ips:.4g} img/s) = "
                         f"{seconds:.0f} s (SVM fit on CPU not counted)")
    phases = policies.phase_plan(training, bool(zoo.get_config(backbone_of(entry)).pretrained))
    epochs = sum(p.epochs for p in phases)
    later_first = list(reversed(phases))
    train_epochs = sum(p.epochs * (FROZEN_STEP_FRACTION if p.name == "frozen" else 1)
                       for p in later_first)
    terms = [f"{p.epochs}/3" if p.name == "frozen" else f"{p.epochs}" for p in later_first]
    epochs_text = terms[0] if len(terms) == 1 else f"({' + '.join(terms)})"
    train_s = n_train * train_epochs / ips
    eval_s = (n_val * epochs + n_val + n_test) / (ips / INFERENCE_FRACTION)
    total = train_s + eval_s + len(phases) * float(compile_s)
    text = (f"{n_train} img x {epochs_text} epochs / {ips:.4g} img/s = {train_s:.0f} s train"
            f" + ({n_val} x {epochs} + {n_val + n_test}) img / (3 x {ips:.4g}) = {eval_s:.0f} s"
            f" predict + {len(phases)} x {float(compile_s):.0f} s compile = {total:.0f} s")
    return total, text


def estimate_run(measured: Mapping[str, tuple[float, float]],
                 preset: str = "native") -> dict:
    """Estimate the accelerator time of one `benchmark.py --all --preset <preset>` run.

    Args:
        measured: {backbone: (training images/s, compile + warmup seconds)} of the measured
            backbones.
        preset: the preset whose phases, epochs and batch size are assumed.

    Returns:
        {"seconds", "hours", "entries": {entry: {"seconds", "arithmetic"}}, "missing": [entries
        whose backbone was not measured], "caveats": [what the estimate assumes]}.
    """
    training = get_preset(preset).training
    entries, missing = {}, []
    for entry in all_entries():
        numbers = measured.get(backbone_of(entry))
        if numbers is None:
            missing.append(entry)
            continue
        seconds, text = entry_seconds(entry, numbers[0], numbers[1], training)
        entries[entry] = {"seconds": seconds, "arithmetic": text}
    total = sum(e["seconds"] for e in entries.values())
    n_train, n_val, n_test = split_sizes()
    caveats = [
        f"HAM10000 {HAM10000_IMAGES} images split {n_train}/{n_val}/{n_test} (train/val/test); "
        f"{preset} preset: phase 1 {training.phase1_epochs} + phase 2 "
        f"{training.phase2_epochs} epochs, paper_cnn {training.scratch_epochs} epochs, "
        f"batch {training.batch_size}",
        "no early stopping assumed and phase 2 timed with the whole network trainable "
        f"(the protocol unfreezes the top {training.unfreeze_fraction:.0%} with BatchNorm "
        "frozen): an upper bound for training",
        "not counted: machine start-up, data download/cache preparation, SVM fitting (CPU), "
        "ensembles and report; --folds K multiplies the total by K",
    ]
    return {"seconds": total, "hours": total / 3600, "entries": entries, "missing": missing,
            "caveats": caveats}
