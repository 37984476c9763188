"""The training model's trainable walk, and the throughput benchmark's model built and compiled
by the protocol's own functions (`training.throughput`, used by tools/gpu_benchmark.py)."""

from __future__ import annotations

from dataclasses import replace

import keras
import numpy as np
import pytest

from training.model import all_sublayers, jit_compile_setting, make_loss, set_trainable
from training.presets import get_preset
from training.throughput import (
    NO_AUGMENTATION,
    benchmark_settings,
    build_benchmark_model,
    timed_fit,
)

SIZE = 64  # paper_cnn's minimum


def _nested() -> keras.Model:
    inner_in = keras.Input((4,))
    inner = keras.Model(inner_in, keras.layers.Dense(3, name="inner_dense")(inner_in),
                        name="inner")
    middle_in = keras.Input((4,))
    middle = keras.Model(middle_in, keras.layers.BatchNormalization(name="bn")(inner(middle_in)),
                         name="middle")
    outer_in = keras.Input((4,))
    return keras.Model(outer_in, keras.layers.Dense(2, name="head")(middle(outer_in)))


def test_set_trainable_reaches_every_nested_layer():
    model = _nested()
    names = {layer.name for layer in all_sublayers(model)}
    assert {"inner", "inner_dense", "middle", "bn", "head"} <= names
    assert model not in all_sublayers(model)
    model.get_layer("middle").get_layer("inner").trainable = False  # frozen before
    set_trainable(model, True)
    assert all(layer.trainable for layer in [model, *all_sublayers(model)])
    set_trainable(model.get_layer("middle"), False)
    assert not model.get_layer("middle").get_layer("inner").get_layer("inner_dense").trainable
    assert model.get_layer("head").trainable


def test_benchmark_settings_are_the_native_presets():
    native = get_preset("native").training
    assert benchmark_settings(augment=True) == native
    assert benchmark_settings(augment=False) == replace(native, augmentation=NO_AUGMENTATION)


def test_benchmark_model_is_compiled_as_the_protocol_compiles():
    training = benchmark_settings(augment=True)
    tm = build_benchmark_model("paper_cnn", SIZE, training, steps=10)
    assert [type(layer).__name__ for layer in all_sublayers(tm.model)].count("RandomFlip") == 1
    assert all(layer.trainable for layer in [tm.model, *all_sublayers(tm.model)])
    optimizer = tm.model.optimizer
    assert isinstance(optimizer, keras.optimizers.AdamW)
    assert optimizer.weight_decay == pytest.approx(training.weight_decay)
    assert isinstance(optimizer._learning_rate, keras.optimizers.schedules.CosineDecay)
    assert type(tm.model.loss) is type(make_loss(training))
    if not jit_compile_setting(training):  # TensorFlow: the settings' jit_compile (False)
        assert tm.model.jit_compile is False


def test_sgd_and_forced_jit_compile():
    training = benchmark_settings(augment=False)
    tm = build_benchmark_model("paper_cnn", SIZE, training, steps=3, optimizer="sgd",
                               jit_compile=False)
    assert isinstance(tm.model.optimizer, keras.optimizers.SGD)
    assert float(keras.ops.convert_to_numpy(tm.model.optimizer.learning_rate)) == pytest.approx(
        training.phase2_lr)
    assert tm.model.jit_compile is False
    assert "RandomFlip" not in [type(layer).__name__ for layer in all_sublayers(tm.model)]
    with pytest.raises(ValueError, match="optimizer must be one of adamw, sgd"):
        build_benchmark_model("paper_cnn", SIZE, training, steps=3, optimizer="lamb")


def test_timed_fit_runs_warmup_plus_steps():
    training = benchmark_settings(augment=False)
    tm = build_benchmark_model("paper_cnn", SIZE, training, steps=3, jit_compile=False)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)
    y = rng.integers(0, 7, (2,), dtype=np.int32)
    warm, timed, loss = timed_fit(tm.model, x, y, warmup=1, steps=2)
    assert warm > 0 and timed > 0 and np.isfinite(loss)
    assert int(keras.ops.convert_to_numpy(tm.model.optimizer.iterations)) == 3
