"""Decode one image file into a fixed-size uint8 RGB array (the cache's only decoder).

Imports nothing but NumPy and Pillow, so that the cache's worker processes start quickly.

Choices (they change the cached pixels, so changing any of them must bump `DECODER_VERSION`):
- JPEG draft mode (DCT scaling by 1/2, 1/4 or 1/8 inside libjpeg) is requested with the target
  size: Pillow only scales down while both decoded sides stay >= the target, so the resize never
  upsamples what full decoding would not have.
- EXIF orientation is applied (`ImageOps.exif_transpose`) before cropping or resizing.
- Transparent pixels (RGBA, LA, P with transparency) are composited on **black**, the colour of
  the dermatoscope's vignette, rather than white (which would look like a bright lesion border).
- 16-bit images (I;16) keep their full range: value >> 8. 32-bit "I" and "F" images are read as
  16-bit when any value exceeds 255, else as 8-bit; values are clipped.
- Resizing uses Pillow's antialiased BILINEAR (triangle) filter, with `reducing_gap=3.0` so very
  large non-JPEG images are first box-reduced: about 1.5x cheaper than BICUBIC and 2.3x cheaper
  than LANCZOS here, and the same filter as antialiased bilinear in TensorFlow.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from core import defaults
from core.errors import DataError

DECODER_VERSION = 1
RESIZE_MODES: tuple[str, ...] = ("square", "crop")
RESAMPLE = Image.Resampling.BILINEAR
REDUCING_GAP = 3.0


def decode_image(path: str | os.PathLike, size: int,
                 resize_mode: str = defaults.RESIZE_MODE) -> np.ndarray:
    """Decode an image file into a (size, size, 3) uint8 RGB array.

    Args:
        path: the image file (any format Pillow reads; JPEG is decoded with draft mode).
        size: side of the square output in pixels.
        resize_mode: "square" resizes the whole image to size x size (the aspect ratio is not
            kept); "crop" takes the centred square of side min(width, height), then resizes it.

    Returns:
        A new (size, size, 3) uint8 array.

    Raises:
        DataError: the file is missing, not an image, truncated or otherwise unreadable.
        ValueError: bad `size` or `resize_mode`.
    """
    check_resize_args(size, resize_mode)
    out = np.empty((size, size, 3), dtype=np.uint8)
    decode_into(path, size, resize_mode, out)
    return out


def decode_into(path: str | os.PathLike, size: int, resize_mode: str, out: np.ndarray) -> None:
    """Decode an image like `decode_image`, writing the pixels into `out` (size, size, 3) uint8.

    Raises:
        DataError: the file is missing, not an image, truncated or otherwise unreadable.
        ValueError: bad `size` or `resize_mode`.
        RuntimeError: Pillow was set to load truncated images (see `_refuse_truncated_loading`).
    """
    check_resize_args(size, resize_mode)
    _refuse_truncated_loading()
    try:
        with Image.open(path) as image:
            if image.format == "JPEG":
                # Requested before loading; Pillow keeps both sides >= (size, size).
                image.draft("RGB", (size, size))
            image.load()
            ImageOps.exif_transpose(image, in_place=True)
            rgb = _to_rgb(image)
            if resize_mode == "crop":
                # Crop first (resizing with box= would blend in pixels outside the square).
                width, height = rgb.size
                side = min(width, height)
                left, top = (width - side) // 2, (height - side) // 2
                rgb = rgb.crop((left, top, left + side, top + side))
            if rgb.size != (size, size):
                rgb = rgb.resize((size, size), RESAMPLE, reducing_gap=REDUCING_GAP)
            pixels = np.asarray(rgb)
    except FileNotFoundError:
        raise DataError(
            f"image file {os.fspath(path)} does not exist: download the dataset again or remove "
            "its row from the metadata"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError,
            Image.DecompressionBombError) as exc:
        raise DataError(
            f"cannot read image file {os.fspath(path)} ({type(exc).__name__}: {exc}); it is not "
            "an image or is truncated/corrupt: download it again, or remove it and its metadata "
            "row"
        ) from None
    out[...] = pixels


def check_resize_args(size: int, resize_mode: str) -> None:
    """Raise ValueError unless `size` is a positive int and `resize_mode` one of RESIZE_MODES."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"image size must be a positive integer, got {size!r}")
    if resize_mode not in RESIZE_MODES:
        raise ValueError(
            f"unknown resize mode {resize_mode!r}: use one of {', '.join(RESIZE_MODES)}"
        )


