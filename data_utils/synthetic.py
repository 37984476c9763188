"""A generated stand-in for HAM10000: the embedded default dataset for smoke runs and tests.

`generate_synthetic` writes, deterministically from the seed, 600x450 JPEGs in the official
HAM10000 layout (HAM10000_metadata.csv, HAM10000_images_part_1/, HAM10000_images_part_2/), so it
goes through the same reader and validation as the real release. The classes look different in
ways a small CNN can pick up at 64-96 px:

    nv     small round smooth lesion, uniform medium brown, faint network
    mel    large, irregular border, dark brown/black with blue-grey patches
    bkl    light tan, sharp edge, ridged ("cerebriform") texture
    bcc    pink, lobulated, red branching vessels
    akiec  red-pink, ill-defined edge, white scaly speckles
    df     small, brown ring around a white scar-like centre
    vasc   red-purple, lobulated, dark red lacunae

About 1.3 images per lesion: a lesion's images are views of one rendered lesion (shifted,
rotated, zoomed and brightened a little), as the real dataset's repeat photographs are.

Rendering is NumPy (each lesion once, at half resolution, in its own frame) plus Pillow (the
per-view affine warp, compositing, upscaling and JPEG encoding).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageEnhance

from core import defaults
from core.atomic import atomic_write_csv, read_json
from core.classes import CLASSES
from core.errors import DataError
from data_utils.layout import HAM_METADATA, HAM_PARTS

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 1
MARKER = ".dermbench-synthetic.json"
WIDTH, HEIGHT = 600, 450
JPEG_QUALITY = 90
MIN_IMAGES = 14  # two per class

# Real HAM10000 class counts (10,015 images), for a similar mix.
HAM_COUNTS = {"akiec": 327, "bcc": 514, "bkl": 1099, "df": 115, "mel": 1113, "nv": 6705, "vasc": 142}
# Every minority class gets at least this share, so each has enough images to learn (25 of 700).
MIN_SHARE = 0.036
# Images per lesion: mostly one, sometimes two or three views (mean 1.3).
VIEWS_P = (0.75, 0.20, 0.05)

_HALF_W, _HALF_H = WIDTH // 2, HEIGHT // 2
_CANVAS = 300  # the lesion's own frame, half resolution
_LOCATIONS = ("back", "lower extremity", "trunk", "upper extremity", "abdomen", "face", "chest",
              "foot", "neck", "scalp", "hand", "ear")


def default_synthetic_dir(n_images: int, seed: int) -> Path:
    """Where the synthetic dataset for (n_images, seed) lives: under the decoded-image cache root.

    Returns:
        default_cache_root()/synthetic-v<version>-n<n_images>-s<seed>
    """
    from data_utils.cache import default_cache_root

    return default_cache_root() / f"synthetic-v{GENERATOR_VERSION}-n{n_images}-s{seed}"


def class_image_counts(n_images: int) -> dict[str, int]:
    """Images per class: HAM10000's mix with every minority class raised to MIN_SHARE.

    Args:
        n_images: total images (>= MIN_IMAGES).

    Returns:
        class -> count (canonical order), summing to n_images, each >= 2.
    """
    total = sum(HAM_COUNTS.values())
    shares = {c: max(HAM_COUNTS[c] / total, MIN_SHARE) for c in CLASSES if c != "nv"}
    shares["nv"] = 1.0 - sum(shares.values())
    exact = np.array([shares[c] * n_images for c in CLASSES])
    counts = np.floor(exact).astype(int)
    # Largest remainder, then at least two per class (taken from nv, the largest).
    for i in np.argsort(-(exact - counts), kind="stable")[: n_images - counts.sum()]:
        counts[i] += 1
    nv = CLASSES.index("nv")
    for i in range(len(CLASSES)):
        if counts[i] < 2:
            counts[nv] -= 2 - counts[i]
            counts[i] = 2
    return {c: int(n) for c, n in zip(CLASSES, counts, strict=True)}


def _plan(n_images: int, rng: np.random.Generator) -> pd.DataFrame:
    """One row per image: lesion index, class, view index, lesion metadata; shuffled."""
    rows = []
    lesion = 0
    for dx, count in class_image_counts(n_images).items():
        made = 0
        while made < count:
            views = min(int(rng.choice(len(VIEWS_P), p=VIEWS_P)) + 1, count - made)
            age = float(np.clip(round(rng.normal(_AGE[dx], 14) / 5) * 5, 5, 85))
            meta = {
                "dx_type": str(rng.choice(_DX_TYPE[dx])),
                "age": age,
                "sex": str(rng.choice(("male", "female"))),
                "localization": str(rng.choice(_LOCATIONS)),
            }
            for view in range(views):
                rows.append({"lesion": lesion, "dx": dx, "view": view, **meta})
            lesion += 1
            made += views
    plan = pd.DataFrame(rows)
    plan = plan.iloc[rng.permutation(len(plan))].reset_index(drop=True)
    plan["image_id"] = [f"SYN_{i:07d}" for i in range(len(plan))]
    lesion_names = {k: f"SYNL_{j:07d}" for j, k in enumerate(rng.permutation(lesion).tolist())}
    plan["lesion_id"] = plan["lesion"].map(lesion_names)
    return plan


_AGE = {"akiec": 68, "bcc": 66, "bkl": 60, "df": 45, "mel": 60, "nv": 42, "vasc": 48}
_DX_TYPE = {
    "akiec": ("histo",), "bcc": ("histo",), "mel": ("histo",),
    "bkl": ("histo", "consensus", "confocal"), "df": ("histo", "consensus"),
    "nv": ("follow_up", "histo", "consensus"), "vasc": ("consensus", "histo"),
}


# --------------------------------------------------------------------------- rendering


def _smooth_noise(rng: np.random.Generator, cells: int, size: tuple[int, int]) -> np.ndarray:
    """Smooth noise in [-1, 1]-ish: a `cells` x `cells` random grid upscaled bicubically."""
    grid = rng.normal(0.0, 1.0, (cells, cells)).astype(np.float32)
    image = Image.fromarray(grid, mode="F").resize(size, Image.Resampling.BICUBIC)
    return np.asarray(image)


_ANGLES = np.linspace(-math.pi, math.pi, 1440, endpoint=False)
_Y0, _X0 = np.mgrid[0:_CANVAS, 0:_CANVAS].astype(np.float32) - (_CANVAS - 1) / 2.0
_R0 = np.hypot(_X0, _Y0)
_SLOT0 = ((np.arctan2(_Y0, _X0) + math.pi) * (len(_ANGLES) / (2 * math.pi))).astype(np.int32) % len(_ANGLES)


def _render_lesion(dx: str, rng: np.random.Generator) -> Image.Image:
    """Render one lesion (RGBA, its own frame, half resolution) with its class's look."""
    # Rotation, aspect ratio and the wavy border only depend on the pixel's angle: tabulate them
    # over 1440 angles and look each pixel up (per-pixel trigonometry would dominate the cost).
    shift = int(rng.uniform(0, len(_ANGLES)))
    slot = (_SLOT0 - shift) % len(_ANGLES)
    aspect = rng.uniform(0.72, 1.0)
    stretch = np.hypot(np.cos(_ANGLES), np.sin(_ANGLES) / aspect)
    psi = np.arctan2(np.sin(_ANGLES) / aspect, np.cos(_ANGLES))
    style = _STYLES[dx]
    radius = rng.uniform(*style["radius"])
    wobble = np.zeros_like(_ANGLES)
    for k in range(2, 9):
        amp = rng.uniform(0, style["irregular"]) / (1 + 0.15 * k)
        wobble += amp * np.cos(k * psi + rng.uniform(0, 2 * math.pi))
    edge = np.minimum(radius * (1 + wobble), _CANVAS / 2 - 6)
    r = _R0 * stretch.astype(np.float32)[slot]
    rho = _R0 * (stretch / edge).astype(np.float32)[slot]  # < 1 inside the lesion
    alpha = np.clip((1 - rho) * (radius / style["soft"]) + 0.5, 0, 1)

    size = (_CANVAS, _CANVAS)
    low = _smooth_noise(rng, 5, size)
    mid = _smooth_noise(rng, 14, size)
    fine = _smooth_noise(rng, 48, size)
    base = np.array(style["colour"], np.float32) * rng.uniform(0.9, 1.1, 3).astype(np.float32)
    rgb = np.broadcast_to(base, (*size, 3)).copy()
    rgb *= (1 + 0.06 * low)[..., None]
    rgb = _TEXTURES[dx](rgb, rho, low, mid, fine, r, radius)
    rgb = np.clip(rgb, 0, 1)
    rgba = np.dstack([rgb, alpha]) * 255.0
    return Image.fromarray(rgba.round().astype(np.uint8), mode="RGBA")


