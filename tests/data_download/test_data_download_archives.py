"""Safe extraction of downloaded zips: unsafe members are refused before anything is written."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from core.errors import DownloadError
from data_utils.archives import (
    UnsafeArchiveError,
    check_members,
    check_zip_integrity,
    count_images,
    safe_extract_zip,
)


def _jpeg(shade: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (shade, 40, 200 - shade)).save(buf, "JPEG")
    return buf.getvalue()


def _write_zip(path: Path, entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return path


def _symlink_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if "extracting" in p.name or ".old-" in p.name)


def test_single_top_folder_is_hoisted_into_target_and_images_counted(tmp_path: Path) -> None:
    archive = _write_zip(tmp_path / "a.zip", [
        ("ISIC2018_Task3_Validation_Input/ISIC_0000001.jpg", _jpeg(1)),
        ("ISIC2018_Task3_Validation_Input/ISIC_0000002.JPG", _jpeg(2)),
        ("ISIC2018_Task3_Validation_Input/LICENSE.txt", b"CC BY-NC"),
        ("__MACOSX/._ISIC_0000001.jpg", b"junk"),
    ])
    target = tmp_path / "out" / "ISIC2018_Task3_Validation_Input"
    result = safe_extract_zip(archive, target, expected_images=(2,), expected_files=("LICENSE.txt",))
    assert (result.files, result.images) == (3, 2)
    assert sorted(p.name for p in target.iterdir()) == ["ISIC_0000001.jpg", "ISIC_0000002.JPG",
                                                        "LICENSE.txt"]
    assert (target / "ISIC_0000001.jpg").read_bytes() == _jpeg(1)
    assert count_images(target) == 2
    assert _leftovers(target.parent) == []


def test_flat_zip_lands_in_target_and_replaces_an_old_folder(tmp_path: Path) -> None:
    archive = _write_zip(tmp_path / "part_1.zip", [("ISIC_1.jpg", _jpeg(1)), ("ISIC_2.jpg", _jpeg(2))])
    target = tmp_path / "HAM10000_images_part_1"
    target.mkdir()
    (target / "stale.jpg").write_bytes(b"old")
    safe_extract_zip(archive, target)
    assert sorted(p.name for p in target.iterdir()) == ["ISIC_1.jpg", "ISIC_2.jpg"]
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ("../evil.jpg", "'..' component"),
        ("imgs/../../evil.jpg", "'..' component"),
        ("..\\evil.jpg", "'..' component"),
        ("ABSOLUTE", "absolute path"),
        ("C:/evil.jpg", "absolute path"),
        ("SYMLINK", "symbolic link"),
    ],
)
def test_unsafe_entries_are_refused_and_nothing_is_written(tmp_path: Path, entry: str,
                                                           reason: str) -> None:
    outside = tmp_path / "evil.jpg"
    if entry == "ABSOLUTE":
        member: zipfile.ZipInfo | str = str(outside)  # an absolute path into tmp_path
        assert member.startswith("/")
    elif entry == "SYMLINK":
        member = _symlink_info("imgs/link.jpg")
    else:
        member = entry
    payload = str(outside).encode() if entry == "SYMLINK" else b"pwned"
    archive = _write_zip(tmp_path / "bad.zip", [("imgs/ok.jpg", _jpeg(3)), (member, payload)])
    work = tmp_path / "work"
    work.mkdir()
    target = work / "ISIC2018_Task3_Training_Input"
    with pytest.raises(UnsafeArchiveError) as err:
        safe_extract_zip(archive, target)
    message = str(err.value)
    assert "bad.zip" in message and reason in message
    assert not outside.exists()
    assert not target.exists()
    assert list(work.iterdir()) == []  # no temporary folder or partial content left


def test_check_members_refuses_special_files(tmp_path: Path) -> None:
    fifo = zipfile.ZipInfo("imgs/pipe")
    fifo.create_system = 3
    fifo.external_attr = (stat.S_IFIFO | 0o644) << 16
    archive = _write_zip(tmp_path / "fifo.zip", [(fifo, b"")])
    with pytest.raises(UnsafeArchiveError, match="special file"):
        check_members(archive, tmp_path / "t")


def test_wrong_image_count_fails_and_leaves_no_target(tmp_path: Path) -> None:
    archive = _write_zip(tmp_path / "Test_Input.zip", [("a.jpg", _jpeg(1)), ("b.jpg", _jpeg(2))])
    target = tmp_path / "ISIC2018_Task3_Test_Input"
    with pytest.raises(DownloadError, match=r"holds 2 images but 1,512 or 1,511 were expected"):
        safe_extract_zip(archive, target, expected_images=(1512, 1511))
    assert not target.exists()
    assert _leftovers(tmp_path) == []


def test_missing_expected_file_fails(tmp_path: Path) -> None:
    archive = _write_zip(tmp_path / "gt.zip", [("GT/readme.txt", b"x")])
    with pytest.raises(DownloadError, match="lacks ISIC2018_Task3_Test_GroundTruth.csv"):
        safe_extract_zip(archive, tmp_path / "GT",
                         expected_files=("ISIC2018_Task3_Test_GroundTruth.csv",))


def test_integrity_check_catches_crc_errors_and_non_zips(tmp_path: Path) -> None:
    good = _write_zip(tmp_path / "good.zip", [("a.jpg", _jpeg(7))])
    check_zip_integrity(good)  # no error
    data = bytearray(good.read_bytes())
    offset = data.find(_jpeg(7)[100:120])  # a byte inside the stored member's data
    data[offset] ^= 0xFF
    bad = tmp_path / "bad.zip"
    bad.write_bytes(bytes(data))
    with pytest.raises(DownloadError, match="'a.jpg' fails its CRC check"):
        check_zip_integrity(bad)
    html = tmp_path / "error.zip"
    html.write_bytes(b"<html>Access denied</html>")
    with pytest.raises(DownloadError, match="not a readable zip"):
        check_zip_integrity(html)
