"""Weights online and offline: --weights-dir, the Keras cache, downloads, hashes, clear errors.

The "network" is a real HTTP server on 127.0.0.1 (or a closed localhost port for offline); the
weights file is the tiny ResNeXt fixture registered as a backbone (conftest.tiny_resnext).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import pytest

import zoo
from core.errors import BenchmarkError, DownloadError
from zoo.errors import WeightsError, WeightsUnavailableError, ZooValueError
from zoo.factory import create_backbone
from zoo.weights import (
    BASE_URL_ENV,
    WEIGHTS_DIR_ENV,
    accepted_file_names,
    cache_path,
    download_url,
    fetch_imagenet,
    file_hash,
    resolve_weights,
    verify_file,
)

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "resnext_tiny.safetensors"


@pytest.fixture(autouse=True)
def _clean_environment(tmp_path, monkeypatch):
    """A fresh Keras cache per test and no user-level weights settings."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.delenv(WEIGHTS_DIR_ENV, raising=False)
    monkeypatch.delenv(BASE_URL_ENV, raising=False)


def _config(url: str, **changes):
    base = replace(
        zoo.get_config("resnext101"),
        name="fixture",
        display_name="tiny ResNeXt",
        weights_url=f"{url}/hub/model.safetensors",
        weights_file="fixture.safetensors",
        weights_hash=file_hash(FIXTURE, "sha256"),
        hash_algorithm="sha256",
    )
    return replace(base, **changes)


def test_file_hash_hand_computed(tmp_path):
    path = tmp_path / "abc.bin"
    path.write_bytes(b"abc")
    assert (
        file_hash(path, "md5")
        == hashlib.md5(b"abc").hexdigest()
        == "900150983cd24fb0d6963f7d28e17f72"
    )
    assert file_hash(path, "sha256").startswith("ba7816bf8f01cfea")


def test_download_from_local_server_into_keras_cache(http_server, tmp_path):
    base, served = http_server
    (served / "hub").mkdir()
    shutil.copy(FIXTURE, served / "hub" / "model.safetensors")
    config = _config(base)
    path = fetch_imagenet(config)
    assert path == tmp_path / "keras_home" / "models" / "fixture.safetensors" == cache_path(config)
    assert path.read_bytes() == FIXTURE.read_bytes()
    # second time: from the cache, no network needed
    assert fetch_imagenet(_config("http://127.0.0.1:9")) == path


def test_create_backbone_imagenet_through_a_mirror(tiny_resnext, tiny_io, http_server, monkeypatch):
    base, served = http_server
    shutil.copy(FIXTURE, served / FIXTURE.name)
    monkeypatch.setenv(BASE_URL_ENV, base)
    assert download_url(zoo.get_config(tiny_resnext)) == f"{base}/{FIXTURE.name}"
    model = create_backbone(tiny_resnext, 7, input_shape=70, weights="imagenet")
    probabilities = keras.ops.convert_to_numpy(model(tiny_io["images"], training=False))
    assert np.abs(probabilities - tiny_io["probabilities"]).max() <= 1e-5


def test_download_with_wrong_hash_is_refused_and_deleted(http_server):
    base, served = http_server
    (served / "hub").mkdir()
    (served / "hub" / "model.safetensors").write_bytes(FIXTURE.read_bytes()[:1000])  # truncated
    config = _config(base)
    with pytest.raises(WeightsError, match=r"did not verify.*deleted") as info:
        fetch_imagenet(config)
    assert isinstance(info.value, BenchmarkError)
    assert not cache_path(config).exists()


def test_offline_and_not_cached_names_file_url_and_places(closed_url, tmp_path):
    config = _config(closed_url)
    with pytest.raises(WeightsUnavailableError) as info:
        fetch_imagenet(config, weights_dir=tmp_path / "empty")
    message = str(info.value)
    assert isinstance(info.value, DownloadError)
    assert f"{closed_url}/hub/model.safetensors" in message
    assert "fixture.safetensors" in message
    assert "--weights-dir" in message and str(tmp_path / "empty") in message
    assert str(tmp_path / "keras_home" / "models") in message
    assert "Traceback" not in message and "\n" not in message


