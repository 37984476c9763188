"""The protocol fingerprint: what changes it, what does not, and how differences are named."""

from __future__ import annotations

import copy
import hashlib

import pytest

from training.fingerprint import (
    WEIGHTS_FILE_MARKER,
    ConfigDifference,
    canonical_json,
    diff_configs,
    file_sha256,
    fingerprint_view,
    format_differences,
    protocol_fingerprint,
)

SIGNATURES = {"splits_sha256": "a" * 64}


def _config() -> dict:
    return {
        "dataset": "synthetic", "data_dir": "/data/one", "split": "lesion",
        "ratios": (0.8, 0.1, 0.1), "folds": None, "seed": 0, "test_set": "split",
        "synthetic_images": 700, "resize_mode": "square", "allow_missing": False,
        "preset": "smoke", "entries": ["paper_cnn"], "deterministic": False, "weights": None,
        "weights_dir": None,
        "training": {"batch_size": 32, "phase1_epochs": 1, "image_size": {"paper_cnn": 64},
                     "augmentation": {"flip": "horizontal", "zoom": 0.05}},
        "svm": {"feature_size": 75, "C_grid": [0.1, 1.0]},
    }


def test_canonical_json_is_independent_of_key_order_and_tuples():
    assert canonical_json({"b": 1, "a": (1, 2)}) == canonical_json({"a": [1, 2], "b": 1})
    assert canonical_json({"b": 1, "a": (1, 2)}) == '{"a":[1,2],"b":1}'


def test_fingerprint_is_sha256_of_the_canonical_view():
    config = _config()
    expected = hashlib.sha256(
        canonical_json(fingerprint_view(config, SIGNATURES)).encode()).hexdigest()
    assert protocol_fingerprint(config, SIGNATURES) == expected
    assert len(expected) == 64


@pytest.mark.parametrize("key, value", [
    ("data_dir", "/somewhere/else"),
    ("entries", ["paper_cnn", "inception_v3"]),
    ("weights_dir", "/weights"),
])
def test_keys_that_do_not_change_results_leave_the_fingerprint(key, value):
    changed = _config()
    changed[key] = value
    assert protocol_fingerprint(changed, SIGNATURES) == protocol_fingerprint(_config(), SIGNATURES)


@pytest.mark.parametrize("path, value", [
    (("seed",), 1),
    (("split",), "image"),
    (("deterministic",), True),
    (("training", "phase1_epochs"), 2),
    (("training", "image_size", "paper_cnn"), 96),
    (("training", "augmentation", "zoom"), 0.0),
    (("svm", "C_grid"), [1.0]),
])
def test_result_changing_keys_change_the_fingerprint(path, value):
    changed = copy.deepcopy(_config())
    target = changed
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert protocol_fingerprint(changed, SIGNATURES) != protocol_fingerprint(_config(), SIGNATURES)


def test_the_data_content_changes_the_fingerprint():
    other = {"splits_sha256": "b" * 64}
    assert protocol_fingerprint(_config(), other) != protocol_fingerprint(_config(), SIGNATURES)


def test_a_weights_file_counts_by_content_not_path():
    one, two = _config(), _config()
    one["weights"], two["weights"] = "/a/model.weights.h5", "/b/copy.weights.h5"
    same = {**SIGNATURES, "weights_sha256": "c" * 64}
    assert fingerprint_view(one, same)["weights"] == WEIGHTS_FILE_MARKER
    assert protocol_fingerprint(one, same) == protocol_fingerprint(two, same)
    assert protocol_fingerprint(one, same) != protocol_fingerprint(
        two, {**SIGNATURES, "weights_sha256": "d" * 64})
    # "imagenet" is a named source and stays as it is.
    named = _config()
    named["weights"] = "imagenet"
    assert fingerprint_view(named, SIGNATURES)["weights"] == "imagenet"


def test_fingerprint_view_does_not_modify_its_input():
    config = _config()
    before = copy.deepcopy(config)
    fingerprint_view(config, SIGNATURES)
    assert config == before


def test_diff_names_nested_keys_with_old_and_new_values():
    old, new = _config(), _config()
    new["seed"] = 3
    new["training"]["phase1_epochs"] = 5
    new["training"]["augmentation"]["zoom"] = 0.0
    differences = diff_configs(fingerprint_view(old, SIGNATURES), fingerprint_view(new, SIGNATURES))
    assert differences == [
        ConfigDifference("seed", 0, 3),
        ConfigDifference("training.augmentation.zoom", 0.05, 0.0),
        ConfigDifference("training.phase1_epochs", 1, 5),
    ]
    assert format_differences(differences) == (
        "seed: 0 -> 3; training.augmentation.zoom: 0.05 -> 0.0; training.phase1_epochs: 1 -> 5")


def test_diff_reports_keys_present_on_one_side_and_type_changes():
    differences = diff_configs({"a": 1, "b": {"c": 1}}, {"a": True, "d": "x"})
    assert [(d.key, d.old, d.new) for d in differences] == [
        ("a", 1, True), ("b", {"c": 1}, None), ("d", None, "x")]


def test_diff_of_equal_configs_is_empty():
    assert diff_configs(_config(), copy.deepcopy(_config())) == []


def test_format_differences_truncates_long_lists_and_values():
    differences = [ConfigDifference(f"k{i}", i, i + 1) for i in range(10)]
    text = format_differences(differences, limit=3)
    assert text == "k0: 0 -> 1; k1: 1 -> 2; k2: 2 -> 3; and 7 more"
    long = str(ConfigDifference("x", "a" * 100, None))
    assert long == "x: " + "a" * 37 + "... -> null"


def test_file_sha256_matches_hashlib(tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(b"abc" * 1000)
    assert file_sha256(path, chunk_size=7) == hashlib.sha256(b"abc" * 1000).hexdigest()
