"""The prediction-file contract between stages (docs/ARCHITECTURE.md).

    image_id,lesion_id,label,akiec,bcc,bkl,df,mel,nv,vasc[,prediction]

`label` is the true class name, the seven probability columns are in canonical class order and
each row sums to 1; the optional `prediction` column holds the predicted class name (else the
argmax). Writers are atomic; the reader checks everything and names the file, row and value.
Row numbers in messages are the file's line numbers, as a spreadsheet shows them: the header is
row 1, the first data row is row 2 (the convention of data_utils.validation); predictions built
in memory count the rows they will have once written.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.atomic import atomic_write_csv
from core.classes import CLASS_INDEX, CLASSES, ISIC_COLUMNS, NUM_CLASSES
from core.errors import PredictionFileError

log = logging.getLogger(__name__)

ID_COLUMNS: tuple[str, ...] = ("image_id", "lesion_id", "label")
PREDICTION_COLUMN = "prediction"
ROW_SUM_TOLERANCE = 1e-3
FIRST_DATA_ROW = 2  # the header is row 1
# Relative step between the rescaled columns of an ISIC export that breaks exact ties (2**-40:
# thousands of float64 ulps, so a parser's last-digit rounding cannot undo it).
_TIE_STEP = 2.0 ** -40


@dataclass(frozen=True)
class Predictions:
    """One model's (or ensemble's) predictions on one split.

    Attributes:
        image_id: (n,) image ids.
        lesion_id: (n,) lesion ids (bootstrap and stacking folds group by these).
        label: (n,) true class names.
        proba: (n, 7) float64 probabilities in canonical class order.
        prediction: (n,) predicted class names, or None (then the argmax is the prediction).
        source: the file it was read from, for error messages ("" when built in memory).
    """

    image_id: np.ndarray
    lesion_id: np.ndarray
    label: np.ndarray
    proba: np.ndarray
    prediction: np.ndarray | None = None
    source: str = ""

    def __len__(self) -> int:
        return len(self.image_id)

    @property
    def y_true(self) -> np.ndarray:
        """True labels as class indices (canonical order)."""
        return np.array([CLASS_INDEX[c] for c in self.label], dtype=np.int64)

    @property
    def y_pred(self) -> np.ndarray:
        """Predicted class indices: the `prediction` column where present, else the argmax."""
        if self.prediction is not None:
            return np.array([CLASS_INDEX[c] for c in self.prediction], dtype=np.int64)
        return np.argmax(self.proba, axis=1).astype(np.int64)

    def sorted_by_image(self) -> Predictions:
        """The same predictions, rows ordered by image_id (for aligning members)."""
        order = np.argsort(self.image_id, kind="stable")
        return Predictions(
            image_id=self.image_id[order],
            lesion_id=self.lesion_id[order],
            label=self.label[order],
            proba=self.proba[order],
            prediction=None if self.prediction is None else self.prediction[order],
            source=self.source,
        )

    def to_frame(self) -> pd.DataFrame:
        """The contract's table (identity columns, seven probabilities, optional prediction)."""
        frame = pd.DataFrame(
            {"image_id": self.image_id, "lesion_id": self.lesion_id, "label": self.label}
        )
        for i, name in enumerate(CLASSES):
            frame[name] = self.proba[:, i]
        if self.prediction is not None:
            frame[PREDICTION_COLUMN] = self.prediction
        return frame


def make_predictions(
    image_id, lesion_id, label, proba, prediction=None, source: str = ""
) -> Predictions:
    """Build and validate a `Predictions` from array-likes.

    Args:
        image_id, lesion_id, label: sequences of strings, one per row.
        proba: (n, 7) probabilities in canonical class order.
        prediction: optional sequence of predicted class names.
        source: a name for error messages.

    Returns:
        A validated `Predictions`.

    Raises:
        PredictionFileError: on any contract violation.
    """
    preds = Predictions(
        image_id=np.asarray(image_id, dtype=object).astype(str),
        lesion_id=np.asarray(lesion_id, dtype=object).astype(str),
        label=np.asarray(label, dtype=object).astype(str),
        proba=np.asarray(proba, dtype=np.float64),
        prediction=None if prediction is None else np.asarray(prediction, dtype=object).astype(str),
        source=source,
    )
    validate_predictions(preds)
    return preds


