"""Unit tests of the pure training policies and the presets (hand-computed values)."""

from __future__ import annotations

import math

import pytest

from training import entries, policies, presets
from training.errors import ConfigError
from training.settings import TrainingSettings

# Five-layer residual blocks: the Add ends each block.
BLOCK = ["Conv2D", "BatchNormalization", "Activation", "Conv2D", "Add"]


def test_unfreeze_start_snaps_to_the_nearest_block_boundary():
    types = BLOCK * 4  # 20 layers, blocks start at 0, 5, 10, 15
    # raw boundary 20 - round(0.3 * 20) = 14, nearest block start within 2 layers: 15
    assert policies.unfreeze_start(types, 0.3) == 15
    # raw 20 - 9 = 11 -> block start 10
    assert policies.unfreeze_start(types, 0.45) == 10


def test_unfreeze_start_edges_and_no_boundaries():
    types = BLOCK * 4
    assert policies.unfreeze_start(types, 0.0) == 20
    assert policies.unfreeze_start(types, 1.0) == 0
    plain = ["Conv2D"] * 10
    assert policies.unfreeze_start(plain, 0.3) == 7
    with pytest.raises(ValueError, match="unfreeze_fraction"):
        policies.unfreeze_start(plain, 1.5)


def test_trainable_flags_keep_batchnorm_frozen():
    types = BLOCK * 2
    flags = policies.trainable_flags(types, 5)
    assert flags == [False] * 5 + [True, False, True, True, True]
    unfrozen = [t for t, f in zip(types, flags, strict=True) if f]
    assert "BatchNormalization" not in unfrozen
    assert len(unfrozen) == 4


def test_trainable_flags_keep_layernorm_frozen_like_batchnorm():
    # A ConvNeXt block as the base lists it: the residual Add is an op of the graph.
    convnext_block = ["Conv2D", "LayerNormalization", "Dense", "Activation", "Dense",
                      "LayerScale", "Activation", "Add"]
    types = ["Sequential"] + convnext_block * 2
    start = policies.unfreeze_start(types, 0.5)
    assert start == 9  # raw 17 - round(8.5) = 9: right after the first block's Add
    flags = policies.trainable_flags(types, start)
    assert flags == [False] * 9 + [True, False, True, True, True, True, True, True]
    assert policies.FROZEN_NORM_TYPES == ("BatchNormalization", "SyncBatchNormalization",
                                          "LayerNormalization")


def test_class_weights_balanced_hand_values():
    weights = policies.class_weights([10, 30, 0, 60])
    # n = 100, k = 3 present classes: n / (k * count)
    assert weights[0] == pytest.approx(100 / 30)
    assert weights[1] == pytest.approx(100 / 90)
    assert weights[2] == 1.0
    assert weights[3] == pytest.approx(100 / 180)
    assert policies.class_weights([5, 5], "none") == {0: 1.0, 1: 1.0}


def test_class_weights_match_sklearn_on_present_classes():
    import numpy as np
    from sklearn.utils.class_weight import compute_class_weight

    y = np.array([0] * 7 + [1] * 2 + [3] * 11)
    expected = compute_class_weight("balanced", classes=np.array([0, 1, 3]), y=y)
    got = policies.class_weights(np.bincount(y, minlength=4))
    assert [got[0], got[1], got[3]] == pytest.approx(list(expected))


def test_class_weights_errors():
    with pytest.raises(ValueError, match="no samples"):
        policies.class_weights([0, 0])
    with pytest.raises(ValueError, match="class_weighting"):
        policies.class_weights([1, 2], "inverse")
    with pytest.raises(ValueError, match=">= 0"):
        policies.class_weights([1, -2])


def test_learning_rate_warmup_then_cosine():
    lr = 1e-3
    assert policies.learning_rate(0, lr, 10, 100) == 0.0
    assert policies.learning_rate(5, lr, 10, 100) == pytest.approx(5e-4)
    assert policies.learning_rate(10, lr, 10, 100) == pytest.approx(1e-3)
    assert policies.learning_rate(60, lr, 10, 100) == pytest.approx(5e-4)
    assert policies.learning_rate(110, lr, 10, 100) == pytest.approx(0.0, abs=1e-12)
    # alpha: decays to alpha * lr and stays there
    assert policies.learning_rate(60, lr, 10, 100, alpha=0.1) == pytest.approx(5.5e-4)
    assert policies.learning_rate(500, lr, 10, 100, alpha=0.1) == pytest.approx(1e-4)
    # no warmup: starts at the peak
    assert policies.learning_rate(0, lr, 0, 100) == pytest.approx(1e-3)


def test_schedule_steps():
    assert policies.schedule_steps(3, 10, 1) == (10, 20)
    assert policies.schedule_steps(1, 10, 5) == (5, 5)  # warmup capped at half the phase
    assert policies.schedule_steps(2, 7, 0) == (0, 14)


def test_next_batch_size_halves_down_to_the_floor():
    assert policies.next_batch_size(32, 4) == 16
    assert policies.next_batch_size(8, 4) == 4
    assert policies.next_batch_size(7, 4) is None  # 3 < 4
    assert policies.next_batch_size(4, 4) is None
    assert policies.next_batch_size(2, 1) == 1
    assert policies.next_batch_size(1, 1) is None


