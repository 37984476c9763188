"""`--tensorboard` and the worker's progress events: carried to the worker without touching the
config or the protocol fingerprint, refused up front when nothing can write the logs, epochs
numbered across phases, and no change to what an entry trains and predicts."""

from __future__ import annotations

import contextlib
import os
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from benchmark import build_parser
from core.atomic import read_json
from core.entry_metrics import write_entry_metrics
from core.predictions import make_predictions, write_predictions
from core.rundir import RunDir
from training import config as config_module
from training import jobs, presets, protocol
from training.callbacks import EpochTensorBoard, ProgressEvents
from training.config import resolve_config
from training.errors import ConfigError
from training.settings import RunConfig


def _args(out: Path, *extra: str):
    return build_parser().parse_args(
        ["--all", "--preset", "smoke", "--synthetic-images", "80", "--bootstrap", "20",
         "--out", str(out), *extra])


@pytest.fixture
def tensorboard_installed(monkeypatch):
    """Pretend what writes TensorBoard logs is installed (it need not be for these tests)."""
    monkeypatch.setattr(config_module, "TENSORBOARD_PACKAGES", ())


def _fake_worker(calls: list[dict]):
    def run_worker(run_dir, name, batch_size, **kwargs):
        calls.append({"name": name, **kwargs})
        run = RunDir(run_dir)
        splits = pd.read_csv(run.splits_csv, dtype=str)
        for split in ("val", "test"):
            part = splits[splits["split"] == split]
            proba = np.full((len(part), 7), 1 / 7)
            write_predictions(RunDir.predictions_file(run.model_dir(name), split),
                              make_predictions(part["image_id"], part["lesion_id"], part["dx"],
                                               proba))
        write_entry_metrics(run.model_dir(name), n_resamples=20, extra={
            "status": "ok", "fingerprint": read_json(run.run_json)["fingerprint"]})
        return 0
    return run_worker


def test_tensorboard_is_no_part_of_the_config_or_the_fingerprint(tmp_path, monkeypatch,
                                                                 tensorboard_installed):
    import reports.build

    assert resolve_config(_args(tmp_path, "--tensorboard")) == resolve_config(_args(tmp_path))
    calls: list[dict] = []
    monkeypatch.setattr(jobs, "run_worker", _fake_worker(calls))
    monkeypatch.setattr(reports.build, "build_report",
                        lambda run_dir, **kwargs: RunDir(run_dir).report_md)
    from pipeline.run_all import run_all

    out = tmp_path / "run"
    run_all(_args(out, "--models", "paper_cnn"))
    fingerprint = read_json(RunDir(out).run_json)["fingerprint"]
    # the same run directory is resumed with --tensorboard: same protocol, same fingerprint
    outcome = run_all(_args(out, "--models", "paper_cnn", "xception", "--tensorboard"))
    assert outcome.run_dir == out
    assert read_json(RunDir(out).run_json)["fingerprint"] == fingerprint
    assert [(c["name"], c["tensorboard_dir"]) for c in calls] == [
        ("paper_cnn", None), ("xception", (out / "tensorboard" / "xception").resolve())]
    assert callable(calls[0]["on_event"])


def test_without_what_writes_the_logs_the_run_is_refused_before_it_starts(tmp_path,
                                                                          monkeypatch):
    monkeypatch.setattr(config_module, "TENSORBOARD_PACKAGES",
                        ("tensorflow", "no_such_package_dermbench"))
    from pipeline.run_all import run_all

    with pytest.raises(ConfigError, match=r"--tensorboard needs no_such_package_dermbench, which "
                                          r"is not installed .*pip install "
                                          r"no_such_package_dermbench, or run without"):
        run_all(_args(tmp_path / "run", "--tensorboard"))
    assert not (tmp_path / "run").exists()
    assert config_module.tensorboard_enabled(_args(tmp_path)) is False


def test_the_worker_command_carries_the_flags():
    from training.worker_process import worker_command

    command = worker_command(Path("/r"), "xception", 16, events=True,
                             tensorboard_dir=Path("/r/tensorboard/xception"))
    assert command[-3:] == ["--events", "--tensorboard", "/r/tensorboard/xception"]
    assert "--events" not in worker_command(Path("/r"), "xception", 16)


class _Summary:
    """A stand-in for tensorflow.summary that records the scalars per writer directory."""

    def __init__(self) -> None:
        self.scalars: list[tuple[str, str, float, int]] = []
        self._current: list[str] = []

    def create_file_writer(self, directory):
        summary = self

        class Writer:
            @contextlib.contextmanager
            def as_default(self, step=None):
                summary._current.append(os.path.basename(directory))
                try:
                    yield self
                finally:
                    summary._current.pop()

            def close(self):
                return None

            def flush(self):
                return None

        return Writer()

    def scalar(self, name, value, step):
        if self._current:  # like TensorFlow's: nothing is written without a default writer
            self.scalars.append((self._current[-1], name, float(value), int(step)))


