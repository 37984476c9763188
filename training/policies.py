"""Pure training policies: no framework imports, each one function, each unit-tested.

- `phase_plan`: which phases an entry trains (fine-tuning: frozen base then partial unfreeze;
  from scratch: one phase), with their epochs and learning rates.
- `unfreeze_start` / `trainable_flags`: how much of the base is unfrozen in phase 2.
- `class_weights`: "balanced" loss weights from the training split's class counts.
- `learning_rate`: the documented schedule (linear warmup, then cosine decay), per phase.
- `next_batch_size`: batch-size halving after an out-of-memory error, down to a floor.
- `update_early_stopping`: best score / patience bookkeeping for model selection.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from training.settings import TrainingSettings

# Layer (or functional op) class names that end a block in the backbones' graphs: residual adds
# (ResNeXt, ResNetV2, Xception, EfficientNet, EfficientNetV2, MobileNetV3 as `Add` layers;
# ConvNeXt as the `Add` op of `inputs + x`, listed in the graph's operations, not its layers),
# concatenations (Inception, NASNet cells, DenseNet's dense layers) and InceptionResNetV2's scaled
# residuals. A phase-2 boundary placed right after one of them unfreezes whole blocks instead of
# cutting one in half.
BLOCK_END_TYPES: tuple[str, ...] = ("Add", "Concatenate", "CustomScaleLayer")
BATCH_NORM_TYPES: tuple[str, ...] = ("BatchNormalization", "SyncBatchNormalization")
# Normalisation layers whose parameters stay frozen in phase 2: BatchNorm (its statistics would
# be wrecked by small batches) and, treated the same way, LayerNorm (ConvNeXt).
FROZEN_NORM_TYPES: tuple[str, ...] = (*BATCH_NORM_TYPES, "LayerNormalization")


@dataclass(frozen=True)
class Phase:
    """One training phase of an entry.

    Attributes:
        name: "frozen" (phase 1: base frozen, head trained), "finetune" (phase 2: top of the base
            unfrozen) or "scratch" (everything trained from random initialisation).
        epochs: maximum number of epochs (early stopping may end it sooner).
        lr: peak learning rate of the phase's schedule.
    """

    name: str
    epochs: int
    lr: float


def phase_plan(training: TrainingSettings, pretrained: bool) -> list[Phase]:
    """The phases an entry trains, from the training settings.

    Args:
        training: the training settings (phase1_epochs, phase2_epochs, scratch_epochs,
            phase1_lr, phase2_lr, scratch_lr).
        pretrained: True for an ImageNet backbone (two phases), False for a model trained from
            scratch (one "scratch" phase).

    Returns:
        The phases in order; phases with 0 epochs are left out.
    """
    if pretrained:
        phases = [
            Phase("frozen", int(training.phase1_epochs), float(training.phase1_lr)),
            Phase("finetune", int(training.phase2_epochs), float(training.phase2_lr)),
        ]
    else:
        phases = [Phase("scratch", int(training.scratch_epochs), float(training.scratch_lr))]
    return [p for p in phases if p.epochs > 0]


def unfreeze_start(
    layer_types: Sequence[str], fraction: float, block_end_types: Sequence[str] = BLOCK_END_TYPES
) -> int:
    """Index of the first base layer that is unfrozen in phase 2.

    The top `fraction` of the base's layers (in topological order) is unfrozen:
    the raw boundary is `n - round(fraction * n)`. It is then snapped to the nearest block
    boundary (the position right after a layer whose class is in `block_end_types`) within
    half a block's reach, i.e. within 10% of the layers, so that whole blocks are unfrozen.
    Without such a layer nearby the raw boundary is kept.

    Args:
        layer_types: class names of the base's layers (and functional ops), in topological
            order (e.g. "Conv2D", "Add"); `training.model.base_operations` lists them.
        fraction: share of layers to unfreeze, in [0, 1]. 0 unfreezes nothing (returns n),
            1 everything (returns 0).
        block_end_types: class names that end a block.

    Returns:
        The index i: layers[i:] are unfrozen (except normalisation, see `trainable_flags`).

    Raises:
        ValueError: fraction outside [0, 1].
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"unfreeze_fraction must be in [0, 1], got {fraction}")
    n = len(layer_types)
    raw = n - int(round(fraction * n))
    if raw in (0, n):
        return raw
    reach = max(1, n // 10)
    boundaries = [i + 1 for i, t in enumerate(layer_types[:-1]) if t in block_end_types]
    near = [b for b in boundaries if abs(b - raw) <= reach]
    if not near:
        return raw
    # Nearest boundary; on a tie prefer unfreezing less (the later boundary).
    return min(near, key=lambda b: (abs(b - raw), -b))


def trainable_flags(
    layer_types: Sequence[str], start: int, frozen_types: Sequence[str] = FROZEN_NORM_TYPES
) -> list[bool]:
    """Per-layer trainable flags for phase 2: layers from `start` on, normalisation never.

    BatchNorm layers stay frozen (and so run in inference mode with their ImageNet statistics):
    small fine-tuning batches would otherwise wreck the running statistics. LayerNorm has no
    running statistics, but its scale and offset are kept at their ImageNet values the same way,
    so that phase 2 treats every backbone's normalisation alike.

    Args:
        layer_types: class names of the base's layers, in order.
        start: the first unfrozen index (from `unfreeze_start`).
        frozen_types: class names of the normalisation layers that stay frozen.

    Returns:
        One bool per layer.
    """
    return [i >= start and t not in frozen_types for i, t in enumerate(layer_types)]


def class_weights(counts: Sequence[int], mode: str | None = "balanced") -> dict[int, float]:
    """Loss weight per class index from the training split's class counts.

    "balanced" gives class c the weight n / (k * count_c), where n is the number of training
    samples and k the number of classes present (the same rule as scikit-learn's
    `compute_class_weight("balanced")`), so every present class contributes equally to the loss.
    Classes absent from training get weight 1.0 (they never occur in a batch).

    Args:
        counts: number of training samples per class index (canonical class order).
        mode: "balanced", or None/"none" for all-ones weights.

    Returns:
        {class index: weight} for every class index.

    Raises:
        ValueError: unknown mode, negative counts, or no samples at all.
    """
    counts = [int(c) for c in counts]
    if any(c < 0 for c in counts):
        raise ValueError(f"class counts must be >= 0, got {counts}")
    if mode in (None, "none"):
        return {i: 1.0 for i in range(len(counts))}
    if mode != "balanced":
        raise ValueError(f"class_weighting must be 'balanced' or 'none', got {mode!r}")
    n = sum(counts)
    if n == 0:
        raise ValueError("the training split holds no samples; cannot weight classes")
    k = sum(1 for c in counts if c > 0)
    return {i: (n / (k * c) if c > 0 else 1.0) for i, c in enumerate(counts)}


def schedule_steps(epochs: int, steps_per_epoch: int, warmup_epochs: float) -> tuple[int, int]:
    """Warmup and decay steps of one phase.

    Args:
        epochs: epochs of the phase.
        steps_per_epoch: optimizer steps per epoch.
        warmup_epochs: epochs of linear warmup (may be fractional), capped at half the phase.

    Returns:
        (warmup_steps, decay_steps), decay_steps >= 1.
    """
    total = max(1, int(epochs) * int(steps_per_epoch))
    warmup = min(int(round(float(warmup_epochs) * steps_per_epoch)), total // 2)
    return warmup, max(1, total - warmup)


def learning_rate(
    step: int, base_lr: float, warmup_steps: int, decay_steps: int, alpha: float = 0.0
) -> float:
    """The learning rate at optimizer step `step` (0-based) within a phase.

    Linear warmup from 0 to `base_lr` over `warmup_steps`, then cosine decay from `base_lr` to
    `alpha * base_lr` over `decay_steps`, constant afterwards. This is exactly what
    `keras.optimizers.schedules.CosineDecay(0.0, decay_steps, alpha, warmup_target=base_lr,
    warmup_steps=warmup_steps)` computes (or, without warmup, `CosineDecay(base_lr, ...)`).

    Args:
        step: optimizer iterations done in this phase.
        base_lr: the phase's peak learning rate.
        warmup_steps: steps of linear warmup (0 for none).
        decay_steps: steps of cosine decay after the warmup.
        alpha: final learning rate as a fraction of `base_lr`.

    Returns:
        The learning rate.
    """
    step = min(max(step, 0), warmup_steps + decay_steps)
    if step < warmup_steps:
        return base_lr * step / warmup_steps
    done = (step - warmup_steps) / decay_steps
    return base_lr * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * done)) + alpha)