def test_early_stopping_bookkeeping():
    state = policies.EarlyStopping()
    state, improved, stop = policies.update_early_stopping(state, 0.5, 1, patience=2)
    assert (state.best, state.best_epoch, state.waited, improved, stop) == (0.5, 1, 0, True, False)
    state, improved, stop = policies.update_early_stopping(state, 0.5, 2, patience=2)
    assert (state.waited, improved, stop) == (1, False, False)
    state, improved, stop = policies.update_early_stopping(state, math.nan, 3, patience=2)
    assert (state.best, state.waited, improved, stop) == (0.5, 2, False, True)
    # patience 0 never stops
    _, _, stop = policies.update_early_stopping(state, 0.1, 4, patience=0)
    assert stop is False


def test_phase_plan():
    training = TrainingSettings(phase1_epochs=2, phase2_epochs=0, scratch_epochs=5,
                                phase1_lr=1e-3, phase2_lr=1e-4, scratch_lr=5e-4)
    assert policies.phase_plan(training, pretrained=True) == [policies.Phase("frozen", 2, 1e-3)]
    assert policies.phase_plan(training, pretrained=False) == [policies.Phase("scratch", 5, 5e-4)]
    training = TrainingSettings(phase1_epochs=2, phase2_epochs=3)
    assert [p.name for p in policies.phase_plan(training, True)] == ["frozen", "finetune"]


def test_preset_image_sizes():
    assert presets.image_size_for("native", "xception") == 299
    assert presets.image_size_for("native", "nasnet_large") == 331
    assert presets.image_size_for("paper", "nasnet_large") == 224
    assert presets.image_size_for("smoke", "paper_cnn") == 64
    assert presets.image_size_for("smoke", "inception_v3") == 75  # its minimum
    assert presets.image_size_for("smoke", "nasnet_large") == 32
    assert presets.image_size_for("smoke", entries.SVM_ENTRY) == 75
    assert presets.image_size_for("native", "xception", override=128) == 128
    with pytest.raises(presets.PresetError, match="minimum"):
        presets.image_size_for("native", "inception_v3", override=64)
    with pytest.raises(ConfigError, match="unknown entry 'vgg16'; choose from inception_v3"):
        presets.image_size_for("native", "vgg16")
    with pytest.raises(presets.PresetError, match="unknown preset"):
        presets.get_preset("fast")


def test_resolve_preset_applies_overrides():
    resolved = presets.resolve_preset("smoke", ["paper_cnn", entries.SVM_ENTRY], epochs=3,
                                      batch_size=8)
    training = resolved.training
    assert resolved.weights is None and resolved.name == "smoke"
    assert (training.phase1_epochs, training.phase2_epochs, training.scratch_epochs) == (3, 3, 3)
    assert training.batch_size == 8 and training.min_batch_size <= 8
    # The paper group's sizes, selected or not (as runs recorded them before the modern group
    # existed), plus any selected entry outside it.
    assert training.image_size["paper_cnn"] == 64 and training.image_size[entries.SVM_ENTRY] == 75
    assert set(training.image_size) == set(entries.default_entries())
    modern = presets.resolve_preset("smoke", ["xception", "convnext_tiny"]).training.image_size
    assert set(modern) == {*entries.default_entries(), "convnext_tiny"}
    assert modern["convnext_tiny"] == 32
    assert resolved.svm.feature_size == 75
    paper = presets.resolve_preset("paper", ["xception"])
    assert paper.training.preprocessing == "unit"
    assert paper.training.augmentation.zoom == 0.0
    assert paper.weights == "imagenet"
    # the preset itself is unchanged
    assert presets.get_preset("paper").training.image_size == {}
    assert presets.get_preset("smoke").svm.feature_size is None


def test_the_preset_table_is_the_one_source_of_names():
    assert presets.PRESET_NAMES == tuple(presets.PRESETS) == ("native", "paper", "smoke")
    assert presets.DEFAULT_PRESET in presets.PRESETS
    from core import defaults

    assert defaults.SMOKE_PRESET in presets.PRESETS
    assert all(p.description for p in presets.PRESETS.values())
    # The native preset is the settings' defaults; the others differ from it.
    assert presets.get_preset(None).training == TrainingSettings()
    assert presets.get_preset("smoke").training.phase1_epochs == 1


def test_the_readme_lists_the_presets_of_the_table():
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    readme = readme.split("\n## Presets\n", 1)[1].split("\n#", 1)[0]  # the preset table only
    rows = re.findall(r"^\| `(\w+)`( \(default\))? \|", readme, flags=re.MULTILINE)
    assert [name for name, _ in rows] == list(presets.PRESET_NAMES)
    assert [name for name, default in rows if default] == [presets.DEFAULT_PRESET]


PAPER = ["inception_v3", "resnext101", "inception_resnet_v2", "xception", "nasnet_large",
         "paper_cnn", "inception_resnet_v2+svm"]
MODERN = ["convnext_tiny", "convnext_small", "efficientnet_v2_s", "efficientnet_b3",
          "densenet121", "resnet50_v2", "mobilenet_v3_large"]