def test_weights_dir_with_official_file_is_used_offline(closed_url, tmp_path):
    folder = tmp_path / "weights"
    folder.mkdir()
    shutil.copy(FIXTURE, folder / "fixture.safetensors")
    assert fetch_imagenet(_config(closed_url), weights_dir=folder) == folder / "fixture.safetensors"


def test_weights_dir_from_environment_and_url_file_name(closed_url, tmp_path, monkeypatch):
    folder = tmp_path / "weights"
    folder.mkdir()
    shutil.copy(FIXTURE, folder / "model.safetensors")  # the name in the URL, as a browser saves it
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(folder))
    config = _config(closed_url)
    assert accepted_file_names(config) == ["fixture.safetensors", "model.safetensors"]
    assert fetch_imagenet(config) == folder / "model.safetensors"


def test_corrupt_file_in_weights_dir_is_refused(closed_url, tmp_path):
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "fixture.safetensors").write_bytes(FIXTURE.read_bytes()[:-10])
    with pytest.raises(
        WeightsError,
        match=r"fixture.safetensors .* has sha256 [0-9a-f]{64}, expected "
        r"[0-9a-f]{64}: it is corrupt, truncated",
    ):
        fetch_imagenet(_config(closed_url), weights_dir=folder)


def test_corrupt_cached_file_is_replaced_by_a_fresh_download(http_server):
    base, served = http_server
    (served / "hub").mkdir()
    shutil.copy(FIXTURE, served / "hub" / "model.safetensors")
    config = _config(base)
    cached = cache_path(config)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"garbage")
    assert fetch_imagenet(config) == cached
    assert cached.read_bytes() == FIXTURE.read_bytes()


def test_corrupt_cached_file_is_never_used_offline(closed_url):
    config = _config(closed_url)
    cached = cache_path(config)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"garbage")
    with pytest.raises(WeightsUnavailableError):
        fetch_imagenet(config)
    assert not cached.exists()