def _mix(rgb: np.ndarray, colour, weight: np.ndarray) -> np.ndarray:
    """Blend `colour` into `rgb` (in place) with per-pixel weight clipped to [0, 1]."""
    w = np.clip(np.asarray(weight, dtype=np.float32), 0, 1)[..., None]
    rgb += (np.asarray(colour, np.float32) - rgb) * w
    return rgb


def _tex_nv(rgb, rho, low, mid, fine, r, radius):
    network = 0.5 + 0.5 * np.sin(fine * 3.0)
    rgb = rgb * (1 - 0.08 * network)[..., None]
    return _mix(rgb, (0.55, 0.38, 0.28), (rho - 0.75) * 2)  # lighter rim


def _tex_mel(rgb, rho, low, mid, fine, r, radius):
    rgb = _mix(rgb, (0.08, 0.05, 0.05), mid * 1.2)  # black blotches
    rgb = _mix(rgb, (0.42, 0.48, 0.58), (low - 0.6) * 2.0)  # blue-grey veil
    return _mix(rgb, (0.55, 0.32, 0.22), (-mid - 0.8) * 1.5)  # light brown areas


def _tex_bkl(rgb, rho, low, mid, fine, r, radius):
    ridges = np.sin(r * 0.55 + mid * 4.0)
    return rgb * (1 + 0.16 * ridges)[..., None]


