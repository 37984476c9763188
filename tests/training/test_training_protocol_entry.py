"""The per-entry protocol in-process, on a few tiny synthetic images.

A tiny registered "pretrained" backbone (conv + BatchNorm residual blocks) exercises both
fine-tuning phases quickly; paper_cnn exercises the from-scratch phase.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

import zoo
from core.atomic import read_json
from core.predictions import read_predictions
from data_utils.cache import build_cache
from data_utils.readers import read_dataset
from data_utils.splits import make_splits
from data_utils.synthetic import generate_synthetic
from training import policies, presets, protocol, svm_baseline
from training.augment import build_augmentation
from training.backend import setup_backend
from training.callbacks import SIMULATE_NAN_ENV
from training.entry_data import load_entry_data
from training.errors import ProtocolError
from training.model import build_training_model, configure_phase, make_optimizer
from training.resume_state import HISTORY_COLUMNS, read_progress
from training.settings import Augmentation, RunConfig, SvmSettings

TINY = "tiny_bn_test"
N_IMAGES = 56
SIZE = 64


def _tiny_base(input_shape):
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(8, 3, strides=4, padding="same", name="stem_conv")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.Activation("relu", name="stem_relu")(x)
    for b in range(3):
        y = keras.layers.Conv2D(8, 3, padding="same", name=f"b{b}_conv")(x)
        y = keras.layers.BatchNormalization(name=f"b{b}_bn")(y)
        y = keras.layers.Activation("relu", name=f"b{b}_relu")(y)
        x = keras.layers.Add(name=f"b{b}_add")([x, y])
    return keras.Model(inputs, x, name="backbone")


@pytest.fixture(scope="module", autouse=True)
def tiny_backbone():
    config = zoo.BackboneConfig(
        name=TINY, display_name="Tiny BN test net", input_size=SIZE, min_size=16,
        preprocessing="unit", weights_url=None, weights_file=None, weights_hash=None,
        hash_algorithm=None, weights_format=None, params_1000=0, paper="test", licence="test",
        pretrained=True)
    zoo.register(config, zoo.Builder(base=_tiny_base))
    yield TINY
    from zoo.registry import unregister

    unregister(TINY)


@pytest.fixture(scope="module")
def data():
    root = generate_synthetic(Path(os.environ["DERMBENCH_CACHE"]) / f"training-synth-{N_IMAGES}",
                              n_images=N_IMAGES, seed=0)
    table = make_splits(read_dataset("synthetic", root), ratios=(0.6, 0.2, 0.2), seed=0)
    cache = build_cache(table["path"].tolist(), table["image_id"].tolist(), SIZE, workers=1,
                        progress=False)
    return load_entry_data(cache, table[["image_id", "lesion_id", "dx", "split"]])


def _config(**training) -> RunConfig:
    resolved = presets.resolve_preset("smoke", ["paper_cnn"])
    settings = replace(resolved.training, **{
        "batch_size": 8, "phase1_epochs": 2, "phase2_epochs": 2, "scratch_epochs": 2,
        "warmup_epochs": 0, "early_stopping_patience": 0,
        "image_size": {"paper_cnn": SIZE, TINY: SIZE}, **training})
    return RunConfig(seed=0, deterministic=True, weights=None, weights_dir=None,
                     training=settings, svm=resolved.svm)


@pytest.fixture(scope="module")
def paper_cnn_run(data, tmp_path_factory):
    entry_dir = tmp_path_factory.mktemp("run_a") / "paper_cnn"
    metrics = protocol.train_entry("paper_cnn", _config(), data, entry_dir, fingerprint="fp-a",
                                   verbose=0)
    return entry_dir, metrics


def test_entry_writes_the_contract_files(paper_cnn_run, data):
    entry_dir, metrics = paper_cnn_run
    assert metrics["status"] == "ok" and metrics["error"] is None
    for split, part in (("val", data.val), ("test", data.test)):
        preds = read_predictions(entry_dir / f"predictions_{split}.csv")  # validates the contract
        assert list(preds.image_id) == list(part.image_id)
        assert list(preds.label) == list(part.label)
    history = pd.read_csv(entry_dir / "history.csv")
    assert list(history.columns) == list(HISTORY_COLUMNS)
    assert list(history["epoch"]) == [1, 2] and set(history["phase"]) == {"scratch"}
    assert np.isfinite(history[["loss", "val_loss", "val_balanced_accuracy", "lr"]].to_numpy()).all()
    on_disk = read_json(entry_dir / "metrics.json")
    for key in ("params", "trainable_params_phase1", "flops_per_image", "image_size",
                "train_seconds", "batch_size", "inference_images_per_s", "fingerprint", "kind",
                "val", "test"):
        assert on_disk[key] is not None, key
    assert on_disk["fingerprint"] == "fp-a" and on_disk["kind"] == "baseline"
    assert on_disk["batch_size"] == 8 and on_disk["image_size"] == SIZE
    assert on_disk["best_val_balanced_accuracy"] == pytest.approx(
        history["val_balanced_accuracy"].max())
    steps = math.ceil(len(data.train) / 8)
    assert on_disk["optimizer_iterations"] == 2 * steps
    assert (entry_dir / "best.weights.h5").is_file()
    assert not (entry_dir / "state").exists()


def test_deterministic_runs_give_identical_predictions(paper_cnn_run, data, tmp_path):
    entry_dir, _ = paper_cnn_run
    again = tmp_path / "paper_cnn"
    protocol.train_entry("paper_cnn", _config(), data, again, fingerprint="fp-a", verbose=0)
    for split in ("val", "test"):
        name = f"predictions_{split}.csv"
        assert (again / name).read_bytes() == (entry_dir / name).read_bytes()


def test_resume_continues_from_the_last_completed_epoch(data, tmp_path):
    config = _config(unfreeze_fraction=0.5)
    straight = tmp_path / "straight"
    full = protocol.train_entry(TINY, config, data, straight, fingerprint="fp", verbose=0)
    assert full["phases"] == ["frozen", "finetune"] and full["status"] == "ok"

    # Kill at the start of the 2nd epoch of phase 2: three epochs are done and saved.
    resumed_dir = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        protocol.train_entry(TINY, config, data, resumed_dir, fingerprint="fp", verbose=0,
                             callbacks=[_KillInFinetune(1)])
    progress = read_progress(resumed_dir)
    assert progress["global_epoch"] == 3 and progress["phase_index"] == 1
    assert progress["phase_epochs"] == 1 and not progress["phase_finished"]
    steps = math.ceil(len(data.train) / 8)
    assert progress["iterations"] == steps
    assert len(pd.read_csv(resumed_dir / "history.csv")) == 3
    # An extra history row beyond the saved state (killed between the two writes) is dropped.
    history = pd.read_csv(resumed_dir / "history.csv")
    pd.concat([history, history.tail(1).assign(epoch=4)]).to_csv(resumed_dir / "history.csv",
                                                                 index=False)

    seen = {}

    class _Spy(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen.setdefault("iterations", int(self.model.optimizer.iterations.numpy()))

    resumed = protocol.train_entry(TINY, config, data, resumed_dir, fingerprint="fp", verbose=0,
                                   callbacks=[_Spy()])
    assert seen["iterations"] == steps  # the optimizer state came back, not a fresh optimizer
    assert resumed["optimizer_iterations"] == full["optimizer_iterations"] == 2 * steps
    history = pd.read_csv(resumed_dir / "history.csv")
    assert list(history["epoch"]) == [1, 2, 3, 4]
    assert list(history["phase"]) == ["frozen", "frozen", "finetune", "finetune"]
    assert resumed["epochs_trained"] == 4
    # Same batches in the same order, same optimizer and RNG state: the resumed entry trains and
    # predicts exactly what the uninterrupted one did.
    straight_history = pd.read_csv(straight / "history.csv")
    columns = ["loss", "accuracy", "val_loss", "val_balanced_accuracy", "lr"]
    pd.testing.assert_frame_equal(history[columns], straight_history[columns])
    for split in ("val", "test"):
        name = f"predictions_{split}.csv"
        assert (resumed_dir / name).read_bytes() == (straight / name).read_bytes()


def _is_finetune(model) -> bool:
    base = model.get_layer(TINY).get_layer("backbone")
    return any(layer.trainable for layer in base.layers if layer.weights)


class _KillInFinetune(keras.callbacks.Callback):
    """Simulates a killed process at the start of phase 2's epoch `epoch` (0-based)."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch and _is_finetune(self.model):
            raise KeyboardInterrupt("simulated kill")


