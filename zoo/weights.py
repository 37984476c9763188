"""Finding, downloading and verifying pretrained weights files.

Order for `weights="imagenet"`: the --weights-dir folder (argument, else $DERMBENCH_WEIGHTS_DIR),
then the Keras cache ($KERAS_HOME/models, default ~/.keras/models), then a download into that
cache through `keras.utils.get_file`. A file with a known hash is verified before use; one that
does not match is refused (in --weights-dir) or deleted and fetched again (in the cache), never
used. $DERMBENCH_WEIGHTS_BASE_URL replaces the folder part of every download URL (a mirror).
This module imports Keras only to download.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from urllib.parse import urlsplit

from zoo.errors import WeightsError, WeightsUnavailableError, ZooValueError
from zoo.registry import BackboneConfig

logger = logging.getLogger(__name__)

WEIGHTS_DIR_ENV = "DERMBENCH_WEIGHTS_DIR"
BASE_URL_ENV = "DERMBENCH_WEIGHTS_BASE_URL"
CACHE_SUBDIR = "models"
_CHUNK = 1 << 20


def keras_home() -> Path:
    """Keras's cache root, read from $KERAS_HOME at call time (default ~/.keras)."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras").expanduser()


def cache_path(config: BackboneConfig) -> Path:
    """Where the Keras cache keeps (or will keep) a backbone's weights file."""
    return keras_home() / CACHE_SUBDIR / str(config.weights_file)


def download_url(config: BackboneConfig) -> str:
    """The weights URL, with its folder replaced by $DERMBENCH_WEIGHTS_BASE_URL when set."""
    url = str(config.weights_url)
    base = os.environ.get(BASE_URL_ENV)
    if base:
        return base.rstrip("/") + "/" + url.rsplit("/", 1)[-1]
    return url


def accepted_file_names(config: BackboneConfig) -> list[str]:
    """File names looked for in a --weights-dir folder: the cache name and the URL's name."""
    names = [str(config.weights_file)]
    url_name = Path(urlsplit(str(config.weights_url)).path).name
    if url_name and url_name not in names:
        names.append(url_name)
    return names


def file_hash(path: Path, algorithm: str) -> str:
    """Hex digest of a file ("md5" or "sha256"), read in chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(path: Path, config: BackboneConfig) -> None:
    """Check a weights file against the config's known hash (no-op where none is known).

    Raises:
        WeightsError: the hash differs (corrupt, truncated or another file).
    """
    if not config.weights_hash:
        return
    algorithm = config.hash_algorithm or ("sha256" if len(config.weights_hash) == 64 else "md5")
    actual = file_hash(path, algorithm)
    if actual != config.weights_hash:
        raise WeightsError(
            f"weights file {path} ({path.stat().st_size:,} bytes) has {algorithm} {actual}, "
            f"expected {config.weights_hash}: it is corrupt, truncated or not the official "
            f"{config.display_name} file; delete it and download {download_url(config)} again"
        )


def resolve_weights(
    config: BackboneConfig,
    weights: str | os.PathLike | None,
    weights_dir: str | os.PathLike | None = None,
) -> Path | None:
    """Turn a `weights` argument into a verified local file (or None for random init).

    Args:
        config: the backbone's config.
        weights: None (or "none"), "imagenet" or the path of a weights file.
        weights_dir: folder with official weight files (default: $DERMBENCH_WEIGHTS_DIR).

    Returns:
        The file to load, or None.

    Raises:
        ZooValueError: a weights value the backbone does not accept.
        WeightsError: a file with the wrong hash.
        WeightsUnavailableError: "imagenet" requested, not available locally, download failed.
    """
    if weights is None or (isinstance(weights, str) and weights.lower() == "none"):
        return None  # "none" as the CLI spells it
    if not config.pretrained:
        raise ZooValueError(
            f"{config.name} is trained from scratch and has no weights files: weights must be "
            f"None, got {weights!r}"
        )
    if weights == "imagenet":
        return fetch_imagenet(config, weights_dir)
    if isinstance(weights, str | os.PathLike) and Path(weights).is_file():
        path = Path(weights)
        if path.name in accepted_file_names(config):
            verify_file(path, config)
        return path
    raise ZooValueError(
        f"weights {weights!r} for {config.name}: expected None, 'imagenet' or the path of an "
        f"existing weights file ({_format_hint(config)})"
    )


def fetch_imagenet(config: BackboneConfig, weights_dir: str | os.PathLike | None = None) -> Path:
    """Find or download a backbone's official ImageNet weights file, verified.

    Raises:
        WeightsError: a --weights-dir file or a fresh download with the wrong hash.
        WeightsUnavailableError: not in --weights-dir nor the cache, and the download failed.
    """
    folder = weights_dir or os.environ.get(WEIGHTS_DIR_ENV)
    if folder:
        for name in accepted_file_names(config):
            candidate = Path(folder) / name
            if candidate.is_file():
                verify_file(candidate, config)
                logger.info("using %s", candidate)
                return candidate
        logger.info("%s not in weights dir %s; trying the Keras cache", config.weights_file, folder)
    cached = cache_path(config)
    if cached.is_file():
        try:
            verify_file(cached, config)
        except WeightsError as exc:
            logger.warning("%s; removing the cached copy and downloading again", exc)
            cached.unlink()
        else:
            logger.info("using cached %s", cached)
            return cached
    return _download(config, folder)


def _download(config: BackboneConfig, folder: str | os.PathLike | None) -> Path:
    from keras.utils import get_file

    url = download_url(config)
    target = cache_path(config)
    try:  # get_file silently falls back to /tmp/.keras when the cache folder does not exist yet
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        logger.warning("cannot create %s; Keras will pick another cache folder", target.parent)
    try:
        path = get_file(
            fname=config.weights_file,
            origin=url,
            file_hash=config.weights_hash,
            hash_algorithm=config.hash_algorithm or "auto",
            cache_subdir=CACHE_SUBDIR,
            cache_dir=str(keras_home()),
        )
    except ValueError as exc:  # get_file's "Incomplete or corrupted file detected"
        target.unlink(missing_ok=True)
        raise WeightsError(
            f"the download of {url} did not verify ({exc}); the partial file was deleted. "
            f"Retry, or download it yourself and put it into {target.parent}"
        ) from exc
    except Exception as exc:  # get_file wraps URLError/HTTPError in a bare Exception
        where = f"the folder given by --weights-dir / ${WEIGHTS_DIR_ENV}"
        if folder:
            where += f" (now {folder})"
        raise WeightsUnavailableError(
            f"cannot download the ImageNet weights of {config.display_name}: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}. "
            f"Offline? Download {url} on a connected machine and put it as "
            f"{config.weights_file} into {where}, or into the Keras cache {target.parent}/"
        ) from exc
    return Path(path)


def _format_hint(config: BackboneConfig) -> str:
    if config.weights_format == "torchvision_safetensors":
        return "a .safetensors checkpoint in the torchvision key layout"
    return "Keras no-top weights, .h5 or .weights.h5"