def _refuse_truncated_loading() -> None:
    # With this global flag set, Pillow silently pads a truncated JPEG with grey: the cache would
    # then store a damaged image as if it were fine.
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True in this process, which makes Pillow pad "
            "truncated images silently; set it back to False before building the image cache"
        )


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB (see the module docstring for the policy)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("LA", "La", "PA", "RGBa"):
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode == "RGBA":
        background = Image.new("RGB", image.size, (0, 0, 0))
        background.paste(image, mask=image.getchannel("A"))
        return background
    if mode.startswith("I;16"):
        values = np.asarray(image).astype(np.uint16) >> 8
        return Image.fromarray(values.astype(np.uint8), mode="L").convert("RGB")
    if mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        if values.size and np.nanmax(values) > 255:
            values = values / 257.0
        values = np.clip(np.nan_to_num(values), 0, 255).round().astype(np.uint8)
        return Image.fromarray(values, mode="L").convert("RGB")
    # L, 1, CMYK (Pillow undoes Adobe's inverted CMYK JPEGs), YCbCr, HSV, RGBX, ...
    return image.convert("RGB")


# --- worker side of the parallel cache build -------------------------------------------------
# These run in the build's worker processes (and in the parent, which decodes too). They live here,
# not in cache.py, so a worker imports only NumPy and Pillow.

_WORKER_STATE: dict = {}


def init_worker(job: dict, next_chunk, done) -> None:
    """Process-pool initializer of a build worker: remember the job and the shared counters.

    Args:
        job: see `decode_chunks`.
        next_chunk: shared int (multiprocessing Value): index of the next chunk to take.
        done: shared int: images decoded so far (for the progress bar).
    """
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    _WORKER_STATE.clear()
    _WORKER_STATE.update(job=job, next_chunk=next_chunk, done=done)


def worker_decode_chunks() -> int:
    """The task a build worker runs: `decode_chunks` with the state from `init_worker`."""
    return decode_chunks(**_WORKER_STATE)


def decode_chunks(job: dict, next_chunk, done, images: np.ndarray | None = None,
                  on_chunk=None) -> int:
    """Take chunks from the shared counter and decode them into the cache file until none is left.

    Args:
        job: {"npy": path of the preallocated .npy, "paths": [str], "size": int,
            "resize_mode": str, "chunk": int (images per chunk)}.
        next_chunk: shared int (multiprocessing Value): index of the next chunk to take.
        done: shared int, incremented by the images decoded.
        images: the writable (n, size, size, 3) array to fill; None memory-maps the job's .npy.
        on_chunk: called with no arguments after each chunk (progress bar).

    Returns:
        The number of images this process decoded.

    Raises:
        DataError: an image could not be decoded; the counter is exhausted first so that every
            other process stops after its current chunk.
    """
    paths, size, resize_mode, chunk = job["paths"], job["size"], job["resize_mode"], job["chunk"]
    n_chunks = -(-len(paths) // chunk)
    decoded = 0
    while True:
        with next_chunk.get_lock():
            index = next_chunk.value
            next_chunk.value = index + 1
        if index >= n_chunks:
            return decoded
        if images is None:  # only a worker that got a chunk touches the file
            images = np.load(job["npy"], mmap_mode="r+")
        start, stop = index * chunk, min(len(paths), (index + 1) * chunk)
        try:
            for row in range(start, stop):
                decode_into(paths[row], size, resize_mode, images[row])
        except BaseException:
            with next_chunk.get_lock():
                next_chunk.value = n_chunks
            raise
        decoded += stop - start
        with done.get_lock():
            done.value += stop - start
        if on_chunk is not None:
            on_chunk()


def worker_path(path: str | os.PathLike) -> str:
    """The string form of `path` sent to workers (absolute, so a worker's cwd does not matter)."""
    return os.fspath(Path(path).absolute())
