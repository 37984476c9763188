"""comparisons.csv: rows, Holm per metric, n/a rows, and the CLI (--report, --reference)."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests

import benchmark
from core.classes import CLASSES
from core.metrics import compute_metrics
from core.predictions import make_predictions
from reports.comparisons import (
    COLUMNS,
    DEFAULT_METRICS,
    Contender,
    compare_entries,
    comparison_metrics,
)
from reports.stats import align

ENTRIES = {"backbones": {"inception_resnet_v2": 2.0, "xception": 1.9, "inception_v3": 1.2},
           "baselines": {"paper_cnn": 0.5}, "ensembles": ("soft_voting", "hard_voting"),
           "n_test": 150, "n_val": 150, "histories": False, "run_files": False}


def _entry(name, labels, predicted, lesions=None, ids=None, probabilities=True):
    n = len(labels)
    proba = np.full((n, 7), 0.3 / 6)
    proba[np.arange(n), [CLASSES.index(c) for c in predicted]] = 0.7
    ids = [f"I{i}" for i in range(n)] if ids is None else ids
    return Contender(name, make_predictions(ids, ids if lesions is None else lesions, labels,
                                            proba), probabilities)


def _labels(n=240, seed=0):
    rng = np.random.default_rng(seed)
    return list(np.array(CLASSES)[rng.integers(0, 7, n)]), rng


def test_rows_holm_per_metric_and_hard_voting_out_of_the_family():
    labels, rng = _labels()
    ref = _entry("ref", labels, labels)  # always right

    def noisy(name, q, **kw):
        return _entry(name, labels, [c if rng.random() > q else "nv" for c in labels], **kw)

    others = [noisy("a", 0.03), noisy("b", 0.25), noisy("votes", 0.5, probabilities=False)]
    rows = compare_entries(ref, others, n_resamples=200, seed=0)
    assert [(r.other, r.metric) for r in rows] == [
        (o, m) for o in ("a", "b", "votes") for m in DEFAULT_METRICS]
    for metric in DEFAULT_METRICS:
        group = [r for r in rows if r.metric == metric]
        tested = [r for r in group if not math.isnan(r.p_value)]
        expected = multipletests([r.p_value for r in tested], method="holm")[1]
        assert [r.p_holm for r in tested] == pytest.approx(expected.tolist())
        for row in tested:
            assert row.test == (f"paired lesion bootstrap, 200 resamples, percentile interval; "
                                f"Holm over {len(tested)} comparisons")
            assert row.significant == (row.p_holm < 0.05)
            assert (row.ci_low > 0 or row.ci_high < 0) == (row.p_value < 0.05)
            assert row.difference == pytest.approx(row.value_reference - row.value_other)
    votes_auc = next(r for r in rows if r.other == "votes" and r.metric == "macro_auc")
    assert math.isnan(votes_auc.p_value) and math.isnan(votes_auc.p_holm)
    assert math.isnan(votes_auc.value_other) and not votes_auc.significant
    assert votes_auc.note == "votes has no probabilities"
    assert votes_auc.test == "not tested: votes has no probabilities"
    # macro AUC's family has two members, balanced accuracy's three
    assert next(r for r in rows if r.other == "a" and r.metric == "macro_auc").test.endswith(
        "Holm over 2 comparisons")
    # the clearly worse entries are significantly worse, in the reference's favour
    worst = next(r for r in rows if r.other == "votes" and r.metric == "balanced_accuracy")
    assert worst.significant and worst.reference_better and worst.ci_low > 0


def test_holm_hand_values_through_the_rows(monkeypatch):
    # raw p .01 .04 .03 (m = 3): sorted .01 .03 .04 -> 3*.01 = .03, 2*.03 = .06, 1*.04 -> .06
    import reports.comparisons as comparisons
    from reports.stats import BootstrapTest

    results = iter([BootstrapTest(0.1, 0.2, p, 100) for p in (0.01, 0.04, 0.03)])
    monkeypatch.setattr(comparisons, "paired_bootstrap_test", lambda d: next(results))
    labels, _ = _labels(40)
    ref = _entry("ref", labels, labels)
    rows = compare_entries(ref, [_entry(n, labels, labels) for n in "abc"],
                           metrics=["accuracy"], n_resamples=10)
    assert [r.p_holm for r in rows] == pytest.approx([0.03, 0.06, 0.06])
    assert [r.significant for r in rows] == [True, False, False]


def test_compares_on_shared_images_and_reports_their_counts():
    labels = ["nv", "mel", "bcc", "nv", "df", "df"]
    lesions = ["L1", "L1", "L2", "L3", "L4", "L4"]
    ref = _entry("ref", labels, labels, lesions=lesions)
    other = _entry("other", labels[:5], ["nv", "nv", "bcc", "nv", "df"], lesions=lesions[:5])
    rows = compare_entries(ref, [other], n_resamples=50)
    ba = rows[0]
    assert (ba.n_images, ba.n_lesions) == (5, 4)
    aligned_ref, _ = align(ref.predictions, other.predictions)
    assert ba.value_reference == pytest.approx(
        compute_metrics(aligned_ref)["balanced_accuracy"])
    # no shared image: n/a rows, never significant
    stranger = _entry("stranger", labels, labels, ids=[f"X{i}" for i in range(6)])
    rows = compare_entries(ref, [stranger], n_resamples=50)
    assert all(r.n_images == 0 and math.isnan(r.p_value) and not r.significant for r in rows)


def test_metrics_compared():
    assert comparison_metrics("balanced_accuracy") == list(DEFAULT_METRICS)
    assert comparison_metrics("log_loss") == [*DEFAULT_METRICS, "log_loss"]
    assert comparison_metrics("recall_mel") == [*DEFAULT_METRICS, "recall_mel"]
    assert comparison_metrics("ece") == list(DEFAULT_METRICS)  # no lesion-bootstrap test
    with pytest.raises(ValueError, match="no lesion-bootstrap comparison"):
        compare_entries(_entry("r", ["nv"], ["nv"]), [], metrics=["ece"])


# ---------------------------------------------------------------------------------------------
# through the CLI


@pytest.fixture(scope="module")
def reported(tmp_path_factory, synthetic_run):
    """A prediction-only run directory after `benchmark.py --report --rank-by macro_f1`."""
    run = synthetic_run(tmp_path_factory.mktemp("cmp") / "run", **ENTRIES)
    code = benchmark.main(["--report", "--out", str(run.root), "--bootstrap", "100",
                           "--rank-by", "macro_f1"])
    assert code == 0
    return run


def test_cli_writes_comparisons_csv(reported):
    frame = pd.read_csv(reported.root / "comparisons.csv", dtype=str, keep_default_na=False)
    assert tuple(frame.columns[: len(COLUMNS)]) == COLUMNS
    others = {"xception", "inception_v3", "paper_cnn", "soft_voting", "hard_voting"}
    metrics = [*DEFAULT_METRICS, "macro_f1"]
    assert len(frame) == len(others) * len(metrics)
    assert set(frame["reference"]) == {"inception_resnet_v2"}
    assert set(frame["other"]) == others and set(frame["metric"]) == set(metrics)
    assert set(frame["significant"]) <= {"true", "false"}
    assert (frame["n_images"] == "150").all()
    hard = frame[(frame.other == "hard_voting") & (frame.metric == "macro_auc")].iloc[0]
    assert hard.p_value == "" and hard.p_holm == "" and hard.significant == "false"
    assert hard.test == "not tested: hard_voting has no probabilities"
    tested = frame[frame.p_value != ""]
    low, high, p = (tested[c].astype(float) for c in ("ci_low", "ci_high", "p_value"))
    assert (((low > 0) | (high < 0)) == (p < 0.05)).all()
    assert tested["test"].str.startswith("paired lesion bootstrap, 100 resamples").all()


def test_report_section_3_is_built_from_the_same_rows(reported):
    text = reported.report_md.read_text(encoding="utf-8")
    section = text[text.index("## 3."): text.index("## 4.")]
    frame = pd.read_csv(reported.root / "comparisons.csv")
    row = frame[(frame.other == "paper_cnn") & (frame.metric == "macro_f1")].iloc[0]
    assert f"{row.difference:+.3f} [{row.ci_low:+.3f}, {row.ci_high:+.3f}]" in section
    assert "On `macro_f1` it is significantly better than: " in section
    assert "paired lesion bootstrap" in section and "Holm-corrected per metric" in section
    assert "the unit is the lesion" in section
    assert "[comparisons.csv](comparisons.csv)" in section
    assert "McNemar" not in section
    assert "hard_voting` (hard_voting has no probabilities)" not in section  # BA is tested
    assert "n/a (hard_voting has no probabilities)" in section  # its macro AUC row
    notes = text[text.index("## 8. Method notes"):]
    for phrase in ("paired lesion bootstrap", "test-set sampling only", "validation split",
                   "prior-shift correction", "Melanoma operating point"):
        assert phrase in notes


def test_hard_voting_in_the_report(reported):
    text = reported.report_md.read_text(encoding="utf-8")
    assert "n/a for `hard_voting`: hard voting outputs vote shares" in text
    assert not (reported.figures_dir / "roc_hard_voting.png").exists()
    assert (reported.figures_dir / "confusion_hard_voting.png").is_file()
    assert re.search(r"\| hard_voting +\| n/a \(no probabilities\)", text)
    calibration = text[text.index("### Calibration"): text.index("### Melanoma")]
    assert "prior-shift correction" in calibration and "π from the validation labels" in calibration


def test_cli_reference_option(synthetic_run, tmp_path, capsys):
    run = synthetic_run(tmp_path / "run", **{**ENTRIES, "ensembles": ()})
    assert benchmark.main(["--report", "--out", str(run.root), "--reference", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "--reference 'nope'" in err and "inception_resnet_v2, inception_v3" in err
    assert not (run.root / "comparisons.csv").exists() and not run.report_md.exists()
    assert not (run.model_dir("xception") / "metrics.json").exists()  # nothing written
    import reports.build

    reports.build.build_report(run.root, n_resamples=50, figures=False, reference="xception")
    frame = pd.read_csv(run.root / "comparisons.csv")
    assert set(frame["reference"]) == {"xception"}
    assert set(frame["other"]) == {"inception_resnet_v2", "inception_v3", "paper_cnn"}
    text = run.report_md.read_text(encoding="utf-8")
    assert "## 3. `xception` vs the rest" in text and "| **xception**" in text
    # the rebuild command keeps the reference (reports.sections, shared with the grid report)
    assert f"python benchmark.py --report --out {run.root.as_posix()} --reference xception\n" in text
