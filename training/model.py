"""The training model: how it is assembled, which of its layers train in each phase, and how it is
compiled.

`build_training_model` puts the zoo model behind a uint8 input and the augmentation layers
(`training.augment`); `configure_phase` sets the trainable flags of a phase, walking every
nested layer (`set_trainable`): phase 2 unfreezes the top `unfreeze_fraction` of the base's
layers and ops (`base_operations`), snapped to a block end (`policies.unfreeze_start`), and keeps
every BatchNorm frozen (inference mode, ImageNet statistics) and every LayerNorm (ConvNeXt) frozen
the same way (its scale and offset keep their ImageNet values; it has no batch statistics, so this
is for one rule across backbones, not for small batches); `compile_phase` compiles it with the phase's optimizer
(`make_optimizer`: AdamW or Adam with `policies.learning_rate`'s schedule), the loss
(`make_loss`) and the backend's `jit_compile` (`jit_compile_setting`). The protocol
(`training.protocol`) and tools/gpu_benchmark.py build and compile through these same functions,
so the tool measures the step that training runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import keras

import zoo
from core.classes import NUM_CLASSES
from training import policies
from training.augment import build_augmentation
from training.errors import ProtocolError
from training.settings import TrainingSettings

logger = logging.getLogger(__name__)


@dataclass
class TrainingModel:
    """The assembled model and handles on its parts."""

    model: keras.Model
    net: keras.Model  # the zoo model (preprocess, backbone, pool, dropout, logits, predictions)
    base: keras.layers.Layer  # net's "backbone"
    # The same layers and variables as `model`, never compiled: its predict function is traced
    # once and survives the recompilation of each phase (large graphs take long to trace).
    infer: keras.Model


def build_training_model(
    backbone: str,
    image_size: int,
    training: TrainingSettings,
    weights: str | None = None,
    weights_dir: str | None = None,
    seed: int = 0,
) -> TrainingModel:
    """Input uint8 (s, s, 3) -> float32 -> augmentation -> the zoo model.

    Args:
        backbone: zoo backbone name.
        image_size: square input size.
        training: the training settings (dropout, preprocessing, augmentation).
        weights: initial weights for zoo.create_backbone (None, "imagenet" or a file).
        weights_dir: folder with official weight files.
        seed: augmentation seed.

    Returns:
        The model and its parts.
    """
    inputs = keras.Input((image_size, image_size, 3), dtype="uint8", name="image")
    x = keras.ops.cast(inputs, "float32")
    augment = build_augmentation(training.augmentation, seed=seed)
    if augment is not None:
        x = augment(x)
    net = zoo.create_backbone(
        backbone,
        NUM_CLASSES,
        input_shape=(image_size, image_size, 3),
        weights=weights,
        dropout=float(training.dropout),
        preprocessing=training.preprocessing,
        weights_dir=weights_dir,
    )
    outputs = net(x)
    model = keras.Model(inputs, outputs, name=f"{backbone}_training")
    infer = keras.Model(inputs, outputs, name=f"{backbone}_inference")
    return TrainingModel(model=model, net=net, base=net.get_layer("backbone"), infer=infer)


def all_sublayers(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    """Every layer nested inside `layer` (recursively through nested models), `layer` excluded."""
    found: list[keras.layers.Layer] = []
    stack = list(getattr(layer, "layers", []))
    while stack:
        sub = stack.pop()
        found.append(sub)
        stack.extend(getattr(sub, "layers", []))
    return found


def set_trainable(layer: keras.layers.Layer, value: bool) -> None:
    """Set `trainable` on a layer and explicitly on every nested layer.

    (Setting it on an outer functional model does not reliably reach the layers of a nested
    model that was frozen before, so every level is set.)

    Args:
        layer: a layer or model.
        value: the flag.
    """
    layer.trainable = value
    for sub in all_sublayers(layer):
        sub.trainable = value


# Normalisation layers kept frozen in phase 2 wherever they sit in the base (nested ones too):
# BatchNorm (inference mode, ImageNet statistics) and LayerNorm (ConvNeXt; scale and offset kept),
# the classes of `policies.FROZEN_NORM_TYPES`.
FROZEN_NORM_LAYERS: tuple[type, ...] = (keras.layers.BatchNormalization,
                                        keras.layers.LayerNormalization)


def base_operations(base: keras.layers.Layer) -> list[Any]:
    """The base's layers and functional ops in topological order (the unit of `unfreeze_fraction`).

    The ops matter where a block ends in one: ConvNeXt's residual `inputs + x` is an `Add` op of
    the graph, not a layer. For the study's backbones the ops are exactly the layers.
    """
    return list(getattr(base, "operations", None) or getattr(base, "layers", []))


def operation_type(operation: Any) -> str:
    """The type name `policies` sees for a base operation: a layer's class name; a functional
    op's class name where it merges two or more graph tensors (ConvNeXt's residual `inputs + x`
    is an "Add", a block end), else the name + "Op" (MobileNetV3's `x + 3` inside its hard
    sigmoid is an "AddOp", no block end)."""
    name = type(operation).__name__
    if isinstance(operation, keras.layers.Layer):
        return name
    nodes = getattr(operation, "_inbound_nodes", [])
    return name if nodes and len(nodes[0].input_tensors) >= 2 else f"{name}Op"


def phase2_start(base: keras.layers.Layer, fraction: float) -> tuple[list[Any], list[str], int]:
    """The base's operations, their type names (`operation_type`) and the first one phase 2
    unfreezes.

    Args:
        base: the backbone.
        fraction: `unfreeze_fraction`.

    Returns:
        (operations, type names, start index from `policies.unfreeze_start`).
    """
    operations = base_operations(base)
    types = [operation_type(operation) for operation in operations]
    return operations, types, policies.unfreeze_start(types, float(fraction))


def configure_phase(tm: TrainingModel, phase: policies.Phase, training: TrainingSettings) -> int:
    """Set the trainable flags for a phase.

    frozen: base frozen (inference-mode BatchNorm), head trainable. finetune: the top of the base
    per `policies.unfreeze_start`, snapped to a block end, with every normalisation layer of the
    base frozen (BatchNorm, and LayerNorm the same way, `FROZEN_NORM_LAYERS`). scratch: everything.

    Args:
        tm: the training model.
        phase: the phase (its name decides).
        training: the settings (`unfreeze_fraction`).

    Returns:
        The number of trainable parameters in this phase.
    """
    set_trainable(tm.model, True)
    if phase.name == "frozen":
        set_trainable(tm.base, False)
    elif phase.name == "finetune":
        operations, types, start = phase2_start(tm.base, training.unfreeze_fraction)
        flags = policies.trainable_flags(types, start)
        for operation, flag in zip(operations, flags, strict=True):
            if isinstance(operation, keras.layers.Layer):  # functional ops hold no weights
                operation.trainable = flag
        for layer in all_sublayers(tm.base):
            if isinstance(layer, FROZEN_NORM_LAYERS):
                layer.trainable = False
        logger.info("phase 2 unfreezes base operations %d..%d of %d (normalisation stays "
                    "frozen)", start, len(operations) - 1, len(operations))
    return int(zoo.param_counts(tm.model)["trainable"])


class SparseCrossentropyWithSmoothing(keras.losses.Loss):
    """Sparse categorical cross-entropy with label smoothing (Keras's sparse loss has none)."""

    def __init__(self, label_smoothing: float = 0.0, name: str = "smoothed_crossentropy",
                 **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        y = keras.ops.one_hot(keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32"),
                              keras.ops.shape(y_pred)[-1], dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(
            y, y_pred, label_smoothing=self.label_smoothing)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def make_loss(training: TrainingSettings) -> keras.losses.Loss:
    """Sparse categorical cross-entropy, with `training.label_smoothing` when it is not 0.

    Class weights are not part of the loss: `fit` applies them (`policies.class_weights`).
    """
    smoothing = float(training.label_smoothing)
    return (SparseCrossentropyWithSmoothing(smoothing) if smoothing
            else keras.losses.SparseCategoricalCrossentropy())


def make_optimizer(training: TrainingSettings, phase: policies.Phase, steps_per_epoch: int):
    """AdamW (or Adam) with the phase's schedule (`policies.learning_rate`).

    Args:
        training: the settings (optimizer, weight decay, schedule, warmup, floor).
        phase: the phase (epochs and peak learning rate).
        steps_per_epoch: optimizer steps per epoch.

    Returns:
        The Keras optimizer.

    Raises:
        ProtocolError: unknown optimizer or schedule.
    """
    warmup, decay = policies.schedule_steps(
        phase.epochs, steps_per_epoch, float(training.warmup_epochs))
    alpha = float(training.min_lr_fraction)
    schedule_name = training.schedule
    if schedule_name == "constant":
        alpha = 1.0
    elif schedule_name != "cosine":
        raise ProtocolError(f"training.schedule must be 'cosine' or 'constant', got {schedule_name!r}")
    if warmup:
        schedule = keras.optimizers.schedules.CosineDecay(
            0.0, decay, alpha=alpha, warmup_target=phase.lr, warmup_steps=warmup)
    else:
        schedule = keras.optimizers.schedules.CosineDecay(phase.lr, decay, alpha=alpha)
    name = training.optimizer
    if name == "adamw":
        return keras.optimizers.AdamW(learning_rate=schedule,
                                      weight_decay=float(training.weight_decay))
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=schedule)
    raise ProtocolError(f"training.optimizer must be 'adamw' or 'adam', got {name!r}")


def jit_compile_setting(training: TrainingSettings) -> bool | str:
    """`jit_compile` for `Model.compile`: training.jit_compile (default False) under TensorFlow.

    Under JAX always True: JAX has no graph mode besides XLA, and jit_compile=False makes its
    trainer run every step op by op (tens of times slower).
    """
    if keras.backend.backend() == "jax":
        return True
    return training.jit_compile


def compile_model(model: keras.Model, training: TrainingSettings, optimizer: Any,
                  jit_compile: bool | str | None = None) -> None:
    """Compile with the protocol's loss (`make_loss`), accuracy metric and `jit_compile`.

    Args:
        model: the training model.
        training: the settings (label smoothing, jit_compile).
        optimizer: the optimizer (`make_optimizer` in the protocol).
        jit_compile: None: `jit_compile_setting(training)`; else passed to Keras as given.
    """
    loss = make_loss(training)
    model.compile(
        optimizer=optimizer,
        loss=loss,
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=jit_compile_setting(training) if jit_compile is None else jit_compile,
    )


def compile_phase(tm: TrainingModel, training: TrainingSettings, phase: policies.Phase,
                  steps_per_epoch: int) -> None:
    """Compile the model for a phase: fresh optimizer, class-weighted cross-entropy, accuracy.

    Args:
        tm: the training model.
        training: the settings.
        phase: the phase (its schedule, `make_optimizer`).
        steps_per_epoch: optimizer steps per epoch.
    """
    compile_model(tm.model, training, make_optimizer(training, phase, steps_per_epoch))
