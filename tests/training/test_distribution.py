"""`--devices N`: data parallelism for one job (`training.distribution`), on CPU devices.

The unit tests run in this process (TensorFlow unless KERAS_BACKEND says otherwise, one device).
The end-to-end tests run the real worker in a subprocess with two CPU devices: under JAX split by
`XLA_FLAGS=--xla_force_host_platform_device_count=2`, under TensorFlow as two logical CPU devices.
Each checks metrics.json and the prediction files, and that the best checkpoint, loaded into a
one-device model here, gives the same probabilities (the replicas' outputs come back in order).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

import zoo
from core.atomic import atomic_write_json, read_json
from core.classes import NUM_CLASSES
from core.predictions import read_predictions
from data_utils.cache import build_cache
from data_utils.prepare import prepare
from training import presets
from training.distribution import (
    DevicesError,
    check_batch_size,
    check_devices,
    data_parallel,
    visible_devices,
)
from training.entry_data import TrimmedBatches, load_entry_data, predict_rows
from training.settings import RunConfig

REPO = Path(__file__).resolve().parents[2]
N_IMAGES = 42
SIZE = 64

# Runs `training.worker.main` for each argv of argv[1] (JSON) after optionally splitting the CPU
# into two logical TensorFlow devices; writes the exit codes (and whether TensorFlow was
# imported) to argv[2].
_DRIVER = """
import json, os, sys
if os.environ.get("KERAS_BACKEND") == "tensorflow":
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from training import worker
codes = [worker.main(argv) for argv in json.loads(sys.argv[1])]
with open(sys.argv[2], "w") as handle:
    json.dump({"codes": codes, "tensorflow": "tensorflow" in sys.modules}, handle)
