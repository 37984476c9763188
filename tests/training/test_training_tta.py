"""Test-time augmentation (training.tta, the name helpers of training.entries): the dihedral views
checked by hand, the mean of a model's softmax over them, a flip-invariant model whose TTA equals
its plain prediction, and when a derived entry is current, recomputed or skipped (no training:
the weights are stand-in bytes)."""

from __future__ import annotations

import numpy as np
import pytest

from core.atomic import atomic_write_json
from core.classes import CLASSES
from core.predictions import make_predictions, write_predictions
from core.rundir import RunDir
from training.entries import (
    TTA_KIND,
    check_entry,
    entry_description,
    entry_family,
    entry_kind,
    is_tta_entry,
    tta_entry_name,
    tta_source,
    tta_views,
)
from training.errors import ConfigError
from training.fingerprint import file_sha256
from training.tta import (
    CURRENT,
    SKIPPED,
    SOURCE_HASH_KEY,
    dihedral_views,
    plan_source,
    source_entries,
    stale_tta_entries,
    tta_is_current,
    tta_probabilities,
)

# ---------------------------------------------------------------------------------------------
# names


def test_tta_names_round_trip():
    assert tta_entry_name("xception", 8) == "xception+tta8"
    assert tta_entry_name("paper_cnn", 1) == "paper_cnn+tta1"
    assert is_tta_entry("xception+tta8") and not is_tta_entry("xception")
    assert not is_tta_entry("inception_resnet_v2+svm") and not is_tta_entry("x+tta")
    assert tta_source("inception_v3+tta4") == "inception_v3" and tta_views("inception_v3+tta4") == 4
    assert entry_kind("xception+tta8") == TTA_KIND
    assert entry_family("xception+tta2") == entry_family("xception")
    assert "8 dihedral views" in entry_description("xception+tta8")


def test_check_entry_accepts_derived_names_of_cnn_entries_only():
    assert check_entry("xception+tta8") == "xception+tta8"
    assert check_entry("paper_cnn+tta2") == "paper_cnn+tta2"
    with pytest.raises(ConfigError, match="unknown entry 'xception\\+tta8'"):
        check_entry("xception+tta8", derived=False)


@pytest.mark.parametrize(("name", "match"), [
    ("xception+tta3", "unknown entry 'xception\\+tta3'"),
    ("inception_resnet_v2+svm+tta8", "unknown entry"),
    ("nope+tta8", "unknown entry 'nope\\+tta8'"),
    ("xception+tta8+tta8", "unknown entry"),
])
def test_check_entry_refuses_bad_derived_names(name, match):
    with pytest.raises(ConfigError, match=match):
        check_entry(name)


@pytest.mark.parametrize(("entry", "views", "match"), [
    ("xception", 3, "takes 1, 2, 4, 8 views, not 3"),
    ("xception", True, "not True"),
    ("inception_resnet_v2+svm", 8, "no Keras model"),
    ("xception+tta8", 8, "no Keras model"),
])
def test_tta_entry_name_refuses(entry, views, match):
    with pytest.raises(ConfigError, match=match):
        tta_entry_name(entry, views)


@pytest.mark.parametrize("name", ["xception", "x+tta", "x+ttaA"])
def test_tta_source_of_a_plain_name_is_refused(name):
    with pytest.raises(ConfigError, match="not a test-time-augmentation entry"):
        tta_source(name)


# ---------------------------------------------------------------------------------------------
# views

# The 2x2 image [[1, 2], [3, 4]] (one channel) and its eight views, worked out by hand:
# mirror left-right, upside down, both; then the transpose of each of those four.
HAND = [
    [[1, 2], [3, 4]],  # identity
    [[2, 1], [4, 3]],  # horizontal flip
    [[3, 4], [1, 2]],  # vertical flip
    [[4, 3], [2, 1]],  # both flips (180 degrees)
    [[1, 3], [2, 4]],  # transpose
    [[2, 4], [1, 3]],  # transpose of the horizontal flip (90 degrees clockwise)
    [[3, 1], [4, 2]],  # transpose of the vertical flip (90 degrees counter-clockwise)
    [[4, 2], [3, 1]],  # transpose of both flips (anti-transpose)
]


@pytest.mark.parametrize("views", [1, 2, 4, 8])
def test_dihedral_views_by_hand(views):
    image = np.array([[1, 2], [3, 4]], dtype=np.uint8)[None, :, :, None]
    got = [v[0, :, :, 0].tolist() for v in dihedral_views(image, views)]
    assert got == HAND[:views]


def test_eight_views_are_the_eight_symmetries_of_a_non_symmetric_image():
    image = np.arange(3 * 3 * 2, dtype=np.uint8).reshape(1, 3, 3, 2)
    views = dihedral_views(image, 8)
    assert len({v.tobytes() for v in (np.ascontiguousarray(x) for x in views)}) == 8
    plane = image[0]
    expected = {np.ascontiguousarray(np.rot90(m, k, axes=(0, 1))).tobytes()
                for m in (plane, plane.transpose(1, 0, 2)) for k in range(4)}
    assert {np.ascontiguousarray(v[0]).tobytes() for v in views} == expected
    assert all(v.shape == image.shape for v in views)


@pytest.mark.parametrize(("shape", "views", "error", "match"), [
    ((2, 3, 4, 3), 2, ValueError, "square images"),
    ((2, 4, 4), 2, ValueError, "square images"),
    ((2, 4, 4, 3), 3, ConfigError, "--tta takes 1, 2, 4, 8 views, not 3"),
    ((2, 4, 4, 3), 16, ConfigError, "not 16"),
])
def test_dihedral_views_refuses(shape, views, error, match):
    with pytest.raises(error, match=match):
        dihedral_views(np.zeros(shape, dtype=np.uint8), views)


