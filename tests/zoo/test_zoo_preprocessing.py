"""The in-model preprocessing equals each backbone's keras.applications preprocess_input.

For the backbones that preprocess inside the model ("internal": EfficientNet, EfficientNetV2,
ConvNeXt, MobileNetV3) Keras's `preprocess_input` is a pass-through and so is ours; that the whole
chain then matches Keras's ImageNet model is tested in test_zoo_keras_reference.py.
"""

from __future__ import annotations

import logging

import keras
import numpy as np
import pytest

import zoo
from zoo.factory import create_backbone, resolve_preprocessing
from zoo.preprocessing import Preprocess

REFERENCES = {
    "inception_v3": keras.applications.inception_v3.preprocess_input,
    "inception_resnet_v2": keras.applications.inception_resnet_v2.preprocess_input,
    "xception": keras.applications.xception.preprocess_input,
    "nasnet_large": keras.applications.nasnet.preprocess_input,
    "resnext101": lambda x: keras.applications.imagenet_utils.preprocess_input(x, mode="torch"),
    "paper_cnn": lambda x: x / 255.0,  # the study scaled its inputs to [0, 1]
    "convnext_tiny": keras.applications.convnext.preprocess_input,
    "convnext_small": keras.applications.convnext.preprocess_input,
    "efficientnet_v2_s": keras.applications.efficientnet_v2.preprocess_input,
    "efficientnet_b3": keras.applications.efficientnet.preprocess_input,
    "densenet121": keras.applications.densenet.preprocess_input,
    "resnet50_v2": keras.applications.resnet_v2.preprocess_input,
    "mobilenet_v3_large": keras.applications.mobilenet_v3.preprocess_input,
}
MODES = {"densenet121": "torch", "resnet50_v2": "tf", "convnext_tiny": "internal",
         "convnext_small": "internal", "efficientnet_v2_s": "internal",
         "efficientnet_b3": "internal", "mobilenet_v3_large": "internal"}


def _pixels(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (3, 9, 11, 3)).astype(np.float32)


def test_every_backbone_has_a_reference():
    assert sorted(REFERENCES) == sorted(zoo.list_backbones())


@pytest.mark.parametrize("name", zoo.list_backbones())
def test_preprocessing_matches_keras_applications(name):
    pixels = _pixels()
    layer = Preprocess(zoo.get_config(name).preprocessing)
    ours = keras.ops.convert_to_numpy(layer(pixels))
    reference = np.asarray(REFERENCES[name](pixels.copy()))
    np.testing.assert_allclose(ours, reference, rtol=1e-6, atol=1e-6)


def test_modes_of_the_modern_backbones():
    assert {name: zoo.get_config(name).preprocessing for name in MODES} == MODES


def test_internal_mode_passes_raw_pixels_through():
    pixels = np.array([[[[0, 51, 255]]]], np.uint8)
    out = Preprocess("internal")(pixels)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(out), [[[[0.0, 51.0, 255.0]]]])


def test_an_override_applies_to_external_modes_and_not_to_internal_ones(caplog):
    assert resolve_preprocessing(zoo.get_config("densenet121"), None) == "torch"
    assert resolve_preprocessing(zoo.get_config("densenet121"), "unit") == "unit"
    assert resolve_preprocessing(zoo.get_config("xception"), "internal") == "internal"
    with caplog.at_level(logging.WARNING, logger="zoo.factory"):
        assert resolve_preprocessing(zoo.get_config("convnext_tiny"), "unit") == "internal"
    assert "convnext_tiny preprocesses its input inside the model" in caplog.text
    assert "'unit' applies to the other backbones only" in caplog.text
    with pytest.raises(ValueError, match="unknown preprocessing 'bgr'"):
        resolve_preprocessing(zoo.get_config("convnext_tiny"), "bgr")
    model = create_backbone("mobilenet_v3_large", 7, input_shape=32, preprocessing="unit")
    assert model.get_layer("preprocess").mode == "internal"


def test_hand_computed_values():
    pixels = np.array([[[[0.0, 127.5, 255.0]]]], np.float32)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(Preprocess("tf")(pixels)), [[[[-1, 0, 1]]]]
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(Preprocess("unit")(pixels)), [[[[0, 0.5, 1]]]]
    )
    torch_mode = keras.ops.convert_to_numpy(Preprocess("torch")(pixels))
    np.testing.assert_allclose(
        torch_mode, [[[[-0.485 / 0.229, (0.5 - 0.456) / 0.224, (1 - 0.406) / 0.225]]]], rtol=1e-6
    )
    caffe = keras.ops.convert_to_numpy(Preprocess("caffe")(pixels))  # BGR minus BGR means
    np.testing.assert_allclose(caffe, [[[[255 - 103.939, 127.5 - 116.779, 0 - 123.68]]]], rtol=1e-6)


def test_caffe_mode_matches_keras_too():
    pixels = _pixels(1)
    reference = keras.applications.imagenet_utils.preprocess_input(pixels.copy(), mode="caffe")
    ours = keras.ops.convert_to_numpy(Preprocess("caffe")(pixels))
    np.testing.assert_allclose(ours, reference, rtol=1e-6, atol=1e-4)


def test_uint8_input_is_accepted():
    pixels = np.array([[[[0, 51, 255]]]], np.uint8)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(Preprocess("unit")(pixels)), [[[[0, 0.2, 1]]]]
    )


def test_layer_round_trips_through_its_config():
    layer = Preprocess("torch", name="preprocess")
    clone = Preprocess.from_config(layer.get_config())
    assert (clone.mode, clone.name) == ("torch", "preprocess")
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, Preprocess) and restored.mode == "torch"


def test_unknown_mode_is_refused():
    with pytest.raises(
        ValueError,
        match=r"unknown preprocessing 'bgr'; choose one of: tf, caffe, torch, unit, internal",
    ):
        Preprocess("bgr")
