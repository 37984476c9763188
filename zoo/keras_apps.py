"""The `keras.applications` backbones, built without their classification top.

Each is built with `weights=None` but as the graph Keras builds for `weights="imagenet"`, so that
the official no-top file (loaded afterwards by `load_keras_weights`) fits layer for layer and the
assembled model computes what `keras.applications.<Class>(weights="imagenet")` fed through its
`preprocess_input` computes (tests/zoo/test_zoo_keras_reference.py):

- EfficientNetB3 always holds its preprocessing (Rescaling 1/255, Normalization), and for ImageNet
  weights Keras adds a per-channel Rescaling after the Normalization (the original implementation
  divided by the variance, tensorflow/tensorflow#49930); `build_keras_app` inserts it too.
- EfficientNetV2S, ConvNeXt and MobileNetV3Large keep the preprocessing layer Keras puts inside
  them by default (`include_preprocessing=True`; for V2-S it is x/128 - 1, not the "tf" mode's
  x/127.5 - 1). Their configs say "internal": the zoo passes 0-255 through.
- ConvNeXt's no-top graph ends in its head's LayerNormalization, which the pretrained network
  applies after global pooling; Keras does the same with `pooling="avg"`, so these backbones pool
  themselves and their "pool" layer is an identity (`identity_pool`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras

from zoo.errors import WeightsError

logger = logging.getLogger(__name__)

_PREPROCESSING_INSIDE = {"include_preprocessing": True}
_POOLED = {"include_preprocessing": True, "pooling": "avg"}
# name -> (application, extra keyword arguments)
_APPLICATIONS: dict[str, tuple[Callable[..., keras.Model], dict[str, Any]]] = {
    "inception_v3": (keras.applications.InceptionV3, {}),
    "inception_resnet_v2": (keras.applications.InceptionResNetV2, {}),
    "xception": (keras.applications.Xception, {}),
    "nasnet_large": (keras.applications.NASNetLarge, {}),
    "convnext_tiny": (keras.applications.ConvNeXtTiny, _POOLED),
    "convnext_small": (keras.applications.ConvNeXtSmall, _POOLED),
    "efficientnet_v2_s": (keras.applications.EfficientNetV2S, _PREPROCESSING_INSIDE),
    "efficientnet_b3": (keras.applications.EfficientNetB3, {}),
    "densenet121": (keras.applications.DenseNet121, {}),
    "resnet50_v2": (keras.applications.ResNet50V2, {}),
    "mobilenet_v3_large": (keras.applications.MobileNetV3Large, _PREPROCESSING_INSIDE),
}
# keras.src.applications.efficientnet.IMAGENET_STDDEV_RGB (a test checks the two agree).
EFFICIENTNET_STDDEV_RGB = (0.229, 0.224, 0.225)


def build_keras_app(name: str, input_shape: tuple[int, int, int]) -> keras.Model:
    """Build a Keras application without its top, randomly initialised, named "backbone".

    Args:
        name: a key of `_APPLICATIONS` (the registry name of a keras.applications backbone).
        input_shape: (height, width, 3) of the input (0-255 for the "internal" ones).

    Returns:
        The functional base model; its output is the last feature map, or the pooled and
        normalised features for ConvNeXt.
    """
    application, extra = _APPLICATIONS[name]
    # Built under Keras's own model name (EfficientNetV2 looks its blocks up by it; ConvNeXt
    # prefixes its layers with it), renamed afterwards.
    model = application(include_top=False, weights=None, input_shape=input_shape, **extra)
    if name == "efficientnet_b3":
        model = _with_imagenet_rescaling(model)
    model.name = "backbone"
    return model


def identity_pool() -> keras.layers.Layer:
    """The "pool" layer of a backbone that pools itself (ConvNeXt): an identity."""
    return keras.layers.Identity(name="pool")


def _with_imagenet_rescaling(model: keras.Model) -> keras.Model:
    """EfficientNet's graph as Keras builds it for ImageNet weights: a Rescaling by
    1/sqrt(std) per channel right after the input Normalization (a fresh copy of `model`)."""

    def call(layer: keras.layers.Layer, *args: Any, **kwargs: Any) -> Any:
        outputs = layer(*args, **kwargs)
        if isinstance(layer, keras.layers.Normalization):
            scale = [1.0 / math.sqrt(std) for std in EFFICIENTNET_STDDEV_RGB]
            outputs = keras.layers.Rescaling(scale, name="imagenet_rescaling")(outputs)
        return outputs

    return keras.models.clone_model(model, call_function=call)


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
