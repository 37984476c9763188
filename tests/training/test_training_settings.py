"""The typed config: resolving a command line gives exactly the run.json config the untyped code
wrote (so fingerprints of existing runs do not change), it reads back typed, and a broken
run.json names the file and the key.

OLD_CONFIGS and OLD_FINGERPRINTS were written down from the code before the typed config (commit
b5b6506: `resolve_config(...)` dicts printed with pprint, fingerprints with
`protocol_fingerprint(config, {"splits_sha256": "a" * 64})`).
"""

from __future__ import annotations

import dataclasses

import pytest

from benchmark import build_parser
from core.errors import RunDirError
from pipeline.replicates import replicate_config
from training.config import resolve_config
from training.fingerprint import canonical_json, protocol_fingerprint
from training.settings import (
    Augmentation,
    ConfigError,
    ReplicateInfo,
    RunConfig,
    SvmSettings,
    TrainingSettings,
)

SIGNATURES = {"splits_sha256": "a" * 64}
COMMAND_LINES = {
    "smoke": ["--preset", "smoke"],
    "smoke_grid": ["--preset", "smoke", "--models", "paper_cnn", "xception", "--epochs", "2",
                   "--batch-size", "8", "--seed", "3", "--deterministic", "--folds", "2",
                   "--seeds", "0,1"],
    "paper": ["--dataset", "synthetic", "--preset", "paper", "--image-size", "96", "--split",
              "image", "--ratios", "0.7,0.15,0.15", "--weights", "none", "--synthetic-images",
              "120", "--test-set", "split", "--resize-mode", "crop", "--allow-missing"],
    "native": ["--dataset", "synthetic", "--batch-size", "2"],
}
OLD_FINGERPRINTS = {
    "smoke": "0afdd074315f6f2ca196bca6423c2361bf480d7c56bb978f41193a9ce074bfbc",
    "smoke_grid": "9bbee7ca1fca37c61eb7574c452f17a476963db22fbb55034fdcf9ac1dfe1dc1",
    "paper": "c218abe64ccf8f9396794e94b81bcf01c4795bdefb337d0caffbb741094d2529",
    "native": "633a175a9eb73a5a1656bf471c76942a16b78cf01212e0c9135ac238ff372d71",
    # replicate_config(smoke_grid, fold=1, seed=1)
    "replicate": "66f17d719d5280bb738a2b100af1bfb9e23e8ec3362e9e5d7da02a9f266a0205",
}