def test_verify_without_known_hash_is_a_no_op(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes(b"anything")
    verify_file(path, _config("http://127.0.0.1:9", weights_hash=None, hash_algorithm=None))


def test_path_with_official_name_is_verified(tmp_path):
    path = tmp_path / "fixture.safetensors"
    path.write_bytes(b"not the file")
    with pytest.raises(WeightsError, match="corrupt"):
        resolve_weights(_config("http://127.0.0.1:9"), str(path))
    other = tmp_path / "mine.safetensors"
    other.write_bytes(b"user file, not verifiable")
    assert resolve_weights(_config("http://127.0.0.1:9"), other) == other


def test_none_means_random_initialisation():
    assert resolve_weights(zoo.get_config("resnext101"), None) is None
    assert resolve_weights(zoo.get_config("paper_cnn"), "none") is None


@pytest.mark.parametrize("value", ["imagenet21k", "/no/such/file.safetensors", 3])
def test_bad_weights_values(value):
    with pytest.raises(
        ZooValueError, match=r"expected None, 'imagenet' or the path of an existing"
    ) as info:
        resolve_weights(zoo.get_config("resnext101"), value)
    assert repr(value) in str(info.value)


def test_keras_app_configs_match_the_installed_keras_sources():
    """URLs, cache names and md5s are read from keras/src/applications (not guessed)."""
    source_dir = Path(keras.applications.inception_v3.__file__).parent
    if not (source_dir / "inception_v3.py").is_file():
        source_dir = Path(keras.__file__).parent / "src" / "applications"
    modules = {
        "inception_v3": "inception_v3.py",
        "inception_resnet_v2": "inception_resnet_v2.py",
        "xception": "xception.py",
        "nasnet_large": "nasnet.py",
    }
    for name, module in modules.items():
        config = zoo.get_config(name)
        # join implicitly concatenated string literals split over lines
        source = re.sub(r'"\s*\n\s*"', "", (source_dir / module).read_text())
        assert config.weights_hash in source and config.hash_algorithm == "md5"
        assert Path(config.weights_url).name in source
        assert config.weights_file in source or config.weights_file == Path(config.weights_url).name


def test_modern_configs_match_the_installed_keras_tables():
    """The seven's URL and hash, from the module constants Keras builds its download from (the
    file name is assembled as each module does for include_top=False)."""
    from keras.src.applications import (
        convnext,
        densenet,
        efficientnet,
        efficientnet_v2,
        mobilenet_v3,
        resnet,
    )

    expected = {
        "convnext_tiny": (convnext.BASE_WEIGHTS_PATH + "convnext_tiny_notop.h5",
                          convnext.WEIGHTS_HASHES["convnext_tiny"][1]),
        "convnext_small": (convnext.BASE_WEIGHTS_PATH + "convnext_small_notop.h5",
                           convnext.WEIGHTS_HASHES["convnext_small"][1]),
        "efficientnet_v2_s": (efficientnet_v2.BASE_WEIGHTS_PATH + "efficientnetv2-s_notop.h5",
                              efficientnet_v2.WEIGHTS_HASHES["-s"][1]),
        "efficientnet_b3": (efficientnet.BASE_WEIGHTS_PATH + "efficientnetb3_notop.h5",
                            efficientnet.WEIGHTS_HASHES["b3"][1]),
        "densenet121": (densenet.DENSENET121_WEIGHT_PATH_NO_TOP,
                        "30ee3e1110167f948a6b9946edeeb738"),
        "resnet50_v2": (resnet.BASE_WEIGHTS_PATH
                        + "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
                        resnet.WEIGHTS_HASHES["resnet50v2"][1]),
        "mobilenet_v3_large": (mobilenet_v3.BASE_WEIGHT_PATH
                               + "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",
                               mobilenet_v3.WEIGHTS_HASHES["large_224_1.0_float"][1]),
    }
    assert "30ee3e1110167f948a6b9946edeeb738" in Path(densenet.__file__).read_text()
    for name, (url, digest) in expected.items():
        config = zoo.get_config(name)
        assert (config.weights_url, config.weights_hash) == (url, digest), name
        assert config.weights_file == Path(url).name  # the name Keras caches it under
        assert config.hash_algorithm == ("sha256" if len(digest) == 64 else "md5")
        assert config.weights_format == "keras_h5" and config.pretrained


@pytest.mark.parametrize("name", ["convnext_tiny", "efficientnet_b3", "mobilenet_v3_large"])
def test_a_file_that_is_not_the_official_one_is_refused_in_weights_dir(name, closed_url,
                                                                       tmp_path):
    """Offline, a --weights-dir file under the official name is checked against the real
    published hash (sha256 for ConvNeXt, md5 for the others) and refused."""
    config = zoo.get_config(name)
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / config.weights_file).write_bytes(b"not the official file")
    with pytest.raises(WeightsError, match=rf"{re.escape(config.weights_file)} \(21 bytes\) has "
                                           rf"{config.hash_algorithm} [0-9a-f]+, expected "
                                           rf"{config.weights_hash}"):
        fetch_imagenet(replace(config, weights_url=f"{closed_url}/{config.weights_file}"),
                       weights_dir=folder)


