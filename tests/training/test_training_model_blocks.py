"""Phase 2 on the seven modern backbones' real graphs: the unfreeze boundary lands on a block end,
and BatchNorm and LayerNorm stay frozen (built at the minimum size, weights=None)."""

from __future__ import annotations

import functools
from collections.abc import Callable

import keras
import pytest

import zoo
from training import policies
from training.model import (
    FROZEN_NORM_LAYERS,
    all_sublayers,
    base_operations,
    build_training_model,
    configure_phase,
    operation_type,
    phase2_start,
)
from training.presets import get_preset
from zoo.keras_apps import build_keras_app

MODERN = [name for name in zoo.list_backbones() if zoo.get_config(name).group == "modern"]
# The block-ending operation of each graph (class name), and how many the graph holds.
BLOCK_ENDS = {
    "convnext_tiny": ("Add", 18),  # `inputs + x` ops of the 3+3+9+3 blocks
    "convnext_small": ("Add", 36),  # 3+3+27+3
    "efficientnet_v2_s": ("Add", 35),  # the repeated MBConv/Fused-MBConv blocks
    "efficientnet_b3": ("Add", 19),
    "densenet121": ("Concatenate", 58),  # 6+12+24+16 dense layers
    "resnet50_v2": ("Add", 16),  # 3+4+6+3 bottlenecks
    "mobilenet_v3_large": ("Add", 10),  # the stride-1 inverted residuals (+ 8 "AddOp": x + 3)
}


@pytest.fixture(scope="module")
def bases() -> Callable[[str], keras.Model]:
    """`get(name)`: the backbone at 32 px, built on first use (once per module)."""
    return functools.cache(lambda name: build_keras_app(name, (32, 32, 3)))


def test_the_table_covers_the_modern_group():
    assert sorted(BLOCK_ENDS) == sorted(MODERN) and len(MODERN) == 7


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BLOCK_ENDS))
def test_phase2_boundary_snaps_to_a_block_end_of_the_real_graph(name, bases):
    base = bases(name)
    operations = base_operations(base)
    types = [operation_type(operation) for operation in operations]
    block_end, count = BLOCK_ENDS[name]
    assert types.count(block_end) == count
    assert block_end in policies.BLOCK_END_TYPES
    n = len(operations)
    for fraction in (0.1, 0.2, 0.3, 0.5):
        _, _, start = phase2_start(base, fraction)
        raw = n - round(fraction * n)
        assert abs(start - raw) <= n // 10, fraction
        assert types[start - 1] in policies.BLOCK_END_TYPES, (fraction, types[start - 1])


def test_convnext_block_ends_are_ops_of_the_graph_not_layers(bases):
    base = bases("convnext_tiny")
    layer_types = [type(layer).__name__ for layer in base.layers]
    operation_types = [operation_type(op) for op in base_operations(base)]
    assert "Add" not in layer_types and operation_types.count("Add") == 18
    assert len(operation_types) == len(layer_types) + 18


def test_an_op_with_a_constant_is_no_block_end(bases):
    """MobileNetV3's hard sigmoid, relu6(x + 3) / 6, adds a constant: an "AddOp"."""
    types = [operation_type(op) for op in base_operations(bases("mobilenet_v3_large"))]
    assert types.count("AddOp") == types.count("MultiplyOp") == 8
    assert "AddOp" not in policies.BLOCK_END_TYPES


@pytest.mark.slow
@pytest.mark.parametrize("name", ["convnext_tiny", "mobilenet_v3_large"])
def test_phase2_freezes_every_normalisation_layer_of_the_base(name):
    training = get_preset("smoke").training
    tm = build_training_model(name, 32, training)
    frozen = configure_phase(tm, policies.Phase("frozen", 1, 1e-3), training)
    finetune = configure_phase(tm, policies.Phase("finetune", 1, 1e-4), training)
    assert finetune > frozen
    norms = [layer for layer in all_sublayers(tm.base) if isinstance(layer, FROZEN_NORM_LAYERS)]
    assert norms and not any(layer.trainable for layer in norms)
    if name == "convnext_tiny":  # the LayerNorms inside the nested stem/downsampling blocks too
        # 18 blocks, the stem, 3 downsampling blocks and the head's (after the pooling)
        assert sum(isinstance(layer, keras.layers.LayerNormalization) for layer in norms) == 23
    operations, _, start = phase2_start(tm.base, training.unfreeze_fraction)
    unfrozen = [op for op in operations[start:]
                if isinstance(op, keras.layers.Layer) and op.trainable_weights]
    assert unfrozen and not any(op.trainable for op in operations[:start]
                                if isinstance(op, keras.layers.Layer))
    # phase 2 trains the head plus exactly the non-normalisation weights from `start` on
    head = sum(int(keras.ops.size(w)) for w in tm.net.get_layer("logits").trainable_weights)
    top = sum(int(keras.ops.size(w)) for op in unfrozen for w in op.trainable_weights)
    assert finetune == head + top
