"""build_cache / ImageCache: content keys, reuse without decoding, atomic and parallel builds."""

from __future__ import annotations

import concurrent.futures
import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.errors import DataError
from data_utils import cache as cache_module
from data_utils import imaging
from data_utils.cache import ImageCache, build_cache, decode_image, default_cache_root

N_IMAGES = 24
SIZE = 16


def _write_jpeg(path: Path, seed: int, shape=(48, 64)) -> None:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, 3)
    noise = rng.integers(-20, 20, (*shape, 3))
    Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(path, quality=90)


@pytest.fixture
def dataset(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    ids = [f"ISIC_{i:07d}" for i in range(N_IMAGES)]
    paths = [folder / f"{image_id}.jpg" for image_id in ids]
    for i, path in enumerate(paths):
        _write_jpeg(path, i)
    return paths, ids


def _entries(root: Path) -> list[str]:
    folder = root / "images"
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def test_build_matches_decode_image_and_is_read_only(tmp_path, dataset):
    paths, ids = dataset
    cache = build_cache(paths, ids, SIZE, cache_root=tmp_path / "c", workers=2, progress=False)
    assert cache.images.shape == (N_IMAGES, SIZE, SIZE, 3) and cache.images.dtype == np.uint8
    assert list(cache.image_ids) == ids and cache.size == SIZE and cache.resize_mode == "square"
    for row in (0, 7, N_IMAGES - 1):
        np.testing.assert_array_equal(cache.images[row], decode_image(paths[row], SIZE))
    assert isinstance(cache.images, np.memmap) and not cache.images.flags.writeable
    with pytest.raises(ValueError):
        cache.images[0, 0, 0, 0] = 1
    assert cache.path.parent == tmp_path / "c" / "images"
    assert not any(name.startswith(".tmp-") for name in _entries(tmp_path / "c"))


def test_crop_mode_is_cached_separately(tmp_path, dataset):
    paths, ids = dataset
    square = build_cache(paths, ids, SIZE, cache_root=tmp_path, workers=1, progress=False)
    crop = build_cache(paths, ids, SIZE, "crop", cache_root=tmp_path, workers=1, progress=False)
    assert crop.path != square.path and crop.resize_mode == "crop"
    np.testing.assert_array_equal(crop.images[3], decode_image(paths[3], SIZE, "crop"))


def test_reopening_decodes_nothing(tmp_path, dataset, monkeypatch):
    paths, ids = dataset
    first = build_cache(paths, ids, SIZE, cache_root=tmp_path, progress=False)
    stat = (first.path / "images.npy").stat()

    def must_not_decode(*args, **kwargs):
        raise AssertionError("decoded an image although the cache exists")

    monkeypatch.setattr(imaging, "decode_into", must_not_decode)
    again = build_cache(paths, ids, SIZE, cache_root=tmp_path, workers=1, progress=False)
    assert again.path == first.path
    after = (again.path / "images.npy").stat()
    assert (after.st_ino, after.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    np.testing.assert_array_equal(again.images, first.images)


def test_decoder_runs_once_per_image_in_process(tmp_path, dataset, monkeypatch):
    paths, ids = dataset
    calls = []
    real = imaging.decode_into

    def counting(path, *args):
        calls.append(path)
        real(path, *args)

    monkeypatch.setattr(imaging, "decode_into", counting)
    build_cache(paths, ids, SIZE, cache_root=tmp_path, workers=1, progress=True)
    assert sorted(calls) == sorted(str(p.absolute()) for p in paths)


def test_changed_content_same_name_and_size_rebuilds(tmp_path, dataset):
    paths, ids = dataset
    first = build_cache(paths, ids, SIZE, cache_root=tmp_path, workers=2, progress=False)
    original = paths[5].read_bytes()
    changed = bytearray(original)
    # Flip bytes in the middle of the entropy-coded data: same name, same length, new pixels.
    middle = len(changed) // 2
    changed[middle:middle + 4] = bytes(b ^ 0x55 for b in changed[middle:middle + 4])
    paths[5].write_bytes(bytes(changed))
    second = build_cache(paths, ids, SIZE, cache_root=tmp_path, workers=2, progress=False)
    assert second.path != first.path
    np.testing.assert_array_equal(second.images[5], decode_image(paths[5], SIZE))
    assert not np.array_equal(second.images[5], first.images[5])
    np.testing.assert_array_equal(second.images[4], first.images[4])


def test_size_ids_and_order_are_part_of_the_key(tmp_path, dataset):
    paths, ids = dataset
    base = build_cache(paths, ids, SIZE, cache_root=tmp_path, workers=1, progress=False)
    bigger = build_cache(paths, ids, SIZE + 4, cache_root=tmp_path, workers=1, progress=False)
    assert bigger.path != base.path and bigger.images.shape[1:3] == (SIZE + 4, SIZE + 4)
    reordered = build_cache(paths[::-1], ids[::-1], SIZE, cache_root=tmp_path, workers=1,
                            progress=False)
    assert reordered.path != base.path
    np.testing.assert_array_equal(reordered.images[0], base.images[-1])
    assert len(_entries(tmp_path)) == 3


def test_same_content_elsewhere_reuses_the_cache(tmp_path, dataset, monkeypatch):
    paths, ids = dataset
    first = build_cache(paths, ids, SIZE, cache_root=tmp_path / "c", workers=1, progress=False)
    moved = tmp_path / "moved"
    moved.mkdir()
    copies = [moved / p.name for p in paths]
    for source, target in zip(paths, copies, strict=True):
        target.write_bytes(source.read_bytes())
    monkeypatch.setattr(imaging, "decode_into", None)  # any decode would fail
    assert build_cache(copies, ids, SIZE, cache_root=tmp_path / "c", progress=False).path == first.path


def test_unchanged_files_are_not_rehashed(tmp_path, dataset, monkeypatch):
    paths, ids = dataset
    monkeypatch.setattr(cache_module, "_RACY_SECONDS", 0.0)  # trust stats of fresh files
    build_cache(paths, ids, SIZE, cache_root=tmp_path, workers=1, progress=False)
    manifest = json.loads((tmp_path / "images" / "content-hashes.json").read_text())
    assert len(manifest["files"]) == N_IMAGES

    hashed = []
    real = cache_module._file_digest

    def counting(path):
        hashed.append(path)
        return real(path)

    monkeypatch.setattr(cache_module, "_file_digest", counting)
    build_cache(paths, ids, SIZE, cache_root=tmp_path, workers=1, progress=False)
    assert hashed == []
    _write_jpeg(paths[2], 999)
    rebuilt = build_cache(paths, ids, SIZE, cache_root=tmp_path, workers=1, progress=False)
    assert hashed == [paths[2]]
    np.testing.assert_array_equal(rebuilt.images[2], decode_image(paths[2], SIZE))


def test_recently_modified_files_are_always_rehashed(tmp_path, dataset):
    paths, ids = dataset
    build_cache(paths, ids, SIZE, cache_root=tmp_path, workers=1, progress=False)
    # Every file was written within the last two seconds: a same-size rewrite within the file
    # system's timestamp granularity could not be told apart by its stat, so none is recorded.
    assert not (tmp_path / "images" / "content-hashes.json").exists()


def test_an_error_in_a_worker_process_reaches_the_caller(tmp_path, dataset):
    paths, ids = dataset
    paths[1].write_text("not a jpeg")
    npy = tmp_path / "images.npy"
    np.lib.format.open_memmap(npy, mode="w+", dtype=np.uint8, shape=(3, SIZE, SIZE, 3))
    context = cache_module._mp_context()
    next_chunk, done = context.Value("q", 0), context.Value("q", 0)
    job = {"npy": str(npy), "paths": [str(p) for p in paths[:3]], "size": SIZE,
           "resize_mode": "square", "chunk": 1}
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context,
                                                initializer=imaging.init_worker,
                                                initargs=(job, next_chunk, done)) as pool:
        with pytest.raises(DataError, match=r"ISIC_0000001\.jpg"):
            pool.submit(imaging.worker_decode_chunks).result()
    assert next_chunk.value >= 3  # the failing worker stopped everyone
    assert done.value == 1
    np.testing.assert_array_equal(np.load(npy)[0], decode_image(paths[0], SIZE))


def test_a_bad_image_fails_the_build_and_leaves_nothing(tmp_path, dataset):
    paths, ids = dataset
    good = paths[17].read_bytes()
    paths[17].write_bytes(good[: len(good) // 2])  # truncated JPEG
    with pytest.raises(DataError, match=r"ISIC_0000017\.jpg"):
        build_cache(paths, ids, SIZE, cache_root=tmp_path, workers=2, progress=False)
    assert _entries(tmp_path) == []  # neither a cache nor a temporary folder
    paths[17].write_bytes(good)
    cache = build_cache(paths, ids, SIZE, cache_root=tmp_path, workers=2, progress=False)
    assert _entries(tmp_path) == [cache.path.name]


def test_a_killed_build_leaves_no_valid_cache_and_the_next_build_cleans_up(tmp_path, dataset):
    paths, ids = dataset
    script = textwrap.dedent(
        """
        import os, signal, sys
        from data_utils import cache, imaging
        real = imaging.decode_into
        def dying(path, *args):
            if path.endswith("ISIC_0000010.jpg"):
                os.kill(os.getpid(), signal.SIGKILL)
            real(path, *args)
        imaging.decode_into = dying
        paths, ids = sys.argv[2::2], sys.argv[3::2]
        cache.build_cache(paths, ids, 16, cache_root=sys.argv[1], workers=1, progress=False)
        """
    )
    args = [str(tmp_path / "c")]
    for path, image_id in zip(paths, ids, strict=True):
        args += [str(path), image_id]
    result = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, timeout=60)
    assert result.returncode == -9, result.stderr.decode()
    leftovers = _entries(tmp_path / "c")
    assert len(leftovers) == 1 and leftovers[0].startswith(".tmp-")
    assert (tmp_path / "c" / "images" / leftovers[0] / "images.npy").exists()

    cache = build_cache(paths, ids, SIZE, cache_root=tmp_path / "c", progress=False)
    assert _entries(tmp_path / "c") == [cache.path.name]
    np.testing.assert_array_equal(cache.images[10], decode_image(paths[10], SIZE))


def test_a_temporary_folder_of_a_live_build_is_kept(tmp_path, dataset):
    paths, ids = dataset
    live = tmp_path / "images" / ".tmp-running"
    live.mkdir(parents=True)
    (live / "owner.json").write_text(json.dumps({"host": cache_module.socket.gethostname(),
                                                 "pid": os.getpid()}))
    fresh_without_owner = tmp_path / "images" / ".tmp-just-created"
    fresh_without_owner.mkdir()
    build_cache(paths, ids, SIZE, cache_root=tmp_path, workers=1, progress=False)
    assert live.is_dir() and fresh_without_owner.is_dir()


def test_a_damaged_cache_is_rebuilt(tmp_path, dataset):
    paths, ids = dataset
    first = build_cache(paths, ids, SIZE, cache_root=tmp_path, workers=1, progress=False)
    expected = np.array(first.images)
    del first.images
    (first.path / "images.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(DataError, match="damaged"):
        ImageCache.open(first.path)
    again = build_cache(paths, ids, SIZE, cache_root=tmp_path, workers=1, progress=False)
    np.testing.assert_array_equal(again.images, expected)


def test_rows_looks_up_ids_and_names_unknown_ones(tmp_path, dataset):
    paths, ids = dataset
    cache = build_cache(paths, ids, SIZE, cache_root=tmp_path, workers=1, progress=False)
    rows = cache.rows([ids[3], ids[0], ids[3]])
    assert rows.dtype == np.int64 and rows.tolist() == [3, 0, 3]
    assert cache.rows([]).shape == (0,)
    with pytest.raises(DataError, match="ISIC_9999999"):
        cache.rows([ids[1], "ISIC_9999999"])


def test_missing_files_are_counted_and_named(tmp_path, dataset):
    paths, ids = dataset
    paths[4].unlink()
    paths[9].unlink()
    with pytest.raises(DataError, match=r"2 image file\(s\) do not exist \(first: .*ISIC_0000004"
                                        r"\.jpg, .*ISIC_0000009\.jpg\)"):
        build_cache(paths, ids, SIZE, cache_root=tmp_path, progress=False)


def test_bad_arguments(tmp_path, dataset):
    paths, ids = dataset
    with pytest.raises(ValueError, match="2 paths but 1 image ids"):
        build_cache(paths[:2], ids[:1], SIZE, cache_root=tmp_path)
    with pytest.raises(ValueError, match="unique"):
        build_cache(paths[:2], [ids[0], ids[0]], SIZE, cache_root=tmp_path)
    with pytest.raises(ValueError, match="resize mode"):
        build_cache(paths, ids, SIZE, "stretch", cache_root=tmp_path)
    with pytest.raises(ValueError, match="workers"):
        build_cache(paths, ids, SIZE, cache_root=tmp_path, workers=0)
    with pytest.raises(DataError, match="no images"):
        build_cache([], [], SIZE, cache_root=tmp_path)


def test_default_cache_root(monkeypatch, tmp_path):
    monkeypatch.setenv("DERMBENCH_CACHE", str(tmp_path / "x"))
    assert default_cache_root() == tmp_path / "x"
    monkeypatch.delenv("DERMBENCH_CACHE")
    assert default_cache_root() == Path.home() / ".cache" / "dermbench"


def test_default_root_comes_from_the_environment(dataset):
    paths, ids = dataset
    cache = build_cache(paths[:3], ids[:3], 8, progress=False)
    assert cache.path.parent == default_cache_root() / "images"
    assert os.environ["DERMBENCH_CACHE"] in os.fspath(cache.path)


def test_importing_data_utils_pulls_in_no_tensorflow():
    code = ("import sys, data_utils, data_utils.cache; "
            "bad = [m for m in ('tensorflow', 'keras', 'jax', 'torch') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_workers_that_cannot_start_leave_the_work_to_this_process(tmp_path, dataset, monkeypatch,
                                                                   caplog):
    paths, ids = dataset

    def broken(*args, **kwargs):
        raise OSError("no more processes")

    monkeypatch.setattr(cache_module.concurrent.futures, "ProcessPoolExecutor", broken)
    cache = build_cache(paths, ids, SIZE, cache_root=tmp_path, workers=4, progress=False)
    assert "could not start image decoding workers" in caplog.text
    np.testing.assert_array_equal(cache.images[-1], decode_image(paths[-1], SIZE))


def test_a_full_disk_is_a_clear_error(tmp_path, dataset, monkeypatch):
    paths, ids = dataset

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_module.os, "posix_fallocate", full, raising=False)
    with pytest.raises(DataError, match="not enough disk space .* --cache-dir"):
        build_cache(paths, ids, SIZE, cache_root=tmp_path, workers=1, progress=False)
    assert _entries(tmp_path) == []
