"""The source study's small CNN, trained from scratch.

Six blocks of a 3x3 convolution ("same" padding, ReLU) followed by 2x2 max pooling, with 32, 32,
64, 64, 128, 128 filters (the study gives the block count, not the widths: these double every
two blocks, the usual VGG-style progression); then the flatten + dense 1024 + dense 512 (ReLU)
stack as the "pool" layer; `zoo.create_backbone` adds dropout, the class layer and the softmax.
Inputs are scaled to [0, 1] ("unit" preprocessing). With 6 poolings the minimum input is 64 px.
"""

from __future__ import annotations

import keras

FILTERS = (32, 32, 64, 64, 128, 128)
DENSE_UNITS = (1024, 512)


def build_paper_cnn(input_shape: tuple[int, int, int]) -> keras.Model:
    """The convolution stack, named "backbone".

    Args:
        input_shape: (height, width, 3) of the preprocessed input (at least 64 x 64).

    Returns:
        The functional model; output: the feature map after the sixth pooling.
    """
    inputs = keras.Input(shape=input_shape, name="pixels")
    x = inputs
    for index, filters in enumerate(FILTERS, start=1):
        x = keras.layers.Conv2D(
            filters, 3, padding="same", activation="relu", name=f"block{index}_conv"
        )(x)
        x = keras.layers.MaxPooling2D(2, name=f"block{index}_pool")(x)
    return keras.Model(inputs, x, name="backbone")


def build_paper_head() -> keras.Sequential:
    """Flatten + Dense(1024, ReLU) + Dense(512, ReLU), named "pool"."""
    return keras.Sequential(
        [
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(DENSE_UNITS[0], activation="relu", name="fc1"),
            keras.layers.Dense(DENSE_UNITS[1], activation="relu", name="fc2"),
        ],
        name="pool",
    )
