"""A trained entry as a stand-alone model file: Keras, TensorFlow SavedModel or ONNX.

The exported model is the entry's zoo network with its best weights (training.trained): raw RGB
images at the entry's input size, values in [0, 255] (uint8, or float32 holding those values), in;
the seven class probabilities in canonical order (core.classes) out. The backbone's preprocessing
is inside it, as in training (zoo.factory). Images must be decoded and resized as the run's image
cache did (data_utils.imaging: the model card says how); the model does not resize.

Only Keras's own export paths are used: `model.save` (.keras), `model.export(format=
"tf_saved_model")` and `model.export(format="onnx")` (tf2onnx under the TensorFlow backend).

The zoo's "preprocess" layer is dermbench's own class; a .keras file holding it could only be
loaded with dermbench installed. So, where the scaling is one of Keras's own layers, the export
replaces it (`portable_model`): "tf" x/127.5 - 1 and "unit" x/255 become `keras.layers.Rescaling`
(the same arithmetic up to float32 rounding of the scale), "internal" (the backbone normalises
its own input) needs nothing. The "torch" and "caffe" modes keep dermbench's layer (their .keras
file then needs `import zoo.preprocessing` first; SavedModel and ONNX files never need dermbench).
Every artifact is written atomically and checked after writing: reloaded, it must give the
network's probabilities on a fixed set of images to `VERIFY_TOLERANCE`.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from training.errors import ConfigError
from training.trained import TrainedEntry

logger = logging.getLogger(__name__)

EXPORT_FORMATS: tuple[str, ...] = ("keras", "savedmodel", "onnx")
DEFAULT_FORMAT = "keras"
VERIFY_TOLERANCE = 1e-4
VERIFY_IMAGES = 8
PORTABLE_MODES = ("tf", "unit", "internal")
_PREPROCESS_LAYER = "preprocess"


def artifact_name(fmt: str) -> str:
    """The file or folder name of an export in `fmt` inside export/<entry>/."""
    return {"keras": "model.keras", "savedmodel": "saved_model", "onnx": "model.onnx"}[
        check_format(fmt)]


def check_format(fmt: str) -> str:
    """Return `fmt` if it is an export format.

    Raises:
        ConfigError: an unknown format (the message lists the known ones).
    """
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose from {', '.join(EXPORT_FORMATS)}")
    return fmt


def check_format_available(fmt: str) -> None:
    """Refuse, before any work, a format this installation cannot write.

    Raises:
        ConfigError: ONNX without the onnx, tf2onnx and onnxruntime packages (onnxruntime
            checks the file), or outside the TensorFlow backend.
    """
    import importlib.util

    import keras

    if check_format(fmt) != "onnx":
        return
    if keras.backend.backend() != "tensorflow":
        raise ConfigError(f"--format onnx is exported through tf2onnx and needs the TensorFlow "
                          f"backend (KERAS_BACKEND=tensorflow); this process runs "
                          f"{keras.backend.backend()}")
    absent = [name for name in ("onnx", "tf2onnx", "onnxruntime")
              if importlib.util.find_spec(name) is None]
    if absent:
        raise ConfigError(f"--format onnx needs the package(s) {', '.join(absent)}: pip install "
                          "'dermbench[export]' (or pip install onnx tf2onnx onnxruntime)")


def preprocessing_mode(trained: TrainedEntry) -> str:
    """The mode of the network's "preprocess" layer (the scaling the export carries)."""
    return str(trained.net.get_layer(_PREPROCESS_LAYER).mode)


def portable_model(trained: TrainedEntry) -> Any:
    """The entry's network with its preprocessing as Keras's own layers where possible.

    The layers after "preprocess" are the trained ones, shared, not copied; only the scaling in
    front changes (module docstring). The other modes return the network unchanged.

    Returns:
        A keras.Model: float32 (None, s, s, 3) images in [0, 255] in, (None, 7) probabilities out.
    """
    import keras

    net = trained.net
    mode = preprocessing_mode(trained)
    if mode not in PORTABLE_MODES:
        logger.info("%s: %s preprocessing stays dermbench's layer (load the .keras file after "
                    "`import zoo.preprocessing`)", trained.entry, mode)
        return net
    names = [layer.name for layer in net.layers]
    after = net.layers[names.index(_PREPROCESS_LAYER) + 1:]
    inputs = keras.Input(shape=net.input_shape[1:], name="image")
    x = inputs
    if mode == "tf":
        x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name=_PREPROCESS_LAYER)(x)
    elif mode == "unit":
        x = keras.layers.Rescaling(1.0 / 255.0, name=_PREPROCESS_LAYER)(x)
    for layer in after:
        x = layer(x)
    return keras.Model(inputs, x, name=net.name)


