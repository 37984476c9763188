"""CacheBatches: batch contents, per-epoch order from (seed, epoch), balanced sampling, Keras fit."""

from __future__ import annotations

import pickle

import keras
import numpy as np
import pytest
from PIL import Image

from data_utils.cache import build_cache
from data_utils.pipeline import CacheBatches, SetEpoch

N = 50


@pytest.fixture
def images():
    """(N, 4, 4, 3) uint8 where every pixel of row r holds r: a batch reveals its rows."""
    return np.repeat(np.arange(N, dtype=np.uint8), 4 * 4 * 3).reshape(N, 4, 4, 3)


def _epoch_rows(dataset) -> np.ndarray:
    batches = [dataset[i] for i in range(len(dataset))]
    xs = [batch[0] if isinstance(batch, tuple) else batch for batch in batches]
    return np.concatenate([x[:, 0, 0, 0] for x in xs]).astype(np.int64)


def test_prediction_batches_keep_row_order_and_the_last_partial_batch(images):
    rows = np.array([7, 3, 9, 8, 0, 1, 2, 40, 41, 42, 43])
    dataset = CacheBatches(images, rows, batch_size=4)
    assert len(dataset) == 3
    x = dataset[0]
    assert isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.shape == (4, 4, 4, 3)
    assert dataset[2].shape == (3, 4, 4, 3)
    np.testing.assert_array_equal(_epoch_rows(dataset), rows)
    np.testing.assert_array_equal(dataset[-1][:, 0, 0, 0], [41, 42, 43])
    with pytest.raises(IndexError):
        dataset[3]


def test_batches_with_labels_and_weights(images):
    rows = np.arange(10)
    labels = rows % 3
    weights = np.linspace(0.5, 2.0, 10)
    x, y, w = CacheBatches(images, rows, labels, batch_size=4, sample_weight=weights)[1]
    assert x.shape == (4, 4, 4, 3) and y.dtype == np.int32 and w.dtype == np.float32
    np.testing.assert_array_equal(y, labels[4:8])
    np.testing.assert_allclose(w, weights[4:8], rtol=1e-6)
    x, y = CacheBatches(images, rows, labels, batch_size=4)[2]
    assert x.shape[0] == y.shape[0] == 2


def test_drop_remainder(images):
    dataset = CacheBatches(images, np.arange(N), batch_size=8, drop_remainder=True)
    assert len(dataset) == 6 and dataset[5].shape[0] == 8


def test_every_row_once_per_shuffled_epoch_and_a_new_order_each_epoch(images):
    rows = np.arange(5, 45)
    dataset = CacheBatches(images, rows, rows % 2, batch_size=6, shuffle=True, seed=3)
    orders = []
    for _ in range(3):
        served = _epoch_rows(dataset)
        assert sorted(served.tolist()) == rows.tolist()  # each row exactly once
        orders.append(served)
        dataset.on_epoch_end()
    assert dataset.epoch == 3
    assert not np.array_equal(orders[0], orders[1]) and not np.array_equal(orders[1], orders[2])
    assert not np.array_equal(orders[0], rows)


def test_labels_follow_their_images_when_shuffled(images):
    rows = np.arange(N)
    labels = (rows * 7) % 5
    dataset = CacheBatches(images, rows, labels, batch_size=8, shuffle=True, seed=1)
    for i in range(len(dataset)):
        x, y = dataset[i]
        np.testing.assert_array_equal(y, labels[x[:, 0, 0, 0]])


def test_order_is_reproducible_from_the_seed_and_set_epoch(images):
    rows = np.arange(N)

    def make(seed):
        return CacheBatches(images, rows, batch_size=7, shuffle=True, seed=seed)

    a, b = make(11), make(11)
    first_a = _epoch_rows(a)
    np.testing.assert_array_equal(first_a, _epoch_rows(b))
    assert not np.array_equal(first_a, _epoch_rows(make(12)))
    a.on_epoch_end()
    a.on_epoch_end()
    epoch_two = _epoch_rows(a)
    resumed = make(11)
    resumed.set_epoch(2)
    np.testing.assert_array_equal(_epoch_rows(resumed), epoch_two)
    np.testing.assert_array_equal(resumed.epoch_order(0), a.epoch_order(0))


def test_unshuffled_order_does_not_change_between_epochs(images):
    dataset = CacheBatches(images, np.arange(10)[::-1], batch_size=3)
    first = _epoch_rows(dataset)
    dataset.on_epoch_end()
    np.testing.assert_array_equal(_epoch_rows(dataset), first)


def test_balanced_sampling_equalises_a_skewed_label_set():
    counts = {0: 900, 1: 80, 2: 20}
    labels = np.concatenate([np.full(n, c) for c, n in counts.items()])
    n = len(labels)
    data = np.zeros((n, 1, 1, 3), dtype=np.uint8)
    dataset = CacheBatches(data, np.arange(n), labels, batch_size=64, balanced=True, seed=0)
    for epoch in range(2):
        served = np.concatenate([dataset[i][1] for i in range(len(dataset))])
        assert len(served) == n
        share = np.bincount(served, minlength=3) / n
        np.testing.assert_allclose(share, 1 / 3, atol=0.01)
        order = dataset.epoch_order(epoch)
        minority = order[labels[order] == 2]
        assert set(minority.tolist()) == set(range(980, 1000))  # every rare image is used
        majority = order[labels[order] == 0]
        assert len(np.unique(majority)) == len(majority)  # no repeats where there is no need
        dataset.on_epoch_end()
    assert not np.array_equal(dataset.epoch_order(0), dataset.epoch_order(1))


