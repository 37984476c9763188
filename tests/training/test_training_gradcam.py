"""Grad-CAM (training/gradcam.py): the target layer, the maps, the overlays, both backends.

The maps are checked in this process (TensorFlow unless KERAS_BACKEND says otherwise) and, for
the same weights and images, under JAX in a subprocess (this file run as a script with
KERAS_BACKEND=jax): the two backends must draw the same maps. A hand-built net whose features
fire only where the image is bright checks that the map is where the evidence is (no flipped or
transposed grid) and that a class the evidence speaks against gets an empty map.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
QUADRANT_SIZE = 32
QUADRANTS = {"top-left": (0, 0), "top-right": (0, 1), "bottom-left": (1, 0),
             "bottom-right": (1, 1)}
# The backbones both backends are checked on, at their minimum sizes (random weights).
BACKEND_CASES = (("paper_cnn", 64), ("xception", 71))


# --- nets built for the tests --------------------------------------------------------------------

def quadrant_entry(sequential: bool = False):
    """A zoo-shaped net (preprocess, backbone, pool, dropout, logits, predictions) at 32 px: a
    4x4/4 convolution of ones without bias (an 8 x 8 grid that is positive exactly where the image
    is bright), global pooling, class 0 = +sum of the features, class 1 = -sum."""
    import keras

    from training.trained import TrainedEntry
    from zoo.preprocessing import Preprocess

    size = QUADRANT_SIZE
    conv = keras.layers.Conv2D(4, 4, strides=4, use_bias=False, kernel_initializer="ones",
                               activation="relu", name="conv")
    if sequential:  # a plugin backbone may be a Sequential
        backbone = keras.Sequential([keras.Input((size, size, 3)), conv], name="backbone")
    else:
        pixels = keras.Input((size, size, 3))
        backbone = keras.Model(pixels, conv(pixels), name="backbone")
    image = keras.Input((size, size, 3), name="image")
    x = backbone(Preprocess("unit", name="preprocess")(image))
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(0.0, name="dropout")(x)
    kernel = np.zeros((4, 7), dtype="float32")
    kernel[:, 0], kernel[:, 1] = 1.0, -1.0
    x = keras.layers.Dense(7, name="logits", kernel_initializer=keras.initializers.Constant(kernel))(x)
    out = keras.layers.Activation("softmax", name="predictions")(x)
    net = keras.Model(image, out)
    return TrainedEntry(entry="paper_cnn", backbone="paper_cnn", kind="baseline", image_size=size,
                        resize_mode="square", preprocessing="unit", net=net,
                        weights=Path("none"))


def quadrant_image(quadrant: str) -> np.ndarray:
    """A black 32 px image with one bright quadrant."""
    row, col = QUADRANTS[quadrant]
    half = QUADRANT_SIZE // 2
    image = np.zeros((QUADRANT_SIZE, QUADRANT_SIZE, 3), dtype=np.uint8)
    image[row * half:(row + 1) * half, col * half:(col + 1) * half] = 255
    return image


def quadrant_shares(heat: np.ndarray) -> dict[str, float]:
    """The share of a map's mass in each quadrant."""
    half = heat.shape[0] // 2
    total = float(heat.sum())
    return {name: float(heat[r * half:(r + 1) * half, c * half:(c + 1) * half].sum()) / total
            for name, (r, c) in QUADRANTS.items()}


def zoo_entry(name: str, size: int, weights: str | None = None):
    """A zoo net with random weights (or `weights` loaded) as a TrainedEntry."""
    import zoo
    from training.trained import TrainedEntry

    net = zoo.create_backbone(name, 7, input_shape=(size, size, 3), weights=None)
    if weights:
        net.load_weights(weights)
    config = zoo.get_config(name)
    return TrainedEntry(entry=name, backbone=name, kind=config.kind, image_size=size,
                        resize_mode="square", preprocessing=config.preprocessing, net=net,
                        weights=Path(weights or "none"))


