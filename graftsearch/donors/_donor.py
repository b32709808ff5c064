"""A loaded donor: its network, preprocessing, taps and weight fingerprint."""

from __future__ import annotations

import hashlib
from typing import Dict, Optional, Sequence

import torch
from torch import nn

from graftsearch._utils.errors import ParameterError, param_message
from graftsearch.donors._preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing, check_image_size
from graftsearch.donors._spec import DonorSpec, weights_text
from graftsearch.taps._discovery import discover_taps
from graftsearch.taps._records import TapList


class Donor:
    """A donor network and its preprocessing.

    ``module`` is the full network (trunk and classifier) in eval mode; ``spec`` says how it was
    loaded; ``weights`` names the weights it was loaded with, resolved (``IMAGENET1K_V1`` for
    ``"DEFAULT"`` on vgg16; ``"none"`` for random weights), or is None when they came from a
    checkpoint or an in-memory module; ``class_names`` are the names of its classifier's outputs when known (ImageNet
    categories for ImageNet weights).
    """

    def __init__(self, module: nn.Module, *, name: str, spec: DonorSpec, image_size: int,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 class_names: Optional[Sequence[str]] = None, weights: Optional[str] = None):
        self.module = module.eval()
        self.name = name
        self.spec = spec
        self.weights = weights
        self.preprocessing = Preprocessing(image_size=image_size, mean=tuple(mean), std=tuple(std))
        self.class_names = list(class_names) if class_names is not None else None
        self._taps: Dict[int, TapList] = {}
        self._fingerprint: Optional[str] = None

    @classmethod
    def from_module(cls, module: nn.Module, *, name: str = "custom", image_size: int = 224,
                    mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                    taps: Optional[Sequence[str]] = None,
                    class_names: Optional[Sequence[str]] = None) -> "Donor":
        """Wrap any in-memory ``nn.Module`` as a donor (taps found automatically unless given)."""
        if not isinstance(module, nn.Module):
            raise ParameterError(param_message("module", "a torch.nn.Module", type(module).__name__))
        # the module's weights are whatever it holds: no named weights to reload them by
        spec = DonorSpec(name=name, weights=None, taps=tuple(taps) if taps is not None else None,
                         image_size=image_size, mean=tuple(mean), std=tuple(std))
        return cls(module, name=name, spec=spec, image_size=image_size, mean=mean, std=std,
                   class_names=class_names)

    @property
    def image_size(self) -> int:
        return self.preprocessing.image_size

    @property
    def weights_text(self) -> str:
        """Which weights the donor holds, in words, for messages."""
        if self.weights is None:
            return (weights_text(None, self.spec.checkpoint) if self.spec.checkpoint is not None
                    else "the weights of the given module")
        return weights_text(self.weights)

    def taps(self, image_size: Optional[int] = None) -> TapList:
        """The candidate taps with their exact costs at ``image_size`` (default: the donor's)."""
        size = check_image_size(image_size if image_size is not None else self.image_size)
        if size not in self._taps:
            self._taps[size] = discover_taps(self.module, size, names=self.spec.taps,
                                             donor_name=self.name)
        return self._taps[size]

    def fingerprint(self) -> str:
        """SHA-256 over the donor's name and every tensor of its state dict, in order."""
        if self._fingerprint is None:
            h = hashlib.sha256(self.name.encode())
            for key, tensor in self.module.state_dict().items():
                t = tensor.detach().cpu().contiguous()
                h.update(key.encode())
                h.update(str(tuple(t.shape)).encode() + str(t.dtype).encode())
                h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def __repr__(self) -> str:
        return f"Donor({self.name!r}, image_size={self.image_size})"