def _corner_model(images: np.ndarray) -> np.ndarray:
    """A stand-in model that looks only at the top-left pixel: class (pixel % 7) gets 0.4, the
    others 0.1 each."""
    images = np.asarray(images)
    out = np.full((len(images), 7), 0.1)
    out[np.arange(len(images)), images[:, 0, 0, 0].astype(int) % 7] = 0.4
    return out


def test_tta_probabilities_average_the_views_by_hand():
    image = np.array([[1, 2], [3, 4]], dtype=np.uint8)[None, :, :, None]
    # top-left pixels of the views: 1, 2, 3, 4, 1, 2, 3, 4
    four = tta_probabilities(_corner_model, image, 4)
    expected = np.full(7, 0.1)
    expected[[1, 2, 3, 4]] = (0.4 + 3 * 0.1) / 4
    np.testing.assert_allclose(four[0], expected / expected.sum())
    np.testing.assert_allclose(tta_probabilities(_corner_model, image, 8), four)
    np.testing.assert_allclose(tta_probabilities(_corner_model, image, 1)[0],
                               _corner_model(image)[0])
    assert tta_probabilities(_corner_model, image, 2).sum() == pytest.approx(1.0)


def test_nan_probabilities_are_refused():
    from core.errors import DataError

    with pytest.raises(DataError, match="NaN/infinite"):
        tta_probabilities(lambda x: np.full((len(x), 7), np.nan), np.zeros((1, 2, 2, 3)), 2)


def test_a_flip_invariant_keras_model_gives_its_plain_prediction():
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
    invariant = keras.Model(inputs, keras.layers.Dense(7, activation="softmax")(pooled))
    flat = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    sensitive = keras.Model(inputs, keras.layers.Dense(7, activation="softmax")(flat))
    images = np.random.default_rng(0).integers(0, 256, (5, 6, 6, 3)).astype(np.uint8)

    def predict(model):
        return lambda x: np.asarray(model(np.asarray(x, dtype="float32"), training=False))

    plain = predict(invariant)(images)
    for views in (2, 4, 8):
        np.testing.assert_allclose(tta_probabilities(predict(invariant), images, views), plain,
                                   rtol=1e-5, atol=1e-7)
    # a model that sees where the pixels are: the views do change its prediction
    assert not np.allclose(tta_probabilities(predict(sensitive), images, 8),
                           predict(sensitive)(images), atol=1e-4)


# ---------------------------------------------------------------------------------------------
# current, recomputed or skipped (stand-in files, no model)


def _entry(run: RunDir, name: str, *, status: str = "ok", weights: bytes | None = b"w1",
           extra: dict | None = None) -> None:
    folder = run.model_dir(name)
    labels = np.array(CLASSES)
    for split in ("val", "test"):
        proba = np.full((7, 7), 1 / 7)
        write_predictions(RunDir.predictions_file(folder, split), make_predictions(
            [f"{split}{i}" for i in range(7)], [f"L{split}{i}" for i in range(7)], labels, proba))
    atomic_write_json(folder / "metrics.json", {"status": status, **(extra or {})})
    if weights is not None:
        (folder / "best.weights.h5").write_bytes(weights)


def _derived(run: RunDir, source: str, views: int, digest: str) -> None:
    _entry(run, f"{source}+tta{views}", weights=None, extra={
        "kind": "tta", "derived_from": source, "tta_views": views, SOURCE_HASH_KEY: digest})


def test_current_recomputed_and_skipped(tmp_path):
    run = RunDir(tmp_path)
    _entry(run, "xception")
    _entry(run, "inception_v3", weights=None)
    _entry(run, "paper_cnn", status="failed")
    _entry(run, "inception_resnet_v2+svm", weights=None)
    digest = file_sha256(run.model_dir("xception") / "best.weights.h5")
    _derived(run, "xception", 8, digest)
    (run.models_dir / "notes").mkdir()  # not an entry: ignored

    assert source_entries(run.root) == ["inception_v3", "xception", "paper_cnn",
                                        "inception_resnet_v2+svm"]
    assert plan_source(run.root, "xception", 8).status == CURRENT
    assert plan_source(run.root, "xception", 4) is None  # no xception+tta4 yet: computed
    skipped = {e: plan_source(run.root, e, 8) for e in ("inception_v3", "paper_cnn",
                                                        "inception_resnet_v2+svm")}
    assert all(s.status == SKIPPED for s in skipped.values())
    assert "no best.weights.h5" in skipped["inception_v3"].reason
    assert skipped["paper_cnn"].reason == "not finished"
    assert "no Keras model" in skipped["inception_resnet_v2+svm"].reason

    assert stale_tta_entries(run.root) == []
    (run.model_dir("xception") / "best.weights.h5").write_bytes(b"w2")  # retrained
    assert not tta_is_current(run.root, "xception", 8)
    assert plan_source(run.root, "xception", 8) is None
    assert stale_tta_entries(run.root) == ["xception+tta8"]


def test_a_derived_entry_missing_a_file_or_of_other_views_is_not_current(tmp_path):
    run = RunDir(tmp_path)
    _entry(run, "xception")
    digest = file_sha256(run.model_dir("xception") / "best.weights.h5")
    _derived(run, "xception", 2, digest)
    assert tta_is_current(run.root, "xception", 2, digest)
    atomic_write_json(run.model_dir("xception+tta2") / "metrics.json",
                      {"status": "ok", "derived_from": "xception", "tta_views": 4,
                       SOURCE_HASH_KEY: digest})
    assert not tta_is_current(run.root, "xception", 2, digest)
    _derived(run, "xception", 2, digest)
    RunDir.predictions_file(run.model_dir("xception+tta2"), "val").unlink()
    assert not tta_is_current(run.root, "xception", 2, digest)
