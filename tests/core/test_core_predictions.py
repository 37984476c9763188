"""The prediction-file contract: exact round trip and every refusal names file, row and value."""

from __future__ import annotations

import numpy as np
import pytest

from core.classes import CLASSES
from core.errors import PredictionFileError
from core.predictions import (
    export_isic,
    make_predictions,
    read_predictions,
    write_predictions,
)


def _preds(n=4, seed=0, prediction=None):
    rng = np.random.default_rng(seed)
    proba = rng.dirichlet(np.ones(len(CLASSES)), size=n)
    return make_predictions(
        [f"ISIC_{i:07d}" for i in range(n)],
        [f"HAM_{i // 2:07d}" for i in range(n)],
        [CLASSES[i % len(CLASSES)] for i in range(n)],
        proba,
        prediction,
    )


def test_round_trip_is_bit_exact(tmp_path):
    preds = _preds(50)
    write_predictions(tmp_path / "p.csv", preds)
    back = read_predictions(tmp_path / "p.csv")
    assert np.array_equal(back.proba, preds.proba)
    assert list(back.image_id) == list(preds.image_id)
    assert back.prediction is None


def test_prediction_column_overrides_argmax(tmp_path):
    preds = _preds(2, prediction=["vasc", "akiec"])
    write_predictions(tmp_path / "p.csv", preds)
    back = read_predictions(tmp_path / "p.csv")
    assert back.y_pred.tolist() == [6, 0]
    assert back.y_true.tolist() == [0, 1]


def _write(tmp_path, header, rows):
    path = tmp_path / "bad.csv"
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


HEADER = "image_id,lesion_id,label," + ",".join(CLASSES)
UNIFORM = ",".join(["0.25", "0.25", "0.5", "0", "0", "0", "0"])


@pytest.mark.parametrize(
    ("header", "row", "expected"),
    [
        ("image_id,lesion_id,label," + ",".join(CLASSES[:-1]), "a,l,nv," + ",".join(["0.5", "0.5"] + ["0"] * 4), "missing column(s) vasc"),
        (HEADER + ",extra", "a,l,nv," + UNIFORM + ",1", "unexpected column(s) extra"),
        ("image_id,lesion_id,label," + ",".join(reversed(CLASSES)), "a,l,nv," + UNIFORM, "out of canonical order"),
        (HEADER, "a,l,nv," + ",".join(["0.5"] * 7), "sum to 3.500000"),
        (HEADER, "a,l,nv," + ",".join(["nan"] + ["0.5", "0.5"] + ["0"] * 4), "NaN or infinite"),
        (HEADER, "a,l,nv," + ",".join(["-0.5", "1.5"] + ["0"] * 5), "negative"),
        (HEADER, "a,l,melanoma," + UNIFORM, "unknown class 'melanoma'"),
    ],
)
def test_refusals_name_file_and_problem(tmp_path, header, row, expected):
    path = _write(tmp_path, header, [row])
    with pytest.raises(PredictionFileError) as info:
        read_predictions(path)
    assert str(path) in str(info.value)
    assert expected in str(info.value)


def test_duplicate_image_id_refused(tmp_path):
    path = _write(tmp_path, HEADER, ["a,l,nv," + UNIFORM, "a,l,nv," + UNIFORM])
    with pytest.raises(PredictionFileError, match="image_id 'a' appears more than once"):
        read_predictions(path)


def test_isic_export_layout(tmp_path):
    preds = _preds(3)
    export_isic(tmp_path / "isic.csv", preds)
    lines = (tmp_path / "isic.csv").read_text().splitlines()
    assert lines[0] == "image,MEL,NV,BCC,AKIEC,BKL,DF,VASC"
    first = [float(v) for v in lines[1].split(",")[1:]]
    assert first[0] == pytest.approx(preds.proba[0, CLASSES.index("mel")])
    assert first[3] == pytest.approx(preds.proba[0, CLASSES.index("akiec")])


def test_row_numbers_are_the_files_line_numbers(tmp_path):
    # One convention with data_utils.validation: the header is row 1, the first data row row 2.
    good = "a{},l,nv," + UNIFORM
    path = _write(tmp_path, HEADER, [good.format(1), good.format(2), "c,l,nv," + ",".join(["0.5"] * 7)])
    with pytest.raises(PredictionFileError, match=r"bad\.csv: row 4 \(image_id 'c'\)"):
        read_predictions(path)
    path = _write(tmp_path, HEADER, [good.format(1), good.format(1)])
    with pytest.raises(PredictionFileError, match="row 3: image_id 'a1' appears more than once"):
        read_predictions(path)
    path = _write(tmp_path, HEADER, [good.format(1), ",l,nv," + UNIFORM])
    with pytest.raises(PredictionFileError, match="row 3: column 'image_id' is empty"):
        read_predictions(path)
