#!/usr/bin/env python3
"""Make the reduced-ResNeXt fixture that proves the Keras port (zoo/resnext.py) numerically.

Needs torch + torchvision (not dependencies of dermbench; run once in a scratch venv):

    python3 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 safetensors numpy
    /tmp/torchvenv/bin/python tools/make_resnext_fixture.py

It builds a small ResNeXt from torchvision's own `ResNet`, `Bottleneck` and `_make_layer`
(torchvision layout and key names, stride on the grouped 3x3 convolution), with narrower stages
so the file stays small, random weights and random BatchNorm statistics (so BN matters), in eval
mode. Two seeded raw RGB images (uint8, 0-255, 70x70: odd feature-map sizes exercise the
padding) are preprocessed the torchvision way (x/255, ImageNet mean/std) and run through it.
Written to tests/zoo/fixtures/:
    resnext_tiny.safetensors  the float32 state dict (incl. num_batches_tracked, as torch saves it)
    resnext_tiny_io.npz       images (raw uint8 NHWC), logits, probabilities (softmax of fc)
    resnext_tiny.json         the architecture, so the test builds the same Keras model
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet

OUT = Path(__file__).resolve().parents[1] / "tests" / "zoo" / "fixtures"
CONFIG = {
    "layers": [1, 2, 1, 1],
    "groups": 4,
    "width_per_group": 16,
    "stage_planes": [8, 16, 32, 64],
    "stem_width": 16,
    "num_classes": 7,
    "image_size": 70,
    "batch": 2,
    "seed": 1234,
    "input": "raw RGB uint8 0-255, NHWC; the reference applied x/255, ImageNet mean/std",
    "torch_version": torch.__version__,
}


def build_reference() -> ResNet:
    """A reduced ResNeXt in the torchvision layout (same modules, narrower stages)."""
    model = ResNet(
        Bottleneck,
        CONFIG["layers"],
        num_classes=CONFIG["num_classes"],
        groups=CONFIG["groups"],
        width_per_group=CONFIG["width_per_group"],
    )
    stem = CONFIG["stem_width"]
    model.conv1 = nn.Conv2d(3, stem, kernel_size=7, stride=2, padding=3, bias=False)
    model.bn1 = nn.BatchNorm2d(stem)
    model.inplanes = stem
    planes = CONFIG["stage_planes"]
    model.layer1 = model._make_layer(Bottleneck, planes[0], CONFIG["layers"][0])
    for index in range(1, 4):
        layer = model._make_layer(Bottleneck, planes[index], CONFIG["layers"][index], stride=2)
        setattr(model, f"layer{index + 1}", layer)
    model.fc = nn.Linear(planes[3] * Bottleneck.expansion, CONFIG["num_classes"])
    return model


def randomise(model: nn.Module, generator: torch.Generator) -> None:
    """Random weights everywhere, and BN statistics/affine far from the identity."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.copy_(
                    torch.randn(module.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5
                )
            elif isinstance(module, nn.BatchNorm2d):
                shape = module.weight.shape
                module.weight.copy_(0.5 + torch.rand(shape, generator=generator))
                module.bias.copy_(0.2 * torch.randn(shape, generator=generator))
                module.running_mean.copy_(0.3 * torch.randn(shape, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(shape, generator=generator))
                module.num_batches_tracked.fill_(100)


def scale_classifier(model: ResNet, inputs: torch.Tensor, generator: torch.Generator) -> None:
    """Random fc weights scaled so the logits spread over a few units: unsaturated softmax."""
    features = nn.Sequential(*list(model.children())[:-1])
    with torch.no_grad():
        pooled = torch.flatten(features(inputs), 1)
        scale = 1.5 / (pooled.std() * pooled.shape[1] ** 0.5)
        model.fc.weight.copy_(scale * torch.randn(model.fc.weight.shape, generator=generator))
        model.fc.bias.copy_(0.1 * torch.randn(model.fc.bias.shape, generator=generator))


def main() -> None:
    torch.manual_seed(CONFIG["seed"])
    generator = torch.Generator().manual_seed(CONFIG["seed"])
    model = build_reference()
    randomise(model, generator)
    model.eval()
    rng = np.random.default_rng(CONFIG["seed"])
    size = CONFIG["image_size"]
    images = rng.integers(0, 256, size=(CONFIG["batch"], size, size, 3), dtype=np.uint8)
    x = torch.from_numpy(images.astype(np.float32)).permute(0, 3, 1, 2) / 255.0
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    scale_classifier(model, (x - mean) / std, generator)
    with torch.no_grad():
        logits = model((x - mean) / std)
        probabilities = torch.softmax(logits, dim=1)

    OUT.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().contiguous() for key, value in model.state_dict().items()}
    state = {key: (v.float() if v.is_floating_point() else v) for key, v in state.items()}
    save_file(state, str(OUT / "resnext_tiny.safetensors"))
    np.savez_compressed(
        OUT / "resnext_tiny_io.npz",
        images=images,
        logits=logits.numpy().astype(np.float32),
        probabilities=probabilities.numpy().astype(np.float32),
    )
    (OUT / "resnext_tiny.json").write_text(json.dumps(CONFIG, indent=2) + "\n")
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"wrote {OUT} ({n_params:,} parameters)\nlogits:\n{logits.numpy()}\n"
        f"probabilities:\n{probabilities.numpy()}"
    )


if __name__ == "__main__":
    main()
