"""A tiny CNN donor with hand-listed expected taps, shared by the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn


class Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x):
        return torch.relu(x + self.bn(self.conv(x)))


class TinyCNN(nn.Module):
    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),   # tap 1: features.2
            nn.MaxPool2d(2),                                              # tap 2: features.3
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),                    # tap 3: features.5
            Residual(16),                                                 # tap 4: features.6
            nn.MaxPool2d(2),                                              # tap 5: features.7
            nn.Conv2d(16, 32, 3, padding=1),                              # tap 6: features.8
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


TINY_TAPS = ["features.2", "features.3", "features.5", "features.6", "features.7", "features.8"]
TINY_CHANNELS = [8, 8, 16, 16, 16, 32]


def tiny_donor(seed: int = 0, image_size: int = 32, num_classes: int = 3):
    import graftsearch as gs

    torch.manual_seed(seed)
    model = TinyCNN(num_classes)
    # non-trivial BatchNorm statistics so eval mode is not an identity
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return gs.Donor.from_module(model, name="tiny", image_size=image_size,
                                mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def colour_folder(root: Path, *, classes=3, per_class=15, side=24, seed=0, signal=True) -> Path:
    """Images whose class is their dominant colour, with noise (or pure noise: signal=False)."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        folder = root / f"class_{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            base = np.zeros((side, side, 3))
            base[..., c % 3] = 0.6 if signal else 0.0
            pixels = np.clip(base + rng.normal(0.2, 0.25, base.shape), 0, 1)
            Image.fromarray((pixels * 255).astype("uint8")).save(folder / f"{i:03d}.png")
    return root