OLD_CONFIGS = {'smoke': {'dataset': 'synthetic',
           'data_dir': None,
           'split': 'lesion',
           'ratios': [0.8, 0.1, 0.1],
           'folds': None,
           'seed': 0,
           'test_set': 'split',
           'synthetic_images': 700,
           'resize_mode': 'square',
           'allow_missing': False,
           'preset': 'smoke',
           'entries': ['inception_v3',
                       'resnext101',
                       'inception_resnet_v2',
                       'xception',
                       'nasnet_large',
                       'paper_cnn',
                       'inception_resnet_v2+svm'],
           'deterministic': False,
           'weights': None,
           'weights_dir': None,
           'training': {'preprocessing': None,
                        'batch_size': 32,
                        'min_batch_size': 2,
                        'optimizer': 'adamw',
                        'weight_decay': 0.0001,
                        'phase1_epochs': 1,
                        'phase2_epochs': 1,
                        'scratch_epochs': 50,
                        'phase1_lr': 0.001,
                        'phase2_lr': 0.0003,
                        'scratch_lr': 0.001,
                        'schedule': 'cosine',
                        'warmup_epochs': 1,
                        'min_lr_fraction': 0.05,
                        'unfreeze_fraction': 0.1,
                        'dropout': 0.1,
                        'label_smoothing': 0.0,
                        'early_stopping_patience': 0,
                        'class_weighting': 'balanced',
                        'balanced_sampling': False,
                        'steps_per_epoch': None,
                        'augmentation': {'flip': 'horizontal_and_vertical',
                                         'rotation': 20.0,
                                         'shift': 0.05,
                                         'zoom': 0.05},
                        'mixed_precision': 'auto',
                        'eval_batch_size': None,
                        'image_size': {'inception_v3': 75,
                                       'resnext101': 32,
                                       'inception_resnet_v2': 75,
                                       'xception': 71,
                                       'nasnet_large': 32,
                                       'paper_cnn': 64,
                                       'inception_resnet_v2+svm': 75}},
           'svm': {'feature_size': 75,
                   'C_grid': [0.1, 1.0, 10.0],
                   'kernel': 'rbf',
                   'class_weight': 'balanced',
                   'batch_size': 32}},
 'smoke_grid': {'dataset': 'synthetic',
                'data_dir': None,
                'split': 'lesion',
                'ratios': [0.8, 0.1, 0.1],
                'folds': 2,
                'seed': 3,
                'grid': True,
                'seeds': [0, 1],
                'test_set': 'split',
                'synthetic_images': 700,
                'resize_mode': 'square',
                'allow_missing': False,
                'preset': 'smoke',
                'entries': ['paper_cnn', 'xception'],
                'deterministic': True,
                'weights': None,
                'weights_dir': None,
                'training': {'preprocessing': None,
                             'batch_size': 8,
                             'min_batch_size': 2,
                             'optimizer': 'adamw',
                             'weight_decay': 0.0001,
                             'phase1_epochs': 2,
                             'phase2_epochs': 2,
                             'scratch_epochs': 2,
                             'phase1_lr': 0.001,
                             'phase2_lr': 0.0003,
                             'scratch_lr': 0.001,
                             'schedule': 'cosine',
                             'warmup_epochs': 1,
                             'min_lr_fraction': 0.05,
                             'unfreeze_fraction': 0.1,
                             'dropout': 0.1,
                             'label_smoothing': 0.0,
                             'early_stopping_patience': 0,
                             'class_weighting': 'balanced',
                             'balanced_sampling': False,
                             'steps_per_epoch': None,
                             'augmentation': {'flip': 'horizontal_and_vertical',
                                              'rotation': 20.0,
                                              'shift': 0.05,
                                              'zoom': 0.05},
                             'mixed_precision': 'auto',
                             'eval_batch_size': None,
                             'image_size': {'inception_v3': 75,
                                            'resnext101': 32,
                                            'inception_resnet_v2': 75,
                                            'xception': 71,
                                            'nasnet_large': 32,
                                            'paper_cnn': 64,
                                            'inception_resnet_v2+svm': 75}},
                'svm': {'feature_size': 75,
                        'C_grid': [0.1, 1.0, 10.0],
                        'kernel': 'rbf',
                        'class_weight': 'balanced',
                        'batch_size': 32}},
 'paper': {'dataset': 'synthetic',
           'data_dir': None,
           'split': 'image',
           'ratios': [0.7, 0.15, 0.15],
           'folds': None,
           'seed': 0,
           'test_set': 'split',
           'synthetic_images': 120,
           'resize_mode': 'crop',
           'allow_missing': True,
           'preset': 'paper',
           'entries': ['inception_v3',
                       'resnext101',
                       'inception_resnet_v2',
                       'xception',
                       'nasnet_large',
                       'paper_cnn',
                       'inception_resnet_v2+svm'],
           'deterministic': False,
           'weights': None,
           'weights_dir': None,
           'training': {'preprocessing': 'unit',
                        'batch_size': 32,
                        'min_batch_size': 4,
                        'optimizer': 'adamw',
                        'weight_decay': 0.0,
                        'phase1_epochs': 5,
                        'phase2_epochs': 45,
                        'scratch_epochs': 50,
                        'phase1_lr': 0.001,
                        'phase2_lr': 0.0001,
                        'scratch_lr': 0.001,
                        'schedule': 'cosine',
                        'warmup_epochs': 0,
                        'min_lr_fraction': 1.0,
                        'unfreeze_fraction': 0.3,
                        'dropout': 0.3,
                        'label_smoothing': 0.0,
                        'early_stopping_patience': 10,
                        'class_weighting': 'balanced',
                        'balanced_sampling': False,
                        'steps_per_epoch': None,
                        'augmentation': {'flip': 'horizontal',
                                         'rotation': 20.0,
                                         'shift': 0.1,
                                         'zoom': 0.0},
                        'mixed_precision': 'auto',
                        'eval_batch_size': None,
                        'image_size': {'inception_v3': 96,
                                       'resnext101': 96,
                                       'inception_resnet_v2': 96,
                                       'xception': 96,
                                       'nasnet_large': 96,
                                       'paper_cnn': 96,
                                       'inception_resnet_v2+svm': 96}},
           'svm': {'feature_size': 96,
                   'C_grid': [0.1, 1.0, 10.0, 100.0],
                   'kernel': 'rbf',
                   'class_weight': 'balanced',
                   'batch_size': 32}},
 'native': {'dataset': 'synthetic',
            'data_dir': None,
            'split': 'lesion',
            'ratios': [0.8, 0.1, 0.1],
            'folds': None,
            'seed': 0,
            'test_set': 'split',
            'synthetic_images': 700,
            'resize_mode': 'square',
            'allow_missing': False,
            'preset': 'native',
            'entries': ['inception_v3',
                        'resnext101',
                        'inception_resnet_v2',
                        'xception',
                        'nasnet_large',
                        'paper_cnn',
                        'inception_resnet_v2+svm'],
            'deterministic': False,
            'weights': 'imagenet',
            'weights_dir': None,
            'training': {'preprocessing': None,
                         'batch_size': 2,
                         'min_batch_size': 2,
                         'optimizer': 'adamw',
                         'weight_decay': 0.0001,
                         'phase1_epochs': 5,
                         'phase2_epochs': 30,
                         'scratch_epochs': 60,
                         'phase1_lr': 0.001,
                         'phase2_lr': 0.0001,
                         'scratch_lr': 0.001,
                         'schedule': 'cosine',
                         'warmup_epochs': 1,
                         'min_lr_fraction': 0.01,
                         'unfreeze_fraction': 0.3,
                         'dropout': 0.3,
                         'label_smoothing': 0.0,
                         'early_stopping_patience': 8,
                         'class_weighting': 'balanced',
                         'balanced_sampling': False,
                         'steps_per_epoch': None,
                         'augmentation': {'flip': 'horizontal_and_vertical',
                                          'rotation': 180.0,
                                          'shift': 0.1,
                                          'zoom': 0.1},
                         'mixed_precision': 'auto',
                         'eval_batch_size': None,
                         'image_size': {'inception_v3': 299,
                                        'resnext101': 224,
                                        'inception_resnet_v2': 299,
                                        'xception': 299,
                                        'nasnet_large': 331,
                                        'paper_cnn': 224,
                                        'inception_resnet_v2+svm': 299}},
            'svm': {'feature_size': 299,
                    'C_grid': [0.1, 1.0, 10.0, 100.0],
                    'kernel': 'rbf',
                    'class_weight': 'balanced',
                    'batch_size': 32}},
 'replicate': {'dataset': 'synthetic',
               'data_dir': None,
               'split': 'lesion',
               'ratios': [0.8, 0.1, 0.1],
               'folds': 2,
               'seed': 1,
               'test_set': 'split',
               'synthetic_images': 700,
               'resize_mode': 'square',
               'allow_missing': False,
               'preset': 'smoke',
               'entries': ['paper_cnn', 'xception'],
               'deterministic': True,
               'weights': None,
               'weights_dir': None,
               'training': {'preprocessing': None,
                            'batch_size': 8,
                            'min_batch_size': 2,
                            'optimizer': 'adamw',
                            'weight_decay': 0.0001,
                            'phase1_epochs': 2,
                            'phase2_epochs': 2,
                            'scratch_epochs': 2,
                            'phase1_lr': 0.001,
                            'phase2_lr': 0.0003,
                            'scratch_lr': 0.001,
                            'schedule': 'cosine',
                            'warmup_epochs': 1,
                            'min_lr_fraction': 0.05,
                            'unfreeze_fraction': 0.1,
                            'dropout': 0.1,
                            'label_smoothing': 0.0,
                            'early_stopping_patience': 0,
                            'class_weighting': 'balanced',
                            'balanced_sampling': False,
                            'steps_per_epoch': None,
                            'augmentation': {'flip': 'horizontal_and_vertical',
                                             'rotation': 20.0,
                                             'shift': 0.05,
                                             'zoom': 0.05},
                            'mixed_precision': 'auto',
                            'eval_batch_size': None,
                            'image_size': {'inception_v3': 75,
                                           'resnext101': 32,
                                           'inception_resnet_v2': 75,
                                           'xception': 71,
                                           'nasnet_large': 32,
                                           'paper_cnn': 64,
                                           'inception_resnet_v2+svm': 75}},
               'svm': {'feature_size': 75,
                       'C_grid': [0.1, 1.0, 10.0],
                       'kernel': 'rbf',
                       'class_weight': 'balanced',
                       'batch_size': 32},
               'data_seed': 3,
               'fold': 1}}


