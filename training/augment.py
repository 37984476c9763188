"""Training-time augmentation as Keras preprocessing layers inside the model.

The study's rotate/shift/flip plus zoom. The layers act only when the model is called with
`training=True` (fit); prediction sees the image unchanged. Backend-neutral (Keras layers); under
JAX the geometric layers are allowed into XLA-compiled steps (`_allow_jit`). Each layer has its own seed derived
from the entry's seed, so a deterministic run draws the same transformations every time.
"""

from __future__ import annotations

from typing import Any

import keras

from training.settings import Augmentation

FLIP_MODES: tuple[str, ...] = ("horizontal", "vertical", "horizontal_and_vertical")


def _flip_mode(flip: Any) -> str | None:
    if flip in (None, False, "none", ""):
        return None
    if flip is True:
        return "horizontal_and_vertical"
    if flip not in FLIP_MODES:
        raise ValueError(f"augmentation flip must be a bool or one of {FLIP_MODES}, got {flip!r}")
    return flip


def build_augmentation(augmentation: Augmentation | None, seed: int = 0) -> keras.Sequential | None:
    """The augmentation block for the training settings' `augmentation`.

    Args:
        augmentation: the augmentation (`training.settings.Augmentation`: flip, rotation in
            degrees either way, shift and zoom as fractions); zero/false values leave that layer
            out. None: no augmentation.
        seed: base seed; layer i uses seed + i.

    Returns:
        A `keras.Sequential` named "augment" (float input in [0, 255], same shape out), or None
        when every transformation is off.

    Raises:
        ValueError: a negative or out-of-range value, or an unknown flip mode.
    """
    if augmentation is None:
        return None
    rotation = float(augmentation.rotation or 0.0)
    shift = float(augmentation.shift or 0.0)
    zoom = float(augmentation.zoom or 0.0)
    if not 0.0 <= rotation <= 180.0:
        raise ValueError(f"augmentation rotation must be in [0, 180] degrees, got {rotation}")
    for name, value in (("shift", shift), ("zoom", zoom)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"augmentation {name} must be in [0, 1), got {value}")
    layers: list[keras.layers.Layer] = []
    flip = _flip_mode(augmentation.flip)
    if flip:
        layers.append(keras.layers.RandomFlip(flip, seed=seed, name="flip"))
    if rotation:
        layers.append(
            keras.layers.RandomRotation(rotation / 360.0, fill_mode="reflect",
                                        seed=seed + 1, name="rotate")
        )
    if shift:
        layers.append(
            keras.layers.RandomTranslation(shift, shift, fill_mode="reflect",
                                           seed=seed + 2, name="shift")
        )
    if zoom:
        layers.append(
            keras.layers.RandomZoom(zoom, zoom, fill_mode="reflect", seed=seed + 3, name="zoom")
        )
    if not layers:
        return None
    if keras.backend.backend() == "jax":
        _allow_jit(layers)
    return keras.Sequential(layers, name="augment")


def _allow_jit(layers: list[keras.layers.Layer]) -> None:
    """Let XLA compile the geometric layers under JAX.

    Keras marks RandomRotation/RandomTranslation/RandomZoom `supports_jit = False` because
    TensorFlow's image-transform kernel has no XLA version; a model holding one is then never
    compiled (`jit_compile` falls back to False). Under JAX their transform is made of jax.numpy
    ops, which jit compiles, and without jit the JAX trainer runs op by op (about 30x slower).
    """
    for layer in layers:
        layer.supports_jit = True
