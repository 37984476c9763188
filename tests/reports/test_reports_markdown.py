"""Formatting helpers of report.md and the tolerant reading of fit.json / run.json / dataset.json."""

from __future__ import annotations

import math

import pandas as pd

from core.atomic import atomic_write_csv, atomic_write_json
from core.rundir import RunDir
from reports.context import NOT_RECORDED, read_context
from reports.formatting import fmt, fmt_ci, fmt_count, fmt_p
from reports.markdown import _fit_split, _fit_summary
from reports.references import REFERENCES


def test_number_formatting():
    assert fmt(0.81234) == "0.812"
    assert fmt(math.nan) == "n/a" and fmt(None) == "n/a" and fmt(True) == "n/a"
    assert fmt_ci({"accuracy": 0.8, "accuracy_ci": [0.75, 0.85]}, "accuracy") == "0.800 [0.750, 0.850]"
    assert fmt_ci({"accuracy": 0.8, "accuracy_ci": [None, None]}, "accuracy") == "0.800"
    assert fmt_count(55_843_623) == "55.8 M" and fmt_count(2.6e10) == "26.0 G"
    assert fmt_count(512) == "512"
    assert fmt_p(3e-7) == "< 0.0001" and fmt_p(0.0421) == "0.0421"


def test_fit_json_layouts():
    members = ["a", "b"]
    # ensembles.fitfile layout: weights under "state"
    weighted = {"ensemble": "weighted_voting", "members": members, "fit_split": "val",
                "fit_size": 1002, "state": {"weights": [0.7, 0.3]}, "val_in_sample": True}
    assert _fit_summary(weighted) == "a 0.70, b 0.30"
    assert _fit_split(weighted) == "validation split (1002 images); its validation metrics are in-sample"
    stacking = {"members": members, "fit_split": "oof", "fit_size": 900,
                "state": {"C": 0.1, "coef": [[0.0] * 14] * 7}}
    assert _fit_summary(stacking) == "logistic regression, C = 0.1, 7 x 14 coefficients"
    assert _fit_split(stacking) == "out-of-fold validation predictions (900 images)"
    # the brief's flat layout and missing keys
    assert _fit_summary({"members": members, "weights": [0.5, 0.5]}) == "a 0.50, b 0.50"
    assert _fit_summary({"C": 1.0}) == "logistic regression, C = 1.0"
    soft = {"members": members, "fit_split": "none", "fit_size": 0}
    assert _fit_summary(soft) == "none (fixed rule)"
    assert _fit_split(soft) == "nothing (fixed rule)"
    assert _fit_summary({}) == "not recorded"
    assert _fit_split({}) == "not recorded (no fit.json)"


def test_context_reads_what_is_there(tmp_path):
    run = RunDir(tmp_path)
    empty = read_context(run)
    assert empty.split_type == NOT_RECORDED and empty.command == NOT_RECORDED
    assert empty.leakage_summary() == NOT_RECORDED and not empty.is_leaky
    # splits.csv alone: the leakage check is recomputed (lesion L1 in train and test)
    atomic_write_csv(run.splits_csv, pd.DataFrame({
        "image_id": ["a", "b", "c", "d"], "lesion_id": ["L1", "L1", "L2", "L3"],
        "dx": ["nv", "nv", "mel", "bkl"], "split": ["train", "test", "val", "test"]}))
    from_splits = read_context(run)
    assert from_splits.leakage_source == "splits.csv"
    assert from_splits.leaked_test_images == 1 and from_splits.is_leaky
    assert "FAILED" in from_splits.leakage_summary()
    atomic_write_json(run.run_json, {
        "config": {"split": "image", "dataset": "ham10000", "preset": "paper", "seed": 3},
        "command": "python benchmark.py --all", "created": "2025-01-01", "python": "3.11.9",
        "invocations": [{"date": "2025-01-02"}], "git": {"sha": "0123456789abcdef", "dirty": True},
        "versions": {"numpy": "2.0"}})
    ctx = read_context(run)
    assert ctx.split_type == "image" and ctx.dataset == "ham10000" and ctx.preset == "paper"
    assert ctx.date == "2025-01-01 (last command 2025-01-02)"
    assert ctx.versions == "python 3.11.9, numpy 2.0, git 0123456789ab (dirty)"
    assert ctx.seeds == "seed 3"


def test_reference_table_holds_the_published_numbers():
    values = {r.value for r in REFERENCES}
    for number in ("93.20 %", "0.885", "0.856", "0.845", "0.735 / 0.917", "0.847 / 0.963",
                   "17.91 / 30 (59.7 %)", "25.43 / 30 (84.8 %)", "66.95 %; 14.3 %"):
        assert number in values
