"""Finding, decoding and batching new images for --predict (training.predict_images): no Keras."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_utils.imaging import decode_image
from training.predict_images import decode_batch, find_images, predict_files


def _image(path: Path, mode: str = "RGB", size=(40, 30), value=120) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"RGB": (value, 10, 200), "L": value, "RGBA": (value, 10, 200, 128)}[mode]
    Image.new(mode, size, channels).save(path)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    _image(root / "b.jpg")
    _image(root / "a.PNG", "RGBA")
    _image(root / "nested" / "deeper" / "c.png", "L")
    _image(root / ".hidden.jpg")
    _image(root / ".cache" / "d.jpg")
    (root / "metadata.csv").write_text("image_id\n")
    return root


def test_a_folder_is_searched_recursively_for_image_files_only(folder):
    files, missing = find_images([folder])
    assert [f.relative_to(folder).as_posix() for f in files] == ["a.PNG", "b.jpg",
                                                                 "nested/deeper/c.png"]
    assert missing == []


def test_named_files_are_always_tried_and_counted_once(folder, tmp_path):
    odd = tmp_path / "notes.txt"
    odd.write_text("not an image")
    files, missing = find_images([folder / "b.jpg", odd, folder, tmp_path / "absent.jpg"])
    assert files[0] == folder / "b.jpg" and files[1] == odd
    assert sum(f.name == "b.jpg" for f in files) == 1
    assert [(m.path, m.reason) for m in missing] == [(str(tmp_path / "absent.jpg"),
                                                      "no such file or folder")]


@pytest.mark.parametrize("content, reason", [
    (b"", "UnidentifiedImageError"),
    (b"garbage, not an image", "UnidentifiedImageError"),
])
def test_an_unreadable_file_is_skipped_with_its_reason(tmp_path, content, reason):
    good = _image(tmp_path / "good.png")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(content)
    images, kept, failed = decode_batch([bad, good], 16, "square")
    assert kept == [1] and images.shape == (1, 16, 16, 3) and images.dtype == np.uint8
    assert len(failed) == 1 and failed[0].path == str(bad) and failed[0].reason.startswith(reason)


def test_a_truncated_jpeg_is_skipped(tmp_path):
    whole = _image(tmp_path / "whole.jpg", size=(300, 200))
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(whole.read_bytes()[:400])
    _, kept, failed = decode_batch([cut], 16, "square")
    assert kept == [] and failed[0].path == str(cut) and failed[0].reason


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
@pytest.mark.parametrize("resize_mode", ["square", "crop"])
def test_pixels_are_the_image_caches(tmp_path, mode, resize_mode):
    path = _image(tmp_path / f"x.{'jpg' if mode != 'RGBA' else 'png'}", mode, size=(53, 37))
    images, _, _ = decode_batch([path], 24, resize_mode)
    np.testing.assert_array_equal(images[0], decode_image(path, 24, resize_mode))


def test_predict_files_batches_and_keeps_the_file_order(tmp_path):
    paths = [_image(tmp_path / f"{i}.png", value=i * 20) for i in range(7)]
    bad = tmp_path / "3.png"
    bad.write_bytes(b"broken")
    batches, seen = [], []

    def predict(images):
        batches.append(len(images))
        out = np.zeros((len(images), 7))
        out[:, 0] = images[:, 0, 0, 0] / 255.0
        out[:, 1] = 1 - out[:, 0]
        return out

    result = predict_files(predict, paths, 8, "square", batch_size=3, on_batch=seen.append)
    assert seen == [3, 3, 1] and batches == [3, 2, 1]
    assert result.readable.tolist() == [True, True, True, False, True, True, True]
    assert np.isnan(result.proba[3]).all()
    np.testing.assert_allclose(result.proba[[0, 1, 2, 4, 5, 6], 0],
                               np.array([0, 20, 40, 80, 100, 120]) / 255.0, atol=2 / 255)
    assert [u.path for u in result.unreadable] == [str(bad)]


def test_predict_files_hands_each_batch_to_on_images(tmp_path):
    paths = [_image(tmp_path / f"{i}.png") for i in range(5)]
    calls = []
    predict_files(lambda x: np.full((len(x), 7), 1 / 7), paths, 8, "square", batch_size=2,
                  on_images=lambda images, files, proba: calls.append((len(images), files,
                                                                        proba.shape)))
    assert [c[0] for c in calls] == [2, 2, 1]
    assert [f for c in calls for f in c[1]] == paths
    assert calls[0][2] == (2, 7)


def test_predict_files_refuses_a_batch_size_below_one(tmp_path):
    with pytest.raises(ValueError, match="batch_size"):
        predict_files(lambda x: x, [], 8, "square", batch_size=0)