def _tex_bcc(rgb, rho, low, mid, fine, r, radius):
    vessels = np.exp(-(mid * 9.0) ** 2)  # thin lines along the zero crossings
    rgb = _mix(rgb, (0.93, 0.85, 0.82), (low - 0.3) * 1.5)  # pearly patches
    return _mix(rgb, (0.62, 0.06, 0.12), vessels * (rho < 0.9))


def _tex_akiec(rgb, rho, low, mid, fine, r, radius):
    scales = fine > 0.9
    rgb = rgb * (1 + 0.1 * mid)[..., None]
    return _mix(rgb, (0.96, 0.93, 0.88), scales * 0.85)


def _tex_df(rgb, rho, low, mid, fine, r, radius):
    centre = np.clip((0.5 - rho) * 6 + 0.5 + 0.2 * mid, 0, 1)
    rgb = _mix(rgb, (0.93, 0.88, 0.82), centre)
    return rgb * (1 - 0.15 * np.clip(1 - np.abs(rho - 0.7) * 5, 0, 1))[..., None]


def _tex_vasc(rgb, rho, low, mid, fine, r, radius):
    lacunae = np.clip((mid - 0.4) * 3, 0, 1)
    return _mix(rgb, (0.32, 0.02, 0.12), lacunae)


_STYLES = {
    # colour (RGB 0..1), radius range (half-res px), border irregularity, edge softness (px)
    "nv": {"colour": (0.42, 0.26, 0.17), "radius": (36, 52), "irregular": 0.05, "soft": 2.0},
    "mel": {"colour": (0.25, 0.14, 0.10), "radius": (58, 84), "irregular": 0.45, "soft": 1.5},
    "bkl": {"colour": (0.70, 0.55, 0.37), "radius": (46, 68), "irregular": 0.12, "soft": 1.0},
    "bcc": {"colour": (0.88, 0.62, 0.62), "radius": (42, 62), "irregular": 0.22, "soft": 3.0},
    "akiec": {"colour": (0.82, 0.42, 0.38), "radius": (46, 68), "irregular": 0.25, "soft": 9.0},
    "df": {"colour": (0.52, 0.34, 0.24), "radius": (30, 44), "irregular": 0.05, "soft": 5.0},
    "vasc": {"colour": (0.66, 0.12, 0.30), "radius": (34, 52), "irregular": 0.30, "soft": 1.0},
}
_TEXTURES = {
    "nv": _tex_nv, "mel": _tex_mel, "bkl": _tex_bkl, "bcc": _tex_bcc,
    "akiec": _tex_akiec, "df": _tex_df, "vasc": _tex_vasc,
}

_BG_Y, _BG_X = np.mgrid[0:_HALF_H, 0:_HALF_W].astype(np.float32)
_VIGNETTE = np.clip(
    1.25 - np.hypot((_BG_X - _HALF_W / 2) / (_HALF_W * 0.62), (_BG_Y - _HALF_H / 2) / (_HALF_H * 0.75)),
    0.15, 1.0,
)[..., None].astype(np.float32)


def _render_skin(rng: np.random.Generator) -> Image.Image:
    """Skin background at half resolution: skin tone, soft shading and a dermatoscope vignette."""
    tone = np.array((0.88, 0.70, 0.60), np.float32) * rng.uniform(0.85, 1.05)
    tone *= rng.uniform(0.96, 1.04, 3).astype(np.float32)
    shade = _smooth_noise(rng, 4, (_HALF_W, _HALF_H))
    rgb = tone * (1 + 0.05 * shade)[..., None] * _VIGNETTE
    return Image.fromarray((np.clip(rgb, 0, 1) * 255).round().astype(np.uint8), mode="RGB")


