"""The training stack under KERAS_BACKEND=jax (CPU), whatever backend this pytest process uses.

Each test runs this file as a script in a subprocess with KERAS_BACKEND=jax (the backend is
fixed per process) and checks what it wrote:

* importing and building never loads TensorFlow, and every model is XLA-compiled;
* the real worker trains a Keras application (MobileNetV3-Large, the cheapest to compile) at the
  smoke preset's size (two phases) and writes metrics.json and valid
  prediction files (paper_cnn through the worker under JAX, on two devices, and its checkpoint
  checked against this process: tests/training/test_distribution.py);
* an interrupted two-phase entry resumes from its per-epoch state and ends exactly where an
  uninterrupted run does (XLA on the CPU is deterministic); the SVM baseline's features are
  extracted on two CPU devices.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
N_IMAGES = 42
TINY = "tiny_bn_jax"
TINY_SIZE = 64
APPLICATION = "mobilenet_v3_large"


def _run_under_jax(task: str, tmp_path: Path, *args: str, timeout: int = 600) -> dict:
    """Run `python THIS_FILE task ... REPORT` under JAX; return the JSON report."""
    pytest.importorskip("jax", reason="KERAS_BACKEND=jax needs jax (pip install -e .[jax])")
    report = tmp_path / f"{task}.json"
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           # JAX's persistent compilation cache: repeated trainings of one model compile once.
           "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax-compilation-cache"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           # Two CPU devices (single-device training uses the first; the SVM uses both).
           "XLA_FLAGS": " ".join([os.environ.get("XLA_FLAGS", ""),
                                  "--xla_force_host_platform_device_count=2"]).strip()}
    result = subprocess.run([sys.executable, __file__, task, *args, str(report)], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0 and report.is_file(), result.stderr[-4000:]
    return json.loads(report.read_text())


# --- what the subprocess runs (under JAX) --------------------------------------------------------

def _task_imports() -> dict:
    """Import the training stack, build and compile a model, predict: never TensorFlow."""
    import keras

    import training.augment  # noqa: F401
    import training.distribution  # noqa: F401
    import training.svm_baseline  # noqa: F401
    import training.worker  # noqa: F401
    import zoo
    from training import policies, presets
    from training.backend import setup_backend
    from training.entry_data import predict_rows
    from training.model import build_training_model, compile_phase, configure_phase

    imported_early = "tensorflow" in sys.modules
    training = presets.resolve_preset("smoke", ["paper_cnn"]).training
    setup_backend(0, True, "auto")
    tm = build_training_model("paper_cnn", 64, training)
    phase = policies.Phase("scratch", 1, 1e-3)
    configure_phase(tm, phase, training)
    compile_phase(tm, training, phase, steps_per_epoch=2)
    images = np.random.default_rng(0).integers(0, 255, (6, 64, 64, 3), dtype=np.uint8)
    proba = predict_rows(tm.infer, images, np.arange(5), batch_size=4)
    zoo.count_flops("paper_cnn", 64)
    return {
        "backend": keras.backend.backend(),
        "tensorflow_after_import": imported_early,
        "tensorflow": "tensorflow" in sys.modules,
        "train_jit": tm.model.jit_compile,
        "infer_jit": tm.infer.jit_compile,
        "proba_shape": list(proba.shape),
        "row_sums": proba.sum(axis=1).tolist(),
    }


def _task_worker(*argv_json: str) -> dict:
    """`training.worker.main` for each JSON argv; the exit codes."""
    from training import worker

    codes = [worker.main(json.loads(argv)) for argv in argv_json]
    return {"codes": codes, "tensorflow": "tensorflow" in sys.modules}


def _tiny_base(input_shape):
    import keras

    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(8, 3, strides=4, padding="same", name="stem_conv")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.Activation("relu", name="stem_relu")(x)
    for b in range(2):
        y = keras.layers.Conv2D(8, 3, padding="same", name=f"b{b}_conv")(x)
        y = keras.layers.BatchNormalization(name=f"b{b}_bn")(y)
        y = keras.layers.Activation("relu", name=f"b{b}_relu")(y)
        x = keras.layers.Add(name=f"b{b}_add")([x, y])
    return keras.Model(inputs, x, name="backbone")


def _task_resume(out: str) -> dict:
    """Straight vs killed-and-resumed two-phase training of a tiny BN backbone, plus its SVM."""
    from dataclasses import replace

    import keras

    import zoo
    from data_utils.cache import build_cache
    from data_utils.readers import read_dataset
    from data_utils.splits import make_splits
    from data_utils.synthetic import generate_synthetic
    from training import presets, protocol, svm_baseline
    from training.entry_data import load_entry_data
    from training.resume_state import read_progress
    from training.settings import RunConfig

    zoo.register(zoo.BackboneConfig(
        name=TINY, display_name="Tiny BN test net", input_size=TINY_SIZE, min_size=16,
        preprocessing="unit", weights_url=None, weights_file=None, weights_hash=None,
        hash_algorithm=None, weights_format=None, params_1000=0, paper="test", licence="test",
        pretrained=True), zoo.Builder(base=_tiny_base))
    root = generate_synthetic(Path(os.environ["DERMBENCH_CACHE"]) / f"training-synth-{N_IMAGES}",
                              n_images=N_IMAGES, seed=0)
    table = make_splits(read_dataset("synthetic", root), ratios=(0.6, 0.2, 0.2), seed=0)
    cache = build_cache(table["path"].tolist(), table["image_id"].tolist(), TINY_SIZE, workers=1,
                        progress=False)
    data = load_entry_data(cache, table[["image_id", "lesion_id", "dx", "split"]])
    # The largest batch size up to 8 that divides the training split: one compiled step shape.
    batch = max(b for b in range(1, 9) if len(data.train) % b == 0)
    resolved = presets.resolve_preset("smoke", ["paper_cnn"])
    training = replace(resolved.training, batch_size=batch, phase1_epochs=1, phase2_epochs=2,
                       warmup_epochs=0, early_stopping_patience=0, unfreeze_fraction=0.5,
                       image_size={TINY: TINY_SIZE})
    config = RunConfig(seed=0, deterministic=True, weights=None, weights_dir=None,
                       training=training, svm=resolved.svm)
    out = Path(out)

    class _KillThirdEpoch(keras.callbacks.Callback):  # phase 2's second epoch
        calls = 0

        def on_epoch_begin(self, epoch, logs=None):
            _KillThirdEpoch.calls += 1
            if _KillThirdEpoch.calls == 3:
                raise KeyboardInterrupt("simulated kill")

    straight = protocol.train_entry(TINY, config, data, out / "straight", fingerprint="fp",
                                    verbose=0)
    try:
        protocol.train_entry(TINY, config, data, out / "resumed", fingerprint="fp", verbose=0,
                             callbacks=[_KillThirdEpoch()])
    except KeyboardInterrupt:
        pass
    progress = read_progress(out / "resumed")
    resumed = protocol.train_entry(TINY, config, data, out / "resumed", fingerprint="fp",
                                   verbose=0)
    svm = svm_baseline.run_svm_entry(f"{TINY}+svm", config, cache, data, out / "svm",
                                     fingerprint="fp", batch_size=16, cache_root=out / "cache",
                                     devices=2)
    keys = ("status", "phases", "optimizer_iterations", "epochs_trained", "backend", "devices")
    return {"straight": {k: straight.get(k) for k in keys},
            "resumed": {k: resumed.get(k) for k in keys},
            "progress": progress, "svm": {k: svm.get(k) for k in ("status", "feature_dim",
                                                                  "devices")},
            "steps": len(data.train) // batch, "tensorflow": "tensorflow" in sys.modules}


# --- the tests -----------------------------------------------------------------------------------

def test_training_stack_under_jax_never_imports_tensorflow(tmp_path):
    report = _run_under_jax("imports", tmp_path)
    assert report["backend"] == "jax"
    assert not report["tensorflow_after_import"] and not report["tensorflow"]
    # Under JAX every step is XLA-compiled, augmentation layers included (else: op by op).
    assert report["train_jit"] is True and report["infer_jit"] is True
    assert report["proba_shape"] == [5, 7]
    np.testing.assert_allclose(report["row_sums"], 1.0, rtol=1e-5)


@pytest.fixture(scope="module")
def rundir(tmp_path_factory) -> Path:
    """A prepared tiny synthetic run: APPLICATION at the smoke size, 1 epoch per phase,
    deterministic.

    The batch holds the whole training split: one step per epoch, one compiled shape.
    (paper_cnn through the worker under JAX: tests/training/test_distribution.py.)
    """
    from core.atomic import atomic_write_json
    from data_utils.prepare import prepare
    from training import presets
    from training.settings import RunConfig

    out = tmp_path_factory.mktemp("jax") / "run"
    data_dir = Path(os.environ["DERMBENCH_CACHE"]) / f"training-synth-{N_IMAGES}"
    prepared = prepare("synthetic", data_dir, out, synthetic_images=N_IMAGES, image_sizes=(),
                       ratios=(0.6, 0.2, 0.2), seed=0)
    splits = pd.read_csv(out / "splits.csv", dtype=str)
    batch = int((splits["split"] == "train").sum())
    resolved = presets.resolve_preset("smoke", [APPLICATION], epochs=1, batch_size=batch)
    keys = ("dataset", "data_dir", "split", "ratios", "folds", "seed", "test_set",
            "allow_missing", "synthetic_images")
    config = RunConfig(preset="smoke", entries=(APPLICATION,), deterministic=True,
                       training=resolved.training, svm=resolved.svm).to_dict()
    config.update({k: prepared.card[k] for k in keys})  # the prepared data, as run.json has it
    atomic_write_json(out / "run.json", {"config": config, "fingerprint": "fp-jax"})
    return out


@pytest.mark.slow
def test_worker_trains_a_keras_application_in_two_phases_under_jax(rundir):
    argv = json.dumps(["--out", str(rundir), "--entry", APPLICATION, "--verbose", "0"])
    report = _run_under_jax("worker", rundir.parent, argv)
    assert report["codes"] == [0] and not report["tensorflow"]
    from core.atomic import read_json
    from core.predictions import read_predictions
    from training import presets

    folder = rundir / "models" / APPLICATION
    metrics = read_json(folder / "metrics.json")
    assert metrics["status"] == "ok" and metrics["backend"] == "jax", metrics.get("error")
    assert metrics["phases"] == ["frozen", "finetune"] and metrics["devices"] == 1
    assert metrics["image_size"] == presets.image_size_for("smoke", APPLICATION)
    assert metrics["fingerprint"] == "fp-jax"
    assert metrics["optimizer_iterations"] == 1  # phase 2's optimizer: 1 epoch of 1 step
    assert 0 < metrics["trainable_params_phase1"] < metrics["trainable_params_phase2"]
    assert metrics["test"]["balanced_accuracy"] is not None
    assert list(pd.read_csv(folder / "history.csv")["phase"]) == ["frozen", "finetune"]
    for split in ("val", "test"):
        preds = read_predictions(folder / f"predictions_{split}.csv")  # the contract
        assert np.isfinite(preds.proba).all()
    assert not (folder / "state").exists() and (folder / "best.weights.h5").is_file()


@pytest.mark.slow
def test_interrupted_entry_resumes_exactly_under_jax(tmp_path):
    report = _run_under_jax("resume", tmp_path, str(tmp_path / "out"))
    assert not report["tensorflow"]
    progress, steps = report["progress"], report["steps"]
    assert progress["global_epoch"] == 2 and progress["phase_index"] == 1
    assert progress["phase_epochs"] == 1 and not progress["phase_finished"]
    assert progress["iterations"] == steps
    straight, resumed = report["straight"], report["resumed"]
    assert straight["status"] == resumed["status"] == "ok" and resumed["backend"] == "jax"
    assert straight["phases"] == resumed["phases"] == ["frozen", "finetune"]
    assert resumed["optimizer_iterations"] == straight["optimizer_iterations"] == 2 * steps
    assert resumed["epochs_trained"] == 3
    out = tmp_path / "out"
    columns = ["epoch", "phase", "loss", "accuracy", "val_loss", "val_balanced_accuracy", "lr"]
    pd.testing.assert_frame_equal(pd.read_csv(out / "resumed" / "history.csv")[columns],
                                  pd.read_csv(out / "straight" / "history.csv")[columns])
    for split in ("val", "test"):
        name = f"predictions_{split}.csv"
        assert (out / "resumed" / name).read_bytes() == (out / "straight" / name).read_bytes()
    # The SVM baseline's features, extracted data-parallel on two devices.
    assert report["svm"] == {"status": "ok", "feature_dim": 8, "devices": 2}


_TASKS = {"imports": _task_imports, "worker": _task_worker, "resume": _task_resume}

if __name__ == "__main__":  # the subprocess: python test_backend_jax.py TASK [ARGS...] REPORT
    *task_args, report_path = sys.argv[2:]
    result = _TASKS[sys.argv[1]](*task_args)
    Path(report_path).write_text(json.dumps(result, default=str))
