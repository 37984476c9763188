"""ResNeXt in Keras 3, layer for layer as torchvision builds it, and its safetensors loader.

torchvision layout (v1.5: the stride sits on the grouped 3x3 convolution):
stem conv 7x7/2 (padding 3) + BN + ReLU + max-pool 3x3/2 (padding 1), then four stages of
Bottleneck blocks: conv1x1 -> BN -> ReLU -> grouped conv3x3 (stride, padding 1) -> BN -> ReLU ->
conv1x1 (x4 expansion) -> BN, plus the shortcut (conv1x1 with the stride + BN where the shape
changes), added, ReLU. PyTorch's symmetric padding is reproduced with explicit ZeroPadding2D and
"valid" convolutions ("same" would pad asymmetrically at stride 2). Zero padding before the max
pool equals PyTorch's -inf padding because it follows a ReLU (inputs >= 0).

Keras layers carrying weights are named after the torchvision keys with "." -> "_"
(conv1, bn1, layer1_0_conv2, layer1_0_downsample_0, ...), which is what the loader relies on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np

from zoo.errors import WeightsError, ZooValueError

logger = logging.getLogger(__name__)

BN_EPSILON = 1e-5  # PyTorch's default
BN_MOMENTUM = 0.9  # PyTorch's 0.1, in Keras's convention (irrelevant for inference)
EXPANSION = 4
RESNEXT101_32X8D = {
    "layers": (3, 4, 23, 3),
    "groups": 32,
    "width_per_group": 8,
    "stage_planes": (64, 128, 256, 512),
    "stem_width": 64,
}
_MAX_LISTED = 5


def _conv(
    filters: int, kernel: int, stride: int, name: str, groups: int = 1
) -> keras.layers.Conv2D:
    return keras.layers.Conv2D(
        filters,
        kernel,
        strides=stride,
        padding="valid",
        groups=groups,
        use_bias=False,
        # torchvision's kaiming_normal_(mode="fan_out", relu); a fresh instance per layer,
        # because one unseeded Keras initializer returns the same values on every call.
        kernel_initializer=keras.initializers.VarianceScaling(
            2.0, mode="fan_out", distribution="untruncated_normal"
        ),
        name=name,
    )


def _bn(name: str) -> keras.layers.BatchNormalization:
    return keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)


def _bottleneck(x, prefix: str, planes: int, stride: int, groups: int, base_width: int):
    width = int(planes * (base_width / 64.0)) * groups
    out_channels = planes * EXPANSION
    in_channels = x.shape[-1]

    out = _conv(width, 1, 1, f"{prefix}_conv1")(x)
    out = _bn(f"{prefix}_bn1")(out)
    out = keras.layers.ReLU(name=f"{prefix}-relu1")(out)
    out = keras.layers.ZeroPadding2D(1, name=f"{prefix}-pad2")(out)
    out = _conv(width, 3, stride, f"{prefix}_conv2", groups=groups)(out)
    out = _bn(f"{prefix}_bn2")(out)
    out = keras.layers.ReLU(name=f"{prefix}-relu2")(out)
    out = _conv(out_channels, 1, 1, f"{prefix}_conv3")(out)
    out = _bn(f"{prefix}_bn3")(out)

    shortcut = x
    if stride != 1 or in_channels != out_channels:
        shortcut = _conv(out_channels, 1, stride, f"{prefix}_downsample_0")(x)
        shortcut = _bn(f"{prefix}_downsample_1")(shortcut)
    out = keras.layers.Add(name=f"{prefix}-add")([out, shortcut])
    return keras.layers.ReLU(name=f"{prefix}-out")(out)


def build_resnext(
    input_shape: tuple[int, int, int],
    layers: Sequence[int] = RESNEXT101_32X8D["layers"],
    groups: int = RESNEXT101_32X8D["groups"],
    width_per_group: int = RESNEXT101_32X8D["width_per_group"],
    stage_planes: Sequence[int] = RESNEXT101_32X8D["stage_planes"],
    stem_width: int = RESNEXT101_32X8D["stem_width"],
    name: str = "backbone",
) -> keras.Model:
    """Build a ResNeXt feature extractor (no pooling, no classifier) in the torchvision layout.

    The defaults give ResNeXt101 32x8d; smaller values give the reduced models used to prove
    the port against torchvision (tools/make_resnext_fixture.py).

    Args:
        input_shape: (height, width, 3) of the preprocessed input.
        layers: Bottleneck blocks per stage (torchvision's `layers`).
        groups: cardinality of the grouped 3x3 convolutions.
        width_per_group: torchvision's `width_per_group` (base width).
        stage_planes: `planes` of the four stages (torchvision hard-codes 64, 128, 256, 512);
            each stage outputs 4 x planes channels.
        stem_width: output channels of the stem convolution (torchvision: 64).
        name: the model's name.

    Returns:
        The functional model; output: the last stage's feature map.
    """
    if len(layers) != len(stage_planes):
        raise ZooValueError(
            f"layers {tuple(layers)} and stage_planes {tuple(stage_planes)} differ in length"
        )
    for stage, planes in enumerate(stage_planes, start=1):
        width = int(planes * (width_per_group / 64.0)) * groups
        if width <= 0:
            raise ZooValueError(
                f"stage {stage} has width {width} (planes {planes}, width_per_group "
                f"{width_per_group}, groups {groups}); choose values giving a positive width"
            )
    inputs = keras.Input(shape=input_shape, name="pixels")
    x = keras.layers.ZeroPadding2D(3, name="stem-pad")(inputs)
    x = _conv(stem_width, 7, 2, "conv1")(x)
    x = _bn("bn1")(x)
    x = keras.layers.ReLU(name="stem-relu")(x)
    x = keras.layers.ZeroPadding2D(1, name="stem-pool-pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="maxpool")(x)
    for stage, (blocks, planes) in enumerate(zip(layers, stage_planes, strict=True), start=1):
        for block in range(blocks):
            stride = 2 if stage > 1 and block == 0 else 1
            x = _bottleneck(x, f"layer{stage}_{block}", planes, stride, groups, width_per_group)
    return keras.Model(inputs, x, name=name)


def build_resnext101(input_shape: tuple[int, int, int]) -> keras.Model:
    """ResNeXt101 32x8d (layers [3, 4, 23, 3], cardinality 32, width 8), named "backbone"."""
    return build_resnext(input_shape, **RESNEXT101_32X8D)


def _torch_to_keras(key_prefix: str) -> str:
    return key_prefix.replace(".", "_")


def _expected_arrays(model: keras.Model) -> dict[str, tuple[keras.Variable, str]]:
    """torchvision key -> (Keras variable, conversion) for every weight of backbone and head."""
    expected: dict[str, tuple[keras.Variable, str]] = {}
    for layer in model.get_layer("backbone").layers:
        prefix = layer.name.replace("_", ".")
        if isinstance(layer, keras.layers.Conv2D):
            expected[f"{prefix}.weight"] = (layer.kernel, "conv")
        elif isinstance(layer, keras.layers.BatchNormalization):
            expected[f"{prefix}.weight"] = (layer.gamma, "copy")
            expected[f"{prefix}.bias"] = (layer.beta, "copy")
            expected[f"{prefix}.running_mean"] = (layer.moving_mean, "copy")
            expected[f"{prefix}.running_var"] = (layer.moving_variance, "copy")
    return expected


def _convert(array: np.ndarray, conversion: str) -> np.ndarray:
    array = np.asarray(array, dtype=np.float32)
    if conversion == "conv":
        # PyTorch (out, in/groups, kh, kw) -> Keras (kh, kw, in/groups, out), grouped or not.
        return np.transpose(array, (2, 3, 1, 0))
    if conversion == "dense":
        return np.transpose(array)  # (out, in) -> (in, out)
    return array


def _listing(keys: Sequence[str]) -> str:
    shown = ", ".join(sorted(keys)[:_MAX_LISTED])
    more = len(keys) - _MAX_LISTED
    return shown + (f" and {more} more" if more > 0 else "")


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Read every tensor of a .safetensors file as NumPy arrays (no torch needed).

    Raises:
        WeightsError: missing, truncated or not a safetensors file.
    """
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # SafetensorError, OSError, TypeError for unsupported dtypes
        raise WeightsError(
            f"cannot read {path} as a .safetensors checkpoint ({type(exc).__name__}: {exc}); "
            "the file is corrupt or truncated: delete it and download it again"
        ) from exc


def load_torchvision_safetensors(model: keras.Model, path: Path) -> None:
    """Load a torchvision-layout ResNeXt checkpoint (.safetensors) into an assembled model.

    Keys: conv1.weight, bn1.{weight,bias,running_mean,running_var}, layerS.B.convN.weight,
    layerS.B.bnN.*, layerS.0.downsample.{0,1}.*, fc.weight, fc.bias (`num_batches_tracked`
    ignored). The classifier `fc` is loaded into the "logits" layer when its shape matches the
    model's number of classes and skipped (logged) otherwise or when absent.

    Args:
        model: a model from `zoo.create_backbone` with a ResNeXt "backbone" of the same config.
        path: the .safetensors file.

    Raises:
        WeightsError: unreadable file, missing or unexpected keys, or a backbone shape mismatch.
    """
    tensors = {
        key: value
        for key, value in read_safetensors(path).items()
        if not key.endswith("num_batches_tracked")
    }
    expected = _expected_arrays(model)
    missing = [key for key in expected if key not in tensors]
    unexpected = [
        key for key in tensors if key not in expected and key not in ("fc.weight", "fc.bias")
    ]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_listing(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {_listing(unexpected)}")
        raise WeightsError(
            f"{path} does not match the {model.name} backbone ({'; '.join(parts)}); it must be "
            "a torchvision-layout checkpoint of the same depth, cardinality and width"
        )
    for key, (variable, conversion) in expected.items():
        value = _convert(tensors[key], conversion)
        if tuple(value.shape) != tuple(variable.shape):
            raise WeightsError(
                f"{path}: {key} has shape {tuple(tensors[key].shape)}, which converts to "
                f"{tuple(value.shape)}, but the Keras variable {variable.path} has shape "
                f"{tuple(variable.shape)}; the checkpoint belongs to another configuration"
            )
        variable.assign(value)
    _load_head(model, tensors, path)
    logger.info("loaded %d backbone tensors of %s from %s", len(expected), model.name, path)


def _load_head(model: keras.Model, tensors: dict[str, np.ndarray], path: Path) -> None:
    logits = model.get_layer("logits")
    if "fc.weight" not in tensors or "fc.bias" not in tensors:
        logger.info(
            "%s has no classifier (fc.*); the head of %s stays randomly initialised",
            path,
            model.name,
        )
        return
    kernel = _convert(tensors["fc.weight"], "dense")
    bias = np.asarray(tensors["fc.bias"], dtype=np.float32)
    if kernel.shape != tuple(logits.kernel.shape) or bias.shape != tuple(logits.bias.shape):
        logger.info(
            "classifier of %s has %d classes, the model %d: head not loaded (trained from scratch)",
            path,
            bias.shape[0],
            logits.bias.shape[0],
        )
        return
    logits.kernel.assign(kernel)
    logits.bias.assign(bias)
    logger.info("loaded the %d-class classifier of %s", bias.shape[0], path)
