"""`benchmark.py --ensemble ...` end to end: hand-made run directories, refusals, invariance."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import benchmark
from core.classes import CLASSES
from core.predictions import read_predictions
from core.rundir import RunDir
from ensembles import ENSEMBLE_NAMES
from ensembles.build import build_ensembles
from ensembles.errors import EnsembleError
from ensembles.fitfile import load_fit
from ensembles.members import read_aligned_split
from ensembles.registry import ESTIMATORS

HEADER = "image_id,lesion_id,label,akiec,bcc,bkl,df,mel,nv,vasc\n"
# Validation: 8 images, each its own lesion (two lesions of each of four classes: the
# fewest an ensemble learns a class from); each member is right on some and wrong on others.
VAL = {
    "inception_v3": """\
V1,VL1,mel,0,0,0,0,0.7,0.3,0
V2,VL2,mel,0,0,0,0,0.6,0.4,0
V3,VL3,nv,0,0,0,0,0.2,0.8,0
V4,VL4,nv,0,0,0.1,0,0.3,0.6,0
V5,VL5,bkl,0,0,0.3,0,0.2,0.5,0
V6,VL6,bkl,0,0,0.6,0,0.1,0.3,0
V7,VL7,bcc,0.3,0.6,0,0,0,0.1,0
V8,VL8,bcc,0.2,0.4,0,0,0,0.4,0
""",
    "xception": """\
V1,VL1,mel,0,0,0,0,0.4,0.6,0
V2,VL2,mel,0,0,0,0,0.5,0.5,0
V3,VL3,nv,0,0,0,0,0.1,0.9,0
V4,VL4,nv,0,0,0,0,0.2,0.8,0
V5,VL5,bkl,0,0,0.5,0,0.1,0.4,0
V6,VL6,bkl,0,0,0.7,0,0,0.3,0
V7,VL7,bcc,0.5,0.4,0,0,0,0.1,0
V8,VL8,bcc,0.1,0.8,0,0,0,0.1,0
""",
    "nasnet_large": """\
V1,VL1,mel,0,0,0,0,0.9,0.1,0
V2,VL2,mel,0,0,0,0,0.8,0.2,0
V3,VL3,nv,0,0,0,0,0.5,0.5,0
V4,VL4,nv,0,0,0,0,0.4,0.6,0
V5,VL5,bkl,0,0,0.2,0,0.6,0.2,0
V6,VL6,bkl,0,0,0.4,0,0.5,0.1,0
V7,VL7,bcc,0,0.2,0,0,0,0,0.8
V8,VL8,bcc,0,0.3,0,0,0,0,0.7
""",
}
# Test: 3 images (hand-computed ensembles below).
#   T1 (mel): A mel .6 nv .4 | B mel .3 nv .7 | C mel .8 nv .2
#       soft: mel 1.7/3 = .5667, nv 1.3/3 = .4333 -> mel. hard: votes mel, nv, mel -> mel (2/3).
#   T2 (nv):  A nv 1         | B bkl .5 nv .5 | C bkl .9 nv .1
#       B's own tie votes bkl (lower index). soft: bkl 1.4/3 = .4667, nv 1.6/3 = .5333 -> nv.
#       hard: votes nv, bkl, bkl -> bkl (2/3)   (wrong, unlike soft voting).
#   T3 (bcc): A akiec .3 bcc .7 | B akiec .6 bcc .4 | C vasc 1
#       hard: votes bcc, akiec, vasc -> three-way tie; means akiec .3, bcc 1.1/3 = .3667,
#       vasc .3333 -> bcc. soft: bcc .3667 -> bcc.
#   Test accuracy: soft 3/3 = 1.0000, hard 2/3 = 0.6667.
TEST = {
    "inception_v3": """\
T1,L5,mel,0,0,0,0,0.6,0.4,0
T2,L6,nv,0,0,0,0,0,1,0
T3,L7,bcc,0.3,0.7,0,0,0,0,0
""",
    "xception": """\
T1,L5,mel,0,0,0,0,0.3,0.7,0
T2,L6,nv,0,0,0.5,0,0,0.5,0
T3,L7,bcc,0.6,0.4,0,0,0,0,0
""",
    "nasnet_large": """\