def test_entries_and_kinds():
    assert entries.all_entries() == PAPER[:5] + MODERN + PAPER[5:]
    assert entries.backbone_of(entries.SVM_ENTRY) == "inception_resnet_v2"
    assert entries.entry_kind("xception") == "backbone"
    assert entries.entry_kind("paper_cnn") == "baseline"
    assert entries.entry_kind(entries.SVM_ENTRY) == "baseline"


def test_a_registered_backbone_is_an_entry_in_its_place():
    import dataclasses

    import zoo
    from zoo.registry import get_builder, unregister

    config = dataclasses.replace(zoo.get_config("xception"), name="extra_net")
    scratch = dataclasses.replace(zoo.get_config("paper_cnn"), name="extra_cnn")
    zoo.register(scratch, get_builder("paper_cnn"))
    zoo.register(config, get_builder("xception"))
    try:
        assert entries.all_entries() == [*PAPER[:5], *MODERN, "extra_net", "paper_cnn",
                                         "extra_cnn", "inception_resnet_v2+svm"]
        # registered as copies of paper-group backbones, they are in the paper group
        assert entries.default_entries() == [*PAPER[:5], "extra_net", "paper_cnn", "extra_cnn",
                                             "inception_resnet_v2+svm"]
        assert entries.entry_kind("extra_cnn") == "baseline"
        assert presets.image_size_for("smoke", "extra_net") == 71
    finally:
        unregister("extra_net")
        unregister("extra_cnn")


def test_small_image_size_is_refused_only_for_entries_that_run():
    resolved = presets.resolve_preset("smoke", ["resnext101"], image_size=32)
    assert resolved.training.image_size == {"resnext101": 32, "nasnet_large": 32}
    assert resolved.svm.feature_size is None
    with pytest.raises(presets.PresetError, match="inception_resnet_v2"):
        presets.resolve_preset("smoke", ["inception_resnet_v2+svm"], image_size=32)


def test_model_groups_expand_in_order_without_duplicates():
    assert entries.model_groups() == ["paper", "modern", "all"]
    assert entries.default_entries() == PAPER == entries.expand_models(None)
    assert entries.expand_models([]) == PAPER
    assert entries.group_entries("modern") == MODERN
    assert entries.expand_models(["modern"]) == MODERN
    assert entries.expand_models(["all"]) == entries.all_entries()
    assert entries.expand_models(["xception", "modern", "densenet121", "paper", "xception"]) == [
        "xception", *MODERN, *[e for e in PAPER if e != "xception"]]
    assert entries.expand_models(["paper_cnn", "xception", "paper_cnn"]) == [
        "paper_cnn", "xception"]
    assert entries.PAPER_GROUP == "paper"


def test_entry_groups_and_families():
    assert [entries.entry_group(e) for e in PAPER] == ["paper"] * 7
    assert {entries.entry_group(e) for e in MODERN} == {"modern"}
    assert [entries.entry_family(e) for e in MODERN] == [
        "ConvNeXt", "ConvNeXt", "EfficientNet", "EfficientNet", "DenseNet", "ResNet",
        "MobileNet"]
    assert entries.entry_family(entries.SVM_ENTRY) == "SVM"
    assert entries.entry_family("paper_cnn") == "paper CNN"
    assert all(entries.entry_kind(e) == "backbone" for e in MODERN)


@pytest.mark.parametrize(
    ("names", "pattern"),
    [
        (["vgg16"], r"unknown model\(s\) 'vgg16' in --models; choose entries from inception_v3, "
                    r".*mobilenet_v3_large, paper_cnn, inception_resnet_v2\+svm, or groups from "
                    r"paper, modern, all"),
        (["modern", "Modern", "x"], r"unknown model\(s\) 'Modern', 'x' in --models"),
    ],
)
def test_unknown_models_and_groups_are_refused(names, pattern):
    with pytest.raises(ConfigError, match=pattern):
        entries.expand_models(names)


def test_unknown_group_is_refused():
    with pytest.raises(ConfigError, match="unknown model group 'nets'; choose from paper, modern, "
                                          "all"):
        entries.group_entries("nets")


def test_the_fingerprint_does_not_depend_on_models_outside_the_paper_group():
    """Adding a modern backbone to a run keeps its fingerprint (and that of runs made before
    the modern group existed): only the paper entries' sizes enter it."""
    from training.fingerprint import protocol_fingerprint

    paper = presets.resolve_preset("smoke", ["xception"])
    mixed = presets.resolve_preset("smoke", ["xception", "densenet121"])
    assert "densenet121" in mixed.training.image_size
    config = {"preset": "smoke", "training": {"image_size": dict(paper.training.image_size)}}
    with_modern = {"preset": "smoke", "training": {"image_size": dict(mixed.training.image_size)}}
    assert protocol_fingerprint(config, {}) == protocol_fingerprint(with_modern, {})
    changed = {"preset": "smoke", "training": {"image_size": {
        **paper.training.image_size, "xception": 99}}}
    assert protocol_fingerprint(changed, {}) != protocol_fingerprint(config, {})
