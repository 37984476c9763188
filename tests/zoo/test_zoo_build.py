"""Every registered backbone builds, runs and has the published size and the agreed layout."""

from __future__ import annotations

from dataclasses import replace

import keras
import numpy as np
import pytest

import zoo
from core.errors import BenchmarkError
from zoo.factory import create_backbone, param_counts, resolve_input_shape

NAMES = zoo.list_backbones()
LAYOUT = ["image", "preprocess", "backbone", "pool", "dropout", "logits", "predictions"]


def _uint8_batch(size: int, batch: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)


STUDY = ["inception_v3", "resnext101", "inception_resnet_v2", "xception", "nasnet_large",
         "paper_cnn"]
MODERN = ["convnext_tiny", "convnext_small", "efficientnet_v2_s", "efficientnet_b3",
          "densenet121", "resnet50_v2", "mobilenet_v3_large"]


def test_registry_holds_the_study_backbones_then_the_seven_modern_ones():
    assert NAMES == STUDY + MODERN
    assert [zoo.get_config(n).input_size for n in NAMES] == [
        299, 224, 299, 299, 331, 224, 224, 224, 384, 300, 224, 224, 224]
    assert {zoo.get_config(n).group for n in STUDY} == {"paper"}
    assert {zoo.get_config(n).group for n in MODERN} == {"modern"}
    assert [zoo.get_config(n).family for n in NAMES] == [
        "Inception", "ResNet", "Inception", "Inception", "NASNet", "paper CNN", "ConvNeXt",
        "ConvNeXt", "EfficientNet", "EfficientNet", "DenseNet", "ResNet", "MobileNet"]
    assert all(zoo.get_config(n).kind == "backbone" and zoo.get_config(n).pretrained
               for n in MODERN)


@pytest.mark.parametrize("name", NAMES)
def test_forward_pass_under_mixed_precision_gives_float32_probabilities(name, mixed_model):
    model = mixed_model(name)
    assert model.get_layer("logits").compute_dtype == "float16"
    size = zoo.get_config(name).min_size
    probabilities = keras.ops.convert_to_numpy(model(_uint8_batch(size), training=False))
    assert probabilities.dtype == np.float32
    assert probabilities.shape == (2, 1000)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert (probabilities >= 0).all()


@pytest.mark.parametrize("name", ["xception", "paper_cnn"])
def test_forward_pass_in_float32(name):
    size = zoo.get_config(name).min_size
    model = create_backbone(name, 7, input_shape=size)
    if name == "paper_cnn":  # the compiled predict path too, where it is cheap
        probabilities = np.asarray(model.predict(_uint8_batch(size, batch=3), verbose=0))
    else:
        probabilities = keras.ops.convert_to_numpy(
            model(_uint8_batch(size, batch=3), training=False)
        )
    assert probabilities.shape == (3, 7)
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_published_parameter_count_with_a_1000_class_head(name, mixed_model):
    config = zoo.get_config(name)
    if name == "paper_cnn":  # its flatten-dense head depends on the input size: use the native one
        model = create_backbone(name, 1000)
    else:  # global average pooling: the count is the same at every size
        model = mixed_model(name)
    counts = param_counts(model)
    if name == "resnext101":  # torchvision counts parameters, not BatchNorm buffers
        assert counts["trainable"] == config.params_1000 == 88_791_336
    else:  # Keras's figures count every weight
        assert counts["total"] == config.params_1000
    assert counts["total"] == counts["trainable"] + counts["non_trainable"]


def test_known_keras_parameter_counts_are_the_configs():
    expected = {
        "inception_v3": 23_851_784,
        "inception_resnet_v2": 55_873_736,
        "xception": 22_910_480,
        "nasnet_large": 88_949_818,
        # issue 12: no top, pooling="avg", + a 1000-way Dense (Keras's include_top=True count
        # for all but MobileNetV3, whose top adds a 1x1 1280-channel convolution)
        "convnext_tiny": 28_589_128,
        "convnext_small": 50_223_688,
        "efficientnet_v2_s": 21_612_360,
        "efficientnet_b3": 12_320_535,
        "densenet121": 8_062_504,
        "resnet50_v2": 25_613_800,
        "mobilenet_v3_large": 3_957_352,
    }
    assert {name: zoo.get_config(name).params_1000 for name in expected} == expected


@pytest.mark.parametrize("name", NAMES)
def test_layout_and_freezable_backbone(name, mixed_model):
    model = mixed_model(name)
    assert [layer.name for layer in model.layers] == LAYOUT
    assert isinstance(model.get_layer("backbone"), keras.Model)
    assert model.get_layer("preprocess").mode == zoo.get_config(name).preprocessing
    assert model.get_layer("predictions").compute_dtype == "float32"
    expected_pool = {"paper_cnn": keras.Sequential, "convnext_tiny": keras.layers.Identity,
                     "convnext_small": keras.layers.Identity}.get(
        name, keras.layers.GlobalAveragePooling2D)
    assert isinstance(model.get_layer("pool"), expected_pool)