def test_phase_two_unfreezes_the_top_and_keeps_batchnorm_frozen(data):
    training = _config(unfreeze_fraction=0.5).training
    tm = build_training_model(TINY, SIZE, training)
    frozen = configure_phase(tm, policies.Phase("frozen", 1, 1e-3), training)
    finetune = configure_phase(tm, policies.Phase("finetune", 1, 1e-4), training)
    layers = tm.base.layers
    types = [type(layer).__name__ for layer in layers]
    start = policies.unfreeze_start(types, 0.5)
    assert 0 < start < len(layers)
    assert all(not layer.trainable for layer in layers
               if isinstance(layer, keras.layers.BatchNormalization))
    trainable_convs = [layer.name for layer in layers
                       if isinstance(layer, keras.layers.Conv2D) and layer.trainable]
    expected = [layer.name for layer in layers[start:] if isinstance(layer, keras.layers.Conv2D)]
    assert trainable_convs == expected and expected
    head = 8 * 7 + 7  # logits Dense(8 -> 7)
    conv = 3 * 3 * 8 * 8 + 8
    assert frozen == head
    assert finetune == head + conv * len(expected)
    scratch = configure_phase(tm, policies.Phase("scratch", 1, 1e-3), training)
    assert scratch == zoo.param_counts(tm.model)["trainable"] > finetune


