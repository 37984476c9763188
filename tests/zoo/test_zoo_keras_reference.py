"""The seven modern backbones compute what keras.applications computes with ImageNet weights.

For each one, a zoo model (random weights, every BatchNorm/LayerNorm/Normalization statistic
randomised so that a wrong scaling shows) and the keras.applications model Keras builds for
`weights="imagenet"` (`pooling="avg"`) get the same weights. Raw RGB 0-255 through our chain (the
"preprocess" layer and the backbone) must equal Keras's `preprocess_input` + its model, both at
the input of the first convolution (what the pretrained weights see) and at the pooled features.

Keras's ImageNet graph differs from its `weights=None` graph only for EfficientNetB3 (an extra
Rescaling); there the weights go through a legacy no-top .h5 file, the official files' format,
answered to Keras's download request (`file_utils.get_file`), which must name the file, URL and
hash of our config. The other six get the weights with `set_weights` (same order, same shapes, as
the legacy loader needs), which is faster.
"""

from __future__ import annotations

import h5py
import keras
import numpy as np
import pytest
from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group
from keras.src.utils import file_utils

import zoo
from zoo.factory import create_backbone

APPLICATIONS = {
    "convnext_tiny": (keras.applications.ConvNeXtTiny, keras.applications.convnext),
    "convnext_small": (keras.applications.ConvNeXtSmall, keras.applications.convnext),
    "efficientnet_v2_s": (keras.applications.EfficientNetV2S, keras.applications.efficientnet_v2),
    "efficientnet_b3": (keras.applications.EfficientNetB3, keras.applications.efficientnet),
    "densenet121": (keras.applications.DenseNet121, keras.applications.densenet),
    "resnet50_v2": (keras.applications.ResNet50V2, keras.applications.resnet_v2),
    "mobilenet_v3_large": (keras.applications.MobileNetV3Large, keras.applications.mobilenet_v3),
}
SIZE = 32


def test_the_seven_are_the_modern_group():
    assert sorted(APPLICATIONS) == sorted(
        name for name in zoo.list_backbones() if zoo.get_config(name).group == "modern"
    )


def _randomise_statistics(model: keras.Model, seed: int) -> None:
    """Random, plausible values for every normalisation statistic and scale (kernels keep their
    random initialisation): moving/Normalization means and offsets around 0, variances and
    scales around 1 (ConvNeXt's layer scales start at 1e-6, which would hide its blocks)."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        if not keras.backend.is_float_dtype(variable.dtype):
            continue  # Normalization's sample count
        path, shape = variable.path, tuple(variable.shape)
        if path.endswith(("variance", "gamma")) or "layer_scale" in path:
            variable.assign(rng.uniform(0.5, 1.5, shape).astype("float32"))
        elif path.endswith(("mean", "beta")):
            variable.assign(rng.normal(0.0, 0.2, shape).astype("float32"))
    for layer in model.layers:
        if hasattr(layer, "finalize_state"):  # Normalization reads its variables only then
            layer.finalize_state()


def _first_convolution_input(model: keras.Model) -> tuple[int, keras.Model]:
    """(index in the operations, a model from `model`'s input to what its first convolution
    (or ConvNeXt's stem) receives): the preprocessed image as the pretrained weights see it."""
    for index, operation in enumerate(model.operations):
        if isinstance(operation, keras.layers.Conv2D | keras.Model):
            return index, keras.Model(model.input, operation.input)
    raise AssertionError(f"{model.name} has no convolution")


@pytest.fixture()
def keras_download(monkeypatch):
    """Answer keras.applications' weight downloads with a local file; record the requests."""
    state: dict = {"requests": []}

    def get_file(fname=None, origin=None, **kwargs):
        state["requests"].append({"fname": fname, "origin": origin, **kwargs})
        return str(state["path"])

    monkeypatch.setattr(file_utils, "get_file", get_file)
    return state


def _keras_reference(name: str, backbone: keras.Model, tmp_path, keras_download) -> keras.Model:
    """Keras's model for ImageNet weights, holding `backbone`'s weights."""
    application, _ = APPLICATIONS[name]
    shape = (SIZE, SIZE, 3)
    if name != "efficientnet_b3":
        reference = application(include_top=False, weights=None, input_shape=shape,
                                pooling="avg")
        reference.set_weights(backbone.get_weights())
        return reference
    keras_download["path"] = tmp_path / f"random_{name}.h5"
    with h5py.File(keras_download["path"], "w") as handle:
        save_weights_to_hdf5_group(handle, backbone)
    reference = application(include_top=False, weights="imagenet", input_shape=shape,
                            pooling="avg")
    config = zoo.get_config(name)
    (request,) = keras_download["requests"]
    assert (request["fname"], request["origin"], request["file_hash"]) == (
        config.weights_file, config.weights_url, config.weights_hash)
    return reference


@pytest.mark.slow
@pytest.mark.parametrize("name", list(APPLICATIONS))
def test_zoo_chain_equals_keras_preprocess_input_and_imagenet_model(name, tmp_path,
                                                                      keras_download):
    _, module = APPLICATIONS[name]
    keras.utils.set_random_seed(3)
    ours = create_backbone(name, 7, input_shape=SIZE)
    backbone = ours.get_layer("backbone")
    _randomise_statistics(backbone, seed=4)
    reference = _keras_reference(name, backbone, tmp_path, keras_download)

    pixels = np.random.default_rng(5).uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")
    keras_input = module.preprocess_input(pixels.copy())

    # What the first convolution sees: our "preprocess" layer + the backbone's own first layers
    # against Keras's preprocess_input + its ImageNet graph's first layers.
    index, ours_stem = _first_convolution_input(backbone)
    reference_index, reference_stem = _first_convolution_input(reference)
    assert index == reference_index
    seen = keras.ops.convert_to_numpy(ours_stem(ours.get_layer("preprocess")(pixels)))
    expected_seen = keras.ops.convert_to_numpy(reference_stem(keras_input))
    np.testing.assert_allclose(seen, expected_seen, rtol=1e-5, atol=1e-5)

    # The whole chain to the pooled features (same graph, same weights), and the 7-class model
    # predicting at the minimum size: float32 probabilities summing to 1.
    both = keras.Model(ours.input, [ours.get_layer("pool").output, ours.output])
    got, probabilities = (keras.ops.convert_to_numpy(out)
                          for out in both(pixels, training=False))
    expected = keras.ops.convert_to_numpy(reference(keras_input, training=False))
    scale = np.abs(expected).max()
    assert scale > 1e-3 and np.isfinite(expected).all()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * scale)
    assert probabilities.shape == (2, 7) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)


def test_efficientnet_imagenet_rescaling_constant_is_keras_one():
    from keras.src.applications.efficientnet import IMAGENET_STDDEV_RGB

    from zoo.keras_apps import EFFICIENTNET_STDDEV_RGB

    assert tuple(IMAGENET_STDDEV_RGB) == EFFICIENTNET_STDDEV_RGB
