"""Every bad metadata / image input gives a DataError naming the file, row and value."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import DataError
from data_utils.readers import read_dataset

META = "HAM10000_metadata.csv"


def _edit(root: Path, old: str, new: str) -> None:
    path = root / META
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_valid_tiny_dataset_reads(make_ham, ham_rows):
    table = read_dataset("ham10000", make_ham())
    assert list(table.columns[:4]) == ["image_id", "lesion_id", "dx", "path"]
    assert len(table) == len(ham_rows) == 28
    assert table.attrs["missing_images"] == 0


def test_misspelled_column_names_closest(make_ham):
    root = make_ham()
    _edit(root, "lesion_id,image_id,dx", "lesion_id,imageid,dx")
    with pytest.raises(DataError, match=r"HAM10000_metadata\.csv: missing column\(s\) 'image_id' "
                                        r"\(found 'imageid': did you mean 'image_id'\?\)"):
        read_dataset("ham10000", root)


def test_missing_column_without_close_match(make_ham):
    root = make_ham()
    _edit(root, "lesion_id,image_id,dx,", "lesion_id,image_id,")
    with pytest.raises(DataError, match=r"missing column\(s\) 'dx'; the header has lesion_id"):
        read_dataset("ham10000", root)


def test_unknown_label_names_row_and_value(make_ham, ham_rows):
    root = make_ham()
    # The third data row is spreadsheet row 4 (header = row 1).
    _, image_id, dx = ham_rows[2]
    _edit(root, f"{image_id},{dx},", f"{image_id},melanoma,")
    with pytest.raises(DataError, match=r"row 4: unknown class label 'melanoma'.*Valid labels: akiec"):
        read_dataset("ham10000", root)


def test_label_case_and_spaces_are_normalised(make_ham, ham_rows):
    root = make_ham()
    _, image_id, dx = ham_rows[0]
    _edit(root, f"{image_id},{dx},", f"{image_id}, {dx.upper()} ,")
    assert read_dataset("ham10000", root)["dx"].iloc[0] == dx


def test_duplicate_image_id_names_both_rows(make_ham, ham_rows):
    root = make_ham()
    _, first, _ = ham_rows[0]
    _, fifth, _ = ham_rows[4]
    _edit(root, f",{fifth},", f",{first},")
    with pytest.raises(DataError, match=rf"duplicate image_id '{first}' in rows 2, 6"):
        read_dataset("ham10000", root)


def test_missing_images_counted_and_listed(make_ham, ham_rows):
    skip = [ham_rows[i][1] for i in (3, 7, 9)]
    root = make_ham(skip_images=skip)
    with pytest.raises(DataError, match=rf"lists 3 image\(s\) not found.*{skip[0]}, {skip[1]}, "
                                        rf"{skip[2]}.*--allow-missing"):
        read_dataset("ham10000", root)


def test_allow_missing_proceeds_and_records(make_ham, ham_rows):
    skip = [ham_rows[3][1]]
    table = read_dataset("ham10000", make_ham(skip_images=skip), allow_missing=True)
    assert len(table) == len(ham_rows) - 1
    assert skip[0] not in set(table["image_id"])
    assert table.attrs["missing_images"] == 1
    assert table.attrs["missing_examples"] == skip


def test_lesion_with_two_labels(make_ham, ham_rows):
    # ham_rows[0] and [1] are the two images of lesion HAM_000000 (akiec).
    root = make_ham()
    lesion, image_id, _ = ham_rows[1]
    _edit(root, f"{lesion},{image_id},akiec", f"{lesion},{image_id},bcc")
    with pytest.raises(DataError, match=rf"lesion_id '{lesion}' has different labels "
                                        rf"\(row 2 .*=akiec, row 3 {image_id}=bcc\)"):
        read_dataset("ham10000", root)


@pytest.mark.parametrize("bad_id", ["../etc/passwd", "sub/ISIC_1", "sub\\ISIC_1", "..", "/abs/ISIC_1",
                                    "C:ISIC_1"])
def test_image_id_must_be_plain_file_name(make_ham, ham_rows, bad_id):
    rows = list(ham_rows)
    rows[5] = (rows[5][0], bad_id, rows[5][2])
    root = make_ham(rows=rows)
    with pytest.raises(DataError, match=r"row 7: image_id .* is not a plain file name"):
        read_dataset("ham10000", root)


def test_empty_lesion_id(make_ham, ham_rows):
    root = make_ham()
    lesion, image_id, _ = ham_rows[2]
    _edit(root, f"{lesion},{image_id},", f",{image_id},")
    with pytest.raises(DataError, match=r"row 4: empty 'lesion_id'"):
        read_dataset("ham10000", root)


def test_missing_metadata_file(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(DataError, match=r"no HAM10000_metadata\.csv found.*--download"):
        read_dataset("ham10000", tmp_path / "x")


def test_missing_data_dir(tmp_path):
    with pytest.raises(DataError, match=r"does not exist.*--data-dir"):
        read_dataset("ham10000", tmp_path / "nope")


def test_no_images_at_all(make_ham):
    root = make_ham(parts=("HAM10000_images_part_1",))
    for image in (root / "HAM10000_images_part_1").iterdir():
        image.unlink()
    with pytest.raises(DataError, match=r"no \.jpg images found"):
        read_dataset("ham10000", root)


def test_truncated_jpeg_surfaces_from_prepare(make_ham, ham_rows, tmp_path):
    from data_utils.prepare import prepare

    root = make_ham()
    victim = next((root / "HAM10000_images_part_1").glob("*.jpg"))
    from PIL import Image

    Image.new("RGB", (64, 48), (90, 20, 20)).save(victim, "JPEG")
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=victim.stem):
        prepare("ham10000", root, tmp_path / "run", image_sizes=(16,), workers=1, progress=False,
                cache_root=tmp_path / "cache")
    assert not (tmp_path / "run" / "splits.csv").exists()


def test_official_test_set_needs_isic2018(make_ham):
    with pytest.raises(DataError, match=r"--test-set official needs --dataset isic2018"):
        read_dataset("ham10000", make_ham(), test_set="official")


def test_prepare_records_missing_images(make_ham, ham_rows, tmp_path):
    from data_utils.prepare import format_card, prepare

    skip = [ham_rows[3][1], ham_rows[8][1]]
    prepared = prepare("ham10000", make_ham(skip_images=skip), tmp_path / "run", allow_missing=True,
                       image_sizes=())
    assert prepared.card["missing_images"] == 2
    assert prepared.card["missing_examples"] == skip
    assert prepared.card["images"]["total"] == len(ham_rows) - 2
    assert f"Missing images skipped (--allow-missing): 2 (first: {skip[0]}, {skip[1]})" in format_card(
        prepared.card)