def test_nan_loss_stops_the_entry_with_status_nan(data, tmp_path, monkeypatch):
    monkeypatch.setenv(SIMULATE_NAN_ENV, "1")
    metrics = protocol.train_entry("paper_cnn", _config(scratch_epochs=3), data, tmp_path / "e",
                                   fingerprint="fp", verbose=0)
    assert metrics["status"] == "nan" and "NaN" in metrics["error"]
    on_disk = read_json(tmp_path / "e" / "metrics.json")
    assert on_disk["status"] == "nan" and on_disk["fingerprint"] == "fp"
    assert not (tmp_path / "e" / "predictions_test.csv").exists()
    assert len(pd.read_csv(tmp_path / "e" / "history.csv")) == 1  # stopped after one epoch


def test_schedule_matches_the_policy_function():
    training = _config(warmup_epochs=1, min_lr_fraction=0.1).training
    phase = policies.Phase("scratch", 3, 2e-3)
    optimizer = make_optimizer(training, phase, steps_per_epoch=4)
    warmup, decay = policies.schedule_steps(3, 4, 1)
    for step in (0, 2, 4, 7, 12, 20):
        got = float(optimizer.learning_rate(step) if callable(optimizer.learning_rate)
                    else optimizer._learning_rate(step))
        assert got == pytest.approx(policies.learning_rate(step, 2e-3, warmup, decay, 0.1),
                                    rel=1e-5, abs=1e-9)
    assert isinstance(optimizer, keras.optimizers.AdamW)