@pytest.mark.parametrize("name", ["convnext_tiny", "convnext_small"])
def test_convnext_pools_before_its_head_layernorm_as_pretrained(name, mixed_model):
    """The no-top ConvNeXt ends in the head's LayerNorm, applied after global pooling."""
    backbone = mixed_model(name).get_layer("backbone")
    assert [type(layer).__name__ for layer in backbone.layers[-2:]] == [
        "GlobalAveragePooling2D", "LayerNormalization"]
    assert backbone.output.shape == (None, 768)


def test_freezing_the_backbone_leaves_only_the_head_trainable(mixed_model):
    model = mixed_model("xception")
    backbone = model.get_layer("backbone")
    backbone.trainable = False
    try:
        counts = param_counts(model)
        assert counts["trainable"] == 2048 * 1000 + 1000
        assert counts["total"] == 22_910_480
    finally:
        backbone.trainable = True


def test_preprocessing_override_and_non_square_input():
    model = create_backbone("paper_cnn", 7, input_shape=(64, 96), preprocessing="unit", dropout=0.5)
    assert model.input_shape == (None, 64, 96, 3)
    assert model.get_layer("preprocess").mode == "unit"
    assert model.get_layer("dropout").rate == 0.5
    assert model.predict(np.zeros((2, 64, 96, 3), np.uint8), verbose=0).shape == (2, 7)


@pytest.mark.parametrize(
    ("shape", "expected"),
    [(None, (224, 224, 3)), (64, (64, 64, 3)), ((80, 64), (80, 64, 3)), ((70, 90, 3), (70, 90, 3))],
)
def test_resolve_input_shape_accepts(shape, expected):
    assert resolve_input_shape(zoo.get_config("paper_cnn"), shape) == expected


@pytest.mark.parametrize(
    ("shape", "fragment"),
    [
        (63, "at least 64"),
        ((64, 40), "at least 64"),
        ((64, 64, 1), "3 (RGB) channels"),
        ((64, 64, 3, 1), "(height, width, 3)"),
        ((64.0, 64.0), "integer sizes"),
    ],
)
def test_resolve_input_shape_refuses(shape, fragment):
    with pytest.raises(ValueError, match="paper_cnn") as info:
        resolve_input_shape(zoo.get_config("paper_cnn"), shape)
    assert fragment in str(info.value)
    assert isinstance(info.value, BenchmarkError)


def test_minimum_sizes_follow_keras():
    assert {n: zoo.get_config(n).min_size for n in NAMES} == {
        "inception_v3": 75,
        "resnext101": 32,
        "inception_resnet_v2": 75,
        "xception": 71,
        "nasnet_large": 32,
        "paper_cnn": 64,
        **{name: 32 for name in MODERN},
    }
    with pytest.raises(ValueError, match=r"74x74 is too small for inception_v3.*at least 75"):
        create_backbone("inception_v3", 7, input_shape=74)
    with pytest.raises(ValueError, match=r"31x31 is too small for densenet121.*at least 32"):
        create_backbone("densenet121", 7, input_shape=31)


@pytest.mark.parametrize("name", MODERN)
def test_keras_itself_refuses_below_the_minimum_size(name):
    """The minimum is Keras's: 32 builds (the tests above predict at it), 31 is refused."""
    from zoo.keras_apps import build_keras_app

    with pytest.raises(ValueError, match="at least 32x32"):
        build_keras_app(name, (31, 31, 3))


def test_square_only_backbones_refuse_rectangles():
    config = replace(zoo.get_config("paper_cnn"), square_only=True)
    assert resolve_input_shape(config, 64) == (64, 64, 3)
    with pytest.raises(ValueError, match=r"64x80 .*only square inputs"):
        resolve_input_shape(config, (64, 80))


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        (
            {"name": "resnet50"},
            r"unknown backbone 'resnet50'; choose one of: inception_v3, resnext101",
        ),
        ({"num_classes": 1}, r"num_classes must be an integer >= 2, got 1"),
        ({"num_classes": 7.0}, r"num_classes .* got 7.0"),
        ({"dropout": 1.0}, r"dropout must be a number in \[0, 1\), got 1.0"),
        (
            {"preprocessing": "scale"},
            r"unknown preprocessing 'scale'; choose one of: tf, caffe, torch, unit, internal",
        ),
        (
            {"weights": "imagenet"},
            r"paper_cnn is trained from scratch .* weights must be None, got 'imagenet'",
        ),
    ],
)
def test_bad_arguments_raise_value_errors_naming_the_value(kwargs, pattern):
    arguments = {"name": "paper_cnn", "num_classes": 7, "input_shape": 64, **kwargs}
    with pytest.raises(ValueError, match=pattern) as info:
        create_backbone(**arguments)
    assert isinstance(info.value, BenchmarkError)