T1,L5,mel,0,0,0,0,0.8,0.2,0
T2,L6,nv,0,0,0.9,0,0,0.1,0
T3,L7,bcc,0,0,0,0,0,0,1
""",
}
MEMBERS = sorted(VAL)


def write_hand_made_run(root: Path) -> Path:
    """A directory holding nothing but models/<m>/predictions_{val,test}.csv."""
    for member in MEMBERS:
        folder = root / "models" / member
        folder.mkdir(parents=True)
        (folder / "predictions_val.csv").write_text(HEADER + VAL[member])
        (folder / "predictions_test.csv").write_text(HEADER + TEST[member])
    return root


def _member_csv(run: Path, member: str, split: str) -> Path:
    return run / "models" / member / f"predictions_{split}.csv"


def _exact_proba(path: Path) -> np.ndarray:
    """The probability columns of a prediction file, parsed exactly (pandas' round_trip parser)."""
    frame = pd.read_csv(path, dtype={"image_id": str}, float_precision="round_trip")
    return frame[list(CLASSES)].to_numpy()


@pytest.fixture(autouse=True)
def no_report_figures(monkeypatch) -> None:
    """--ensemble then refreshes the report (pipeline.ensemble_action, tested in tests/pipeline):
    skip its figures here, they take tens of seconds (the reports tests draw them)."""
    import reports.build

    monkeypatch.setattr(reports.build, "build_report",
                        lambda run_dir, **kwargs: Path(run_dir) / "report.md")


def test_all_four_on_hand_made_files(tmp_path, capsys):
    run = write_hand_made_run(tmp_path / "run")
    argv = ["--ensemble", "all", "--out", str(run), "--bootstrap", "20", "--rank-by", "accuracy"]
    assert benchmark.main(argv) == 0
    assert RunDir(run).ensemble_names() == sorted(ENSEMBLE_NAMES)

    soft = read_predictions(run / "ensembles/soft_voting/predictions_test.csv")
    assert soft.image_id.tolist() == ["T1", "T2", "T3"] and soft.prediction is None
    np.testing.assert_allclose(soft.proba[0, 4:6], [1.7 / 3, 1.3 / 3])
    np.testing.assert_allclose(soft.proba[1, [2, 5]], [1.4 / 3, 1.6 / 3])
    np.testing.assert_allclose(soft.proba[2, [0, 1, 6]], [0.3, 1.1 / 3, 1 / 3])
    assert soft.y_pred.tolist() == [4, 5, 1]

    hard = read_predictions(run / "ensembles/hard_voting/predictions_test.csv")
    assert hard.prediction.tolist() == ["mel", "bkl", "bcc"]
    np.testing.assert_allclose(hard.proba[0, 4:6], [2 / 3, 1 / 3])
    np.testing.assert_allclose(hard.proba[2, [0, 1, 6]], [1 / 3] * 3)
    assert read_predictions(run / "ensembles/hard_voting/predictions_val.csv").prediction is not None

    out = capsys.readouterr().out
    soft_row = next(line for line in out.splitlines() if line.startswith("soft_voting"))
    hard_row = next(line for line in out.splitlines() if line.startswith("hard_voting"))
    assert "inception_v3, nasnet_large, xception" in soft_row and "none" in soft_row
    assert soft_row.split()[-2:] == ["1.0000", "1.0000"]
    assert hard_row.split()[-2] == "0.6667"

    for name in ENSEMBLE_NAMES:
        fit = json.loads((run / "ensembles" / name / "fit.json").read_text())
        assert fit["members"] == MEMBERS
        learned = name in ("weighted_voting", "stacking")
        assert fit["fit_split"] == ("val" if learned else "none")
        assert fit["fit_size"] == (8 if learned else 0)
        assert fit["val_in_sample"] is learned
        assert set(fit["member_files"]["xception"]) == {"val", "test"}
        metrics = json.loads((run / "ensembles" / name / "metrics.json").read_text())
        assert metrics["kind"] == "ensemble" and metrics["members"] == MEMBERS
        assert metrics["fit_split"] == fit["fit_split"] and metrics["status"] == "ok"
        assert metrics["val_in_sample"] is learned
        assert metrics["description"] == ESTIMATORS[name].description != ""
    stacking = json.loads((run / "ensembles/stacking/fit.json").read_text())
    assert stacking["fit_lesions"] == 8 and stacking["state"]["cv"]["scheme"] == "GroupKFold"


def test_stacking_alone_and_fit_json_round_trip(tmp_path, capsys):
    run = write_hand_made_run(tmp_path / "run")
    assert benchmark.main(["--ensemble", "stacking", "--out", str(run), "--bootstrap", "20"]) == 0
    assert RunDir(run).ensemble_names() == ["stacking"]
    assert "stacking" in capsys.readouterr().out
    model = load_fit(run / "ensembles/stacking/fit.json")
    for split in ("val", "test"):
        aligned = read_aligned_split(RunDir(run), MEMBERS, split)
        written = _exact_proba(run / f"ensembles/stacking/predictions_{split}.csv")
        assert np.array_equal(model.predict_proba(aligned.probas), written)


def test_round_trip_of_every_ensemble_on_synthetic_run(synthetic_run):
    run = synthetic_run(n_val=80, n_test=60)
    build_ensembles(run, "all", n_resamples=10)
    members = json.loads((run / "ensembles/soft_voting/fit.json").read_text())["members"]
    aligned = read_aligned_split(RunDir(run), members, "test")
    for name in ENSEMBLE_NAMES:
        model = load_fit(run / "ensembles" / name / "fit.json")
        path = run / "ensembles" / name / "predictions_test.csv"
        assert np.array_equal(model.predict_proba(aligned.probas), _exact_proba(path))
        assert np.array_equal(model.predict(aligned.probas), read_predictions(path).y_pred)


def test_shuffled_rows_and_member_order_give_identical_files(synthetic_run):
    first = synthetic_run(members=["inception_v3", "xception", "nasnet_large"], n_val=40,
                          n_test=30, seed=5)
    second = first.parent / "shuffled"
    shutil.copytree(first / "models", second / "models")
    rng = np.random.default_rng(0)
    for csv in sorted((second / "models").glob("*/predictions_*.csv")):
        frame = pd.read_csv(csv, dtype=str)
        frame.iloc[rng.permutation(len(frame))].to_csv(csv, index=False)
    names = sorted(p.name for p in (first / "models").iterdir())
    build_ensembles(first, "all", names, n_resamples=10)
    build_ensembles(second, "all", names[::-1], n_resamples=10)
    for name in ENSEMBLE_NAMES:
        for split in ("val", "test"):
            relative = f"ensembles/{name}/predictions_{split}.csv"
            assert (first / relative).read_bytes() == (second / relative).read_bytes()


def test_stacking_fits_on_out_of_fold_predictions_when_present(synthetic_run):
    run = synthetic_run(members=["inception_v3", "xception"], n_val=30, n_test=30, n_oof=80)
    assert build_ensembles(run, ["stacking", "weighted_voting"], n_resamples=10) == [
        "weighted_voting", "stacking"]
    stacking = json.loads((run / "ensembles/stacking/fit.json").read_text())
    assert stacking["fit_split"] == "oof" and stacking["fit_size"] == 80
    assert stacking["val_in_sample"] is False
    assert set(stacking["member_files"]["xception"]) == {"val", "test", "oof"}
    weighted = json.loads((run / "ensembles/weighted_voting/fit.json").read_text())
    assert weighted["fit_split"] == "val" and weighted["fit_size"] == 30
    metrics = json.loads((run / "ensembles/stacking/metrics.json").read_text())
    assert metrics["fit_split"] == "oof" and metrics["val_in_sample"] is False


def _drop_column(frame):
    return frame.drop(columns=["df"])


def _extra_column(frame):
    return frame.assign(score=0.5)


def _swap_columns(frame):
    columns = list(frame.columns)
    i, j = columns.index("mel"), columns.index("nv")
    columns[i], columns[j] = columns[j], columns[i]
    return frame[columns]


def _bad_sum(frame):
    frame.loc[1, "nv"] = "0.9"  # T2: bkl .5 + nv .9 = 1.4
    return frame


def _nan(frame):
    frame.loc[0, "mel"] = "nan"
    return frame


def _negative(frame):
    frame.loc[0, "mel"] = "-0.1"
    frame.loc[0, "nv"] = "1.1"
    return frame


def _other_image(frame):
    frame.loc[2, "image_id"] = "T9"
    return frame


def _other_label(frame):
    frame.loc[1, "label"] = "vasc"
    return frame


CORRUPTIONS = [
    (_drop_column, "missing column(s) df"),
    (_extra_column, "unexpected column(s) score"),
    (_swap_columns, "columns out of canonical order"),
    # data_utils prints the id as np.str_('T2') under NumPy 2 (reported), so only the row here.
    (_bad_sum, "predictions_test.csv: row 3 "),  # the file's row: header = row 1
    (_bad_sum, "probabilities sum to 1.400000, not 1 (tolerance 0.001)"),
    (_nan, "row 2: column 'mel' is nan"),
    (_negative, "row 2: column 'mel' is negative"),
    (_other_image, "cover different images on the test split: 1 only in the first (T3); "
                   "1 only in the second (T9)"),
    (_other_label, "disagree on the label of image 'T2': 'nv' vs 'vasc'"),
]


@pytest.mark.parametrize(("corrupt", "message"), CORRUPTIONS, ids=[c.__name__ for c, _ in CORRUPTIONS])
def test_bad_member_files_are_refused_and_nothing_is_written(
    tmp_path, capsys, tree_snapshot, corrupt, message
):
    run = write_hand_made_run(tmp_path / "run")
    csv = _member_csv(run, "xception", "test")
    frame = corrupt(pd.read_csv(csv, dtype=str))
    frame.to_csv(csv, index=False)
    before = tree_snapshot(run)
    assert benchmark.main(["--ensemble", "all", "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert "xception/predictions_test.csv" in err and message in err
    assert tree_snapshot(run) == before and not (run / "ensembles").exists()


USABLE = "usable members: inception_v3, nasnet_large, xception"


@pytest.mark.parametrize(
    ("members", "messages"),
    [
        ("xception", ["at least two members, got 1 (xception)", USABLE]),
        ("xception,vgg16", ["unknown member 'vgg16'", USABLE]),
        ("xception,xception", ["member 'xception' is named twice in --members"]),
    ],
)
def test_member_refusals_via_cli(tmp_path, capsys, tree_snapshot, members, messages):
    run = write_hand_made_run(tmp_path / "run")
    before = tree_snapshot(run)
    argv = ["--ensemble", "soft_voting", "--out", str(run), "--members", members]
    assert benchmark.main(argv) == 2
    err = capsys.readouterr().err
    assert all(message in err for message in messages), err
    assert tree_snapshot(run) == before


def test_fewer_than_two_default_members(tmp_path, capsys):
    run = write_hand_made_run(tmp_path / "run")
    for member in ("inception_v3", "nasnet_large"):
        shutil.move(run / "models" / member, run / "models" / f"my_{member}")
    assert benchmark.main(["--ensemble", "all", "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert "only 1 usable one(s) found (xception)" in err and "--members" in err
    assert not (run / "ensembles").exists()


def test_one_failing_ensemble_means_none_is_written(tmp_path, capsys, tree_snapshot,
                                                    monkeypatch):
    from ensembles.stacking import Stacking

    def fail(self, probas, y, groups):
        raise EnsembleError("stacking: the meta-model cannot be fit (injected)")

    monkeypatch.setattr(Stacking, "_fit", fail)  # the last of the four to be fit
    run = write_hand_made_run(tmp_path / "run")
    before = tree_snapshot(run)
    assert benchmark.main(["--ensemble", "all", "--out", str(run)]) == 2
    assert "the meta-model cannot be fit (injected)" in capsys.readouterr().err
    assert tree_snapshot(run) == before


def test_unknown_ensemble_names(tmp_path, capsys):
    run = write_hand_made_run(tmp_path / "run")
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main(["--ensemble", "majority", "--out", str(run)])
    assert exit_info.value.code == 2 and "soft_voting" in capsys.readouterr().err
    with pytest.raises(EnsembleError, match="unknown ensemble 'majority'; known ensembles: "
                                            "soft_voting, hard_voting, weighted_voting, stacking"):
        build_ensembles(run, ["majority"])
    assert not (run / "ensembles").exists()


def test_missing_run_directory_and_default_out(tmp_path, capsys, monkeypatch):
    assert benchmark.main(["--ensemble", "all", "--out", str(tmp_path / "nope")]) == 2
    assert "no such run directory" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    assert benchmark.main(["--ensemble", "all", "--preset", "smoke"]) == 2
    err = capsys.readouterr().err
    assert "default run directory runs/synthetic-smoke" in err and "pass --out RUNDIR" in err
    write_hand_made_run(tmp_path / "runs" / "synthetic-smoke")
    assert benchmark.main(["--ensemble", "soft_voting", "--preset", "smoke"]) == 0
    assert (tmp_path / "runs/synthetic-smoke/ensembles/soft_voting/fit.json").is_file()


def test_no_tensorflow_or_keras_is_imported(tmp_path):
    run = write_hand_made_run(tmp_path / "run")
    code = (
        "import sys, benchmark, ensembles, ensembles.build, ensembles.cli, ensembles.fitfile\n"
        # the report's figures are the reports tests' to draw (and slow)
        "import reports.build\n"
        "reports.build.build_report = lambda run_dir, **kwargs: None\n"
        f"rc = benchmark.main(['--ensemble', 'hard_voting', '--out', {str(run)!r}, '--bootstrap', "
        "'10'])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))\n"
        "print('HEAVY', heavy)\n"
        "sys.exit(rc or bool(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=Path(benchmark.__file__).parent, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "HEAVY []" in result.stdout


def test_cli_choices_match_the_registry():
    assert benchmark.ENSEMBLE_CHOICES == (*ENSEMBLE_NAMES, "all")


def test_ensemble_stacking_without_out_uses_the_only_run(tmp_path, monkeypatch):
    # The literal command after the Quickstart: `python benchmark.py --ensemble stacking`.
    monkeypatch.chdir(tmp_path)
    write_hand_made_run(tmp_path / "runs" / "synthetic-smoke")
    assert benchmark.main(["--ensemble", "stacking", "--bootstrap", "10"]) == 0
    assert (tmp_path / "runs/synthetic-smoke/ensembles/stacking/fit.json").is_file()