def next_batch_size(current: int, floor: int) -> int | None:
    """The batch size to retry with after an out-of-memory error.

    Args:
        current: the batch size that ran out of memory.
        floor: the smallest batch size worth trying (min_batch_size).

    Returns:
        current // 2, or None when that is below `floor` (give up).
    """
    half = int(current) // 2
    return half if half >= max(1, int(floor)) else None


@dataclass(frozen=True)
class EarlyStopping:
    """Model-selection state: best validation score, its epoch, epochs without improvement."""

    best: float = -math.inf
    best_epoch: int = -1
    waited: int = 0


def update_early_stopping(
    state: EarlyStopping, score: float, epoch: int, patience: int, min_delta: float = 0.0
) -> tuple[EarlyStopping, bool, bool]:
    """Account for one epoch's validation score.

    Args:
        state: the state before this epoch.
        score: the epoch's validation balanced accuracy (higher is better; NaN never improves).
        epoch: the global epoch index of the entry.
        patience: epochs without improvement tolerated before stopping (0 disables stopping).
        min_delta: an improvement must exceed the best by more than this.

    Returns:
        (new state, improved, stop).
    """
    improved = not math.isnan(score) and score > state.best + min_delta
    if improved:
        new = EarlyStopping(best=float(score), best_epoch=int(epoch), waited=0)
    else:
        new = EarlyStopping(best=state.best, best_epoch=state.best_epoch, waited=state.waited + 1)
    stop = patience > 0 and new.waited >= patience
    return new, improved, stop