def test_augmentation_only_in_training():
    augment = build_augmentation(Augmentation(flip=True, rotation=30, shift=0.1, zoom=0.1), seed=1)
    assert [layer.name for layer in augment.layers] == ["flip", "rotate", "shift", "zoom"]
    x = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 3)).astype("float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(augment(x, training=False)), x)
    assert not np.allclose(keras.ops.convert_to_numpy(augment(x, training=True)), x)
    assert build_augmentation(Augmentation(flip=False, rotation=0, shift=0, zoom=0)) is None
    assert build_augmentation(None) is None
    with pytest.raises(ValueError, match="rotation"):
        build_augmentation(Augmentation(rotation=400))
    with pytest.raises(ValueError, match="flip"):
        build_augmentation(Augmentation(flip="diagonal"))


def test_load_entry_data_errors(data):
    class _Cache:
        images = data.images

        @staticmethod
        def rows(ids):
            return np.arange(len(ids))

    table = pd.DataFrame({"image_id": ["a", "b"], "lesion_id": ["l", "m"], "dx": ["nv", "mel"],
                          "split": ["train", "val"]})
    with pytest.raises(ProtocolError, match="no 'test' rows"):
        load_entry_data(_Cache, table)
    with pytest.raises(ProtocolError, match="unknown class 'xx'"):
        load_entry_data(_Cache, table.assign(dx=["nv", "xx"]))
    with pytest.raises(ProtocolError, match="split"):
        load_entry_data(_Cache, table.drop(columns="split"))


def test_mixed_precision_is_off_on_cpu(caplog):
    assert setup_backend(0, False, "on") is False
    assert keras.mixed_precision.dtype_policy().name == "float32"
    assert "no GPU" in caplog.text
    with pytest.raises(ProtocolError, match="mixed_precision"):
        setup_backend(0, False, "maybe")


def test_svm_on_small_features_chooses_c_on_val():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (3, 5))
    y = np.repeat([0, 2, 5], 20)
    x = centres[np.searchsorted([0, 2, 5], y)] + rng.normal(0, 1, (60, 5))
    order = rng.permutation(60)
    train, val = order[:40], order[40:]
    model, c, scores, calibration = svm_baseline.fit_svm(x[train], y[train], x[val], y[val],
                                                         SvmSettings(C_grid=(10.0, 0.01, 1.0)),
                                                         seed=0)
    assert calibration["groups"] == "image" and calibration["prior"] == "uniform"
    assert sorted(scores) == [0.01, 1.0, 10.0]
    assert scores[c] == max(scores.values())
    assert c == min(k for k, v in scores.items() if v == scores[c])  # ties -> smaller C
    proba = svm_baseline.svm_proba(model, x[val])
    assert proba.shape == (20, 7)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert (proba[:, [1, 3, 4, 6]] == 0).all()  # classes never seen in training
    # A class with a single training image cannot be calibrated: left out, probability 0.
    lone = np.vstack([x[train], x[val][:1]]), np.append(y[train], 6)
    model, _, _, calibration = svm_baseline.fit_svm(*lone, x[val], y[val],
                                                    SvmSettings(C_grid=(1.0,)))
    assert (svm_baseline.svm_proba(model, x[val])[:, 6] == 0).all()
    assert calibration["left_out_classes"] == [6]
    with pytest.raises(ValueError, match="two classes with two or more lesions"):
        svm_baseline.fit_svm(x[:5], np.zeros(5, int), x[:5], np.zeros(5, int),
                             SvmSettings(C_grid=(1.0,)))


def test_svm_entry_caches_features(data, tmp_path, monkeypatch):
    config = _config()

    class _Cache:
        images = data.images
        size = SIZE
        key = "test-cache-key"

        def __len__(self):
            return len(self.images)

    entry = f"{TINY}+svm"
    metrics = svm_baseline.run_svm_entry(entry, config, _Cache(), data, tmp_path / "svm",
                                         fingerprint="fp", batch_size=16, cache_root=tmp_path)
    assert metrics["status"] == "ok" and metrics["kind"] == "baseline"
    assert metrics["feature_dim"] == 8 and metrics["svm_C"] in config.svm.C_grid
    calibration = metrics["svm_calibration"]
    assert calibration["groups"] == "lesion" and calibration["scheme"] == "StratifiedGroupKFold"
    assert calibration["class_weight"] == "balanced" and calibration["prior"] == "uniform"
    for split in ("val", "test"):
        read_predictions(tmp_path / "svm" / f"predictions_{split}.csv")
    features = list((tmp_path / "features").glob("*.npy"))
    assert len(features) == 1

    def no_model(*args, **kwargs):
        raise AssertionError("the features should come from the cache")

    monkeypatch.setattr(zoo, "create_backbone", no_model)
    again = svm_baseline.run_svm_entry(entry, config, _Cache(), data, tmp_path / "svm2",
                                       fingerprint="fp", batch_size=16, cache_root=tmp_path)
    assert again["svm_C"] == metrics["svm_C"]
    assert (tmp_path / "svm2" / "predictions_test.csv").read_bytes() == (
        tmp_path / "svm" / "predictions_test.csv").read_bytes()
    # Different weights or seed -> a different feature file.
    other = svm_baseline.feature_cache_path("test-cache-key", TINY, None, SIZE, "unit", 1, tmp_path)
    assert other != features[0]
    assert json.loads(features[0].with_suffix(".json").read_text())["shape"][0] == len(data.images)