@pytest.fixture(autouse=True)
def _no_weights_env(monkeypatch):
    monkeypatch.delenv("DERMBENCH_WEIGHTS_DIR", raising=False)


def _resolve(name: str) -> RunConfig:
    return resolve_config(build_parser().parse_args(["--all", *COMMAND_LINES[name]]))


@pytest.mark.parametrize("name", sorted(COMMAND_LINES))
def test_resolved_configs_write_the_dicts_and_fingerprints_of_the_untyped_code(name):
    config = _resolve(name)
    written = config.to_dict()
    assert written == OLD_CONFIGS[name]
    # Same values and same types (1 vs 1.0 would hash differently): the canonical JSON agrees.
    assert canonical_json(written) == canonical_json(OLD_CONFIGS[name])
    assert protocol_fingerprint(written, SIGNATURES) == OLD_FINGERPRINTS[name]
    assert RunConfig.from_dict(written) == config


def test_a_replicate_config_writes_the_dict_of_the_untyped_code():
    replicate = replicate_config(_resolve("smoke_grid"), 1, 1)
    assert replicate.to_dict() == OLD_CONFIGS["replicate"]
    assert protocol_fingerprint(replicate.to_dict(), SIGNATURES) == OLD_FINGERPRINTS["replicate"]
    assert RunConfig.from_dict(replicate.to_dict()) == replicate
    assert (replicate.seed, replicate.data_seed, replicate.fold) == (1, 3, 1)
    assert not replicate.is_grid and replicate.replicate == ReplicateInfo(data_seed=3, fold=1)