@pytest.fixture
def fake_summary(monkeypatch):
    summary = _Summary()
    monkeypatch.setattr(keras.callbacks.TensorBoard, "summary", property(lambda self: summary))
    return summary


def _tiny_model() -> keras.Model:
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    return model


def test_tensorboard_numbers_epochs_across_phases_and_logs_the_validation_metrics(
        tmp_path, fake_summary):
    board = EpochTensorBoard(tmp_path, epoch_offset=3)
    board.set_model(_tiny_model())
    board.on_epoch_end(0, {"loss": 1.5, "val_balanced_accuracy": 0.25, "seconds": 2.0})
    assert ("train", "epoch_loss", 1.5, 3) in fake_summary.scalars
    assert ("train", "epoch_seconds", 2.0, 3) in fake_summary.scalars
    assert any(s[:2] == ("train", "epoch_learning_rate") and s[3] == 3
               for s in fake_summary.scalars)
    assert ("validation", "epoch_balanced_accuracy", 0.25, 3) in fake_summary.scalars


def test_progress_events_report_the_phase_few_batches_and_each_epoch():
    events: list[tuple[str, dict]] = []
    monitor = ProgressEvents(lambda kind, **fields: events.append((kind, fields)), "xception",
                             "finetune", index=1, phases=2, epochs=3, steps=4, initial_epoch=1,
                             interval=3600)
    monitor.on_train_begin()
    monitor.on_epoch_begin(1)
    for batch in range(4):
        monitor.on_train_batch_end(batch, {"loss": 2.0 - batch / 10})
    monitor.on_epoch_end(1, {"loss": 1.7, "val_balanced_accuracy": 0.4, "seconds": 12.5})
    assert events == [
        ("phase", {"entry": "xception", "phase": "finetune", "index": 2, "phases": 2,
                   "epochs": 3, "steps": 4, "initial_epoch": 1}),
        ("batch", {"entry": "xception", "phase": "finetune", "epoch": 2, "epochs": 3, "step": 4,
                   "steps": 4, "loss": pytest.approx(1.7)}),
        ("epoch", {"entry": "xception", "phase": "finetune", "epoch": 2, "epochs": 3,
                   "loss": 1.7, "val_balanced_accuracy": 0.4, "seconds": 12.5}),
    ]


@pytest.fixture(scope="module")
def tiny_data():
    from data_utils.cache import build_cache
    from data_utils.readers import read_dataset
    from data_utils.splits import make_splits
    from data_utils.synthetic import generate_synthetic
    from training.entry_data import load_entry_data

    root = generate_synthetic(Path(os.environ["DERMBENCH_CACHE"]) / "tensorboard-synth-56",
                              n_images=56, seed=0)
    table = make_splits(read_dataset("synthetic", root), ratios=(0.6, 0.2, 0.2), seed=0)
    cache = build_cache(table["path"].tolist(), table["image_id"].tolist(), 64, workers=1,
                        progress=False)
    return load_entry_data(cache, table[["image_id", "lesion_id", "dx", "split"]])


@pytest.mark.slow
def test_observing_the_training_changes_nothing_it_trains_or_predicts(tiny_data, tmp_path,
                                                                      fake_summary):
    resolved = presets.resolve_preset("smoke", ["paper_cnn"])
    config = RunConfig(seed=0, deterministic=True, weights=None, training=replace(
        resolved.training, batch_size=8, scratch_epochs=2, warmup_epochs=0,
        image_size={"paper_cnn": 64}), svm=resolved.svm)
    plain = protocol.train_entry("paper_cnn", config, tiny_data, tmp_path / "plain",
                                 fingerprint="fp", verbose=0)
    events: list[tuple[str, dict]] = []
    observed = protocol.train_entry(
        "paper_cnn", config, tiny_data, tmp_path / "observed", fingerprint="fp", verbose=0,
        progress=lambda kind, **fields: events.append((kind, fields)),
        tensorboard_dir=tmp_path / "tensorboard" / "paper_cnn")
    for split in ("val", "test"):
        name = f"predictions_{split}.csv"
        assert (tmp_path / "observed" / name).read_bytes() == (tmp_path / "plain" / name).read_bytes()
    assert observed["best_val_balanced_accuracy"] == plain["best_val_balanced_accuracy"]
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "status" and kinds[1] == "phase" and kinds[-1] == "status"
    assert kinds.count("epoch") == 2 and "batch" in kinds
    epochs = [fields for kind, fields in events if kind == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    history = pd.read_csv(tmp_path / "observed" / "history.csv")
    assert [e["val_balanced_accuracy"] for e in epochs] == pytest.approx(
        list(history["val_balanced_accuracy"]))
    steps = sorted({s[3] for s in fake_summary.scalars if s[1] == "epoch_loss"})
    assert steps == [0, 1]
    assert any(s[0] == "validation" for s in fake_summary.scalars)
