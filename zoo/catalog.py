"""The six registered backbones: their configs (URLs, hashes, sizes, papers) and lazy builders.

The Keras-applications URLs, cache file names and md5 hashes are the ones the installed Keras
uses for its `include_top=False` files (keras/src/applications/*.py), so a file that Keras itself
cached is found and verified here too.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from zoo.registry import BackboneConfig, Builder, register

_KERAS_APPS = "https://storage.googleapis.com/tensorflow/keras-applications/"
TIMM_RESNEXT_URL = (
    "https://huggingface.co/timm/resnext101_32x8d.tv_in1k/resolve/main/model.safetensors"
)
KERAS_LICENCE = "Apache-2.0 (Keras applications code and ImageNet weights)"


def _lazy(module: str, function: str) -> Callable[..., Any]:
    """A callable that imports `module` (and so Keras) only when first called."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), function)(*args, **kwargs)

    call.__name__ = function
    call.__qualname__ = f"{module}.{function}"
    return call


def _keras_app_builder(name: str) -> Builder:
    return Builder(
        base=lambda input_shape: _lazy("zoo.keras_apps", "build_keras_app")(name, input_shape),
        load_weights=_lazy("zoo.keras_apps", "load_keras_weights"),
    )


CONFIGS: tuple[BackboneConfig, ...] = (
    BackboneConfig(
        name="inception_v3",
        display_name="InceptionV3",
        input_size=299,
        min_size=75,
        preprocessing="tf",
        weights_url=_KERAS_APPS
        + "inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_file="inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_hash="bcbd6486424b2319ff4ef7d526e38f63",
        hash_algorithm="md5",
        weights_format="keras_h5",
        params_1000=23_851_784,
        paper="Szegedy et al., Rethinking the Inception Architecture for Computer Vision, "
        "CVPR 2016 (arXiv:1512.00567)",
        licence=KERAS_LICENCE,
        pretrained=True,
    ),
    BackboneConfig(
        name="resnext101",
        display_name="ResNeXt101 (32x8d)",
        input_size=224,
        min_size=32,
        preprocessing="torch",
        weights_url=TIMM_RESNEXT_URL,
        weights_file="resnext101_32x8d.tv_in1k.safetensors",
        # The hub publishes no hash beside the file; the loader checks every key and shape.
        weights_hash=None,
        hash_algorithm=None,
        weights_format="torchvision_safetensors",
        params_1000=88_791_336,
        paper="Xie et al., Aggregated Residual Transformations for Deep Neural Networks, "
        "CVPR 2017 (arXiv:1611.05431)",
        licence="BSD-3-Clause (torchvision weights via the timm hub); port: Apache-2.0",
        pretrained=True,
    ),
    BackboneConfig(
        name="inception_resnet_v2",
        display_name="InceptionResNetV2",
        input_size=299,
        min_size=75,
        preprocessing="tf",
        weights_url=_KERAS_APPS
        + "inception_resnet_v2/inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_file="inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_hash="d19885ff4a710c122648d3b5c3b684e4",
        hash_algorithm="md5",
        weights_format="keras_h5",
        params_1000=55_873_736,
        paper="Szegedy et al., Inception-v4, Inception-ResNet and the Impact of Residual "
        "Connections on Learning, AAAI 2017 (arXiv:1602.07261)",
        licence=KERAS_LICENCE,
        pretrained=True,
    ),
    BackboneConfig(
        name="xception",
        display_name="Xception",
        input_size=299,
        min_size=71,
        preprocessing="tf",
        weights_url=_KERAS_APPS + "xception/xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_file="xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_hash="b0042744bf5b25fce3cb969f33bebb97",
        hash_algorithm="md5",
        weights_format="keras_h5",
        params_1000=22_910_480,
        paper="Chollet, Xception: Deep Learning with Depthwise Separable Convolutions, "
        "CVPR 2017 (arXiv:1610.02357)",
        licence="Apache-2.0 (Keras applications code); MIT (Xception ImageNet weights)",
        pretrained=True,
    ),
    BackboneConfig(
        name="nasnet_large",
        display_name="NASNetLarge",
        input_size=331,
        min_size=32,
        preprocessing="tf",
        weights_url=_KERAS_APPS + "nasnet/NASNet-large-no-top.h5",
        # Keras caches this one under a name that differs from the URL's; a --weights-dir
        # folder may hold either (zoo.weights looks for both).
        weights_file="nasnet_large_no_top.h5",
        weights_hash="d81d89dc07e6e56530c4e77faddd61b5",
        hash_algorithm="md5",
        weights_format="keras_h5",
        params_1000=88_949_818,
        paper="Zoph et al., Learning Transferable Architectures for Scalable Image Recognition, "
        "CVPR 2018 (arXiv:1707.07012)",
        licence=KERAS_LICENCE,
        pretrained=True,
    ),
    BackboneConfig(
        name="paper_cnn",
        display_name="The source paper's small CNN (6 conv blocks)",
        input_size=224,
        min_size=64,
        preprocessing="unit",
        weights_url=None,
        weights_file=None,
        weights_hash=None,
        hash_algorithm=None,
        weights_format=None,
        params_1000=2_505_480,
        paper="the source study's small CNN: six 3x3 conv blocks (32, 32, 64, 64, 128, 128 "
        "filters) each followed by 2x2 max pooling, then dense 1024, 512, classes",
        licence="Apache-2.0 (this project)",
        pretrained=False,
        kind="baseline",
    ),
)
# The source study's order of its backbones (and the entries' order in a run).
STUDY_ORDER: tuple[str, ...] = tuple(config.name for config in CONFIGS)

_BUILDERS: dict[str, Builder] = {
    "inception_v3": _keras_app_builder("inception_v3"),
    "resnext101": Builder(
        base=_lazy("zoo.resnext", "build_resnext101"),
        load_weights=_lazy("zoo.resnext", "load_torchvision_safetensors"),
    ),
    "inception_resnet_v2": _keras_app_builder("inception_resnet_v2"),
    "xception": _keras_app_builder("xception"),
    "nasnet_large": _keras_app_builder("nasnet_large"),
    "paper_cnn": Builder(
        base=_lazy("zoo.paper_cnn", "build_paper_cnn"),
        pool=_lazy("zoo.paper_cnn", "build_paper_head"),
    ),
}


def register_all() -> None:
    """Register the six backbones of the study (called once when `zoo` is imported)."""
    for config in CONFIGS:
        register(config, _BUILDERS[config.name])