def validate_predictions(preds: Predictions) -> None:
    """Check shapes, class names, row sums, NaN/negative values and duplicate image ids.

    Raises:
        PredictionFileError: naming the source, the row (the file's line number: header = row 1)
            and the value.
    """
    where = preds.source or "predictions"
    n = len(preds.image_id)
    if preds.proba.ndim != 2 or preds.proba.shape != (n, len(CLASSES)):
        raise PredictionFileError(
            f"{where}: probabilities must have shape ({n}, {len(CLASSES)}), got {preds.proba.shape}"
        )
    if n == 0:
        raise PredictionFileError(f"{where}: holds no rows")
    for column, values in (("label", preds.label), (PREDICTION_COLUMN, preds.prediction)):
        if values is None:
            continue
        bad = np.flatnonzero(~np.isin(values, CLASSES))
        if bad.size:
            raise PredictionFileError(
                f"{where}: row {bad[0] + FIRST_DATA_ROW}: unknown class {str(values[bad[0]])!r} in column "
                f"'{column}'; expected one of {', '.join(CLASSES)}"
            )
    dup = pd.Series(preds.image_id).duplicated()
    if dup.any():
        row = int(np.flatnonzero(dup.to_numpy())[0])
        raise PredictionFileError(
            f"{where}: row {row + FIRST_DATA_ROW}: image_id {str(preds.image_id[row])!r} appears more than once"
        )
    finite = np.isfinite(preds.proba)
    if not finite.all():
        row, col = map(int, np.argwhere(~finite)[0])
        raise PredictionFileError(
            f"{where}: row {row + FIRST_DATA_ROW}: column '{CLASSES[col]}' is {preds.proba[row, col]} "
            "(NaN or infinite); every probability must be a finite number in [0, 1]"
        )
    if (preds.proba < 0).any():
        row, col = map(int, np.argwhere(preds.proba < 0)[0])
        raise PredictionFileError(
            f"{where}: row {row + FIRST_DATA_ROW}: column '{CLASSES[col]}' is negative "
            f"({preds.proba[row, col]}); probabilities must be >= 0"
        )
    sums = preds.proba.sum(axis=1)
    off = np.flatnonzero(np.abs(sums - 1.0) > ROW_SUM_TOLERANCE)
    if off.size:
        row = int(off[0])
        raise PredictionFileError(
            f"{where}: row {row + FIRST_DATA_ROW} (image_id {str(preds.image_id[row])!r}): probabilities sum to "
            f"{sums[row]:.6f}, not 1 (tolerance {ROW_SUM_TOLERANCE}); {off.size} row(s) affected. "
            "Normalise each row (e.g. apply softmax) before writing."
        )