def _temporary_sibling(path: Path) -> Path:
    # Keras checks the suffix of a .keras file, so the temporary name keeps it.
    return path.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{path.name}")


def write_artifact(model: Any, path: str | os.PathLike, fmt: str) -> Path:
    """Export `model` in `fmt` to `path` atomically (a temporary sibling, then a rename).

    Args:
        model: the keras.Model to export.
        path: the destination file (.keras, .onnx) or folder (SavedModel).
        fmt: "keras", "savedmodel" or "onnx".

    Returns:
        `path` as a Path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The ONNX export traces the model's last call: a model rebuilt here was never called.
    model(np.zeros((1, *model.input_shape[1:]), dtype="float32"), training=False)
    tmp = _temporary_sibling(path)
    # tf2onnx logs every optimisation pass at INFO, and Keras's numpy-2 patch of it warns.
    logging.getLogger("tf2onnx").setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            if check_format(fmt) == "keras":
                model.save(tmp)
            elif fmt == "savedmodel":
                model.export(tmp, format="tf_saved_model", verbose=False)
            else:
                model.export(tmp, format="onnx", verbose=False)
        if path.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
    return path


def load_artifact(path: str | os.PathLike, fmt: str) -> Callable[[np.ndarray], np.ndarray]:
    """Reload an export as a function: images (n, s, s, 3) in [0, 255] -> (n, 7) float64.

    Each format is reloaded the way a user would: `keras.saving.load_model`, the SavedModel's
    "serve" endpoint through `tf.saved_model.load`, an onnxruntime session.

    Raises:
        ConfigError: ONNX without onnxruntime.
    """
    path = Path(path)
    if check_format(fmt) == "keras":
        import keras

        import zoo.preprocessing  # noqa: F401 - registers the layer the torch/caffe modes keep

        model = keras.saving.load_model(path)
        return lambda images: np.asarray(model(np.asarray(images, dtype="float32"),
                                               training=False), dtype=np.float64)
    if fmt == "savedmodel":
        import tensorflow as tf

        loaded = tf.saved_model.load(os.fspath(path))
        return lambda images: np.asarray(loaded.serve(np.asarray(images, dtype="float32")),
                                         dtype=np.float64)
    try:
        import onnxruntime
    except ModuleNotFoundError:
        raise ConfigError("reloading an ONNX export needs onnxruntime: pip install "
                          "'dermbench[export]' (or pip install onnxruntime)") from None
    session = onnxruntime.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda images: np.asarray(
        session.run(None, {name: np.asarray(images, dtype="float32")})[0], dtype=np.float64)


def verification_images(size: int, n: int = VERIFY_IMAGES, seed: int = 0) -> np.ndarray:
    """Fixed uint8 images (n, size, size, 3): smooth gradients plus noise, every value used."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, size)
    base = (ramp[:, None, None] + ramp[None, :, None]) / 2
    noise = rng.integers(-60, 61, (n, size, size, 3))
    return np.clip(base[None] + noise, 0, 255).astype(np.uint8)


def verify_artifact(trained: TrainedEntry, path: str | os.PathLike, fmt: str) -> float:
    """Reload an export and compare it with the network on `verification_images`.

    Returns:
        The largest absolute difference of a probability.

    Raises:
        ConfigError: ONNX without onnxruntime.
        RuntimeError: a difference above `VERIFY_TOLERANCE` (an export that does not compute
            what the network computes is a bug, not a user error).
    """
    images = verification_images(trained.image_size)
    expected = trained.predict(images)
    got = load_artifact(path, fmt)(images)
    diff = float(np.max(np.abs(got - expected)))
    if not diff <= VERIFY_TOLERANCE:
        raise RuntimeError(f"{path}: the reloaded {fmt} export differs from {trained.entry}'s "
                           f"network by {diff:.2e} (tolerance {VERIFY_TOLERANCE})")
    return diff


def export_entry(trained: TrainedEntry, out_dir: str | os.PathLike, fmt: str) -> tuple[Path, float]:
    """Export a trained entry in `fmt` into `out_dir` and check the file (module docstring).

    Args:
        trained: the loaded entry (training.trained.load_trained_entry).
        out_dir: export/<entry>/ of the run directory.
        fmt: "keras", "savedmodel" or "onnx".

    Returns:
        (the artifact's path, the largest difference found by `verify_artifact`).

    Raises:
        ConfigError: a format this installation cannot write or reload.
        RuntimeError: the reloaded export does not reproduce the network.
    """
    check_format_available(fmt)
    path = Path(out_dir) / artifact_name(fmt)
    write_artifact(portable_model(trained), path, fmt)
    return path, verify_artifact(trained, path, fmt)
