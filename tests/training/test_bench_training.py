"""Harness overhead: training steps/s through the protocol vs a bare `model.fit` on arrays.

Same model (paper_cnn at 64 px with the protocol's augmentation), same batch size, same number
of steps. Ours: `protocol.train_entry` (CacheBatches over the memory-mapped image cache, class
weights, the protocol's callbacks); the validation pass and the checkpoint at each epoch's end
are outside the timed window (the timer's on_epoch_end runs before the protocol's callback).
Bare: `model.fit(x, y)` on in-memory NumPy arrays. The first epoch (tracing) is not counted;
each side's speed is its fastest epoch (as pytest-benchmark's "min"). The ratio uses two runs of
each side in the order protocol, bare, bare, protocol (the machine is shared: this cancels drift)
and the best of each side, all measured in this process.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import pytest

from core.classes import CLASS_INDEX
from data_utils.cache import build_cache
from data_utils.readers import read_dataset
from data_utils.synthetic import generate_synthetic
from training import policies, presets, protocol
from training.backend import setup_backend
from training.entry_data import EntryData, SplitData
from training.model import build_training_model, compile_phase, configure_phase
from training.settings import RunConfig

# Measured benchmarks (tens of seconds of work): pytest-benchmark turns itself off under xdist, so
# in the default run they would only repeat work other tests cover. They run with `tox -e full`;
# measured with `pytest -p no:xdist -m full tests/training/test_bench_training.py`.
pytestmark = pytest.mark.full

N_IMAGES = 56
SIZE = 64
BATCH = 64
STEPS = 12  # per epoch
EPOCHS = 4  # the first one is tracing, not counted
RESULTS: dict[str, list[float]] = {"protocol": [], "bare": []}


class _EpochTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.started)

    def steps_per_second(self) -> float:
        return STEPS / min(self.seconds[1:])


@pytest.fixture(scope="module")
def setup():
    root = generate_synthetic(Path(os.environ["DERMBENCH_CACHE"]) / f"training-synth-{N_IMAGES}",
                              n_images=N_IMAGES, seed=0)
    table = read_dataset("synthetic", root)
    cache = build_cache(table["path"].tolist(), table["image_id"].tolist(), SIZE, workers=1,
                        progress=False)
    labels_all = np.array([CLASS_INDEX[c] for c in table["dx"]], dtype=np.int32)
    rows = np.resize(np.arange(len(cache)), STEPS * BATCH)  # repeat the images to fill the steps
    ids = table["image_id"].to_numpy().astype(str)

    def part(r):
        return SplitData(rows=r, labels=labels_all[r], image_id=ids[r],
                         lesion_id=table["lesion_id"].to_numpy().astype(str)[r],
                         label=table["dx"].to_numpy().astype(str)[r])

    small = np.arange(8)
    data = EntryData(images=cache.images, train=part(rows), val=part(small),
                     test=part(small + 8))
    resolved = presets.resolve_preset("smoke", ["paper_cnn"])
    training = replace(resolved.training, batch_size=BATCH, scratch_epochs=EPOCHS,
                       early_stopping_patience=0)
    config = RunConfig(seed=0, deterministic=False, weights=None, training=training)
    return data, config


def _ours(setup, tmp_path) -> float:
    data, config = setup
    timer = _EpochTimer()
    protocol.train_entry("paper_cnn", config, data, tmp_path / "ours", verbose=0,
                         callbacks=[timer])
    return timer.steps_per_second()


def _bare(setup) -> float:
    data, config = setup
    training = config.training
    setup_backend(0, False, "off")
    tm = build_training_model("paper_cnn", SIZE, training)
    phase = policies.Phase("scratch", EPOCHS, training.scratch_lr)
    configure_phase(tm, phase, training)
    compile_phase(tm, training, phase, STEPS)
    x = np.array(data.images[data.train.rows])
    y = data.train.labels
    timer = _EpochTimer()
    tm.model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=True, verbose=0,
                 callbacks=[timer])
    return timer.steps_per_second()


@pytest.mark.benchmark(group="training-harness")
def test_bench_protocol_steps(benchmark, setup, tmp_path):
    rate = benchmark.pedantic(_ours, args=(setup, tmp_path), rounds=1, iterations=1)
    RESULTS["protocol"].append(rate)
    benchmark.extra_info["steps_per_s"] = rate


@pytest.mark.benchmark(group="training-harness")
def test_bench_bare_fit_steps(benchmark, setup):
    rate = benchmark.pedantic(_bare, args=(setup,), rounds=1, iterations=1)
    RESULTS["bare"].append(rate)
    benchmark.extra_info["steps_per_s"] = rate


@pytest.mark.perf
def test_protocol_overhead_ratio(setup, tmp_path):
    """Steps/s through the protocol are at least 95% of a bare fit's (same process, same run)."""
    if not RESULTS["protocol"]:  # benchmarks skipped (--benchmark-skip): measure here
        RESULTS["protocol"].append(_ours(setup, tmp_path / "first"))
    if not RESULTS["bare"]:
        RESULTS["bare"].append(_bare(setup))
    RESULTS["bare"].append(_bare(setup))
    RESULTS["protocol"].append(_ours(setup, tmp_path))
    ours, bare = max(RESULTS["protocol"]), max(RESULTS["bare"])
    ratio = ours / bare
    print(f"protocol {ours:.2f} steps/s, bare fit {bare:.2f} steps/s, ratio {ratio:.3f}")
    assert ratio >= 0.95, f"harness overhead too high: {ours:.2f} vs {bare:.2f} steps/s"
