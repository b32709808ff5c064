"""What a donor is: :class:`DonorSpec` (how to obtain one) and :class:`Donor` (a loaded network
with its preprocessing and taps).

Weights are named the same way everywhere: ``"DEFAULT"`` (the default of :class:`DonorSpec` and
of every command) is the donor family's pretrained weights, ``"none"`` (any case) or None is
random weights, and any other text is a weights name of that family. Which weights ``"DEFAULT"``
means for each family is decided in one place, :func:`graftsearch.donors._zoo.resolve_weights`.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from graftsearch._utils.errors import ParameterError, param_message
from graftsearch.donors._preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing, check_image_size
from graftsearch.taps._discovery import discover_taps
from graftsearch.taps._records import TapList

DEFAULT_WEIGHTS = "DEFAULT"
NO_WEIGHTS = "none"


def normalize_weights(weights: object) -> Optional[str]:
    """``weights`` as stored: None for random weights, ``"DEFAULT"`` in capitals, else as given."""
    if weights is None:
        return None
    if not isinstance(weights, str) or not weights.strip():
        raise ParameterError(param_message(
            "weights", "a weights name, 'DEFAULT' (the donor's pretrained weights) or 'none' "
            "(random weights)", weights))
    text = weights.strip()
    if text.lower() == NO_WEIGHTS:
        return None
    if text.upper() == DEFAULT_WEIGHTS:
        return DEFAULT_WEIGHTS
    return text


def weights_text(resolved: Optional[str], checkpoint: Optional[str] = None) -> str:
    """Which weights a donor holds, in words for messages: ``resolved`` is a resolved weights
    name, ``"none"`` or None (random), unless the weights came from ``checkpoint``."""
    if checkpoint is not None:
        return f"weights from the checkpoint {checkpoint}"
    if resolved is None or resolved == NO_WEIGHTS:
        return "random weights (none)"
    return f"weights {resolved}"


@dataclass(frozen=True, kw_only=True)
class DonorSpec:
    """How to obtain a donor; everything needed to load it again.

    ``name`` is a torchvision classification model (``vgg16``, ``resnet18``, ...),
    ``efficientnet_lite0`` or ``paper_vgg16``; it may be None when ``checkpoint`` holds a whole
    model. ``weights`` is ``"DEFAULT"`` (the family's pretrained weights: torchvision's DEFAULT
    enum, the shipped ImageNet weights of efficientnet_lite0, ImageNet VGG16 for the paper
    donor's trunk), a weights name of that architecture (``IMAGENET1K_V1``), or ``"none"`` /
    None for random weights. ``checkpoint`` is a file to load instead of weights: it holds the
    weights itself, so a weights name with it is an error. A pickled whole model can run
    arbitrary code when loaded, so it loads only with ``trust_checkpoint=True``. ``taps`` lists
    module names to tap instead of the automatic taps; ``image_size``, ``mean`` and ``std``
    override the donor's own preprocessing.
    """

    name: Optional[str] = "vgg16"
    weights: Optional[str] = DEFAULT_WEIGHTS
    checkpoint: Optional[str] = None
    num_classes: Optional[int] = None
    trust_checkpoint: bool = False
    taps: Optional[Tuple[str, ...]] = None
    image_size: Optional[int] = None
    mean: Optional[Tuple[float, float, float]] = None
    std: Optional[Tuple[float, float, float]] = None

    def __post_init__(self) -> None:
        if self.name is None and self.checkpoint is None:
            raise ParameterError(param_message("donor", "a donor name or a checkpoint file", None,
                                               "Use `--donor vgg16` or `--donor-checkpoint FILE`."))
        if self.name is not None and not isinstance(self.name, str):
            raise ParameterError(param_message("donor", "a donor name (str)", self.name))
        weights = normalize_weights(self.weights)
        if self.checkpoint is not None:
            if weights not in (None, DEFAULT_WEIGHTS):
                raise ParameterError(param_message(
                    "weights", "unset, 'DEFAULT' or 'none' with a checkpoint (the checkpoint "
                    "holds the weights)", self.weights,
                    "Leave --weights out when loading --donor-checkpoint FILE."))
            weights = None
        object.__setattr__(self, "weights", weights)
        if self.num_classes is not None and (isinstance(self.num_classes, bool)
                                             or not isinstance(self.num_classes, int)
                                             or self.num_classes < 2):
            raise ParameterError(param_message("num_classes", "an integer >= 2", self.num_classes))
        if self.image_size is not None:
            check_image_size(self.image_size)
        if self.checkpoint is not None:
            object.__setattr__(self, "checkpoint", str(self.checkpoint))
        if self.taps is not None:
            taps = (self.taps.split(",") if isinstance(self.taps, str) else list(self.taps))
            object.__setattr__(self, "taps", tuple(str(t).strip() for t in taps if str(t).strip()))
        for key in ("mean", "std"):
            value = getattr(self, key)
            if value is not None:
                object.__setattr__(self, key, tuple(float(v) for v in value))

    def as_dict(self) -> dict:
        d = asdict(self)
        for key in ("taps", "mean", "std"):
            if d[key] is not None:
                d[key] = list(d[key])
        return d


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
