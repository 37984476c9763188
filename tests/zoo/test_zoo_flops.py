"""FLOPs are counted from the built layers: hand-computed models, and published figures."""

from __future__ import annotations

import keras

import zoo
from zoo.flops import _cached_flops, count_model_flops


def test_hand_computed_small_model():
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.Conv2D(6, 3, padding="same", groups=2)(inputs)  # 64 pos x (3*3*2*6=108)
    inner_in = keras.Input((8, 8, 6))
    y = keras.layers.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2)(inner_in)
    y = keras.layers.BatchNormalization()(y)  # not counted
    inner = keras.Model(inner_in, y)  # nested models are walked: 16 pos x (3*3*6*2=108)
    x = inner(x)
    x = keras.layers.SeparableConv2D(5, 3)(x)  # 4x4x12 in, 2x2 out x (3*3*12 + 12*5 = 168)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(3)(x)  # 20 x 3
    model = keras.Model(inputs, outputs)
    macs = 64 * 108 + 16 * 108 + 4 * 168 + 20 * 3
    assert count_model_flops(model) == 2 * macs == 18_744


def test_paper_cnn_at_64_pixels_hand_computed():
    convs = [  # (output side, cin, cout) of the six 3x3 "same" convolutions, 2x2 pool after each
        (64, 3, 32),
        (32, 32, 32),
        (16, 32, 64),
        (8, 64, 64),
        (4, 64, 128),
        (2, 128, 128),
    ]
    macs = sum(side * side * 9 * cin * cout for side, cin, cout in convs)
    macs += 128 * 1024 + 1024 * 512 + 512 * 7  # flatten (1x1x128) -> 1024 -> 512 -> 7 classes
    assert zoo.count_flops("paper_cnn", 64) == 2 * macs == 44_964_864


def test_count_flops_is_cached_per_name_and_size():
    zoo.count_flops("paper_cnn", 64)
    hits = _cached_flops.cache_info().hits
    assert zoo.count_flops("paper_cnn", 64) == 44_964_864
    assert _cached_flops.cache_info().hits == hits + 1


def test_resnext101_at_native_size_matches_the_published_figure():
    """timm lists resnext101_32x8d at 224 px as 16.5 GMACs; ours counts 2 x MACs."""
    flops = zoo.count_flops("resnext101")
    assert abs(flops / 2 - 16.5e9) / 16.5e9 < 0.01
    assert flops == zoo.count_flops("resnext101", 224)
