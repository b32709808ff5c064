"""What a donor is: :class:`DonorSpec` (how to obtain one) and :class:`Donor` (a loaded network
with its preprocessing and taps).

Weights are named the same way everywhere: ``"DEFAULT"`` (the default of :class:`DonorSpec` and
of every command) is the donor family's pretrained weights, ``"none"`` (any case) or None is
random weights, and any other text is a weights name of that family. Which weights ``"DEFAULT"``
means for each family is decided in one place, :func:`graftsearch.donors._zoo.resolve_weights`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional, Tuple

from graftsearch._utils.errors import ParameterError, param_message
from graftsearch.donors._preprocessing import check_image_size

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