def test_gather_from_a_read_only_memmap_cache_and_pickling_by_reference(tmp_path):
    paths, ids = [], []
    for i in range(20):
        path = tmp_path / f"img{i}.png"
        Image.new("RGB", (12, 10), (i * 10, 255 - i * 10, 7)).save(path)
        paths.append(path)
        ids.append(f"img{i}")
    cache = build_cache(paths, ids, 8, cache_root=tmp_path / "c", workers=1, progress=False)
    rows = cache.rows(["img9", "img2", "img15", "img3"])
    dataset = CacheBatches(cache.images, rows, batch_size=3, shuffle=True, seed=0)
    for i in range(len(dataset)):
        batch = dataset[i]
        assert batch.flags.writeable and not isinstance(batch, np.memmap)
    expected = np.array(cache.images)[rows]
    np.testing.assert_array_equal(np.concatenate([dataset[0], dataset[1]])[:, 0, 0],
                                  expected[dataset.epoch_order(0)][:, 0, 0])

    blob = pickle.dumps(dataset)
    assert len(blob) < 4096  # a file reference, not 20 images
    clone = pickle.loads(blob)
    np.testing.assert_array_equal(clone[0], dataset[0])
    sliced = CacheBatches(cache.images[:10], np.arange(10), batch_size=4)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(sliced))[2], sliced[2])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rows": [0.5]}, "integer"),
        ({"rows": [N]}, "rows must lie"),
        ({"labels": [0, 1]}, "labels must be"),
        ({"balanced": True}, "needs labels"),
        ({"sample_weight": [1.0]}, "needs labels"),
        ({"labels": [0], "sample_weight": [1.0, 2.0]}, "sample_weight must have"),
        ({"batch_size": 0}, "batch_size"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_arguments(images, kwargs, message):
    arguments = {"rows": [0]} | kwargs
    with pytest.raises(ValueError, match=message):
        CacheBatches(images, **arguments)


def _tiny_model(classes=3):
    model = keras.Sequential([
        keras.Input((4, 4, 3), dtype="uint8"),
        keras.layers.Rescaling(1 / 255),
        keras.layers.Flatten(),
        keras.layers.Dense(classes, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", jit_compile=False)
    return model


class _Recording(CacheBatches):
    """Records the epoch whose order served each batch."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.log = []

    def on_epoch_begin(self):
        self.log.append("begin")

    def __getitem__(self, index):
        self.log.append(self.epoch)
        return super().__getitem__(index)


def test_tiny_keras_model_fits_and_predicts(images):
    keras.utils.set_random_seed(0)
    rows = np.arange(N)
    labels = rows % 3
    train = _Recording(images, rows, labels, batch_size=16, shuffle=True, seed=0)
    model = _tiny_model()
    history = model.fit(train, epochs=2, shuffle=False, verbose=0, callbacks=[SetEpoch(train)])
    assert len(history.history["loss"]) == 2 and np.all(np.isfinite(history.history["loss"]))
    # Every batch of Keras epoch k came from epoch_order(k).
    epochs = train.log[train.log.index("begin"):]
    assert epochs == ["begin", 0, 0, 0, 0, "begin", 1, 1, 1, 1]
    predictions = model.predict(CacheBatches(images, rows[:37], batch_size=16), verbose=0)
    assert predictions.shape == (37, 3)
    np.testing.assert_allclose(predictions.sum(axis=1), 1.0, rtol=1e-5)


def test_resumed_fit_sees_the_orders_of_an_uninterrupted_run(images):
    rows = np.arange(N)
    train = _Recording(images, rows, rows % 3, batch_size=16, shuffle=True, seed=4)
    _tiny_model().fit(train, initial_epoch=3, epochs=4, shuffle=False, verbose=0,
                      callbacks=[SetEpoch(train)])
    assert train.log[train.log.index("begin"):] == ["begin", 3, 3, 3, 3]
    train.log.clear()
    _tiny_model().fit(train, epochs=1, shuffle=False, verbose=0,
                      callbacks=[SetEpoch(train, offset=10)])  # e.g. a second phase
    assert train.log[train.log.index("begin"):] == ["begin", 10, 10, 10, 10]


def test_keras_thread_workers(images):
    rows = np.arange(N)
    train = CacheBatches(images, rows, rows % 3, batch_size=8, shuffle=True, seed=5, workers=2)
    assert train.workers == 2
    model = _tiny_model()
    model.fit(train, epochs=1, shuffle=False, verbose=0, callbacks=[SetEpoch(train)])
    assert train.epoch == 1  # on_epoch_end advanced after the epoch


def test_without_the_callback_keras_advances_once_when_fit_starts(images):
    # Documents Keras 3's behaviour that SetEpoch exists for: fit() calls on_epoch_end once
    # before its first epoch, so a fresh dataset serves orders 1, 2, ... to Keras epochs 0, 1, ...
    rows = np.arange(N)
    train = _Recording(images, rows, rows % 3, batch_size=25, shuffle=True, seed=0)
    _tiny_model().fit(train, epochs=2, shuffle=False, verbose=0)
    assert [e for e in train.log[train.log.index("begin"):] if e != "begin"] == [1, 1, 2, 2]
    assert train.epoch == 3
