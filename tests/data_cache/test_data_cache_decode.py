"""decode_image: every Pillow mode to RGB, EXIF orientation, crop vs square, draft mode, bad files."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFile

from core.errors import DataError
from data_utils.cache import decode_image

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def _blocks(colours, side=30) -> Image.Image:
    """A horizontal strip of solid side x side blocks."""
    image = Image.new("RGB", (side * len(colours), side))
    for i, colour in enumerate(colours):
        image.paste(colour, (i * side, 0, (i + 1) * side, side))
    return image


def _close(pixel, expected, tol=12) -> bool:
    return bool(np.all(np.abs(np.asarray(pixel, dtype=int) - np.asarray(expected)) <= tol))


def test_rgb_jpeg_shape_dtype_and_colour(tmp_path):
    path = tmp_path / "a.jpg"
    Image.new("RGB", (60, 45), (200, 40, 10)).save(path, quality=95)
    out = decode_image(path, 16)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert _close(out.mean(axis=(0, 1)), (200, 40, 10), tol=4)


def test_grayscale_becomes_equal_channels(tmp_path):
    path = tmp_path / "gray.png"
    Image.new("L", (20, 10), 77).save(path)
    out = decode_image(path, 8)
    assert np.all(out == 77)


def test_one_bit_image(tmp_path):
    path = tmp_path / "bw.png"
    image = Image.new("1", (20, 20), 0)
    image.paste(1, (0, 0, 10, 20))  # left half white
    image.save(path)
    out = decode_image(path, 20)
    assert np.all(out[:, :9] == 255) and np.all(out[:, 11:] == 0)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_transparent_pixels_are_composited_on_black(tmp_path, mode):
    image = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    image.paste((250, 250, 250, 255), (0, 0, 10, 20))  # left half opaque near-white
    path = tmp_path / f"alpha-{mode}.png"
    image.convert(mode).save(path)
    out = decode_image(path, 20)
    assert np.all(out[:, :9] >= 245)
    assert np.all(out[:, 11:] == 0)  # transparent -> black


def test_half_transparent_pixel_is_blended_with_black(tmp_path):
    path = tmp_path / "half.png"
    Image.new("RGBA", (4, 4), (200, 100, 50, 128)).save(path)
    out = decode_image(path, 4)
    assert _close(out[0, 0], (100, 50, 25), tol=2)


def test_palette_with_and_without_transparency(tmp_path):
    opaque = _blocks([RED, BLUE], side=10).convert("P")
    opaque.save(tmp_path / "p.png")
    out = decode_image(tmp_path / "p.png", 20, "square")
    assert _close(out[10, 2], RED) and _close(out[10, 17], BLUE)

    transparent = _blocks([RED, BLUE], side=10).convert("P")
    blue_index = transparent.getpixel((15, 5))
    transparent.save(tmp_path / "pt.png", transparency=blue_index)
    out = decode_image(tmp_path / "pt.png", 20, "square")
    assert _close(out[10, 2], RED) and np.all(out[10, 17] == 0)


def test_cmyk_jpeg(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (255, 0, 0, 0)).save(path, quality=95)  # pure cyan
    out = decode_image(path, 8)
    assert _close(out.mean(axis=(0, 1)), (0, 255, 255), tol=6)


def test_sixteen_bit_keeps_its_range(tmp_path):
    path = tmp_path / "deep.png"
    values = np.full((8, 8), 0x8000, dtype=np.uint16)
    values[:, 4:] = 0xFFFF
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    out = decode_image(path, 8)
    assert np.all(out[:, :3] == 128) and np.all(out[:, 5:] == 255)


@pytest.mark.parametrize(
    ("orientation", "red_side"),
    [(1, "left"), (6, "top"), (8, "bottom"), (3, "right")],
)
def test_exif_orientation_is_applied(tmp_path, orientation, red_side):
    # Stored pixels: red left half, blue right half (60 x 30). Orientation 6 means "rotate 90
    # degrees clockwise to display", so red ends up on top; 8 is counter-clockwise; 3 is 180.
    stored = _blocks([RED, BLUE], side=30)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.jpg"
    stored.save(path, quality=95, exif=exif)
    out = decode_image(path, 30).astype(int)
    halves = {
        "left": (out[:, :12], out[:, 18:]),
        "right": (out[:, 18:], out[:, :12]),
        "top": (out[:12], out[18:]),
        "bottom": (out[18:], out[:12]),
    }
    red, blue = halves[red_side]
    assert _close(red.mean(axis=(0, 1)), RED, tol=20)
    assert _close(blue.mean(axis=(0, 1)), BLUE, tol=20)


def test_crop_takes_the_centre_square_and_square_keeps_everything(tmp_path):
    path = tmp_path / "strip.png"
    _blocks([RED, GREEN, BLUE], side=30).save(path)  # 90 x 30
    crop = decode_image(path, 30, "crop")
    assert np.all(crop == np.array(GREEN, dtype=np.uint8))
    square = decode_image(path, 30, "square")
    assert _close(square[15, 2], RED) and _close(square[15, 15], GREEN)
    assert _close(square[15, 27], BLUE)


def test_crop_of_a_portrait_image(tmp_path):
    path = tmp_path / "portrait.png"
    _blocks([RED, GREEN, BLUE], side=20).rotate(90, expand=True).save(path)  # 20 x 60
    assert np.all(decode_image(path, 10, "crop") == np.array(GREEN, dtype=np.uint8))


def test_draft_mode_scales_down_but_never_below_the_target(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (600, 800, 3), dtype=np.uint8)
    path = tmp_path / "big.jpg"
    Image.fromarray(pixels).save(path, quality=90)
    resized_from = []
    original_resize = Image.Image.resize

    def spy(self, size, *args, **kwargs):
        resized_from.append(self.size)
        return original_resize(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", spy)
    decode_image(path, 100)  # 800x600 / 4 = 200x150: both sides still >= 100
    decode_image(path, 299)  # / 2 = 400x300 >= 299
    decode_image(path, 301)  # / 2 would give 300 rows < 301: full size
    assert resized_from == [(200, 150), (400, 300), (800, 600)]


def test_draft_result_is_close_to_full_decode(tmp_path):
    yy, xx = np.mgrid[0:600, 0:800]
    smooth = np.stack([xx * 255 // 800, yy * 255 // 600, (xx + yy) * 255 // 1400], axis=-1)
    path = tmp_path / "smooth.jpg"
    Image.fromarray(smooth.astype(np.uint8)).save(path, quality=95)
    full = np.asarray(Image.open(path).convert("RGB").resize((64, 64), Image.Resampling.LANCZOS))
    out = decode_image(path, 64)
    assert np.abs(out.astype(int) - full.astype(int)).mean() < 2.0


def test_truncated_jpeg_is_an_error_naming_the_file(tmp_path):
    buffer = io.BytesIO()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(buffer, "JPEG")
    path = tmp_path / "ISIC_0000001.jpg"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(DataError, match=r"ISIC_0000001\.jpg.*(download it again|remove it)"):
        decode_image(path, 32)


@pytest.mark.parametrize("content", [b"", b"not an image at all\n" * 10])
def test_non_image_is_an_error_naming_the_file(tmp_path, content):
    path = tmp_path / "notes.jpg"
    path.write_bytes(content)
    with pytest.raises(DataError, match=r"notes\.jpg"):
        decode_image(path, 32)


def test_missing_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(DataError, match=r"gone\.jpg does not exist"):
        decode_image(tmp_path / "gone.jpg", 32)


def test_refuses_to_run_when_pillow_pads_truncated_images(tmp_path, monkeypatch):
    path = tmp_path / "a.png"
    Image.new("RGB", (4, 4)).save(path)
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        decode_image(path, 4)


@pytest.mark.parametrize(("size", "mode"), [(0, "square"), (3.5, "square"), (8, "stretch")])
def test_bad_arguments(tmp_path, size, mode):
    path = tmp_path / "a.png"
    Image.new("RGB", (4, 4)).save(path)
    with pytest.raises(ValueError):
        decode_image(path, size, mode)