def random_images(size: int, n: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


# --- in this process -----------------------------------------------------------------------------

@pytest.mark.parametrize("quadrant", sorted(QUADRANTS))
def test_map_is_where_the_evidence_is(quadrant):
    from training.gradcam import gradcam_maps

    trained = quadrant_entry()
    maps = gradcam_maps(trained, quadrant_image(quadrant)[None], np.array([0]))
    assert maps.shape == (1, QUADRANT_SIZE, QUADRANT_SIZE)
    shares = quadrant_shares(maps[0])
    assert shares[quadrant] > 0.9, shares
    assert maps[0].max() == pytest.approx(1.0)
    # class 1's score falls where the image is bright: no cell speaks for it
    against = gradcam_maps(trained, quadrant_image(quadrant)[None], np.array([1]))
    assert np.array_equal(against, np.zeros_like(against))


@pytest.mark.parametrize("sequential", [False, True])
def test_target_layer_of_the_quadrant_net(sequential):
    from training.gradcam import cam_model, gradcam_maps

    trained = quadrant_entry(sequential)
    model = cam_model(trained)
    assert (model.layer, model.grid) == ("conv", (8, 8))
    maps = gradcam_maps(trained, quadrant_image("top-right")[None], np.array([0]))
    assert quadrant_shares(maps[0])["top-right"] > 0.9


def test_a_subclassed_backbone_has_no_gradcam():
    import keras

    from training.gradcam import GradCamError, cam_model
    from training.trained import TrainedEntry

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__(name="backbone")
            self.conv = keras.layers.Conv2D(4, 4, strides=4)

        def call(self, x):
            return self.conv(x)

    image = keras.Input((QUADRANT_SIZE, QUADRANT_SIZE, 3))
    x = keras.layers.Identity(name="preprocess")(image)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(Subclassed()(x))
    out = keras.layers.Dense(7, name="logits")(keras.layers.Dropout(0.0, name="dropout")(x))
    trained = TrainedEntry(entry="paper_cnn", backbone="paper_cnn", kind="baseline",
                           image_size=QUADRANT_SIZE, resize_mode="square", preprocessing="unit",
                           net=keras.Model(image, out), weights=Path("none"))
    with pytest.raises(GradCamError, match="subclassed Keras model"):
        cam_model(trained)


@pytest.mark.parametrize("size, layer, grid", [
    (224, "block6_conv", (7, 7)),   # the last convolution, before the final 2x2 pooling
    (64, "block4_conv", (8, 8)),    # the smoke size: the last blocks are 2 x 2 and 1 x 1
])
def test_paper_cnn_target_layer(size, layer, grid):
    from training.gradcam import cam_model

    model = cam_model(zoo_entry("paper_cnn", size))
    assert (model.layer, model.grid) == (layer, grid)


@pytest.mark.parametrize("name, size", BACKEND_CASES)
def test_maps_shape_range_and_default_class(name, size):
    from training.gradcam import gradcam_maps

    trained = zoo_entry(name, size)
    images = random_images(size)
    maps = gradcam_maps(trained, images)
    assert maps.shape == (3, size, size) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0.0 and maps.max() <= 1.0
    assert all(m.max() == pytest.approx(1.0) or m.max() == 0.0 for m in maps)
    predicted = np.argmax(trained.predict(images), axis=1)
    assert np.array_equal(maps, gradcam_maps(trained, images, predicted))


def test_batches_do_not_change_the_maps():
    from training.gradcam import gradcam_maps

    trained = zoo_entry("paper_cnn", 64)
    images = random_images(64, n=5)
    classes = np.array([0, 1, 2, 3, 4])
    np.testing.assert_allclose(gradcam_maps(trained, images, classes, batch_size=2),
                               gradcam_maps(trained, images, classes, batch_size=5), atol=1e-5)


@pytest.mark.parametrize("images, classes, match", [
    (np.zeros((2, 32, 32, 3), np.uint8), None, r"needs RGB images of 64x64"),
    (np.zeros((2, 64, 64), np.uint8), None, r"got shape \(2, 64, 64\)"),
    (np.zeros((2, 64, 64, 3), np.uint8), np.array([0]), r"must hold 2 class indices"),
    (np.zeros((2, 64, 64, 3), np.uint8), np.array([0, 7]), r"in 0\.\.6"),
])
def test_bad_inputs(images, classes, match):
    from training.gradcam import GradCamError, gradcam_maps

    with pytest.raises(GradCamError, match=match):
        gradcam_maps(zoo_entry("paper_cnn", 64), images, classes)


def test_no_maps_of_no_images():
    from training.gradcam import gradcam_maps

    assert gradcam_maps(zoo_entry("paper_cnn", 64), np.zeros((0, 64, 64, 3), np.uint8)).shape \
        == (0, 64, 64)


@pytest.mark.parametrize("entry, says", [
    ("inception_resnet_v2+svm", "SVM on frozen backbone features"),
    ("svm", "SVM"),
    ("soft_voting", "see the Grad-CAM of each CNN member"),
    ("stacking", "see the Grad-CAM of each CNN member"),
    ("ensemble", "see the Grad-CAM of each CNN member"),
    ("xception+tta8", "see the Grad-CAM of xception"),
    ("my_model", "not a CNN entry of the zoo"),
])
def test_entries_without_gradcam_say_why(entry, says):
    from training.gradcam import gradcam_unavailable_reason

    assert says in gradcam_unavailable_reason(entry)


@pytest.mark.parametrize("entry", ["inception_v3", "resnext101", "inception_resnet_v2",
                                   "xception", "nasnet_large", "paper_cnn", "convnext_tiny",
                                   "backbone", "baseline"])
def test_cnn_entries_have_gradcam(entry):
    from training.gradcam import gradcam_unavailable_reason

    assert gradcam_unavailable_reason(entry) is None


@pytest.mark.parametrize("paths, names", [
    (["a/x.jpg", "b/y.png"], ["x.png", "y.png"]),
    (["a/x.jpg", "b/x.jpg", "c/y.png"], None),  # x twice: both get a hash of their path
    (["a/X.jpg", "a/x.png"], None),             # case-insensitive file systems
    (["a/x.jpg", "a/x.jpg"], None),             # the same path twice: numbered
])
def test_overlay_names_are_distinct(paths, names):
    from training.gradcam import overlay_names

    got = overlay_names(paths)
    assert len({n.lower() for n in got}) == len(paths)
    assert all(n.endswith(".png") for n in got)
    if names is not None:
        assert got == names
    assert got == overlay_names(paths)  # deterministic


def test_write_overlays_writes_one_readable_png_per_image(tmp_path):
    from PIL import Image

    from training.gradcam import write_overlays

    trained = zoo_entry("paper_cnn", 64)
    images = random_images(64)
    proba = trained.predict(images)
    paths = [tmp_path / "in" / "a" / "lesion.jpg", tmp_path / "in" / "b" / "lesion.jpg",
             tmp_path / "in" / "other.png"]
    written = write_overlays(trained, images, paths, tmp_path / "gradcam", proba)
    assert len(written) == 3 and len(set(written)) == 3
    assert [p.parent for p in written] == [tmp_path / "gradcam"] * 3
    assert written[2].name == "other.png"
    for path in written:
        with Image.open(path) as png:
            assert png.format == "PNG" and png.width > 200 and png.height > 100


def test_write_overlays_checks_lengths(tmp_path):
    from training.gradcam import GradCamError, write_overlays

    with pytest.raises(GradCamError, match="one path and one row of 7 probabilities"):
        write_overlays(zoo_entry("paper_cnn", 64), random_images(64), ["a.jpg"], tmp_path,
                       np.full((3, 7), 1 / 7))
    assert not any(tmp_path.iterdir())


# --- under JAX -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_jax_draws_the_same_maps(tmp_path):
    """The same weights and images under JAX (subprocess) give the maps TensorFlow gives here."""
    pytest.importorskip("jax", reason="KERAS_BACKEND=jax needs jax (pip install -e .[jax])")
    from training.gradcam import cam_model, gradcam_maps

    here = {}
    for name, size in BACKEND_CASES:
        trained = zoo_entry(name, size)
        weights = tmp_path / f"{name}.weights.h5"
        trained.net.save_weights(weights)
        images = random_images(size, seed=1)
        np.save(tmp_path / f"{name}.npy", images)
        here[name] = (gradcam_maps(trained, images, np.array([0, 3, 6])),
                      cam_model(trained).grid)
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    report = tmp_path / "jax.json"
    result = subprocess.run([sys.executable, __file__, str(tmp_path), str(report)], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0 and report.is_file(), result.stderr[-4000:]
    jax = json.loads(report.read_text())
    assert jax["backend"] == "jax" and not jax["tensorflow"]
    for name, _ in BACKEND_CASES:
        maps, grid = here[name]
        assert tuple(jax[name]["grid"]) == grid
        np.testing.assert_allclose(np.load(tmp_path / f"{name}-jax.npy"), maps, atol=2e-3)
    for quadrant in QUADRANTS:
        assert jax["quadrants"][quadrant][quadrant] > 0.9


def _under_jax(folder: str) -> dict:
    """What the subprocess computes (KERAS_BACKEND=jax): the maps of the weights and images the
    test saved in `folder`, and the quadrant net's shares."""
    import keras

    from training.gradcam import cam_model, gradcam_maps

    out: dict = {"backend": keras.backend.backend()}
    for name, size in BACKEND_CASES:
        trained = zoo_entry(name, size, str(Path(folder) / f"{name}.weights.h5"))
        images = np.load(Path(folder) / f"{name}.npy")
        np.save(Path(folder) / f"{name}-jax.npy",
                gradcam_maps(trained, images, np.array([0, 3, 6])))
        out[name] = {"grid": list(cam_model(trained).grid)}
    trained = quadrant_entry()
    out["quadrants"] = {q: quadrant_shares(gradcam_maps(trained, quadrant_image(q)[None],
                                                        np.array([0]))[0]) for q in QUADRANTS}
    out["tensorflow"] = "tensorflow" in sys.modules
    return out


if __name__ == "__main__":  # the subprocess: python test_training_gradcam.py FOLDER REPORT
    Path(sys.argv[2]).write_text(json.dumps(_under_jax(sys.argv[1])))
