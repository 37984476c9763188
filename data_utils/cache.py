"""The decoded-image cache: every image decoded once per (content, size, resize mode) into a .npy.

Layout under the cache root (`default_cache_root()`):

    images/<size>px-<mode>-<key>/images.npy      (n, size, size, 3) uint8, memory-mapped read-only
    images/<size>px-<mode>-<key>/image_ids.json  the row order of images.npy
    images/<size>px-<mode>-<key>/meta.json       size, mode, count, key, decoder version
    images/content-hashes.json                   (path, size, mtime, ctime, inode) -> content hash
    images/.tmp-*/                               builds in progress (or killed: removed later)

The key hashes the bytes of every input file, the ordered image ids, the size, the resize mode and
`DECODER_VERSION`, so a changed image, id list, size or mode gets a new entry and nothing is ever
decoded twice. A build writes into a temporary folder and renames it into place after an fsync, so
only complete caches ever carry a final name; a failed or interrupted build leaves at most a
temporary folder, which the next build removes once its owner process is gone.

Decoding runs in this process plus `workers - 1` processes started with 'forkserver' ('spawn'
where that is missing), both safe with TensorFlow's threads in this process. The fork server
preloads only NumPy and Pillow, once per Python process; later builds fork workers from it in
milliseconds, and this process decodes while they start. As with any 'spawn'-style start, a script
that builds a cache at import time needs the usual `if __name__ == "__main__":` guard.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from core import defaults
from core.atomic import atomic_write_json, read_json, read_json_object
from core.errors import DataError
from data_utils import imaging
from data_utils.imaging import DECODER_VERSION, RESIZE_MODES, decode_image

__all__ = [
    "DECODER_VERSION",
    "RESIZE_MODES",
    "ImageCache",
    "build_cache",
    "decode_image",
    "default_cache_root",
]

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
_MANIFEST = "content-hashes.json"
_TMP_PREFIX = ".tmp-"
# Files modified this recently are hashed every time rather than trusted from their stat: a
# rewrite within the file system's timestamp granularity would otherwise go unnoticed.
_RACY_SECONDS = 2.0
# A temporary folder whose owner cannot be checked (another host) is removed after this long.
_STALE_SECONDS = 24 * 3600
_NO_OWNER_SECONDS = 60.0
# Below this many images, starting worker processes costs more than it saves.
_MIN_IMAGES_FOR_WORKERS = 16
_WORKER_PRELOAD = ["data_utils.imaging", "PIL.JpegImagePlugin", "PIL.PngImagePlugin"]


def default_cache_root() -> Path:
    """The cache root: $DERMBENCH_CACHE if set, else ~/.cache/dermbench.

    Returns:
        The folder (not created here).
    """
    env = os.environ.get("DERMBENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dermbench"


class ImageCache:
    """A complete decoded-image cache, memory-mapped read-only.

    Attributes:
        path: the cache folder.
        size: side of the square images.
        resize_mode: "square" or "crop".
        image_ids: (n,) str array, the row order of `images`.
        images: (n, size, size, 3) uint8 read-only memmap.
        key: the content key (hex) in the folder name.
    """

    def __init__(self, path: Path, size: int, resize_mode: str, image_ids: np.ndarray,
                 images: np.ndarray, key: str) -> None:
        self.path = path
        self.size = size
        self.resize_mode = resize_mode
        self.image_ids = image_ids
        self.images = images
        self.key = key
        self._index: dict[str, int] | None = None

    def __len__(self) -> int:
        return len(self.image_ids)

    def __repr__(self) -> str:
        return (f"ImageCache({os.fspath(self.path)!r}, n={len(self)}, size={self.size}, "
                f"resize_mode={self.resize_mode!r})")

    @classmethod
    def open(cls, path: str | os.PathLike) -> ImageCache:
        """Open a complete cache folder written by `build_cache` (decodes nothing).

        Args:
            path: the cache folder (images/<size>px-<mode>-<key>).

        Returns:
            The cache, its images memory-mapped read-only.

        Raises:
            DataError: the folder is not a complete, consistent cache (delete it to rebuild).
        """
        path = Path(path)
        try:
            meta = read_json(path / "meta.json")
            with open(path / "image_ids.json", encoding="utf-8") as handle:
                ids = json.load(handle)
            images = np.load(path / "images.npy", mmap_mode="r")
            size, count = int(meta["size"]), int(meta["count"])
            expected = (count, size, size, 3)
            consistent = (
                meta.get("format") == CACHE_FORMAT
                and meta.get("decoder_version") == DECODER_VERSION
                and meta.get("resize_mode") in RESIZE_MODES
                and len(ids) == count
                and images.shape == expected
                and images.dtype == np.uint8
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(
                f"image cache {path} is damaged ({type(exc).__name__}: {exc}): delete this folder "
                "and prepare the data again to rebuild it"
            ) from None
        if not consistent:
            raise DataError(
                f"image cache {path} is inconsistent (meta.json, image_ids.json and images.npy "
                "disagree, or it was written by another version): delete this folder and prepare "
                "the data again to rebuild it"
            )
        return cls(path, size, meta["resize_mode"], np.asarray(ids, dtype=str), images,
                   str(meta.get("key", "")))

    def rows(self, image_ids: Sequence[str] | np.ndarray) -> np.ndarray:
        """Row positions of `image_ids` in `images`.

        Args:
            image_ids: ids to look up (any order, repeats allowed).

        Returns:
            (len(image_ids),) int64 array.

        Raises:
            DataError: some ids are not in the cache (names the count and the first few).
        """
        if self._index is None:
            self._index = {image_id: row for row, image_id in enumerate(self.image_ids.tolist())}
        index = self._index
        wanted = [str(image_id) for image_id in np.asarray(image_ids, dtype=object).ravel()]
        missing = [image_id for image_id in wanted if image_id not in index]
        if missing:
            raise DataError(
                f"{len(missing)} image id(s) are not in the image cache {self.path} (first: "
                f"{', '.join(missing[:5])}): build the cache from the same table (prepare again)"
            )
        return np.fromiter((index[image_id] for image_id in wanted), dtype=np.int64,
                           count=len(wanted))


def build_cache(paths: Sequence[str | os.PathLike], image_ids: Sequence[str], size: int,
                resize_mode: str = defaults.RESIZE_MODE, cache_root: str | os.PathLike | None = None,
                workers: int | None = None, progress: bool = True) -> ImageCache:
    """Decode every image once into a uint8 cache on disk, or open the existing one.

    The cache is keyed by the content of the files (plus ids, size, mode and decoder version):
    an existing complete cache is memory-mapped without decoding anything. Otherwise the images
    are decoded in parallel (this process plus workers-1 worker processes, each writing its rows
    straight into a preallocated .npy) in a temporary folder, fsynced and renamed into place.

    Args:
        paths: one image file per image, in row order.
        image_ids: the id of each image (unique), same order.
        size: side of the square images in pixels.
        resize_mode: "square" (whole image) or "crop" (centred square crop); see `decode_image`.
        cache_root: the cache root; None uses `default_cache_root()`.
        workers: decoding processes in all, this one included; None uses every CPU core.
        progress: show a tqdm progress bar on stderr (only where stderr is a terminal).

    Returns:
        The complete cache, memory-mapped read-only.

    Raises:
        DataError: a file is missing or cannot be decoded (named; no cache is left behind), or
            there are no images.
        ValueError: bad size, mode, workers, or paths/ids that do not line up.
    """
    imaging.check_resize_args(size, resize_mode)
    size = int(size)
    paths = [Path(path) for path in paths]
    ids = [str(image_id) for image_id in image_ids]
    if len(paths) != len(ids):
        raise ValueError(f"got {len(paths)} paths but {len(ids)} image ids")
    if len(set(ids)) != len(ids):
        raise ValueError("image ids passed to build_cache must be unique")
    if not paths:
        raise DataError("no images to cache: the dataset table is empty")
    workers = _resolve_workers(workers)

    images_root = Path(cache_root) if cache_root is not None else default_cache_root()
    images_root = images_root / "images"
    images_root.mkdir(parents=True, exist_ok=True)

    digests = _content_digests(paths, images_root / _MANIFEST, workers)
    key = _cache_key(ids, digests, size, resize_mode)
    final = images_root / f"{size}px-{resize_mode}-{key}"
    if final.exists():
        try:
            cache = ImageCache.open(final)
        except DataError as exc:
            logger.warning("%s; rebuilding it", exc)
            shutil.rmtree(final, ignore_errors=True)
        else:
            logger.info("image cache hit: %s (%d images)", final, len(cache))
            return cache

    _remove_stale_temps(images_root)
    _build(final, paths, ids, size, resize_mode, key, workers, progress)
    return ImageCache.open(final)


def _resolve_workers(workers: int | None) -> int:
    if workers is None:
        if hasattr(os, "sched_getaffinity"):  # the cores this process may run on
            return max(1, len(os.sched_getaffinity(0)))
        return max(1, os.cpu_count() or 1)
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    return int(workers)


# --- content key ------------------------------------------------------------------------------

def _file_digest(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, lambda: hashlib.blake2b(digest_size=16)).hexdigest()
    except FileNotFoundError:
        raise DataError(
            f"image file {path} does not exist: download the dataset again or remove its row "
            "from the metadata"
        ) from None
    except OSError as exc:
        raise DataError(f"cannot read image file {path} ({exc}): check its permissions") from None


def _stat_signatures(paths: list[Path]) -> list[list[int]]:
    signatures, missing = [], []
    for path in paths:
        try:
            st = path.stat()
        except FileNotFoundError:
            missing.append(path)
            continue
        signatures.append([st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino])
    if missing:
        shown = ", ".join(os.fspath(path) for path in missing[:5])
        raise DataError(
            f"{len(missing)} image file(s) do not exist (first: {shown}): download the dataset "
            "again or remove their rows from the metadata"
        )
    return signatures


def _content_digests(paths: list[Path], manifest_path: Path, workers: int) -> list[str]:
    """blake2b-128 of each file's bytes, reusing the manifest for files whose stat is unchanged."""
    manifest = read_json_object(manifest_path, "the files are hashed again")
    known = manifest.get("files") if manifest.get("format") == CACHE_FORMAT else {}
    if not isinstance(known, dict):
        known = {}
    keys = [os.fspath(path.absolute()) for path in paths]
    signatures = _stat_signatures(paths)
    digests: list[str | None] = []
    for key, signature in zip(keys, signatures, strict=True):
        entry = known.get(key)
        digests.append(entry[-1] if isinstance(entry, list) and entry[:-1] == signature else None)
    todo = [i for i, digest in enumerate(digests) if digest is None]
    if todo:
        # hashlib releases the GIL on large buffers, so threads hash in parallel.
        with concurrent.futures.ThreadPoolExecutor(max(1, min(workers, len(todo)))) as pool:
            for i, digest in zip(todo, pool.map(lambda i: _file_digest(paths[i]), todo),
                                 strict=True):
                digests[i] = digest
        racy_after = time.time_ns() - int(_RACY_SECONDS * 1e9)
        updates = {keys[i]: [*signatures[i], digests[i]] for i in todo
                   if max(signatures[i][1], signatures[i][2]) < racy_after}
        if updates:
            known.update(updates)
            try:
                atomic_write_json(manifest_path, {"format": CACHE_FORMAT, "files": known})
            except OSError as exc:  # the manifest only saves time; never fail a build over it
                logger.warning("could not update %s: %s", manifest_path, exc)
    return [str(digest) for digest in digests]