def read_predictions(path: str | os.PathLike) -> Predictions:
    """Read and validate a prediction file.

    Args:
        path: a CSV in the contract's layout.

    Returns:
        The validated `Predictions` (rows in file order).

    Raises:
        PredictionFileError: missing file, wrong/missing/extra/misordered columns, or any check of
            `validate_predictions`.
    """
    path = Path(path)
    if not path.is_file():
        raise PredictionFileError(f"{path}: prediction file not found")
    try:
        # round_trip: probabilities come back bit-identical to what write_predictions wrote.
        frame = pd.read_csv(
            path,
            dtype={c: str for c in (*ID_COLUMNS, PREDICTION_COLUMN)},
            float_precision="round_trip",
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise PredictionFileError(f"{path}: not a readable CSV ({exc})") from exc
    expected = [*ID_COLUMNS, *CLASSES]
    columns = list(frame.columns)
    has_prediction = columns[-1:] == [PREDICTION_COLUMN]
    core = columns[:-1] if has_prediction else columns
    if core != expected:
        missing = [c for c in expected if c not in columns]
        extra = [c for c in core if c not in expected]
        if missing:
            problem = f"missing column(s) {', '.join(missing)}"
        elif extra:
            problem = f"unexpected column(s) {', '.join(extra)}"
        else:
            problem = "columns out of canonical order"
        raise PredictionFileError(
            f"{path}: {problem}; the header must be exactly "
            f"{','.join(expected)}[,{PREDICTION_COLUMN}] (classes in canonical alphabetical order), "
            f"got {','.join(columns)}"
        )
    for column in ID_COLUMNS:
        empty = frame[column].isna()
        if empty.any():
            row = int(np.flatnonzero(empty.to_numpy())[0])
            raise PredictionFileError(
                f"{path}: row {row + FIRST_DATA_ROW}: column '{column}' is empty")
    try:
        proba = frame[list(CLASSES)].to_numpy(dtype=np.float64)
    except ValueError as exc:
        raise PredictionFileError(f"{path}: a probability column holds a non-number ({exc})") from exc
    return make_predictions(
        frame["image_id"].to_numpy(),
        frame["lesion_id"].to_numpy(),
        frame["label"].to_numpy(),
        proba,
        frame[PREDICTION_COLUMN].to_numpy() if has_prediction else None,
        source=str(path),
    )


def write_predictions(path: str | os.PathLike, preds: Predictions) -> None:
    """Validate and write predictions atomically, with full float precision (round-trips exactly)."""
    validate_predictions(preds)
    atomic_write_csv(path, preds.to_frame())


def isic_scores(preds: Predictions, probabilities: bool = True) -> np.ndarray:
    """The seven scores an ISIC 2018 export writes (canonical class order): scored by the official
    ISIC scorer, they give the entry's balanced accuracy and, for an entry with probabilities, its
    macro AUC.

    The scorer's decision is the unique maximum of a row (a tie counts as "undecided", i.e.
    wrong), while the entry's prediction is its `prediction` column or the argmax with ties to
    the lowest class index (`Predictions.y_pred`). So:

    - rows whose unique maximum is the prediction: the probabilities as they are;
    - exact ties at the maximum of an entry with probabilities: each column is multiplied by
      1 - k * 2**-40 (k the class index), a strictly increasing map per column that keeps every
      column's ranking (so each one-vs-rest AUC) and breaks the ties towards the lowest index;
    - an entry without probabilities (hard voting: vote shares that tie) or whose prediction
      column is not its argmax: (p + 2 * onehot(prediction)) / 3, scores in [0, 1] summing to 1
      whose unique maximum is the prediction (for hard voting: its tie-broken vote). AUCs of such
      an export are not the entry's (hard voting has none).

    Args:
        preds: the entry's test predictions.
        probabilities: False when the probability columns are not probabilities (hard voting).

    Returns:
        An (n, 7) float64 array.
    """
    proba = preds.proba
    y_pred = preds.y_pred
    if _decides(proba, y_pred):
        return proba
    argmax_is_prediction = bool(np.all(y_pred == np.argmax(proba, axis=1)))
    if probabilities and argmax_is_prediction:
        scaled = proba * (1.0 - _TIE_STEP * np.arange(NUM_CLASSES))
        if _decides(scaled, y_pred) and _same_rankings(proba, scaled):
            return scaled
    if probabilities:
        log.warning("%s: the ISIC export carries the prediction, so the official scorer's AUC of "
                    "it differs from the report's (its prediction column is not the argmax, or "
                    "its ties cannot be broken without reordering a column)",
                    preds.source or "an entry")
    onehot = np.eye(NUM_CLASSES)[y_pred]
    return (proba + 2.0 * onehot) / 3.0


def _decides(scores: np.ndarray, y_pred: np.ndarray) -> bool:
    """Whether every row's unique maximum is at `y_pred`."""
    rows = np.arange(len(scores))
    best = scores[rows, y_pred]
    others = scores.copy()
    others[rows, y_pred] = -np.inf
    return bool(np.all(best > others.max(axis=1)))


def _same_rankings(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether every column of `b` orders the rows as `a`'s does (ties included)."""
    for k in range(a.shape[1]):
        order = np.argsort(a[:, k], kind="stable")
        step_a, step_b = np.diff(a[order, k]), np.diff(b[order, k])
        if not np.array_equal(step_a > 0, step_b > 0) or (step_b < 0).any():
            return False
    return True


def export_isic(path: str | os.PathLike, preds: Predictions, probabilities: bool = True) -> None:
    """Write predictions in the official ISIC 2018 scorer layout: image,MEL,NV,BCC,AKIEC,BKL,DF,VASC.

    Args:
        path: the destination CSV.
        preds: the entry's test predictions.
        probabilities: False for an entry without probabilities (hard voting); see `isic_scores`.
    """
    scores = isic_scores(preds, probabilities)
    frame = pd.DataFrame({"image": preds.image_id})
    for column in ISIC_COLUMNS:
        frame[column] = scores[:, CLASS_INDEX[column.lower()]]
    atomic_write_csv(path, frame)