def test_keys_the_untyped_code_omitted_stay_omitted_at_their_default():
    config = _resolve("smoke")
    assert {"backend", "grid", "seeds", "data_seed", "fold"}.isdisjoint(config.to_dict())
    assert "jit_compile" not in config.to_dict()["training"]
    assert config.training.jit_compile is False and config.backend == "tensorflow"
    # Set, they are written and read back.
    changed = dataclasses.replace(config.with_training(jit_compile=True), backend="jax")
    written = changed.to_dict()
    assert written["backend"] == "jax" and written["training"]["jit_compile"] is True
    assert RunConfig.from_dict(written) == changed
    assert protocol_fingerprint(written, SIGNATURES) != OLD_FINGERPRINTS["smoke"]


def test_the_backend_is_resolved_into_the_config(monkeypatch):
    import keras

    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    config = _resolve("smoke")
    assert config.backend == "jax" and config.to_dict()["backend"] == "jax"
    assert config.to_dict() == {**OLD_CONFIGS["smoke"], "backend": "jax"}


def test_settings_arrive_typed():
    config = RunConfig.from_dict(OLD_CONFIGS["smoke_grid"])
    assert isinstance(config.training, TrainingSettings)
    assert isinstance(config.training.augmentation, Augmentation)
    assert isinstance(config.svm, SvmSettings)
    assert config.ratios == (0.8, 0.1, 0.1) and config.entries == ("paper_cnn", "xception")
    assert config.seeds == (0, 1) and config.is_grid and config.grid_folds == [0, 1]
    assert config.svm.C_grid == (0.1, 1.0, 10.0)
    assert config.training.warmup_epochs == 1 and type(config.training.warmup_epochs) is int
    assert config.image_sizes() == (64, 71)


