"""FLOPs per image, counted by walking a built model's layers (no profiler, any backend).

Counted: 2 x multiply-accumulates of Conv2D (grouped too), DepthwiseConv2D, SeparableConv2D
(depthwise + pointwise) and Dense layers, from each layer's kernel size and output shape.
Not counted: biases, BatchNorm, activations, pooling, additions, concatenations and the
preprocessing (together well under 1 % for these networks).
"""

from __future__ import annotations

import math
from functools import cache

import keras

from core.classes import CLASSES


def _outputs_of(layer: keras.layers.Layer) -> list[tuple]:
    """Output shapes of every symbolic call of `layer` (Keras records one node per call)."""
    shapes = []
    for node in getattr(layer, "_inbound_nodes", []):
        for tensor in node.outputs:
            shapes.append(tuple(tensor.shape))
    return shapes


def _macs_per_position(layer: keras.layers.Layer) -> int:
    """Multiply-accumulates per output position; 0 for layers that are not counted."""
    if isinstance(layer, keras.layers.SeparableConv2D):
        # The depthwise and the pointwise convolution both run at the output resolution.
        return math.prod(layer.depthwise_kernel.shape) + math.prod(layer.pointwise_kernel.shape)
    if isinstance(layer, keras.layers.Conv2D | keras.layers.DepthwiseConv2D | keras.layers.Dense):
        # Conv2D kernel (kh, kw, cin/groups, cout); DepthwiseConv2D (kh, kw, cin, multiplier);
        # Dense (in, out): the kernel size is the MACs per output position in every case.
        return math.prod(layer.kernel.shape)
    return 0


def _layer_flops(layer: keras.layers.Layer) -> int:
    per_position = _macs_per_position(layer)
    if not per_position:
        return 0
    total = 0
    for shape in _outputs_of(layer):
        positions = math.prod(shape[1:-1])  # spatial positions (channels last); 1 for Dense
        total += 2 * positions * per_position
    return total


def count_model_flops(model: keras.Model) -> int:
    """FLOPs per image of a built model (nested models and Sequentials walked recursively).

    Args:
        model: a built Keras model (channels last).

    Returns:
        2 x multiply-accumulates of its convolution and dense layers for one image.
    """
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += count_model_flops(layer)
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
        ZooValueError: unknown name or bad size.
    """
    return _cached_flops(name, None if image_size is None else int(image_size))
