"""The normalisation layer a grafted or exported model starts with (its donor's preprocessing)."""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn


class Normalize(nn.Module):
    """``(x - mean) / std`` on (N, 3, H, W) tensors in [0, 1]; buffers only, no parameters."""

    def __init__(self, mean: Tuple[float, ...], std: Tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std
