"""`create_backbone`: preprocessing + backbone + head, assembled the same way for every entry.

Layout (docs/ARCHITECTURE.md, "The model"): input (raw RGB 0-255) -> "preprocess" -> "backbone"
(nested model; the protocol freezes/unfreezes it) -> "pool" -> "dropout" -> "logits" (Dense) ->
"predictions" (softmax, float32 even under a mixed-precision policy). "pool" is global average
pooling, except for backbones that pool themselves (ConvNeXt: an identity) or have their own head
(paper_cnn).
"""

from __future__ import annotations

import logging
import numbers
import os
from collections.abc import Sequence

import keras
import numpy as np

from zoo.errors import ZooValueError
from zoo.preprocessing import Preprocess, check_mode
from zoo.registry import BackboneConfig, get_builder, get_config
from zoo.weights import resolve_weights

logger = logging.getLogger(__name__)


def resolve_input_shape(
    config: BackboneConfig, input_shape: int | Sequence[int] | None
) -> tuple[int, int, int]:
    """Validate an input shape for a backbone.

    Args:
        config: the backbone's config.
        input_shape: None (native size), a square size, (height, width) or (height, width, 3).

    Returns:
        (height, width, 3).

    Raises:
        ZooValueError: wrong form, not 3 channels, below the minimum, or non-square where the
            backbone needs square inputs.
    """
    if input_shape is None:
        return (config.input_size, config.input_size, 3)
    if isinstance(input_shape, numbers.Integral):
        input_shape = (int(input_shape), int(input_shape))
    shape = tuple(input_shape)
    if len(shape) == 2:
        shape = (*shape, 3)
    if len(shape) != 3 or not all(isinstance(v, numbers.Integral) for v in shape) or shape[2] != 3:
        raise ZooValueError(
            f"input_shape {input_shape!r} for {config.name}: expected None, a size, "
            "(height, width) or (height, width, 3) with integer sizes and 3 (RGB) channels"
        )
    height, width = int(shape[0]), int(shape[1])
    if min(height, width) < config.min_size:
        raise ZooValueError(
            f"input size {height}x{width} is too small for {config.name}: height and width "
            f"must be at least {config.min_size} (native {config.input_size})"
        )
    if config.square_only and height != width:
        raise ZooValueError(
            f"input size {height}x{width} for {config.name}: only square inputs are supported, "
            f"e.g. {config.input_size}x{config.input_size}"
        )
    return (height, width, 3)


def resolve_preprocessing(config: BackboneConfig, override: str | None) -> str:
    """The preprocessing mode of the "preprocess" layer for a backbone.

    An override (e.g. the paper preset's "unit", the study's pixels in [0, 1]) replaces the mode
    of a backbone whose preprocessing is a separate input scaling. A backbone with "internal"
    preprocessing keeps it: its own first layers normalise raw 0-255 pixels for its ImageNet
    weights, and scaling in front of them would feed those weights images they were never
    trained on. That case is logged.

    Args:
        config: the backbone's config.
        override: a mode, or None for the backbone's own.

    Returns:
        The mode.

    Raises:
        ZooValueError: an unknown override.
    """
    if not override:
        return config.preprocessing
    mode = check_mode(override)
    if config.preprocessing == "internal" and mode != "internal":
        logger.warning(
            "%s preprocesses its input inside the model (raw RGB 0-255); the preprocessing "
            "override %r applies to the other backbones only",
            config.name,
            mode,
        )
        return "internal"
    return mode


def create_backbone(
    name: str,
    num_classes: int,
    input_shape: int | Sequence[int] | None = None,
    weights: str | os.PathLike | None = None,
    dropout: float = 0.0,
    preprocessing: str | None = None,
    weights_dir: str | os.PathLike | None = None,
) -> keras.Model:
    """Build a registered backbone with a classification head.

    Args:
        name: a name from `zoo.list_backbones()`.
        num_classes: units of the "logits" layer (at least 2).
        input_shape: None (native), a square size, (height, width) or (height, width, 3).
        weights: None (random init), "imagenet" (official file: --weights-dir, cache or
            download) or the path of a weights file.
        dropout: rate of the "dropout" layer before the logits, in [0, 1).
        preprocessing: override of the backbone's preprocessing mode (e.g. "unit" = x/255);
            backbones with "internal" preprocessing keep theirs (`resolve_preprocessing`).
        weights_dir: folder holding official weight files (default $DERMBENCH_WEIGHTS_DIR).

    Returns:
        The model: raw RGB (0-255, any dtype) in, float32 class probabilities out.

    Raises:
        ZooValueError: unknown name, bad num_classes/size/dropout/preprocessing/weights value.
        WeightsError, WeightsUnavailableError: weights that fail verification or cannot be had.
    """
    config = get_config(name)
    if (
        not isinstance(num_classes, numbers.Integral)
        or isinstance(num_classes, bool)
        or num_classes < 2
    ):
        raise ZooValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if not isinstance(dropout, numbers.Real) or not 0.0 <= float(dropout) < 1.0:
        raise ZooValueError(f"dropout must be a number in [0, 1), got {dropout!r}")
    shape = resolve_input_shape(config, input_shape)
    mode = resolve_preprocessing(config, preprocessing)
    weights_path = resolve_weights(config, weights, weights_dir)

    builder = get_builder(name)
    inputs = keras.Input(shape=shape, name="image")
    x = Preprocess(mode, name="preprocess")(inputs)
    x = builder.base(shape)(x)
    pool = (
        builder.pool()
        if builder.pool is not None
        else keras.layers.GlobalAveragePooling2D(name="pool")
    )
    x = pool(x)
    x = keras.layers.Dropout(float(dropout), name="dropout")(x)
    x = keras.layers.Dense(int(num_classes), name="logits")(x)
    outputs = keras.layers.Activation("softmax", dtype="float32", name="predictions")(x)
    model = keras.Model(inputs, outputs, name=name)

    if weights_path is not None:
        if builder.load_weights is None:
            raise ZooValueError(f"{name} cannot load weights files; use weights=None")
        builder.load_weights(model, weights_path)
    logger.debug("built %s at %s with %s preprocessing", name, shape, mode)
    return model


def param_counts(model: keras.Model) -> dict[str, int]:
    """Parameter counts of a model in its current trainable state.

    Returns:
        {"total": ..., "trainable": ..., "non_trainable": ...}; BatchNorm moving statistics
        count as non-trainable (as in `model.summary()`).
    """
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    non_trainable = int(sum(np.prod(w.shape) for w in model.non_trainable_weights))
    return {
        "total": trainable + non_trainable,
        "trainable": trainable,
        "non_trainable": non_trainable,
    }
