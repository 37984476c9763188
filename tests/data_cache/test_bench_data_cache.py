"""Speed of the image cache on the real HAM10000 sample (180 JPEGs, 600x450) at 299x299.

Baselines, measured in the same run:
- build: the plain single-process way, `Image.open(p).convert("RGB").resize((299, 299))` per file.
- epoch: decoding and resizing every image of every epoch, batch by batch, as Keras's
  `ImageDataGenerator.flow_from_dataframe` does (`keras.utils.load_img` with its default
  nearest-neighbour resize, the cheapest Pillow resize).
The two `test_*_speedup` tests time both in alternation (best of a few rounds) and assert the
issue's targets: a build at least 1.7x faster on 2 cores, a warm cached epoch at least 20x faster.
"""

from __future__ import annotations

import itertools
import shutil
import time

import keras
import numpy as np
import pytest
from PIL import Image

from data_utils.cache import build_cache
from data_utils.pipeline import CacheBatches

SIZE = 299
BATCH = 32
BUILD_TARGET = 1.7
EPOCH_TARGET = 20.0

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def sample(sample_dir):
    paths = sorted(p for p in sample_dir.rglob("*") if p.suffix.lower() == ".jpg")
    assert len(paths) == 180
    return paths, [p.stem for p in paths]


@pytest.fixture(scope="module")
def warm_cache(sample, tmp_path_factory):
    paths, ids = sample
    return build_cache(paths, ids, SIZE, cache_root=tmp_path_factory.mktemp("warm"),
                       progress=False)


def plain_decode(paths) -> np.ndarray:
    """Baseline: single process, the plain Pillow way."""
    out = np.empty((len(paths), SIZE, SIZE, 3), dtype=np.uint8)
    for i, path in enumerate(paths):
        with Image.open(path) as image:
            out[i] = np.asarray(image.convert("RGB").resize((SIZE, SIZE)))
    return out


class FreshRoots:
    """A new, empty cache root per build (made, and the previous one deleted, outside timing)."""

    def __init__(self, factory):
        self.factory = factory
        self.previous = None

    def __call__(self):
        if self.previous is not None:
            shutil.rmtree(self.previous, ignore_errors=True)
        self.previous = self.factory.mktemp("build")
        return self.previous


def build_from_scratch(paths, ids, root):
    """One complete build (hashing, decoding, fsync, rename) into an empty cache root."""
    return build_cache(paths, ids, SIZE, cache_root=root, progress=False)


def epoch_on_the_fly(paths, seed) -> int:
    """Baseline: one shuffled epoch that decodes and resizes every image, batch by batch."""
    order = np.random.default_rng(seed).permutation(len(paths))
    served = 0
    for start in range(0, len(order), BATCH):
        x = np.stack([np.asarray(keras.utils.load_img(paths[i], target_size=(SIZE, SIZE)))
                      for i in order[start:start + BATCH]])
        served += len(x)
    return served


def epoch_cached(dataset: CacheBatches) -> int:
    """One shuffled epoch of uint8 batches from the warm memory-mapped cache."""
    served = 0
    for i in range(len(dataset)):
        x, _ = dataset[i]
        served += len(x)
    dataset.on_epoch_end()
    return served


def _labels(n):
    return np.arange(n, dtype=np.int32) % 7


def _best_times(functions, rounds, setups=None):
    """Best wall time of each function over `rounds`, run in alternation after a warm-up.

    `setups[i]()` (untimed) returns the argument tuple of `functions[i]`.
    """
    setups = setups or [tuple] * len(functions)
    for function, setup in zip(functions, setups, strict=True):
        function(*setup())
    best = [float("inf")] * len(functions)
    for _, i in itertools.product(range(rounds), range(len(functions))):
        args = setups[i]()
        started = time.perf_counter()
        functions[i](*args)
        best[i] = min(best[i], time.perf_counter() - started)
    return best


def test_bench_build_plain_pillow(benchmark, sample):
    benchmark.group = "data_cache_build_299"
    paths, _ = sample
    out = benchmark.pedantic(plain_decode, args=(paths,), rounds=3, warmup_rounds=1)
    assert out.shape == (180, SIZE, SIZE, 3)


def test_bench_build_cache(benchmark, sample, tmp_path_factory):
    benchmark.group = "data_cache_build_299"
    paths, ids = sample
    roots = FreshRoots(tmp_path_factory)
    cache = benchmark.pedantic(build_from_scratch, setup=lambda: ((paths, ids, roots()), {}),
                               rounds=3, warmup_rounds=1)
    assert cache.images.shape == (180, SIZE, SIZE, 3)


@pytest.mark.perf
def test_build_speedup(sample, tmp_path_factory):
    paths, ids = sample
    roots = FreshRoots(tmp_path_factory)
    plain, cached = _best_times([plain_decode, build_from_scratch], rounds=3,
                                setups=[lambda: (paths,), lambda: (paths, ids, roots())])
    ratio = plain / cached
    print(f"\ncache build 180 x {SIZE}px: plain Pillow {plain:.3f} s, build_cache {cached:.3f} s,"
          f" speedup {ratio:.2f}x (target {BUILD_TARGET}x)")
    assert ratio >= BUILD_TARGET


def test_bench_epoch_on_the_fly(benchmark, sample):
    benchmark.group = "data_cache_epoch_299"
    paths, _ = sample
    seeds = itertools.count()
    served = benchmark.pedantic(lambda: epoch_on_the_fly(paths, next(seeds)), rounds=3,
                                warmup_rounds=1)
    assert served == 180


def test_bench_epoch_cached(benchmark, warm_cache):
    benchmark.group = "data_cache_epoch_299"
    n = len(warm_cache.image_ids)
    dataset = CacheBatches(warm_cache.images, np.arange(n), _labels(n), batch_size=BATCH,
                           shuffle=True, seed=0)
    served = benchmark.pedantic(epoch_cached, args=(dataset,), rounds=10, warmup_rounds=1)
    assert served == 180


@pytest.mark.perf
def test_epoch_speedup(sample, warm_cache):
    paths, _ = sample
    n = len(paths)
    dataset = CacheBatches(warm_cache.images, warm_cache.rows([p.stem for p in paths]),
                           _labels(n), batch_size=BATCH, shuffle=True, seed=0)
    seeds = itertools.count()
    on_the_fly, cached = _best_times([lambda: epoch_on_the_fly(paths, next(seeds)),
                                      lambda: epoch_cached(dataset)], rounds=3)
    ratio = on_the_fly / cached
    print(f"\nwarm epoch 180 x {SIZE}px: decode on the fly {on_the_fly:.3f} s, cached "
          f"{cached:.4f} s, speedup {ratio:.1f}x (target {EPOCH_TARGET}x)")
    assert ratio >= EPOCH_TARGET
