"""The four `keras.applications` backbones, built without their classification top."""

from __future__ import annotations

import logging
from pathlib import Path

import keras

from zoo.errors import WeightsError

logger = logging.getLogger(__name__)

_APPLICATIONS = {
    "inception_v3": keras.applications.InceptionV3,
    "inception_resnet_v2": keras.applications.InceptionResNetV2,
    "xception": keras.applications.Xception,
    "nasnet_large": keras.applications.NASNetLarge,
}


def build_keras_app(name: str, input_shape: tuple[int, int, int]) -> keras.Model:
    """Build a Keras application without its top, randomly initialised, named "backbone".

    Args:
        name: one of inception_v3, inception_resnet_v2, xception, nasnet_large.
        input_shape: (height, width, 3) of the preprocessed input.

    Returns:
        The functional base model; its output is the last feature map (no pooling).
    """
    application = _APPLICATIONS[name]
    return application(include_top=False, weights=None, input_shape=input_shape, name="backbone")


def load_keras_weights(model: keras.Model, path: Path) -> None:
    """Load a Keras no-top weights file (.h5 as published, or .weights.h5) into the backbone.

    Args:
        model: the assembled model (its "backbone" layer receives the weights).
        path: the weights file.

    Raises:
        WeightsError: the file cannot be read or does not fit the backbone.
    """
    backbone = model.get_layer("backbone")
    try:
        backbone.load_weights(str(path))
    except Exception as exc:  # h5py/OSError/ValueError: all mean "this file does not fit"
        raise WeightsError(
            f"cannot load weights file {path} into {model.name}: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}; the file is corrupt or is not "
            "the no-top weights of this architecture (delete it and download it again, or pass "
            "weights='imagenet')"
        ) from exc
    logger.info("loaded backbone weights of %s from %s", model.name, path)