def _cache_key(ids: list[str], digests: list[str], size: int, resize_mode: str) -> str:
    spec = {"format": CACHE_FORMAT, "decoder_version": DECODER_VERSION, "size": size,
            "resize_mode": resize_mode, "image_ids": ids, "content": digests}
    text = json.dumps(spec, separators=(",", ":"))
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


# --- building -----------------------------------------------------------------------------------

def _build(final: Path, paths: list[Path], ids: list[str], size: int, resize_mode: str, key: str,
           workers: int, progress: bool) -> None:
    """Decode into a temporary folder next to `final`, fsync it and rename it to `final`."""
    tmp = final.parent / f"{_TMP_PREFIX}{final.name}-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        (tmp / "owner.json").write_text(
            json.dumps({"host": socket.gethostname(), "pid": os.getpid()}), encoding="utf-8")
        started = time.perf_counter()
        npy = tmp / "images.npy"
        images = np.lib.format.open_memmap(npy, mode="w+", dtype=np.uint8,
                                           shape=(len(paths), size, size, 3))
        _reserve_disk_space(npy, final.parent)
        try:
            used = _decode_all(images, npy, paths, size, resize_mode, workers, progress)
        finally:
            del images  # unmap before fsync/rename
        _fsync_file(npy)
        _write_synced(tmp / "image_ids.json", json.dumps(ids))
        seconds = time.perf_counter() - started
        meta = {"format": CACHE_FORMAT, "decoder_version": DECODER_VERSION, "size": size,
                "resize_mode": resize_mode, "count": len(ids), "key": key,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "build_seconds": round(seconds, 3),
                "processes": used}
        _write_synced(tmp / "meta.json", json.dumps(meta, indent=2, sort_keys=True))
        _fsync_dir(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.exists():
                raise
            # Another build of the same key finished first; its result is identical.
            logger.info("image cache %s was built concurrently; keeping that one", final)
            shutil.rmtree(tmp, ignore_errors=True)
            return
        _fsync_dir(final.parent)
        logger.info("built image cache %s: %d images at %dx%d (%s) in %.1f s with %d process(es)",
                    final, len(ids), size, size, resize_mode, seconds, used)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _decode_all(images: np.ndarray, npy: Path, paths: list[Path], size: int, resize_mode: str,
                workers: int, progress: bool) -> int:
    """Fill `images` (the memmap of `npy`): this process decodes too while workers start up.

    Chunks of rows are handed out through a shared counter, so each process takes the next
    chunk when it is free. Returns the number of processes used (this one included).
    """
    from tqdm import tqdm

    n = len(paths)
    if n < _MIN_IMAGES_FOR_WORKERS:
        workers = 1
    chunk = max(1, min(16, n // (workers * 8)))
    n_chunks = -(-n // chunk)
    extra = min(workers, n_chunks) - 1  # worker processes besides this one
    context = _mp_context()
    next_chunk = context.Value("q", 0)
    done = context.Value("q", 0)
    job = {"npy": os.fspath(npy), "paths": [imaging.worker_path(path) for path in paths],
           "size": size, "resize_mode": resize_mode, "chunk": chunk}

    bar = tqdm(total=n, desc=f"decoding images {size}x{size}", unit="img",
               disable=None if progress else True, leave=False)
    futures: list[concurrent.futures.Future] = []
    started: dict = {}

    def start_workers() -> None:
        # Starting a process blocks (the fork server may have to start first): this thread does
        # it while the main thread is already decoding.
        try:
            executor = concurrent.futures.ProcessPoolExecutor(
                extra, mp_context=context, initializer=imaging.init_worker,
                initargs=(job, next_chunk, done))
            started["executor"] = executor
            for _ in range(extra):
                futures.append(executor.submit(imaging.worker_decode_chunks))
        except Exception as exc:  # only matters if a worker took a chunk it did not finish
            started["error"] = exc

    starter = threading.Thread(target=start_workers, name="image-cache-workers", daemon=True)
    if extra:
        starter.start()
    try:
        # This process runs the same loop as the workers; it returns when no chunk is left.
        imaging.decode_chunks(job, next_chunk, done, images,
                              on_chunk=lambda: bar.update(done.value - bar.n))
        # Wait only for chunks that workers still hold: a worker that is still starting (slow
        # when the main script has heavy imports, which 'forkserver' and 'spawn' re-run) will
        # find nothing left to do and is reaped in the background.
        while done.value < n:
            for future in list(futures):
                if future.done() and future.exception() is not None:
                    raise future.exception()  # a worker's DataError, or BrokenProcessPool
            if "error" in started and not futures:
                raise started["error"]
            time.sleep(0.01)
            bar.update(done.value - bar.n)
        bar.update(done.value - bar.n)
    except BaseException:
        with next_chunk.get_lock():
            next_chunk.value = n_chunks  # every worker stops after its current chunk
        _reap(starter, started, wait=True)
        raise
    finally:
        bar.close()
    _reap(starter, started, wait=False)
    if "error" in started:
        logger.warning("could not start image decoding workers (%s: %s); this process decoded "
                       "the rest alone", type(started["error"]).__name__, started["error"])
    return 1 + extra


def _reap(starter: threading.Thread, started: dict, wait: bool) -> None:
    """Shut the worker pool down, now or (wait=False) from a background thread.

    The pool keeps the shared counters alive until every worker has exited; interpreter exit
    joins it (concurrent.futures does).
    """
    def shutdown() -> None:
        if starter.is_alive():
            starter.join()
        executor = started.get("executor")
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    if wait:
        shutdown()
    else:
        threading.Thread(target=shutdown, name="image-cache-reaper", daemon=True).start()


def _mp_context() -> multiprocessing.context.BaseContext:
    """'forkserver' where available (safe with TensorFlow's threads in this process), else 'spawn'.

    The fork server imports only the decoder's modules once; each later worker is a cheap fork.
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(_WORKER_PRELOAD)  # used when the server starts
        return context
    return multiprocessing.get_context("spawn")


def _reserve_disk_space(npy: Path, folder: Path) -> None:
    """Allocate the whole .npy now: a full disk is then a clear error, not a SIGBUS mid-build."""
    if not hasattr(os, "posix_fallocate"):
        return
    size = npy.stat().st_size
    fd = os.open(npy, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DataError(
                f"not enough disk space for the image cache in {folder}: it needs "
                f"{size / 1e9:.1f} GB; free some space or point --cache-dir / $DERMBENCH_CACHE "
                "to a larger disk"
            ) from None
        # Other errors (a file system without fallocate): the cache is still written normally.
    finally:
        os.close(fd)


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    if os.name == "nt":  # directories cannot be opened for fsync on Windows
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_stale_temps(images_root: Path) -> None:
    """Remove temporary build folders left by builds that were killed or crashed."""
    host = socket.gethostname()
    now = time.time()
    for tmp in images_root.glob(f"{_TMP_PREFIX}*"):
        if not tmp.is_dir():
            continue
        age = 0.0
        with contextlib.suppress(OSError):
            age = now - tmp.stat().st_mtime
        try:
            owner = json.loads((tmp / "owner.json").read_text(encoding="utf-8"))
            if owner["host"] == host:
                owner_alive = _pid_alive(int(owner["pid"]))
            else:
                owner_alive = age < _STALE_SECONDS
        except (OSError, ValueError, KeyError, TypeError):
            # No owner yet (a build that has just created its folder) or a damaged one.
            owner_alive = age < _NO_OWNER_SECONDS
        if not owner_alive:
            logger.info("removing the unfinished image cache build %s", tmp)
            shutil.rmtree(tmp, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill would terminate the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
