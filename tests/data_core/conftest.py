"""Fixtures for the data-core tests: tiny generated datasets in the HAM10000 / ISIC 2018 layouts."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

HEADER = "lesion_id,image_id,dx,dx_type,age,sex,localization"
COLOURS = {"akiec": (200, 90, 80), "bcc": (230, 160, 160), "bkl": (180, 140, 90),
           "df": (130, 90, 60), "mel": (50, 30, 25), "nv": (110, 70, 45), "vasc": (170, 30, 80)}


def write_jpeg(path: Path, dx: str = "nv", size: tuple[int, int] = (12, 9)) -> Path:
    """A tiny real JPEG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, COLOURS.get(dx, (128, 128, 128))).save(path, "JPEG")
    return path


def default_rows() -> list[tuple[str, str, str]]:
    """(lesion_id, image_id, dx): 3 lesions per class, the first with two images (28 images)."""
    rows = []
    n = 0
    for c, dx in enumerate(COLOURS):
        for lesion in range(3):
            for _ in range(2 if lesion == 0 else 1):
                rows.append((f"HAM_{c}{lesion:05d}", f"ISIC_{n:07d}", dx))
                n += 1
    return rows


@pytest.fixture
def make_ham(tmp_path: Path):
    """Factory: write a HAM10000-layout folder; returns its path.

    Args (of the factory): rows (lesion_id, image_id, dx) or raw CSV text via `csv`;
    `skip_images` ids to leave out on disk; `parts` folder names (None = flat in root/images).
    """
    counter = iter(range(10_000))

    def factory(rows=None, csv=None, skip_images=(), parts=("HAM10000_images_part_1", "HAM10000_images_part_2"),
                name=None):
        root = tmp_path / (name or f"ham{next(counter)}")
        root.mkdir()
        rows = default_rows() if rows is None else rows
        if csv is None:
            lines = [HEADER] + [f"{les},{img},{dx},histo,50.0,male,back" for les, img, dx in rows]
            csv = "\n".join(lines) + "\n"
        (root / "HAM10000_metadata.csv").write_text(csv, encoding="utf-8")
        for i, (_, image_id, dx) in enumerate(rows):
            if image_id in skip_images or "/" in image_id or ".." in image_id:
                continue
            folder = root / (parts[i % len(parts)] if parts else "images")
            write_jpeg(folder / f"{image_id}.jpg", dx if dx in COLOURS else "nv")
        return root

    return factory


@pytest.fixture
def ham_rows() -> list[tuple[str, str, str]]:
    """The default tiny dataset's rows (lesion_id, image_id, dx)."""
    return default_rows()


@pytest.fixture
def jpeg_writer():
    """`write_jpeg(path, dx="nv", size=(12, 9))`: write a tiny real JPEG."""
    return write_jpeg