@pytest.fixture()
def mobilenet_from_local_host(http_server, tmp_path):
    """MobileNetV3-Large registered under a test name, its "official" file a random no-top .h5
    in the official layout (its md5 as the known hash), served by the local HTTP server."""
    import h5py
    from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group

    from zoo.registry import get_builder, unregister

    base, served = http_server
    keras.utils.set_random_seed(7)
    source = create_backbone("mobilenet_v3_large", 7, input_shape=32)
    file_name = zoo.get_config("mobilenet_v3_large").weights_file
    with h5py.File(served / file_name, "w") as handle:
        save_weights_to_hdf5_group(handle, source.get_layer("backbone"))
    config = replace(zoo.get_config("mobilenet_v3_large"), name="mobilenet_v3_test",
                     weights_url=f"{base}/{file_name}",
                     weights_hash=file_hash(served / file_name, "md5"))
    zoo.register(config, get_builder("mobilenet_v3_large"))
    try:
        yield config, source, served / file_name
    finally:
        unregister(config.name)


def test_modern_backbone_weights_online_then_offline_through_weights_dir(
        mobilenet_from_local_host, tmp_path):
    config, source, served_file = mobilenet_from_local_host
    layers = ("conv", "expanded_conv_1_depthwise_bn", "conv_1")
    # Online: downloaded into the Keras cache through get_file, md5 checked, loaded.
    online = create_backbone(config.name, 7, input_shape=32, weights="imagenet")
    assert cache_path(config).read_bytes() == served_file.read_bytes()
    _assert_same_weights(online, source, layers)
    # Offline: --weights-dir holds the file (checked against the known hash); the cache stays
    # empty, so nothing was downloaded.
    cache_path(config).unlink()
    folder = tmp_path / "weights"
    folder.mkdir()
    shutil.copy(served_file, folder / config.weights_file)
    offline = create_backbone(config.name, 7, input_shape=32, weights="imagenet",
                              weights_dir=folder)
    _assert_same_weights(offline, source, layers)
    assert not cache_path(config).exists()
    # A truncated copy in --weights-dir is refused, never loaded.
    os.truncate(folder / config.weights_file, served_file.stat().st_size - 1000)
    with pytest.raises(WeightsError, match=r"has md5 [0-9a-f]{32}, expected .*it is corrupt"):
        create_backbone(config.name, 7, input_shape=32, weights="imagenet", weights_dir=folder)


def _assert_same_weights(model_a, model_b, layer_names):
    for name in layer_names:
        for ours, theirs in zip(
            model_a.get_layer("backbone").get_layer(name).weights,
            model_b.get_layer("backbone").get_layer(name).weights,
            strict=True,
        ):
            np.testing.assert_array_equal(
                keras.ops.convert_to_numpy(ours), keras.ops.convert_to_numpy(theirs)
            )


def test_keras_app_weights_file_round_trip(tmp_path):
    import h5py
    from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group

    keras.utils.set_random_seed(1)
    source = create_backbone("xception", 7, input_shape=71)
    # the legacy .h5 layout of Keras's official no-top files (as keras.applications saved them)
    legacy = tmp_path / "xception_weights_tf_dim_ordering_tf_kernels_notop.h5"
    with h5py.File(legacy, "w") as handle:
        save_weights_to_hdf5_group(handle, source.get_layer("backbone"))
    layers = ("block1_conv1", "block14_sepconv2_bn")
    with pytest.raises(WeightsError, match="has md5"):  # the official name is verified first
        create_backbone("xception", 7, input_shape=71, weights=legacy)
    renamed = legacy.rename(tmp_path / "my_xception_notop.h5")
    _assert_same_weights(
        create_backbone("xception", 7, input_shape=71, weights=renamed), source, layers
    )
    path = tmp_path / "xception_backbone.weights.h5"
    source.get_layer("backbone").save_weights(str(path))
    _assert_same_weights(
        create_backbone("xception", 7, input_shape=71, weights=str(path)), source, layers
    )
    os.truncate(path, path.stat().st_size // 2)
    with pytest.raises(
        WeightsError, match=r"cannot load weights file .*xception_backbone.weights.h5"
    ):
        create_backbone("xception", 7, input_shape=71, weights=str(path))