"""


# --- unit tests (this process, one device) -------------------------------------------------------

def test_check_devices():
    assert check_devices(None) == 1 and check_devices(1) == 1 and check_devices(4) == 4
    for bad in (0, -2, 1.5, True, "2"):
        with pytest.raises(DevicesError, match="positive integer"):
            check_devices(bad)


def test_batch_size_must_split_evenly():
    check_batch_size(32, 4)
    check_batch_size(7, None)
    with pytest.raises(DevicesError, match=r"batch size 30 does not split evenly over --devices "
                                           r"4: use a multiple of 4 \(e.g. --batch-size 28\)"):
        check_batch_size(30, 4)
    with pytest.raises(DevicesError, match="eval batch size 3"):
        check_batch_size(3, 2, "eval batch size")


def test_one_device_is_a_no_op():
    before = _current_distribution()
    for devices in (None, 1):
        with data_parallel(devices) as replicas:
            assert replicas == 1
            assert _current_distribution() is before


def test_more_devices_than_visible_names_the_count_and_the_fix():
    visible = visible_devices()
    wanted = len(visible) + 1
    with pytest.raises(DevicesError) as info, data_parallel(wanted):
        pass
    message = str(info.value)
    assert f"--devices {wanted} asks for more devices" in message
    assert f"{len(visible)} CPU device(s) visible" in message or "GPU device(s)" in message
    assert f"--devices {len(visible)} or fewer" in message
    hint = ("xla_force_host_platform_device_count" if keras.backend.backend() == "jax"
            else "set_logical_device_configuration")
    assert hint in message


def _current_distribution():
    if keras.backend.backend() == "jax":
        return keras.distribution.distribution()
    import tensorflow as tf

    return tf.distribute.get_strategy()


def test_trimmed_batches_split_evenly_over_the_devices():
    images = np.arange(23 * 2 * 2 * 3, dtype=np.uint8).reshape(23, 2, 2, 3)
    rows, labels = np.arange(23), np.arange(23) % 7
    batches = TrimmedBatches(images, rows, labels, batch_size=8, multiple=4, shuffle=True,
                             seed=3)
    sizes = [len(batches[i][0]) for i in range(len(batches))]
    assert sizes == [8, 8, 4]  # 23 = 8 + 8 + 7 -> the last batch cut to 4
    x, y = batches[2]
    assert len(y) == 4 and x.shape == (4, 2, 2, 3)
    assert [len(b[0]) for b in TrimmedBatches(images, rows[:19], labels[:19],
                                              batch_size=8, multiple=4)] == [8, 8]
    one = TrimmedBatches(images, rows, labels, batch_size=8)  # multiple 1: CacheBatches
    assert [len(one[i][1]) for i in range(len(one))] == [8, 8, 7]
    with pytest.raises(ValueError, match="divide"):
        TrimmedBatches(images, rows, labels, batch_size=8, multiple=3)


def test_predict_rows_pads_to_one_batch_shape():
    inputs = keras.Input((2, 2, 3), dtype="uint8")
    flat = keras.layers.Flatten()(keras.ops.cast(inputs, "float32"))
    model = keras.Model(inputs, flat)
    images = np.random.default_rng(0).integers(0, 255, (10, 2, 2, 3), dtype=np.uint8)
    rows = np.array([9, 0, 4, 4, 7])
    seen = []

    class _Shapes(keras.callbacks.Callback):
        def on_predict_batch_end(self, batch, logs=None):
            seen.append(keras.ops.shape(logs["outputs"])[0])

    original = model.predict
    model.predict = lambda data, **kw: original(data, callbacks=[_Shapes()], **kw)
    out = predict_rows(model, images, rows, batch_size=4)
    np.testing.assert_array_equal(out, images[rows].reshape(5, -1).astype("float32"))
    assert seen == [4, 4]  # 5 rows -> two full batches, the padding dropped


# --- end to end: the worker with two CPU devices (subprocesses) ----------------------------------

@pytest.fixture(scope="module")
def rundir(tmp_path_factory) -> Path:
    """A prepared tiny synthetic run for paper_cnn at 64 px, 1 epoch, batch size 24.

    The training split has 25 images: one batch of 24 and one of 1, which two devices cannot
    split, so it sits the epoch out (one step per epoch, one compiled shape).
    """
    out = tmp_path_factory.mktemp("devices") / "run"
    data_dir = Path(os.environ["DERMBENCH_CACHE"]) / f"training-synth-{N_IMAGES}"
    prepared = prepare("synthetic", data_dir, out, synthetic_images=N_IMAGES, image_sizes=(),
                       ratios=(0.6, 0.2, 0.2), seed=0)
    resolved = presets.resolve_preset("smoke", ["paper_cnn"], epochs=1, batch_size=24)
    keys = ("dataset", "data_dir", "split", "ratios", "folds", "seed", "test_set",
            "allow_missing", "synthetic_images")
    config = RunConfig(preset="smoke", entries=("paper_cnn",), training=resolved.training,
                       svm=resolved.svm).to_dict()
    config.update({k: prepared.card[k] for k in keys})  # the prepared data, as run.json has it
    atomic_write_json(out / "run.json", {"config": config, "fingerprint": "fp-devices"})
    return out


def _copy_run(rundir: Path, out: Path) -> Path:
    out.mkdir(parents=True)
    for name in ("run.json", "splits.csv"):
        (out / name).write_bytes((rundir / name).read_bytes())
    return out


def _run_workers(backend: str, argvs: list[list[str]], tmp_path: Path) -> dict:
    """Run `worker.main(argv)` for each argv in one subprocess with two CPU devices."""
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    if backend == "jax":
        pytest.importorskip("jax", reason="KERAS_BACKEND=jax needs jax (pip install -e .[jax])")
        env["XLA_FLAGS"] = " ".join([env.get("XLA_FLAGS", ""),
                                     "--xla_force_host_platform_device_count=2"]).strip()
    report = tmp_path / "codes.json"
    argvs = [[*a, "--entry", "paper_cnn", "--verbose", "0"] for a in argvs]
    result = subprocess.run([sys.executable, "-c", _DRIVER, json.dumps(argvs), str(report)],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and report.is_file(), result.stderr[-4000:]
    return json.loads(report.read_text())


def _check_data_parallel_entry(out: Path, backend: str) -> None:
    entry = out / "models" / "paper_cnn"
    metrics = read_json(entry / "metrics.json")
    assert metrics["status"] == "ok", metrics.get("error")
    assert metrics["devices"] == 2 and metrics["backend"] == backend
    assert metrics["batch_size"] == 24
    assert metrics["optimizer_iterations"] == 1  # 25 images: 24 + 1 trimmed away
    meta = read_json(out / "run.json")
    from training.worker import image_table

    table = image_table(RunConfig.from_dict(meta["config"]))  # the worker's cache (a hit here)
    cache = build_cache(table["path"].tolist(), table["image_id"].tolist(), SIZE, workers=1,
                        progress=False)
    data = load_entry_data(cache, pd.read_csv(out / "splits.csv", dtype=str))
    # The best checkpoint on one device in this process predicts what the replicas wrote.
    net = zoo.create_backbone("paper_cnn", NUM_CLASSES, input_shape=SIZE,
                              preprocessing=meta["config"]["training"].get("preprocessing"))
    net.load_weights(entry / "best.weights.h5")
    for split, part in (("val", data.val), ("test", data.test)):
        preds = read_predictions(entry / f"predictions_{split}.csv")
        assert list(preds.image_id) == list(part.image_id)
        expected = predict_rows(net, data.images, part.rows, batch_size=8)
        np.testing.assert_allclose(preds.proba, expected, atol=2e-4)


@pytest.mark.slow
def test_worker_devices_2_under_jax(rundir, tmp_path):
    good = _copy_run(rundir, tmp_path / "good")
    bad = _copy_run(rundir, tmp_path / "bad")
    odd = _copy_run(rundir, tmp_path / "odd")
    report = _run_workers("jax", [["--out", str(good), "--devices", "2"],
                                  ["--out", str(bad), "--devices", "3"],
                                  ["--out", str(odd), "--devices", "2", "--batch-size", "7"]],
                          tmp_path)
    assert report["codes"] == [0, 1, 1] and not report["tensorflow"]
    _check_data_parallel_entry(good, "jax")
    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):  # the worker's compilation cache
        assert any((Path(os.environ["DERMBENCH_CACHE"]) / "jax-compilation").iterdir())
    # More devices than visible, and a batch the devices cannot split: clear failures.
    metrics = read_json(bad / "models" / "paper_cnn" / "metrics.json")
    assert metrics["status"] == "failed" and metrics["devices"] == 3
    assert ("--devices 3 asks for more devices than the jax backend sees: 2 CPU device(s) "
            "visible (cpu:0, cpu:1). Use --devices 2 or fewer") in metrics["error"]
    error = read_json(odd / "models" / "paper_cnn" / "metrics.json")["error"]
    assert "batch size 7 does not split evenly over --devices 2" in error


@pytest.mark.slow
def test_worker_devices_2_under_tensorflow(rundir, tmp_path):
    good = _copy_run(rundir, tmp_path / "good")
    report = _run_workers("tensorflow", [["--out", str(good), "--devices", "2"]], tmp_path)
    assert report["codes"] == [0]
    _check_data_parallel_entry(good, "tensorflow")
