"""--export on the shared smoke run: each format reloads and reproduces the run's test
predictions; the model card has every section; ensembles and the SVM are refused."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import benchmark
from core.facts import LICENCE
from core.predictions import read_predictions
from reports.model_card import MODEL_CARD, SECTIONS
from training.export_model import artifact_name, load_artifact
from training.trained import split_images

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(trained_smoke_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("export") / "run"
    shutil.copytree(trained_smoke_run, target)
    return target


def _onnx_ready() -> str | None:
    import importlib.util

    absent = [m for m in ("onnx", "tf2onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
    return f"ONNX export needs {', '.join(absent)} (pip install 'dermbench[export]')" if absent \
        else None


def _onnx(entry: str, *marks: pytest.MarkDecorator):
    return pytest.param(entry, "onnx", marks=[*marks, pytest.mark.skipif(
        _onnx_ready() is not None, reason=_onnx_ready() or "")])


# Xception as a SavedModel or through ONNX takes half a minute each on 2 cores: `tox -e full`.
@pytest.mark.parametrize("entry, fmt", [
    ("xception", "keras"),
    ("paper_cnn", "keras"),
    ("paper_cnn", "savedmodel"),
    _onnx("paper_cnn"),
    pytest.param("xception", "savedmodel", marks=pytest.mark.full),
    _onnx("xception", pytest.mark.full),
])
def test_each_format_reloads_and_reproduces_the_test_predictions(run, capsys, entry, fmt):
    assert benchmark.main(["--export", "--entry", entry, "--format", fmt, "--out", str(run)]) == 0
    out = capsys.readouterr().out
    path = run / "export" / entry / artifact_name(fmt)
    assert f"exported {entry} ({fmt}): {path}" in out
    ids, images = split_images(run, entry)["test"]
    expected = read_predictions(run / "models" / entry / "predictions_test.csv")
    order = pd.Series(np.arange(len(expected)), index=expected.image_id)[list(ids)]
    predict = load_artifact(path, fmt)  # keras.saving.load_model / tf.saved_model / onnxruntime
    np.testing.assert_allclose(predict(images), expected.proba[order], rtol=0, atol=1e-4)
    assert not list(path.parent.glob(".tmp-*"))


def test_the_savedmodel_reloads_as_a_keras_layer(run, capsys):
    import keras

    folder = run / "export" / "paper_cnn" / artifact_name("savedmodel")
    if not folder.is_dir():
        assert benchmark.main(["--export", "--entry", "paper_cnn", "--format", "savedmodel",
                               "--out", str(run)]) == 0
    layer = keras.layers.TFSMLayer(str(folder), call_endpoint="serve")
    ids, images = split_images(run, "paper_cnn")["test"]
    expected = read_predictions(run / "models" / "paper_cnn" / "predictions_test.csv")
    order = pd.Series(np.arange(len(expected)), index=expected.image_id)[list(ids)]
    np.testing.assert_allclose(np.asarray(layer(images.astype("float32"))),
                               expected.proba[order], rtol=0, atol=1e-4)


@pytest.mark.parametrize("fmt", ["keras", "savedmodel"])
def test_uint8_images_go_in_as_they_are(run, capsys, fmt):
    path = run / "export" / "paper_cnn" / artifact_name(fmt)
    if not path.exists():
        assert benchmark.main(["--export", "--entry", "paper_cnn", "--format", fmt,
                               "--out", str(run)]) == 0
    _, images = split_images(run, "paper_cnn")["test"]
    assert images.dtype == np.uint8
    if fmt == "keras":
        import keras

        got = keras.saving.load_model(path)(images)
    else:
        import tensorflow as tf

        loaded = tf.saved_model.load(str(path))  # kept: its variables die with it
        got = loaded.serve(images)
    np.testing.assert_allclose(np.asarray(got), load_artifact(path, fmt)(images), atol=1e-6)


def test_the_keras_file_needs_nothing_of_dermbench(run, capsys):
    """tf and unit preprocessing become keras.layers.Rescaling: no custom class in the file."""
    import json
    import zipfile

    assert benchmark.main(["--export", "--entry", "paper_cnn", "--out", str(run)]) == 0
    with zipfile.ZipFile(run / "export" / "paper_cnn" / "model.keras") as archive:
        config = archive.read("config.json").decode()
    assert "dermbench" not in config and "Rescaling" in config
    assert json.loads(config)["config"]["layers"][0]["class_name"] == "InputLayer"


def test_the_model_card_has_every_section(run, capsys):
    assert benchmark.main(["--export", "--entry", "xception", "--out", str(run)]) == 0
    card = (run / "export" / "xception" / MODEL_CARD).read_text(encoding="utf-8")
    headings = re.findall(r"^## (.+)$", card, re.MULTILINE)
    assert headings == list(SECTIONS)
    test = pd.read_json(run / "models" / "xception" / "metrics.json", typ="series")["test"]
    low, high = test["balanced_accuracy_ci"]
    assert f"{test['balanced_accuracy']:.3f} [{low:.3f}, {high:.3f}]" in card
    for needle in ("Research only", "71x71", "lesion bootstrap", "sensitivity", "prior-shift",
                   "skin type", "Classes never seen", "Acquisition", LICENCE,
                   "protocol fingerprint", "`model.keras` (keras)", "pipeline"):
        assert needle in card, needle


@pytest.mark.parametrize("argv, message", [
    (["--entry", "soft_voting"], "is an ensemble and cannot be exported"),
    (["--entry", "inception_resnet_v2+svm"], "cannot be exported: .*not its fitted SVM"),
    (["--entry", "no_such_model"], "unknown entry"),
    ([], "--export needs --entry NAME; .*can be exported: inception_v3, paper_cnn, xception"),
])
def test_what_cannot_be_exported_is_refused_in_one_line(run, capsys, argv, message):
    assert benchmark.main(["--export", *argv, "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and len(err.strip().splitlines()) == 1
