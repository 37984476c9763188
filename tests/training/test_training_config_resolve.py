"""Resolving the command line and a preset into the run's config."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark import build_parser
from core.errors import BenchmarkError, DataError
from training.config import resolve_config, resolve_entries, resolve_out
from training.errors import ConfigError
from training.presets import resolve_preset
from training.settings import RunConfig

STUDY_ORDER = ["inception_v3", "resnext101", "inception_resnet_v2", "xception", "nasnet_large",
               "paper_cnn", "inception_resnet_v2+svm"]
CONFIG_KEYS = {"dataset", "data_dir", "split", "ratios", "folds", "seed", "test_set",
               "synthetic_images", "resize_mode", "allow_missing", "preset", "entries",
               "deterministic", "weights", "weights_dir", "training", "svm"}
TRAINING_KEYS = {"image_size", "preprocessing", "batch_size", "min_batch_size", "optimizer",
                 "weight_decay", "phase1_epochs", "phase2_epochs", "scratch_epochs", "phase1_lr",
                 "phase2_lr", "scratch_lr", "schedule", "warmup_epochs", "unfreeze_fraction",
                 "dropout", "label_smoothing", "early_stopping_patience", "class_weighting",
                 "balanced_sampling", "augmentation", "mixed_precision"}


def _resolve(*argv: str) -> tuple[dict, object]:
    """The resolved config as run.json holds it (the typed one is checked to match)."""
    args = build_parser().parse_args(["--all", *argv])
    config = resolve_config(args)
    assert isinstance(config, RunConfig)
    return config.to_dict(), args


def _typed(*argv: str) -> RunConfig:
    return resolve_config(build_parser().parse_args(["--all", *argv]))


@pytest.fixture(autouse=True)
def _no_weights_env(monkeypatch):
    monkeypatch.delenv("DERMBENCH_WEIGHTS_DIR", raising=False)


def test_smoke_defaults_to_the_synthetic_set_and_all_seven_entries():
    config, args = _resolve("--preset", "smoke")
    assert config["dataset"] == "synthetic"
    assert config["data_dir"] is None
    assert config["entries"] == STUDY_ORDER
    assert config["weights"] is None
    assert config["preset"] == "smoke"
    assert resolve_out(args, _typed("--preset", "smoke")) == Path("runs/synthetic-smoke")
    assert set(config) == CONFIG_KEYS
    assert TRAINING_KEYS <= set(config["training"])
    assert set(config["training"]["image_size"]) == set(STUDY_ORDER)
    assert {"flip", "rotation", "shift", "zoom"} <= set(config["training"]["augmentation"])
    assert config["training"]["optimizer"] == "adamw"
    assert config["training"]["schedule"] == "cosine"
    assert config["training"]["class_weighting"] == "balanced"


def test_smoke_uses_each_backbones_minimum_size():
    import zoo

    config = _typed("--preset", "smoke")
    for entry, size in config.training.image_size.items():
        minimum = zoo.get_config(entry.split("+")[0]).min_size
        assert size == minimum, entry
    assert config.image_sizes() == tuple(sorted(set(config.training.image_size.values())))


def test_cli_defaults_of_the_data_options():
    config, _ = _resolve("--preset", "smoke")
    assert config["split"] == "lesion"
    assert config["ratios"] == [0.8, 0.1, 0.1]
    assert config["folds"] is None
    assert config["seed"] == 0
    assert config["test_set"] == "split"
    assert config["synthetic_images"] == 700
    assert config["resize_mode"] == "square"
    assert config["allow_missing"] is False
    assert config["deterministic"] is False


def test_overrides_replace_the_preset_values(tmp_path):
    weights = tmp_path / "my.weights.h5"
    weights.write_bytes(b"w")
    argv = ("--preset", "smoke", "--epochs", "3", "--batch-size", "8", "--image-size", "96",
            "--seed", "5", "--split", "image", "--folds", "3", "--deterministic",
            "--weights", str(weights), "--weights-dir", str(tmp_path), "--synthetic-images", "120",
            "--out", str(tmp_path / "run"), "--models", "paper_cnn", "xception")
    config, args = _resolve(*argv)
    training = config["training"]
    assert (training["phase1_epochs"], training["phase2_epochs"], training["scratch_epochs"]) \
        == (3, 3, 3)
    assert training["batch_size"] == 8
    assert training["min_batch_size"] <= 8
    assert training["image_size"] == {entry: 96 for entry in STUDY_ORDER}
    assert config["seed"] == 5
    assert config["split"] == "image"
    assert config["folds"] == 3
    assert config["deterministic"] is True
    assert config["weights"] == str(weights.resolve())
    assert config["weights_dir"] == str(tmp_path.resolve())
    assert config["synthetic_images"] == 120
    assert config["entries"] == ["paper_cnn", "xception"]
    assert resolve_out(args, _typed(*argv)) == tmp_path / "run"
    assert _typed(*argv).image_sizes() == (96,)


@pytest.mark.parametrize("value, expected", [("none", None), ("NONE", None),
                                             ("imagenet", "imagenet")])
def test_named_weights(value, expected):
    config, _ = _resolve("--preset", "smoke", "--weights", value)
    assert config["weights"] == expected


def test_native_defaults_to_imagenet_weights(tmp_path):
    config, args = _resolve("--dataset", "synthetic")
    assert config["preset"] == "native"
    assert config["weights"] == "imagenet"
    assert resolve_out(args, _typed("--dataset", "synthetic")) == Path("runs/synthetic-native")
    import zoo

    assert config["training"]["image_size"]["inception_v3"] == zoo.get_config(
        "inception_v3").input_size


def test_a_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no such file.*none, imagenet"):
        _resolve("--preset", "smoke", "--weights", str(tmp_path / "absent.h5"))


def test_weights_dir_falls_back_to_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DERMBENCH_WEIGHTS_DIR", str(tmp_path))
    config, _ = _resolve("--preset", "smoke")
    assert config["weights_dir"] == str(tmp_path.resolve())


def test_unknown_model_lists_the_valid_ones():
    with pytest.raises(ConfigError) as info:
        _resolve("--preset", "smoke", "--models", "paper_cnn", "resnet50")
    message = str(info.value)
    assert "'resnet50'" in message
    for name in STUDY_ORDER:
        assert name in message
    assert isinstance(info.value, BenchmarkError)


def test_models_keep_their_order_without_duplicates():
    assert resolve_entries(["paper_cnn", "xception", "paper_cnn"]) == ["paper_cnn", "xception"]
    assert resolve_entries(None) == STUDY_ORDER


def test_native_without_a_dataset_defaults_to_ham10000_and_says_how_to_get_it(tmp_path,
                                                                              monkeypatch):
    """The one run-directory rule (core.rundir): without --dataset the native and paper presets
    run on ham10000 (before, --all refused to guess; now it looks for data/ham10000)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"--download --dataset ham10000 --data-dir") as info:
        _resolve()
    assert "without --dataset the native preset trains on ham10000" in str(info.value)
    with pytest.raises(DataError, match="--preset smoke"):
        _resolve("--preset", "paper")
    (tmp_path / "data" / "ham10000").mkdir(parents=True)
    config, args = _resolve("--preset", "paper")
    assert config["dataset"] == "ham10000"
    assert resolve_out(args, _typed("--preset", "paper")) == Path("runs/ham10000-paper")