def _view(lesion: Image.Image, skin: Image.Image, rng: np.random.Generator, first: bool) -> Image.Image:
    """One photograph of the lesion: small shift, rotation, zoom and brightness change."""
    if first:
        dx = dy = rot = 0.0
        zoom = brightness = 1.0
    else:
        dx, dy = rng.uniform(-8, 8, 2)
        rot = rng.uniform(-0.3, 0.3)
        zoom = rng.uniform(0.92, 1.08)
        brightness = rng.uniform(0.93, 1.07)
    cx, cy = _HALF_W / 2 + dx, _HALF_H / 2 + dy
    a, b = math.cos(rot) / zoom, math.sin(rot) / zoom
    c0 = _CANVAS / 2
    matrix = (a, b, c0 - a * cx - b * cy, -b, a, c0 + b * cx - a * cy)
    warped = lesion.transform(
        (_HALF_W, _HALF_H), Image.Transform.AFFINE, matrix, resample=Image.Resampling.BILINEAR,
        fillcolor=(0, 0, 0, 0),
    )
    image = skin.copy()
    image.paste(warped, (0, 0), warped)
    image = image.resize((WIDTH, HEIGHT), Image.Resampling.BILINEAR)
    if brightness != 1.0:
        image = ImageEnhance.Brightness(image).enhance(brightness)
    return image


# --------------------------------------------------------------------------- writing


def _marker(n_images: int, seed: int) -> dict:
    return {
        "generator": "dermbench.synthetic",
        "version": GENERATOR_VERSION,
        "n_images": int(n_images),
        "seed": int(seed),
        "width": WIDTH,
        "height": HEIGHT,
    }


def generate_synthetic(root: str | os.PathLike, n_images: int = defaults.SYNTHETIC_IMAGES,
                       seed: int = defaults.SEED) -> Path:
    """Write (or reuse) a synthetic dataset in the official HAM10000 layout under `root`.

    Deterministic: the same (n_images, seed) gives the same metadata and the same JPEG bytes.
    Written into a temporary sibling folder and renamed into place, with a marker file recording
    the parameters, so an interrupted run never leaves a half dataset that looks complete; an
    existing folder with the same marker is reused as is.

    Args:
        root: the dataset folder to create.
        n_images: number of images (>= 14; default 700).
        seed: generator seed.

    Returns:
        `root` as a Path.

    Raises:
        DataError: n_images too small, or `root` exists and is not a generated dataset.
    """
    root = Path(root).expanduser()
    if n_images < MIN_IMAGES:
        raise DataError(f"--synthetic-images must be at least {MIN_IMAGES} (two per class), got {n_images}")
    wanted = _marker(n_images, seed)
    marker = root / MARKER
    if marker.is_file():
        if read_json(marker) == wanted:
            logger.debug("reusing synthetic dataset %s", root)
            return root
    elif root.exists() and any(root.iterdir()):
        raise DataError(
            f"{root} exists and is not a generated synthetic dataset (no {MARKER}); choose an "
            f"empty or new folder for --data-dir, or leave --data-dir out for the default"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".tmp", dir=root.parent))
    try:
        _write_dataset(tmp, n_images, seed)
        (tmp / MARKER).write_text(json.dumps(wanted, indent=2, sort_keys=True) + "\n", "utf-8")
        if root.exists():
            shutil.rmtree(root)
        try:
            os.replace(tmp, root)
        except OSError:
            # Another process finished the same dataset first: use theirs.
            if (root / MARKER).is_file() and read_json(root / MARKER) == wanted:
                shutil.rmtree(tmp, ignore_errors=True)
                return root
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("generated %d synthetic images in %s", n_images, root)
    return root


def _write_dataset(folder: Path, n_images: int, seed: int) -> None:
    rng = np.random.default_rng([seed, 0x5EED])
    plan = _plan(n_images, rng)
    parts = [folder / name for name in HAM_PARTS]
    for part in parts:
        part.mkdir()
    half = (len(plan) + 1) // 2
    lesions = plan.groupby("lesion", sort=True)
    for lesion, rows in lesions:
        lesion_rng = np.random.default_rng([seed, 1, int(lesion)])
        dx = rows["dx"].iloc[0]
        canonical = _render_lesion(dx, lesion_rng)
        skin = _render_skin(lesion_rng)
        for index, row in rows.sort_values("view").iterrows():
            image = _view(canonical, skin, lesion_rng, first=row["view"] == 0)
            part = parts[0] if index < half else parts[1]
            image.save(part / f"{row['image_id']}.jpg", "JPEG", quality=JPEG_QUALITY)
    metadata = plan[["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]]
    atomic_write_csv(folder / HAM_METADATA, metadata.sort_values(["dx", "lesion_id"]))
