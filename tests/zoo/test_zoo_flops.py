"""FLOPs are counted from the built layers: hand-computed models, and published figures."""

from __future__ import annotations

import keras
import pytest

import zoo
from zoo.errors import ZooValueError
from zoo.flops import _cached_flops, count_model_flops, uncounted_operations


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


# Published GMACs (the project counts FLOPs = 2 x MACs) at each backbone's native size, and the
# tolerance of the comparison: the figures are rounded to 2-3 significant digits and some count
# the classifier (1000 classes; ours has 7) or biases, which this counter leaves out.
PUBLISHED_GMACS = {
    "convnext_tiny": 4.47,  # timm convnext_tiny (224 px); the paper's 4.5 GFLOPs
    "convnext_small": 8.71,  # timm convnext_small (224 px); the paper's 8.7 GFLOPs
    "efficientnet_v2_s": 8.41,  # timm tf_efficientnetv2_s (384 px); the paper's 8.8 "FLOPs"
    "efficientnet_b3": 1.8,  # the paper's 1.8 B "FLOPs" (MACs) at 300 px
    "densenet121": 2.87,  # timm densenet121 (224 px)
    "mobilenet_v3_large": 0.217,  # Keras's table (217 M MACs, its 1280-wide top included)
}
TOLERANCE = 0.03


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PUBLISHED_GMACS))
def test_modern_backbones_match_their_published_figures(name):
    gmacs = zoo.count_flops(name) / 2 / 1e9
    assert abs(gmacs - PUBLISHED_GMACS[name]) / PUBLISHED_GMACS[name] < TOLERANCE


def _resnet50_v2_macs(size: int, classes: int) -> int:
    """MACs of Keras's ResNet50V2, counted from its architecture by hand: a 7x7/2 stem, a 3x3/2
    max pool, four stages of bottleneck blocks (64, 128, 256, 512 filters; 3, 4, 6, 3 blocks),
    a 1x1 projection shortcut in each stage's first block and, as in TF-slim's v2, the stride
    in the 3x3 convolution of each stage's *last* block (none in the last stage)."""
    side = size // 2
    macs = side * side * 7 * 7 * 3 * 64
    side = (side + 2 - 3) // 2 + 1
    channels = 64
    for filters, blocks, last_stride in ((64, 3, 2), (128, 4, 2), (256, 6, 2), (512, 3, 1)):
        for block in range(blocks):
            stride = last_stride if block == blocks - 1 else 1
            out = (side - 1) // stride + 1
            if block == 0:
                macs += side * side * channels * 4 * filters  # the projection shortcut
            macs += side * side * channels * filters  # 1x1 reduce
            macs += out * out * 9 * filters * filters  # 3x3, strided in the last block
            macs += out * out * filters * 4 * filters  # 1x1 expand
            channels, side = 4 * filters, out
    return macs + channels * classes


@pytest.mark.slow
def test_resnet50_v2_matches_its_architecture_counted_by_hand():
    """3.48 GMACs at 224 px. The often quoted ~4.1 GMACs are torchvision/timm's ResNet-50 (v1
    or timm's resnetv2_50), which stride in each stage's first block, at a higher resolution."""
    assert zoo.count_flops("resnet50_v2") == 2 * _resnet50_v2_macs(224, 7) == 6_960_443_392


def test_every_layer_and_op_of_every_backbone_is_classified(mixed_model):
    for name in zoo.list_backbones():
        assert uncounted_operations(mixed_model(name)) == [], name


def test_functional_ops_and_new_layer_types_are_counted():
    inputs = keras.Input((4, 4, 2))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Normalization(mean=[0.5, 0.5], variance=[0.1, 0.1])(x)
    x = keras.layers.Conv2D(2, 3, padding="same", groups=2)(x)  # 16 pos x (3*3*1*2 = 18)
    y = keras.layers.LayerNormalization()(x)
    y = keras.layers.Dense(3)(y)  # a pointwise Dense: 16 pos x 6
    y = keras.layers.Dense(2)(y)  # 16 pos x 6
    x = x + y  # an Add op of the graph, not a layer
    s = keras.layers.GlobalAveragePooling2D(keepdims=True)(x)
    s = keras.layers.Conv2D(2, 1, activation="sigmoid")(s)  # squeeze-excite: 1 pos x 4
    x = keras.layers.Multiply()([x, s])
    model = keras.Model(inputs, x)
    assert uncounted_operations(model) == []
    assert count_model_flops(model) == 2 * (16 * 18 + 16 * 6 + 16 * 6 + 4) == 968


class _Attention(keras.layers.Layer):
    def call(self, x):
        return keras.ops.matmul(x, keras.ops.transpose(x, (0, 2, 1)))


def test_unknown_layers_and_ops_are_refused_not_counted_as_zero():
    inputs = keras.Input((5, 3))
    x = _Attention(name="attention")(inputs)
    y = keras.ops.matmul(inputs, keras.ops.ones((3, 3)))
    model = keras.Model(inputs, [x, y], name="odd")
    unknown = uncounted_operations(model)
    assert unknown[0] == f"attention ({__name__}._Attention)"
    assert any("keras.src.ops.numpy.Matmul" in entry for entry in unknown)
    with pytest.raises(ZooValueError, match=r"cannot count the FLOPs of odd: unknown layer/op "
                                            r"type\(s\) attention"):
        count_model_flops(model)
