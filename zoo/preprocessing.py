"""The in-model preprocessing layer: raw RGB in [0, 255] -> what each backbone expects.

The modes reproduce `keras.applications.imagenet_utils.preprocess_input` (channels last):
"tf" x/127.5 - 1; "caffe" RGB->BGR then minus the ImageNet BGR means; "torch" x/255 then minus
mean and divided by std per channel; plus "unit" x/255 (the paper's own scaling) and "internal"
(pixels passed on as they are, 0-255: the backbone holds its own preprocessing layers, as
keras.applications builds EfficientNet, EfficientNetV2, ConvNeXt and MobileNetV3, whose
`preprocess_input` is a pass-through).
"""

from __future__ import annotations

import keras
from keras import ops

from zoo.errors import ZooValueError
from zoo.registry import PREPROCESSING_MODES

_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def check_mode(mode: str) -> str:
    """Return `mode` if it is a known preprocessing mode.

    Raises:
        ZooValueError: unknown mode (the message lists the known ones).
    """
    if mode not in PREPROCESSING_MODES:
        raise ZooValueError(
            f"unknown preprocessing {mode!r}; choose one of: {', '.join(PREPROCESSING_MODES)}"
        )
    return mode


@keras.saving.register_keras_serializable(package="dermbench")
class Preprocess(keras.layers.Layer):
    """Scale raw RGB pixels (any numeric dtype, values 0-255) for a backbone.

    Args:
        mode: "tf", "caffe", "torch", "unit" or "internal" (see the module docstring).
    """

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        self.mode = check_mode(mode)

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if self.mode == "internal":
            return x
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "unit":
            return x / 255.0
        if self.mode == "torch":
            mean = ops.convert_to_tensor(_TORCH_MEAN, dtype=self.compute_dtype)
            std = ops.convert_to_tensor(_TORCH_STD, dtype=self.compute_dtype)
            return (x / 255.0 - mean) / std
        mean = ops.convert_to_tensor(_CAFFE_MEAN_BGR, dtype=self.compute_dtype)
        return ops.flip(x, axis=-1) - mean

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "mode": self.mode}
