"""The registry's rules (frozen configs, duplicates, names, kinds, plug-ins) and
`benchmark.py --list`."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

import benchmark
import zoo
from core.errors import BenchmarkError
from ensembles import ENSEMBLE_NAMES
from training.presets import PRESETS
from zoo.cli import backbone_rows, weights_source
from zoo.plugins import PLUGINS_ENV, plugin_modules
from zoo.registry import Builder, get_builder, unregister

REPO = Path(__file__).resolve().parents[2]


def test_configs_are_frozen():
    config = zoo.get_config("xception")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.input_size = 224  # type: ignore[misc]


def test_config_fields_for_the_api():
    config = zoo.get_config("inception_resnet_v2")
    assert (config.display_name, config.input_size, config.min_size, config.preprocessing) == (
        "InceptionResNetV2",
        299,
        75,
        "tf",
    )
    assert config.weights_url.startswith(
        "https://storage.googleapis.com/tensorflow/keras-applications/"
    )
    assert (
        config.weights_hash == "d19885ff4a710c122648d3b5c3b684e4" and config.hash_algorithm == "md5"
    )
    assert "arXiv:1602.07261" in config.paper and config.licence and config.pretrained
    assert (
        not zoo.get_config("paper_cnn").pretrained
        and zoo.get_config("paper_cnn").weights_url is None
    )


def test_duplicate_registration_raises():
    config = zoo.get_config("xception")
    with pytest.raises(ValueError, match=r"backbone 'xception' is already registered") as info:
        zoo.register(config, get_builder("xception"))
    assert isinstance(info.value, zoo.DuplicateBackboneError)
    assert zoo.list_backbones().count("xception") == 1


def test_register_and_unregister_a_new_backbone():
    config = dataclasses.replace(zoo.get_config("paper_cnn"), name="plugin_cnn")
    zoo.register(config, Builder(base=get_builder("paper_cnn").base))
    try:
        assert zoo.list_backbones()[-1] == "plugin_cnn"
        assert zoo.get_config("plugin_cnn").min_size == 64
    finally:
        unregister("plugin_cnn")
    assert "plugin_cnn" not in zoo.list_backbones()


@pytest.mark.parametrize("name", ["resnet50", "", None, "Xception"])
def test_unknown_name_lists_the_registered_ones(name):
    with pytest.raises(
        ValueError,
        match=r"unknown backbone .*choose one of: inception_v3, resnext101, "
        r"inception_resnet_v2, xception, nasnet_large, paper_cnn, convnext_tiny, ",
    ) as info:
        zoo.get_config(name)
    assert repr(name) in str(info.value)
    assert isinstance(info.value, BenchmarkError)


@pytest.mark.parametrize(
    ("changes", "pattern"),
    [
        ({"preprocessing": "bgr"},
         r"preprocessing 'bgr' is not one of tf, caffe, torch, unit, internal"),
        ({"family": " "}, r"family must be a non-empty name, got ' '"),
        ({"group": "all"}, r"group 'all' must be a lower-case name .* other than 'all'"),
        ({"group": "Modern"}, r"group 'Modern' must be a lower-case name"),
        ({"hash_algorithm": "sha1"}, r"hash_algorithm 'sha1' is not one of md5, sha256"),
        ({"min_size": 500}, r"min_size 500 must be between 1 and the input size 299"),
    ],
)
def test_config_validation(changes, pattern):
    with pytest.raises(ValueError, match=pattern):
        dataclasses.replace(zoo.get_config("xception"), **changes)


def test_registry_does_not_import_keras():
    code = (
        "import sys, zoo, zoo.cli; zoo.get_config('resnext101'); zoo.cli.backbone_rows(); "
        "print('keras' in sys.modules, 'tensorflow' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert result.stdout.split() == ["False", "False"]


def test_weights_source_descriptions():
    assert weights_source(zoo.get_config("paper_cnn")) == "none (trained from scratch)"
    assert weights_source(zoo.get_config("nasnet_large")) == (
        "Keras applications, storage.googleapis.com, md5 verified"
    )
    assert weights_source(zoo.get_config("resnext101")).startswith(
        "timm hub (torchvision), huggingface.co"
    )


def test_list_prints_backbones_ensembles_and_presets(capsys):
    assert benchmark.main(["--list"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["backbone", "input", "size"]
    assert "params (1000-class)" in lines[0] and "weights source" in lines[0]
    rows = {line.split()[0]: line for line in lines[2:2 + len(zoo.list_backbones())]}
    assert list(rows) == zoo.list_backbones()
    assert "ConvNeXt" in rows["convnext_tiny"] and " modern " in rows["convnext_tiny"]
    assert " internal " in rows["convnext_tiny"] and "sha256 verified" in rows["convnext_tiny"]
    assert " paper " in rows["xception"] and "384x384" in rows["efficientnet_v2_s"]
    assert "331x331" in rows["nasnet_large"] and "88,949,818" in rows["nasnet_large"]
    assert "224x224" in rows["resnext101"] and " torch " in rows["resnext101"]
    assert "88,791,336" in rows["resnext101"] and "huggingface.co" in rows["resnext101"]
    assert "none (trained from scratch)" in rows["paper_cnn"]
    assert rows["paper_cnn"].split()[-1] == "baseline" and rows["xception"].split()[-1] == "backbone"
    assert "ensembles (ensembles stage): " + ", ".join(ENSEMBLE_NAMES) in out
    assert "entries (training stage): inception_v3, resnext101, inception_resnet_v2, xception, " \
           "nasnet_large, convnext_tiny, convnext_small, efficientnet_v2_s, efficientnet_b3, " \
           "densenet121, resnet50_v2, mobilenet_v3_large, paper_cnn, inception_resnet_v2+svm" in out
    # The presets come from their one table, with its descriptions.
    for name, preset in PRESETS.items():
        assert f"\n  {name:<7} {preset.description}" in out


def test_backbone_rows_follow_the_configs():
    rows = backbone_rows()
    assert [row[0] for row in rows] == zoo.list_backbones()
    assert rows[0][1:5] == ["299x299", 75, "tf", "23,851,784"]
    assert rows[6][1:5] == ["224x224", 32, "internal", "28,589,128"]
    assert rows[6][-3:] == ["ConvNeXt", "modern", "backbone"]


def test_kinds_come_from_the_configs():
    assert zoo.list_backbones(kind="baseline") == ["paper_cnn"]
    assert zoo.list_backbones(kind="backbone") == [
        "inception_v3", "resnext101", "inception_resnet_v2", "xception", "nasnet_large",
        "convnext_tiny", "convnext_small", "efficientnet_v2_s", "efficientnet_b3", "densenet121",
        "resnet50_v2", "mobilenet_v3_large"]
    assert zoo.registered_kind("xception") == "backbone"
    assert zoo.registered_kind("paper_cnn") == "baseline"
    assert zoo.registered_kind("inception_resnet_v2+svm") is None
    assert zoo.registered_kind("efficientnet") is None
    with pytest.raises(ValueError, match="kind 'teacher' is not one of backbone, baseline"):
        dataclasses.replace(zoo.get_config("xception"), kind="teacher")


PLUGIN = """
import zoo


