"""The registered backbones: their configs (URLs, hashes, sizes, papers) and lazy builders.

Group "paper": the source study's five backbones and its small CNN (`STUDY_ORDER`). Group
"modern": seven later networks from keras.applications under one protocol beside them
(`MODERN_ORDER`): the ISIC 2019/2020 winners' EfficientNets, the classic dermatology baseline
DenseNet, the modern CNN ConvNeXt, ResNetV2 and a mobile network.

The Keras-applications URLs, cache file names and md5/sha256 hashes are the ones the installed
Keras uses for its `include_top=False` files (keras/src/applications/*.py, checked by
tests/zoo/test_zoo_weights.py), so a file that Keras itself cached is found and verified here too.
Parameter counts: the backbone without its top, global average pooling and a 1000-way Dense, as
Keras counts them (every weight, BatchNorm statistics included); for all but MobileNetV3 that is
Keras's own `include_top=True` count (its top adds a 1x1 1280-channel convolution).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from zoo.registry import MODERN_GROUP, PAPER_GROUP, BackboneConfig, Builder, register

_KERAS_APPS = "https://storage.googleapis.com/tensorflow/keras-applications/"
# EfficientNet (v1) files live in another bucket folder (keras/src/applications/efficientnet.py).
_KERAS_APPS_EFFICIENTNET = "https://storage.googleapis.com/keras-applications/"
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


def _keras_app_builder(name: str, pools_itself: bool = False) -> Builder:
    return Builder(
        base=lambda input_shape: _lazy("zoo.keras_apps", "build_keras_app")(name, input_shape),
        pool=_lazy("zoo.keras_apps", "identity_pool") if pools_itself else None,
        load_weights=_lazy("zoo.keras_apps", "load_keras_weights"),
    )


def _modern(
    name: str,
    display_name: str,
    input_size: int,
    preprocessing: str,
    url: str,
    weights_hash: str,
    params_1000: int,
    paper: str,
    family: str,
    licence: str = KERAS_LICENCE,
) -> BackboneConfig:
    """A keras.applications backbone of the "modern" group (minimum size 32, as Keras allows)."""
    return BackboneConfig(
        name=name,
        display_name=display_name,
        input_size=input_size,
        min_size=32,
        preprocessing=preprocessing,
        weights_url=url,
        weights_file=url.rsplit("/", 1)[-1],
        weights_hash=weights_hash,
        hash_algorithm="sha256" if len(weights_hash) == 64 else "md5",
        weights_format="keras_h5",
        params_1000=params_1000,
        paper=paper,
        licence=licence,
        pretrained=True,
        family=family,
        group=MODERN_GROUP,
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
        family="Inception",
        group=PAPER_GROUP,
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
        family="ResNet",
        group=PAPER_GROUP,
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
        family="Inception",
        group=PAPER_GROUP,
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
        family="Inception",
        group=PAPER_GROUP,
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
        family="NASNet",
        group=PAPER_GROUP,
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
        family="paper CNN",
        group=PAPER_GROUP,
    ),
)
# The source study's order of its backbones (and the entries' order in a run).
STUDY_ORDER: tuple[str, ...] = tuple(config.name for config in CONFIGS)

_CONVNEXT_PAPER = "Liu et al., A ConvNet for the 2020s, CVPR 2022 (arXiv:2201.03545)"
_CONVNEXT_LICENCE = "Apache-2.0 (Keras applications code); MIT (ConvNeXt ImageNet weights)"
MODERN_CONFIGS: tuple[BackboneConfig, ...] = (
    _modern(
        "convnext_tiny",
        "ConvNeXt-T",
        224,
        "internal",
        _KERAS_APPS + "convnext/convnext_tiny_notop.h5",
        "d547c096cabd03329d7be5562c5e14798aa39ed24b474157cef5e85ab9e49ef1",
        28_589_128,
        _CONVNEXT_PAPER,
        "ConvNeXt",
        _CONVNEXT_LICENCE,
    ),
    _modern(
        "convnext_small",
        "ConvNeXt-S",
        224,
        "internal",
        _KERAS_APPS + "convnext/convnext_small_notop.h5",
        "6fc8009faa2f00c1c1dfce59feea9b0745eb260a7dd11bee65c8e20843da6eab",
        50_223_688,
        _CONVNEXT_PAPER,
        "ConvNeXt",
        _CONVNEXT_LICENCE,
    ),
    _modern(
        "efficientnet_v2_s",
        "EfficientNetV2-S",
        384,
        "internal",
        _KERAS_APPS + "efficientnet_v2/efficientnetv2-s_notop.h5",
        "af0682fb74e8c54910f2d4393339c070",
        21_612_360,
        "Tan and Le, EfficientNetV2: Smaller Models and Faster Training, ICML 2021 "
        "(arXiv:2104.00298)",
        "EfficientNet",
    ),
    _modern(
        "efficientnet_b3",
        "EfficientNet-B3",
        300,
        "internal",
        _KERAS_APPS_EFFICIENTNET + "efficientnetb3_notop.h5",
        "af6d107764bb5b1abb91932881670226",
        12_320_535,
        "Tan and Le, EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks, "
        "ICML 2019 (arXiv:1905.11946)",
        "EfficientNet",
    ),
    _modern(
        "densenet121",
        "DenseNet-121",
        224,
        "torch",
        _KERAS_APPS + "densenet/densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "30ee3e1110167f948a6b9946edeeb738",
        8_062_504,
        "Huang et al., Densely Connected Convolutional Networks, CVPR 2017 (arXiv:1608.06993)",
        "DenseNet",
        "Apache-2.0 (Keras applications code); BSD-3-Clause (DenseNet ImageNet weights, "
        "ported from the authors' release)",
    ),
    _modern(
        "resnet50_v2",
        "ResNet50V2",
        224,
        "tf",
        _KERAS_APPS + "resnet/resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "fac2f116257151a9d068a22e544a4917",
        25_613_800,
        "He et al., Identity Mappings in Deep Residual Networks, ECCV 2016 (arXiv:1603.05027)",
        "ResNet",
    ),
    _modern(
        "mobilenet_v3_large",
        "MobileNetV3-Large",
        224,
        "internal",
        _KERAS_APPS + "mobilenet_v3/weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",
        "07fb09a5933dd0c8eaafa16978110389",
        3_957_352,
        "Howard et al., Searching for MobileNetV3, ICCV 2019 (arXiv:1905.02244)",
        "MobileNet",
    ),
)
MODERN_ORDER: tuple[str, ...] = tuple(config.name for config in MODERN_CONFIGS)

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
    **{
        name: _keras_app_builder(name, pools_itself=name.startswith("convnext"))
        for name in MODERN_ORDER
    },
}


def register_all() -> None:
    """Register the study's six, then the seven modern backbones (once, when `zoo` is
    imported)."""
    for config in (*CONFIGS, *MODERN_CONFIGS):
        register(config, _BUILDERS[config.name])
