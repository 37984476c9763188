"""`--all --tta N` (pipeline.tta_action, training.tta): derived entries added after training and
before the ensembles, kept while their source weights are the same, recomputed when they change,
in every replicate of a grid; then once for real on a copy of the shared trained smoke run.

The flow tests use a stand-in worker (prediction files and stand-in weight bytes) and a stand-in
trained model, so no network is built; the last test runs the real CLI."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from benchmark import build_parser
from core.atomic import read_json
from core.entry_metrics import write_entry_metrics
from core.predictions import read_predictions
from core.rundir import RunDir
from pipeline.console import RunConsole
from pipeline.run_all import run_all
from training import jobs
from training.entries import entry_kind, is_svm_entry
from training.fingerprint import file_sha256

REPO_ROOT = Path(__file__).resolve().parents[2]
MODELS = ("xception", "inception_v3", "paper_cnn", "inception_resnet_v2+svm")


def _args(out: Path, *extra: str):
    return build_parser().parse_args(
        ["--all", "--preset", "smoke", "--synthetic-images", "80", "--bootstrap", "20",
         "--models", *MODELS, "--out", str(out), *extra])


def _ok(write_predictions_of):
    """A finished entry: predictions, metrics.json and (CNN entries) stand-in weights."""
    def ok(run_dir, name, batch_size, **kwargs) -> int:
        folder = RunDir(run_dir).model_dir(name)
        write_predictions_of(run_dir, name, np.random.default_rng(len(name)), 1.0, 0.5)
        if not is_svm_entry(name):
            (folder / "best.weights.h5").write_bytes(f"weights of {name}".encode())
        write_entry_metrics(folder, n_resamples=20, extra={
            "status": "ok", "kind": entry_kind(name), "batch_size": batch_size,
            "params": 1000, "flops_per_image": 10})
        return 0
    return ok


@pytest.fixture()
def stand_ins(monkeypatch, stand_in_predictions):
    """The worker and the trained model replaced; returns the entries loaded, in order."""
    import training.trained

    loaded: list[tuple[str, str]] = []

    def load_trained_entry(run_dir, entry):
        loaded.append((Path(run_dir).name, entry))

        def predict(images):  # depends on the pixels' positions: views matter
            images = np.asarray(images, dtype=np.float64)
            logits = images[:, 0, :, 0] @ np.linspace(0, 1, images.shape[2] * 7).reshape(-1, 7)
            e = np.exp(logits - logits.max(axis=1, keepdims=True))
            return e / e.sum(axis=1, keepdims=True)

        return SimpleNamespace(entry=entry, image_size=4, predict=predict)

    def split_images(run_dir, entry, cache_dir=None, workers=None):
        splits = pd.read_csv(RunDir(run_dir).splits_csv, dtype=str)
        out = {}
        for split in ("val", "test"):
            ids = splits.loc[splits["split"] == split, "image_id"].to_numpy()
            rng = np.random.default_rng(len(ids))
            out[split] = (ids, rng.integers(0, 4, (len(ids), 4, 4, 3)).astype(np.uint8))
        return out

    monkeypatch.setattr(jobs, "run_worker", _ok(stand_in_predictions))
    monkeypatch.setattr(training.trained, "load_trained_entry", load_trained_entry)
    monkeypatch.setattr(training.trained, "split_images", split_images)
    return loaded


@pytest.fixture()
def fast_report(monkeypatch):
    import reports.build

    calls: list[Path] = []

    def record(run_dir, **kwargs):
        calls.append(Path(run_dir))
        path = RunDir(run_dir).report_md
        path.write_text("report\n")
        return path

    monkeypatch.setattr(reports.build, "build_report", record)
    # the failure gallery (Grad-CAM of real networks) is tested in test_pipeline_failure_gallery
    import pipeline.finish
    from pipeline.failure_gallery import GalleryResult

    monkeypatch.setattr(pipeline.finish, "refresh_failure_gallery",
                        lambda *args, **kwargs: GalleryResult())
    return calls


def _run(args) -> tuple[str, object]:
    stream = io.StringIO()
    outcome = run_all(args, console=RunConsole(stream))
    return stream.getvalue(), outcome


def test_derived_entries_are_added_kept_and_refreshed_when_their_weights_change(
        tmp_path, stand_ins, fast_report):
    out = tmp_path / "run"
    run = RunDir(out)
    console, outcome = _run(_args(out, "--tta", "4"))
    assert outcome.failures == []
    derived = ["inception_v3+tta4", "xception+tta4", "paper_cnn+tta4"]
    assert [entry for _, entry in stand_ins] == ["inception_v3", "xception", "paper_cnn"]
    line = next(x for x in console.splitlines() if x.startswith("test-time augmentation"))
    assert line == ("test-time augmentation, 4 views (no retraining): added: "
                    f"{', '.join(derived)}; skipped: inception_resnet_v2+svm (an SVM on frozen "
                    "features has no Keras model to predict views with)")
    # after training, before the ensembles
    assert console.index("test-time augmentation") < console.index("ensembles built")
    for name in derived:
        source = name.split("+")[0]
        metrics = read_json(run.model_dir(name) / "metrics.json")
        assert metrics["kind"] == "tta" and metrics["status"] == "ok"
        assert metrics["derived_from"] == source and metrics["tta_views"] == 4
        assert metrics["source_weights_sha256"] == file_sha256(
            run.model_dir(source) / "best.weights.h5")
        assert metrics["flops_per_image"] == 40 and "balanced_accuracy" in metrics["test"]
        for split in ("val", "test"):  # the plain entry's rows, in its order
            plain = read_predictions(RunDir.predictions_file(run.model_dir(source), split))
            tta = read_predictions(RunDir.predictions_file(run.model_dir(name), split))
            assert list(tta.image_id) == list(plain.image_id)
            assert list(tta.lesion_id) == list(plain.lesion_id)
            assert list(tta.label) == list(plain.label)
    assert not (run.models_dir / "inception_resnet_v2+svm+tta4").exists()
    for name in run.ensemble_names():  # derived entries are no default members
        assert read_json(run.ensemble_dir(name) / "fit.json")["members"] == [
            "inception_v3", "xception"]
    assert len(fast_report) == 1

    # the same command again: nothing loaded, nothing rebuilt
    stand_ins.clear()
    console, outcome = _run(_args(out, "--tta", "4"))
    assert stand_ins == [] and outcome.failures == [] and len(fast_report) == 1
    assert f"up to date: {', '.join(derived)}" in console

    # xception retrained: only its derived entry is recomputed, and the report rebuilt
    (run.model_dir("xception") / "best.weights.h5").write_bytes(b"new weights")
    ensembles = {p: p.stat().st_mtime_ns for p in run.ensembles_dir.rglob("*") if p.is_file()}
    console, outcome = _run(_args(out, "--tta", "4"))
    assert [entry for _, entry in stand_ins] == ["xception"]
    assert "added: xception+tta4; up to date: inception_v3+tta4, paper_cnn+tta4" in console
    assert read_json(run.model_dir("xception+tta4") / "metrics.json")[
        "source_weights_sha256"] == file_sha256(run.model_dir("xception") / "best.weights.h5")
    assert len(fast_report) == 2
    assert ensembles == {p: p.stat().st_mtime_ns for p in run.ensembles_dir.rglob("*")
                         if p.is_file()}


def test_without_tta_nothing_is_computed_and_outdated_derived_entries_are_named(
        tmp_path, stand_ins, fast_report):
    out = tmp_path / "run"
    _run(_args(out, "--tta", "2"))
    stand_ins.clear()
    console, _ = _run(_args(out))
    assert stand_ins == [] and "test-time augmentation" not in console
    (RunDir(out).model_dir("paper_cnn") / "best.weights.h5").write_bytes(b"retrained")
    console, _ = _run(_args(out))
    assert stand_ins == []
    assert ("test-time augmentation: paper_cnn+tta2 predate the current weights of their entry; "
            "rerun with --tta 2 to refresh it") in console


def test_a_failed_derived_entry_is_recorded_and_the_others_go_on(
        tmp_path, stand_ins, fast_report, monkeypatch):
    import training.trained

    real = training.trained.load_trained_entry

    def failing(run_dir, entry):
        if entry == "xception":
            raise RuntimeError("out of memory")
        return real(run_dir, entry)

    monkeypatch.setattr(training.trained, "load_trained_entry", failing)
    console, outcome = _run(_args(tmp_path / "run", "--tta", "8"))
    assert outcome.failures == [
        "test-time augmentation of xception+tta8 (RuntimeError: out of memory; traceback in "
        "train.log)"]
    assert "added: inception_v3+tta8, paper_cnn+tta8" in console
    assert "failed: xception+tta8" in console
    assert not (tmp_path / "run" / "models" / "xception+tta8").exists()


def test_a_grid_gets_derived_entries_in_every_replicate(tmp_path, stand_ins, fast_report):
    out = tmp_path / "grid"
    args = _args(out, "--seeds", "0,1", "--tta", "2")
    args.models = ["xception", "inception_v3"]
    console, outcome = _run(args)
    assert outcome.failures == []
    for replicate in ("fold0-seed0", "fold0-seed1"):
        models = RunDir(out).root / "replicates" / replicate / "models"
        assert sorted(p.name for p in models.iterdir()) == [
            "inception_v3", "inception_v3+tta2", "xception", "xception+tta2"]
    assert "test-time augmentation, 2 views (no retraining): added 4 derived entries" in console
    stand_ins.clear()
    console, _ = _run(args)
    assert stand_ins == [] and "up to date 4 derived entries" in console


# ---------------------------------------------------------------------------------------------
# the real thing, once: the CLI on a copy of the shared trained smoke run


def _smoke_run_args() -> tuple[str, ...]:
    """SMOKE_RUN_ARGS of tests/conftest.py: the command that made the shared run."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_shared_conftest",
                                                  REPO_ROOT / "tests" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return tuple(module.SMOKE_RUN_ARGS)


