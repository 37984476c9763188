"""The report's test-time-augmentation section (reports.tta_section): gains checked by hand, Holm
over the TTA comparisons, rows whose plain entry is missing, the section in report.md, and the
gain test's false-positive rate under the null by simulation."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from core.atomic import atomic_write_json
from core.classes import CLASSES
from core.predictions import make_predictions, write_predictions
from core.rundir import RunDir
from reports.results import Entry
from reports.single import build_single_report
from reports.stats import holm
from reports.tta_section import tta_gain_of, tta_gains, tta_section

from .conftest import make_run

LABELS = np.array(CLASSES)


def _preds(y: np.ndarray, y_pred: np.ndarray, lesions: np.ndarray):
    proba = np.full((len(y), 7), 0.05)
    proba[np.arange(len(y)), y_pred] = 0.7
    return make_predictions([f"I{i}" for i in range(len(y))], lesions.astype(str), LABELS[y],
                            proba)


def _entry(root: Path, name: str, y, y_pred, lesions, metrics: dict) -> Entry:
    folder = RunDir(root).model_dir(name)
    write_predictions(RunDir.predictions_file(folder, "test"), _preds(y, y_pred, lesions))
    atomic_write_json(folder / "metrics.json", metrics)
    return Entry(name, folder, metrics)


def _data(ranked, n_resamples=200, seed=0):
    return SimpleNamespace(ranked=ranked, n_resamples=n_resamples, seed=seed)


def test_no_tta_entry_no_section(tmp_path):
    run = make_run(tmp_path / "run", n_test=60, n_val=60, ensembles=())
    entries = [Entry(p.name, p, {"kind": "backbone"}) for p in sorted(run.models_dir.iterdir())]
    assert tta_section(_data(entries)) == ""


def test_gain_by_hand(tmp_path):
    # 14 images, 2 per class, one lesion each. Plain: right on the first image of every class
    # (balanced accuracy 0.5); TTA: right on both images of classes 0-3 and the first of 4-6
    # (recalls 1,1,1,1,.5,.5,.5: balanced accuracy 5.5/7). Gain = 5.5/7 - 0.5 = 2/7.
    y = np.repeat(np.arange(7), 2)
    lesions = np.arange(14)
    wrong = (y + 1) % 7
    plain_pred = np.where(np.arange(14) % 2 == 0, y, wrong)
    tta_pred = np.where((np.arange(14) % 2 == 0) | (y < 4), y, wrong)
    plain = _entry(tmp_path, "xception", y, plain_pred, lesions, {"kind": "backbone"})
    tta = _entry(tmp_path, "xception+tta8", y, tta_pred, lesions,
                 {"kind": "tta", "derived_from": "xception", "tta_views": 8})
    [gain] = tta_gains([tta, plain], n_resamples=300, seed=1)
    assert (gain.entry, gain.source, gain.views) == ("xception+tta8", "xception", 8)
    assert gain.plain == pytest.approx(0.5) and gain.tta == pytest.approx(5.5 / 7)
    assert gain.gain == pytest.approx(2 / 7)
    assert gain.n_images == 14 and gain.n_lesions == 14
    assert gain.ci_low <= gain.gain <= gain.ci_high
    assert gain.ci_low >= 0  # TTA is never worse on any image
    assert gain.p_holm == gain.p_value  # a family of one
    text = tta_section(_data([tta, plain], n_resamples=300, seed=1))
    assert text.startswith("### Test-time augmentation (test split)")
    assert "| xception " in text and "+0.286 [" in text
    assert "paired lesion bootstrap (300 resamples, seed 1" in text
    assert "Holm-corrected over the 1 TTA comparison;" in text


def test_holm_over_every_tta_comparison_and_a_missing_plain_entry(tmp_path):
    run = make_run(tmp_path / "run", n_test=200, n_val=60, ensembles=(),
                   backbones={"xception": 1.2, "inception_v3": 1.0}, baselines={"paper_cnn": 0.6},
                   extra_entries={"xception+tta8": ("tta", 1.8), "inception_v3+tta2": ("tta", 1.0),
                                  "resnext101+tta4": ("tta", 1.0)})
    from reports.results import discover_entries

    entries = discover_entries(run)
    ranked = [e for e in entries if e.has_split("test")]
    gains = tta_gains(ranked, n_resamples=200, seed=0)
    # ordered like their plain entries in `ranked`, the orphan last
    order = [e.name for e in ranked]
    assert [g.entry for g in gains] == sorted(
        ["xception+tta8", "inception_v3+tta2"], key=lambda n: order.index(n.split("+")[0])) + [
        "resnext101+tta4"]
    orphan = gains[-1]
    assert math.isnan(orphan.p_value) and "resnext101 has no test predictions" in orphan.note
    tested = gains[:2]
    assert [g.p_holm for g in tested] == pytest.approx(holm([g.p_value for g in tested]))
    assert {g.views for g in gains} == {8, 2, 4}  # parsed from the names (not recorded here)
    text = tta_section(_data(ranked))
    assert "Holm-corrected over the 2 TTA comparisons" in text
    assert "Not tested: `resnext101+tta4`: its entry resnext101 has no test predictions" in text


def test_the_report_has_the_section(tmp_path):
    run = make_run(tmp_path / "run", n_test=80, n_val=60, ensembles=(), histories=False,
                   backbones={"xception": 1.5, "inception_v3": 1.2}, baselines={},
                   extra_entries={"xception+tta8": ("tta", 1.7)})
    report = build_single_report(run.root, n_resamples=50, figures=False).read_text()
    assert "### Test-time augmentation (test split)" in report
    assert report.index("### Per-class results") < report.index("### Test-time augmentation")
    plain = make_run(tmp_path / "plain", n_test=80, n_val=60, ensembles=(), histories=False,
                     backbones={"xception": 1.5, "inception_v3": 1.2}, baselines={})
    assert "Test-time augmentation" not in build_single_report(
        plain.root, n_resamples=50, figures=False).read_text()


# ---------------------------------------------------------------------------------------------
# the gain test under the null, by simulation

N_LESIONS = 200
N_SIMULATIONS = 150
RESAMPLES = 300
# HAM10000's class mix blended half-and-half with a uniform one (as in
# test_reports_significance_simulation: every class keeps a dozen-odd lesions).
MIX = (np.array([327, 514, 1099, 115, 1113, 6705, 142]) / 10015 + 1 / 7) / 2


def _null_pair(rng):
    """A plain model and its TTA twin, equally good: they agree on most images (a view average
    rarely changes a prediction) and, where they disagree, either is right at random; images of
    a lesion share their difficulty."""
    sizes = rng.integers(1, 4, N_LESIONS)
    y = np.repeat(np.concatenate([np.arange(7), rng.choice(7, N_LESIONS - 7, p=MIX)]), sizes)
    lesion = np.repeat(np.arange(N_LESIONS), sizes)
    hard = np.where(rng.random(len(y)) < 0.8, rng.random(N_LESIONS)[lesion], rng.random(len(y)))
    right = hard < 0.7
    differ = rng.random(len(y)) < 0.15
    swap = rng.random(len(y)) < 0.5
    plain_right = np.where(differ, swap, right)
    tta_right = np.where(differ, ~swap, right)

    def predicted(correct):
        return np.where(correct, y, (y + rng.integers(1, 7, len(y))) % 7)

    return y, lesion, predicted(plain_right), predicted(tta_right)


def test_gain_test_false_positive_rate_under_the_null():
    # Seeded: 9 of 150 null comparisons (6 %) reject at 0.05 (nominal 5 %).
    rng = np.random.default_rng(2024)
    rejected = 0
    for i in range(N_SIMULATIONS):
        y, lesion, plain, tta = _null_pair(rng)
        result = tta_gain_of(_preds(y, plain, lesion), _preds(y, tta, lesion), RESAMPLES, seed=i)
        rejected += result["p_value"] < 0.05
    assert rejected / N_SIMULATIONS <= 0.10
