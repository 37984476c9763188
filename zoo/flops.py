"""FLOPs per image, counted by walking a built model's layers (no profiler, any backend).

Counted: 2 x multiply-accumulates of Conv2D (grouped too, e.g. ConvNeXt's depthwise 7x7),
DepthwiseConv2D, SeparableConv2D (depthwise + pointwise) and Dense layers (on vectors or, as in
ConvNeXt's pointwise layers, at every spatial position), from each layer's kernel size and output
shape; squeeze-and-excitation blocks count through their 1x1 convolutions.
Not counted: biases, normalisation (BatchNorm, LayerNorm, the preprocessing Rescaling and
Normalization), activations, pooling, elementwise additions and multiplications (layers or
functional ops), concatenations, padding and reshaping (together about 1 % for these networks).

Every other layer or op type is refused (`ZooValueError` naming it) rather than counted as zero:
a new layer type must be classified here before its model's FLOPs are reported.
"""

from __future__ import annotations

import math
from functools import cache

import keras

from core.classes import CLASSES
from zoo.errors import ZooValueError

# Layers without multiply-accumulates against a learned kernel.
_FREE_LAYERS: tuple[type, ...] = (
    keras.layers.InputLayer,
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.Normalization,
    keras.layers.Rescaling,
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.Softmax,
    keras.layers.Add,
    keras.layers.Subtract,
    keras.layers.Multiply,
    keras.layers.Average,
    keras.layers.Maximum,
    keras.layers.Minimum,
    keras.layers.Concatenate,
    keras.layers.Dropout,
    keras.layers.ZeroPadding2D,
    keras.layers.Cropping2D,
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling2D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.Flatten,
    keras.layers.Reshape,
    keras.layers.Permute,
    keras.layers.Identity,
)
# Elementwise layers defined outside keras.layers, by module and class name: the zoo's input
# preprocessing, InceptionResNetV2's residual scaling, ConvNeXt's layer scale and stochastic depth.
_FREE_CUSTOM_LAYERS: frozenset[str] = frozenset({
    "zoo.preprocessing.Preprocess",
    "keras.src.applications.inception_resnet_v2.CustomScaleLayer",
    "keras.src.applications.convnext.LayerScale",
    "keras.src.applications.convnext.StochasticDepth",
})
# Functional ops (not layers) that are elementwise or reshape: ConvNeXt's residual `inputs + x`,
# MobileNetV3's hard sigmoid `relu6(x + 3) * (1 / 6)`.
_FREE_OPS: frozenset[str] = frozenset({
    "Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Negative", "Maximum", "Minimum",
    "Clip", "Cast", "Reshape", "Transpose", "Concatenate", "Relu", "Relu6", "Sigmoid",
    "HardSigmoid", "HardSilu", "Silu", "Gelu",
})


def _qualified(operation: object) -> str:
    return f"{type(operation).__module__}.{type(operation).__name__}"


def _outputs_of(layer: keras.layers.Layer) -> list[tuple]:
    """Output shapes of every symbolic call of `layer` (Keras records one node per call)."""
    shapes = []
    for node in getattr(layer, "_inbound_nodes", []):
        for tensor in node.outputs:
            shapes.append(tuple(tensor.shape))
    return shapes


def _macs_per_position(layer: keras.layers.Layer) -> int | None:
    """Multiply-accumulates per output position; 0 for free layers; None for unknown ones."""
    if isinstance(layer, keras.layers.SeparableConv2D):
        # The depthwise and the pointwise convolution both run at the output resolution.
        return math.prod(layer.depthwise_kernel.shape) + math.prod(layer.pointwise_kernel.shape)
    if isinstance(layer, keras.layers.Conv2D | keras.layers.DepthwiseConv2D | keras.layers.Dense):
        # Conv2D kernel (kh, kw, cin/groups, cout); DepthwiseConv2D (kh, kw, cin, multiplier);
        # Dense (in, out): the kernel size is the MACs per output position in every case.
        return math.prod(layer.kernel.shape)
    if isinstance(layer, _FREE_LAYERS) or _qualified(layer) in _FREE_CUSTOM_LAYERS:
        return 0
    return None


def _layer_flops(layer: keras.layers.Layer) -> int:
    per_position = _macs_per_position(layer) or 0
    total = 0
    for shape in _outputs_of(layer):
        positions = math.prod(shape[1:-1])  # spatial positions (channels last); 1 for Dense
        total += 2 * positions * per_position
    return total


def uncounted_operations(model: keras.Model) -> list[str]:
    """The layers and ops of `model` (nested ones too) whose cost this module does not know.

    Returns:
        "name (module.Class)" per unknown layer or op; empty when every one is classified.
    """
    unknown = []
    for operation in getattr(model, "operations", model.layers):
        if isinstance(operation, keras.Model):
            unknown += uncounted_operations(operation)
        elif isinstance(operation, keras.layers.Layer):
            if _macs_per_position(operation) is None:
                unknown.append(f"{operation.name} ({_qualified(operation)})")
        elif type(operation).__name__ not in _FREE_OPS:
            unknown.append(f"{operation.name} ({_qualified(operation)})")
    return unknown


def count_model_flops(model: keras.Model) -> int:
    """FLOPs per image of a built model (nested models and Sequentials walked recursively).

    Args:
        model: a built Keras model (channels last).

    Returns:
        2 x multiply-accumulates of its convolution and dense layers for one image.

    Raises:
        ZooValueError: the model holds a layer or op type whose cost is not known here (named
            in the message); it would otherwise be counted as zero.
    """
    unknown = uncounted_operations(model)
    if unknown:
        raise ZooValueError(
            f"cannot count the FLOPs of {model.name}: unknown layer/op type(s) "
            f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}; classify them in "
            "zoo.flops (counted kernels, or free elementwise layers)"
        )
    return _count(model)


def _count(model: keras.Model) -> int:
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += _count(layer)
        else:
            total += _layer_flops(layer)
    return total


@cache
def _cached_flops(name: str, image_size: int | None) -> int:
    from zoo.factory import create_backbone

    model = create_backbone(name, len(CLASSES), input_shape=image_size, weights=None)
    return count_model_flops(model)


def count_flops(name: str, image_size: int | None = None) -> int:
    """FLOPs per image of a registered backbone with the 7-class head (cached per name, size).

    Args:
        name: a registered backbone name.
        image_size: square input size; None = the backbone's native size.

    Returns:
        FLOPs (2 x MACs) per image, counted as described in the module docstring.

    Raises:
        ZooValueError: unknown name, bad size, or a layer type the counter does not know.
    """
    return _cached_flops(name, None if image_size is None else int(image_size))
