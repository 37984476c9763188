"""Fixtures for the zoo tests: built models shared per session, the tiny ResNeXt fixture, and a
local HTTP server standing in for the weights hosts."""

from __future__ import annotations

import functools
import http.server
import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import zoo
from zoo.registry import Builder, unregister

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TINY_WEIGHTS = FIXTURES / "resnext_tiny.safetensors"
TINY_IO = FIXTURES / "resnext_tiny_io.npz"
TINY_NAME = "resnext_tiny_test"


@pytest.fixture(scope="session")
def mixed_model() -> Callable[[str], object]:
    """`get(name)`: the backbone at its minimum size with a 1000-class head, weights=None,
    built once per session under the mixed_float16 policy (building the big ones takes seconds
    on CPU, so one build serves the forward, dtype, layout and parameter-count tests)."""
    import keras

    from zoo.factory import create_backbone

    @functools.cache
    def get(name: str):
        size = zoo.get_config(name).min_size
        keras.mixed_precision.set_dtype_policy("mixed_float16")
        try:
            return create_backbone(name, 1000, input_shape=size, weights=None, dropout=0.2)
        finally:
            keras.mixed_precision.set_dtype_policy("float32")

    return get


@pytest.fixture(scope="session")
def tiny_spec() -> dict:
    """The reduced ResNeXt architecture of the fixture (tools/make_resnext_fixture.py)."""
    return json.loads((FIXTURES / "resnext_tiny.json").read_text())


@pytest.fixture(scope="session")
def tiny_io() -> dict[str, np.ndarray]:
    """Raw uint8 input images and torchvision's logits/probabilities for them."""
    with np.load(TINY_IO) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture()
def tiny_resnext(tiny_spec: dict) -> Iterator[str]:
    """Register the reduced ResNeXt as a backbone whose "imagenet" file is the fixture."""
    from zoo.resnext import build_resnext, load_torchvision_safetensors
    from zoo.weights import file_hash

    architecture = {
        key: tiny_spec[key]
        for key in ("layers", "groups", "width_per_group", "stage_planes", "stem_width")
    }
    config = replace(
        zoo.get_config("resnext101"),
        name=TINY_NAME,
        display_name="tiny ResNeXt (test)",
        input_size=tiny_spec["image_size"],
        weights_url=f"http://127.0.0.1:9/models/{TINY_WEIGHTS.name}",
        weights_file=TINY_WEIGHTS.name,
        weights_hash=file_hash(TINY_WEIGHTS, "sha256"),
        hash_algorithm="sha256",
    )
    builder = Builder(
        base=functools.partial(build_resnext, **architecture),
        load_weights=load_torchvision_safetensors,
    )
    zoo.register(config, builder)
    try:
        yield TINY_NAME
    finally:
        unregister(TINY_NAME)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base signature
        pass


@pytest.fixture()
def http_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(base URL, served folder): a real HTTP server on 127.0.0.1 serving a temp folder."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture()
def closed_url() -> str:
    """A URL on a localhost port nothing listens on (the network as seen offline)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
