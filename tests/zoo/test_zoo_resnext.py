"""The Keras ResNeXt reproduces torchvision (fixture: tools/make_resnext_fixture.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import keras
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import zoo
from zoo.errors import WeightsError
from zoo.factory import create_backbone
from zoo.resnext import build_resnext

TINY_WEIGHTS = Path(__file__).resolve().parent / "fixtures" / "resnext_tiny.safetensors"


def test_fixture_is_small():
    assert TINY_WEIGHTS.stat().st_size < 500_000


def test_port_reproduces_torchvision(tiny_resnext, tiny_spec, tiny_io):
    model = create_backbone(
        tiny_resnext,
        tiny_spec["num_classes"],
        input_shape=tiny_spec["image_size"],
        weights=str(TINY_WEIGHTS),
    )
    probabilities = keras.ops.convert_to_numpy(model(tiny_io["images"], training=False))
    assert np.abs(probabilities - tiny_io["probabilities"]).max() <= 1e-5
    logits_model = keras.Model(model.input, model.get_layer("logits").output)
    logits = keras.ops.convert_to_numpy(logits_model(tiny_io["images"], training=False))
    np.testing.assert_allclose(logits, tiny_io["logits"], atol=1e-4, rtol=1e-4)


def test_fixture_is_sensitive_to_the_preprocessing(tiny_resnext, tiny_spec, tiny_io):
    """Control: the same weights with the wrong preprocessing miss the reference by far."""
    model = create_backbone(
        tiny_resnext,
        tiny_spec["num_classes"],
        input_shape=tiny_spec["image_size"],
        weights=str(TINY_WEIGHTS),
        preprocessing="unit",
    )
    probabilities = keras.ops.convert_to_numpy(model(tiny_io["images"], training=False))
    assert np.abs(probabilities - tiny_io["probabilities"]).max() > 1e-3


def test_head_with_another_class_count_is_skipped(tiny_resnext, tiny_spec, caplog):
    keras.utils.set_random_seed(0)
    with caplog.at_level(logging.INFO, logger="zoo.resnext"):
        model = create_backbone(tiny_resnext, 5, input_shape=64, weights=str(TINY_WEIGHTS))
    assert "head not loaded" in caplog.text
    conv1 = np.transpose(load_file(str(TINY_WEIGHTS))["conv1.weight"], (2, 3, 1, 0))
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model.get_layer("backbone").get_layer("conv1").kernel), conv1
    )


def test_missing_and_unexpected_keys_are_listed(tiny_resnext, tmp_path):
    tensors = load_file(str(TINY_WEIGHTS))
    del tensors["layer2.1.bn2.running_var"]
    tensors["layer5.0.conv1.weight"] = np.zeros((1,), np.float32)
    broken = tmp_path / "broken.safetensors"
    save_file(tensors, str(broken))
    with pytest.raises(
        WeightsError,
        match=r"1 missing key\(s\): layer2\.1\.bn2\.running_var; "
        r"1 unexpected key\(s\): layer5\.0\.conv1\.weight",
    ):
        create_backbone(tiny_resnext, 7, input_shape=64, weights=str(broken))


def test_other_architecture_is_refused_by_shape(tiny_resnext, tmp_path):
    tensors = load_file(str(TINY_WEIGHTS))
    tensors["layer1.0.conv2.weight"] = np.zeros((8, 4, 3, 3), np.float32)  # groups 2, not 4
    other = tmp_path / "other.safetensors"
    save_file(tensors, str(other))
    with pytest.raises(WeightsError, match=r"layer1\.0\.conv2\.weight has shape \(8, 4, 3, 3\)"):
        create_backbone(tiny_resnext, 7, input_shape=64, weights=str(other))


def test_truncated_checkpoint_is_refused(tiny_resnext, tmp_path):
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(TINY_WEIGHTS.read_bytes()[:50_000])
    with pytest.raises(
        WeightsError, match=r"truncated.safetensors as a .safetensors checkpoint.*corrupt"
    ):
        create_backbone(tiny_resnext, 7, input_shape=64, weights=str(truncated))


def test_resnext101_layout_matches_torchvision_key_names(mixed_model):
    """Hand count: 1 stem conv + 33 blocks x 3 convs + 4 downsample convs = 104 convolutions."""
    model = mixed_model("resnext101").get_layer("backbone")
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 104
    names = {layer.name for layer in convs}
    assert {"conv1", "layer1_0_downsample_0", "layer3_22_conv3", "layer4_2_conv2"} <= names
    grouped = model.get_layer("layer3_5_conv2")
    assert grouped.groups == 32 and tuple(grouped.kernel.shape) == (3, 3, 1024 // 32, 1024)
    assert grouped.strides == (1, 1) and model.get_layer("layer3_0_conv2").strides == (2, 2)
    assert model.get_layer("layer4_2_bn3").epsilon == 1e-5
    same_shape = [model.get_layer(f"layer3_{block}_conv2").kernel for block in (1, 2)]
    assert not np.array_equal(*map(keras.ops.convert_to_numpy, same_shape))  # independent init
    assert model.output.shape[1:] == (1, 1, 2048)


def test_builder_is_parametrised():
    model = build_resnext(
        (33, 33, 3),
        layers=(1, 1, 1, 1),
        groups=2,
        width_per_group=16,
        stage_planes=(4, 8, 8, 16),
        stem_width=8,
    )
    assert model.output.shape[1:] == (2, 2, 64)
    assert model.get_layer("layer2_0_conv2").kernel.shape == (3, 3, 2, 4)  # width 8*16/64*2 = 4
    with pytest.raises(ValueError, match=r"stage 1 has width 0"):
        build_resnext(
            (33, 33, 3),
            layers=(1, 1, 1, 1),
            groups=2,
            width_per_group=4,
            stage_planes=(4, 8, 8, 16),
        )
    assert model.get_layer("conv1").kernel.shape == (7, 7, 3, 8)


def test_registered_resnext101_uses_torch_preprocessing():
    config = zoo.get_config("resnext101")
    assert (config.preprocessing, config.weights_format) == ("torch", "torchvision_safetensors")
    assert config.weights_url.endswith("resnext101_32x8d.tv_in1k/resolve/main/model.safetensors")


def test_model_survives_a_keras_save_and_load(tiny_resnext, tiny_io, tmp_path):
    model = create_backbone(tiny_resnext, 7, input_shape=70, weights=str(TINY_WEIGHTS), dropout=0.3)
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert [layer.name for layer in restored.layers] == [layer.name for layer in model.layers]
    assert restored.get_layer("preprocess").mode == "torch"
    probabilities = keras.ops.convert_to_numpy(restored(tiny_io["images"], training=False))
    assert np.abs(probabilities - tiny_io["probabilities"]).max() <= 1e-5
