"""The one rule for a ``device`` setting: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""

from __future__ import annotations

import re

from graftsearch._utils.errors import ParameterError, param_message

DEVICE_HELP = "auto (CUDA when present), cpu or cuda[:N]"


def check_device(device: object) -> None:
    """Raise the user-facing error for anything but ``auto``, ``cpu`` or ``cuda[:N]``."""
    if not isinstance(device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise ParameterError(param_message("device", "'auto', 'cpu' or 'cuda' ('cuda:N')", device))


def resolve_device(device: str):
    """The torch device for a checked setting; ``auto`` is CUDA when present."""
    import torch

    check_device(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ParameterError(param_message("device", "'auto' or 'cpu' on a machine without CUDA",
                                           device, "Use `--device auto` (CUDA when present)."))
    return torch.device(device)