def _without(data: dict, *path: str) -> dict:
    import copy

    data = copy.deepcopy(data)
    target = data
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return data


def _with(data: dict, value, *path: str) -> dict:
    import copy

    data = copy.deepcopy(data)
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return data


SMOKE = OLD_CONFIGS["smoke"]


@pytest.mark.parametrize(("data", "message"), [
    (_without(SMOKE, "seed"), r"run\.json: config key 'seed' is missing"),
    (_without(SMOKE, "training", "dropout"), r"config key 'training\.dropout' is missing"),
    (_without(SMOKE, "training", "augmentation", "zoom"),
     r"config key 'training\.augmentation\.zoom' is missing"),
    (_with(SMOKE, 1, "training", "epochs"), r"unknown config key\(s\) 'training\.epochs'"),
    (_with(SMOKE, 1, "colour"), r"unknown config key\(s\) 'colour'"),
    (_with(SMOKE, "32", "training", "batch_size"),
     r"config key 'training\.batch_size' is '32', expected int"),
    (_with(SMOKE, True, "seed"), r"config key 'seed' is True, expected int"),
    (_with(SMOKE, [0.8, 0.2], "ratios"), r"config key 'ratios' is \[0\.8, 0\.2\]"),
    (_with(SMOKE, [0, 1], "seeds"), r"'grid' .*and 'seeds' must come together"),
    (_with(SMOKE, 3, "data_seed"), r"'data_seed' .*and 'fold' must come together"),
    (_with(SMOKE, {"a": "big"}, "training", "image_size"),
     r"config key 'training\.image_size' is .*expected an object"),
    ([1, 2], r"run\.json: its config is list, not a JSON object"),
])
def test_a_broken_config_names_run_json_and_the_key(data, message):
    with pytest.raises(RunDirError, match=message) as info:
        RunConfig.from_dict(data, "run.json")
    assert "--force-new" in str(info.value)


def test_steps_per_epoch_is_declared_and_must_stay_null():
    with pytest.raises(ConfigError, match="steps_per_epoch"):
        TrainingSettings(steps_per_epoch=10)
    with pytest.raises(ConfigError, match="steps_per_epoch"):
        RunConfig.from_dict(_with(SMOKE, 10, "training", "steps_per_epoch"))


def test_every_setting_the_code_reads_is_declared():
    """The untyped code's keys are the typed fields (plus jit_compile, which no preset sets)."""
    assert {f.name for f in dataclasses.fields(TrainingSettings)} == (
        set(SMOKE["training"]) | {"jit_compile"})
    assert {f.name for f in dataclasses.fields(Augmentation)} == set(
        SMOKE["training"]["augmentation"])
    assert {f.name for f in dataclasses.fields(SvmSettings)} == set(SMOKE["svm"])
    flat = {f.name for f in dataclasses.fields(RunConfig)} - {"seeds", "replicate", "backend"}
    assert flat == set(SMOKE)