def _base(input_shape):
    import keras

    inputs = keras.Input(input_shape)
    return keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs), name="backbone")


zoo.register(zoo.BackboneConfig(
    name="plugin_net", display_name="Plugin net", input_size=64, min_size=32,
    preprocessing="unit", weights_url=None, weights_file=None, weights_hash=None,
    hash_algorithm=None, weights_format=None, params_1000=0, paper="test", licence="test",
    pretrained=True), zoo.Builder(base=_base))
"""


def _python(code: str, tmp_path: Path, modules: str) -> subprocess.CompletedProcess:
    env = {**os.environ, PLUGINS_ENV: modules,
           "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=120)


def test_a_backbone_module_named_in_the_environment_is_registered_without_keras(tmp_path):
    (tmp_path / "my_plugin.py").write_text(PLUGIN)
    code = ("import sys, zoo; from training.entries import all_entries, entry_kind; "
            "print(zoo.list_backbones()[-1], entry_kind('plugin_net'), "
            "all_entries().index('plugin_net'), 'keras' in sys.modules)")
    result = _python(code, tmp_path, " my_plugin , ")
    assert result.returncode == 0, result.stderr
    # After the registered backbones (the study's five, the seven modern), before the baselines;
    # without a group of its own, in the "extra" group.
    assert result.stdout.split() == ["plugin_net", "backbone", "12", "False"]
    code = ("from training.entries import expand_models, default_entries, model_groups; "
            "print(expand_models(['extra']), 'plugin_net' in default_entries(), model_groups())")
    result = _python(code, tmp_path, "my_plugin")
    assert result.stdout.split("\n")[0] == "['plugin_net'] False ['paper', 'modern', 'extra', 'all']"


def test_a_broken_plugin_is_named(tmp_path):
    result = _python("import zoo", tmp_path, "no_such_plugin_module")
    assert result.returncode != 0
    assert "DERMBENCH_BACKBONES: the backbone module 'no_such_plugin_module' failed" in result.stderr
    assert plugin_modules(" a, ,b ") == ["a", "b"]


def test_entry_points_of_the_group_are_loaded(monkeypatch):
    import importlib.metadata

    from zoo.plugins import ENTRY_POINT_GROUP, load_plugins

    calls = []

    class _Point:
        def __init__(self, value, target):
            self.name, self.value, self._target = value.split(":")[0], value, target

        def load(self):
            if isinstance(self._target, Exception):
                raise self._target
            return self._target

    points = [_Point("pkg:register", lambda: calls.append("called")), _Point("mod", sys)]
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group: points if group == ENTRY_POINT_GROUP else [])
    monkeypatch.delenv(PLUGINS_ENV, raising=False)
    assert load_plugins() == ["pkg:register", "mod"] and calls == ["called"]
    points[:] = [_Point("broken:go", ImportError("no module named broken"))]
    with pytest.raises(zoo.ZooValueError, match="entry point 'broken' .*dermbench.backbones"):
        load_plugins()


def test_groups_of_the_registry():
    assert zoo.list_groups() == ["paper", "modern"]
    assert [n for n in zoo.list_backbones() if zoo.get_config(n).group == "paper"] == [
        "inception_v3", "resnext101", "inception_resnet_v2", "xception", "nasnet_large",
        "paper_cnn"]
    config = dataclasses.replace(zoo.get_config("paper_cnn"), name="grouped_cnn", group="mine")
    assert dataclasses.replace(config, name="x").family == "paper CNN"
    zoo.register(config, get_builder("paper_cnn"))
    try:
        assert zoo.list_groups() == ["paper", "modern", "mine"]
    finally:
        unregister("grouped_cnn")
    defaults = zoo.BackboneConfig(
        name="bare", display_name="bare", input_size=64, min_size=32, preprocessing="unit",
        weights_url=None, weights_file=None, weights_hash=None, hash_algorithm=None,
        weights_format=None, params_1000=0, paper="p", licence="l", pretrained=False)
    assert (defaults.family, defaults.group, defaults.kind) == ("other", "extra", "backbone")