def test_real_data_not_found_says_how_to_download_or_point_at_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as info:
        _resolve("--dataset", "ham10000")
    message = str(info.value)
    assert "--download --dataset ham10000 --data-dir data/ham10000" in message
    assert "point --data-dir" in message
    with pytest.raises(DataError, match="--data-dir .*absent does not exist"):
        _resolve("--preset", "smoke", "--dataset", "isic2018", "--data-dir",
                 str(tmp_path / "absent"))


def test_real_data_in_the_conventional_folder_is_found(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "ham10000").mkdir(parents=True)
    config, args = _resolve("--dataset", "ham10000", "--preset", "paper")
    assert config["data_dir"] == str((tmp_path / "data" / "ham10000").resolve())
    assert resolve_out(args, _typed("--dataset", "ham10000", "--preset", "paper")) == Path(
        "runs/ham10000-paper")
    assert set(config["training"]["image_size"].values()) == {224}
    assert config["training"]["preprocessing"] == "unit"


def test_data_dir_is_made_absolute(tmp_path, monkeypatch):
    (tmp_path / "ham").mkdir()
    monkeypatch.chdir(tmp_path)
    config, _ = _resolve("--dataset", "ham10000", "--data-dir", "ham", "--preset", "smoke")
    assert config["data_dir"] == str((tmp_path / "ham").resolve())


def test_models_do_not_change_the_image_sizes_of_the_config():
    every, _ = _resolve("--preset", "smoke")
    subset, _ = _resolve("--preset", "smoke", "--models", "paper_cnn")
    assert subset["training"]["image_size"] == every["training"]["image_size"]
    assert subset["svm"] == every["svm"]
    assert _typed("--preset", "smoke", "--models", "paper_cnn").image_sizes() == (64,)


def test_entries_that_cannot_run_at_the_override_size_are_left_out_of_the_sizes():
    assert resolve_preset("smoke", ["resnext101"], image_size=32).training.image_size == {
        "resnext101": 32, "nasnet_large": 32}
    assert resolve_preset("paper", []).training.image_size == {
        entry: 224 for entry in STUDY_ORDER}


def test_an_image_size_below_a_backbones_minimum_is_refused():
    with pytest.raises(BenchmarkError, match="minimum"):
        _resolve("--preset", "smoke", "--image-size", "16", "--models", "inception_v3")
