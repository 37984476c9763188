"""`python benchmark.py --prepare`: splits.csv, dataset.json, the dataset card, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import benchmark
from core.rundir import find_run_dir
from data_utils.cli import run_download

REPO = Path(benchmark.__file__).resolve().parent


def _prepare(*argv: str) -> int:
    return benchmark.main(["--prepare", "--workers", "1", *argv])


def test_prepare_real_sample(sample_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert _prepare("--dataset", "ham10000", "--data-dir", str(sample_dir), "--out", str(out),
                    "--image-size", "32") == 0
    printed = capsys.readouterr().out
    assert "| akiec   |" in printed and "| lesions |" in printed
    assert "Leakage check: 0 lesions shared between splits" in printed and ": ok" in printed
    assert "Image cache 32x32 (square)" in printed

    splits = pd.read_csv(out / "splits.csv")
    assert list(splits.columns) == ["image_id", "lesion_id", "dx", "split"]
    assert len(splits) == 180 and set(splits["split"]) == {"train", "val", "test"}
    assert splits.groupby("lesion_id")["split"].nunique().max() == 1
    card = json.loads((out / "dataset.json").read_text())
    assert card["dataset"] == "ham10000" and card["split"] == "lesion" and card["seed"] == 0
    assert card["images"]["total"] == 180
    assert sum(card["counts"]["test"].values()) == card["images"]["test"] == (splits["split"] == "test").sum()
    assert card["leakage"]["shared_lesions_total"] == 0 and card["missing_images"] == 0
    assert card["lesions"]["total"] == splits["lesion_id"].nunique()
    import hashlib

    assert card["splits_sha256"] == hashlib.sha256((out / "splits.csv").read_bytes()).hexdigest()

    # Same inputs again: a no-op for splits.csv.
    before = (out / "splits.csv").stat().st_mtime_ns
    assert _prepare("--dataset", "ham10000", "--data-dir", str(sample_dir), "--out", str(out),
                    "--image-size", "32") == 0
    assert (out / "splits.csv").stat().st_mtime_ns == before

    # A different split is refused, in one line, naming what differs.
    capsys.readouterr()
    assert _prepare("--dataset", "ham10000", "--data-dir", str(sample_dir), "--out", str(out),
                    "--image-size", "32", "--seed", "1") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "seed: 0 -> 1" in err and "--force-new" in err
    assert (out / "splits.csv").stat().st_mtime_ns == before

    # --force-new starts afresh in a sibling folder and leaves the old run untouched.
    assert _prepare("--dataset", "ham10000", "--data-dir", str(sample_dir), "--out", str(out),
                    "--image-size", "32", "--seed", "1", "--force-new") == 0
    assert json.loads((out / "dataset.json").read_text())["seed"] == 0
    assert (out / "splits.csv").stat().st_mtime_ns == before
    assert json.loads((tmp_path / "run-2" / "dataset.json").read_text())["seed"] == 1


def test_prepare_image_split_and_folds(sample_dir, tmp_path, capsys):
    assert _prepare("--dataset", "ham10000", "--data-dir", str(sample_dir), "--out",
                    str(tmp_path / "img"), "--image-size", "32", "--split", "image") == 0
    printed = capsys.readouterr().out
    assert "LEAKY image-level split" in printed
    card = json.loads((tmp_path / "img" / "dataset.json").read_text())
    splits = pd.read_csv(tmp_path / "img" / "splits.csv")
    train = set(splits.loc[splits["split"] == "train", "lesion_id"])
    test = splits[splits["split"] == "test"]
    assert card["leakage"]["test_images_sharing_lesion_with_train"] == test["lesion_id"].isin(train).sum()

    assert _prepare("--dataset", "ham10000", "--data-dir", str(sample_dir), "--out",
                    str(tmp_path / "folds"), "--image-size", "32", "--folds", "3") == 0
    splits = pd.read_csv(tmp_path / "folds" / "splits.csv")
    assert list(splits.columns) == ["image_id", "lesion_id", "dx", "split", "fold"]
    assert sorted(splits["fold"].unique()) == [0, 1, 2]
    assert (splits["split"] == "test").eq(splits["fold"] == 0).all()
    assert "| fold |" in capsys.readouterr().out.replace("|   fold |", "| fold |")


def test_prepare_synthetic_default_out_and_default_size(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert benchmark.main(["--prepare", "--dataset", "synthetic", "--synthetic-images", "21",
                           "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert "Dataset synthetic" in printed and "Image cache 299x299" in printed
    out = tmp_path / find_run_dir(None, "synthetic", None, existing=False).root
    assert out == tmp_path / "runs" / "synthetic-native"
    card = json.loads((out / "dataset.json").read_text())
    assert card["dataset"] == "synthetic" and card["synthetic_images"] == 21
    assert card["images"]["total"] == 21 and all(card["class_totals"][c] >= 2 for c in card["class_totals"])


def test_prepare_without_dataset_follows_the_run_directory_rule(tmp_path, monkeypatch, capsys):
    """One rule for every action (core.rundir): without --dataset, --preset smoke means the
    synthetic set (runs/synthetic-smoke) and the other presets ham10000, which needs --data-dir
    (before, --prepare alone fell back to the synthetic set, unlike --all and --report)."""
    monkeypatch.chdir(tmp_path)
    assert _prepare("--preset", "smoke", "--synthetic-images", "21", "--image-size", "32") == 0
    assert (tmp_path / "runs" / "synthetic-smoke" / "splits.csv").is_file()
    capsys.readouterr()
    assert _prepare("--synthetic-images", "21") == 2
    err = capsys.readouterr().err
    assert "no --dataset given: --prepare uses ham10000" in err and err.count("\n") == 1
    assert "--dataset synthetic (or --preset smoke)" in err


def test_missing_data_dir_is_one_line_error(capsys):
    assert _prepare("--dataset", "ham10000") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --dataset ham10000 needs --data-dir") and err.count("\n") == 1


def test_bad_metadata_subprocess_exit_2_no_traceback(make_ham, tmp_path):
    root = make_ham()
    meta = root / "HAM10000_metadata.csv"
    meta.write_text(meta.read_text().replace(",nv,", ",naevus,", 1))
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmark.py"), "--prepare", "--dataset", "ham10000",
         "--data-dir", str(root), "--out", str(tmp_path / "run"), "--image-size", "16"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "unknown class label 'naevus'" in lines[0] and "row " in lines[0]


def test_run_download_delegates(monkeypatch):
    import data_utils.download_cli as download_cli

    seen = []
    monkeypatch.setattr(download_cli, "download_command", lambda args: seen.append(args) or 7)
    assert run_download("ARGS") == 7 and seen == ["ARGS"]


@pytest.mark.parametrize("argv", [["--ratios", "0.5,0.5"], ["--folds", "1"], ["--split", "patient"]])
def test_bad_option_values_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as info:
        benchmark.main(["--prepare", *argv])
    assert info.value.code == 2 and capsys.readouterr().err.count("\n") == 1