def _training_outputs(run: RunDir) -> dict[str, int]:
    """mtime of every file training wrote in the plain entries' folders (metrics.json aside:
    the report rewrites it with the same numbers)."""
    return {str(p.relative_to(run.root)): p.stat().st_mtime_ns
            for folder in run.models_dir.iterdir() if "+tta" not in folder.name
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "metrics.json"}


# Two views on the end-to-end run (the CLI path is the same for every count; the views themselves
# are checked for 1, 2, 4 and 8 in tests/training/test_training_tta.py).
VIEWS = 2


def _tta_command(run: RunDir) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "benchmark.py"), *_smoke_run_args(),
                           "--tta", str(VIEWS), "--out", str(run.root)], cwd=run.root.parent,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_tta_on_a_finished_smoke_run_adds_entries_without_retraining(trained_smoke_run,
                                                                     copy_run):
    run = RunDir(copy_run(trained_smoke_run))
    weights = {p: (p.stat().st_mtime_ns, file_sha256(p))
               for p in run.models_dir.glob("*/best.weights.h5")}
    cnn = [name for name in ("inception_v3", "xception", "paper_cnn")
           if run.model_dir(name) / "best.weights.h5" in weights]
    assert cnn == ["inception_v3", "xception", "paper_cnn"]
    plain = sorted(p.name for p in run.models_dir.iterdir())
    trained = _training_outputs(run)

    proc = _tta_command(run)
    for name in plain:  # the runner skipped every entry: nothing retrained
        assert re.search(rf"^  {re.escape(name)}: ok  \(finished earlier, not retrained\)",
                         proc.stdout, re.M), proc.stdout
    line = next(x for x in proc.stdout.splitlines() if x.startswith("test-time augmentation"))
    assert line.startswith(f"test-time augmentation, {VIEWS} views (no retraining): added: "
                           + ", ".join(f"{name}+tta{VIEWS}" for name in cnn)), line
    if "inception_resnet_v2+svm" in plain:
        assert "skipped: inception_resnet_v2+svm (an SVM on frozen features" in line
    assert weights == {p: (p.stat().st_mtime_ns, file_sha256(p))
                       for p in run.models_dir.glob("*/best.weights.h5")}
    assert _training_outputs(run) == trained
    assert sorted(p.name for p in run.models_dir.iterdir()) == sorted(
        plain + [f"{name}+tta{VIEWS}" for name in cnn])
    for name in cnn:
        metrics = read_json(run.model_dir(f"{name}+tta{VIEWS}") / "metrics.json")
        assert (metrics["kind"], metrics["status"], metrics["tta_views"]) == ("tta", "ok", VIEWS)
        assert metrics["derived_from"] == name
        assert metrics["source_weights_sha256"] == file_sha256(
            run.model_dir(name) / "best.weights.h5")
        for split in ("val", "test"):
            tta = read_predictions(RunDir.predictions_file(
                run.model_dir(f"{name}+tta{VIEWS}"), split))
            base = read_predictions(RunDir.predictions_file(run.model_dir(name), split))
            assert list(tta.image_id) == list(base.image_id)
    section = run.report_md.read_text().split("### Test-time augmentation (test split)", 1)[1]
    for name in cnn:
        assert f"| {name}+tta{VIEWS} " in section.split("\n#", 1)[0]

    # the same command again recomputes nothing
    derived = {p: p.stat().st_mtime_ns for p in run.models_dir.glob(f"*+tta{VIEWS}/*")}
    proc = _tta_command(run)
    assert f"up to date: {', '.join(f'{name}+tta{VIEWS}' for name in cnn)}" in proc.stdout
    assert "report up to date" in proc.stdout
    assert derived == {p: p.stat().st_mtime_ns for p in run.models_dir.glob(f"*+tta{VIEWS}/*")}
