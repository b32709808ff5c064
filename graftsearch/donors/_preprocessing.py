"""What a donor expects of its input: image size and normalisation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

from graftsearch._utils.errors import ParameterError, param_message

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The paper's input side (DeepWeeds at 128 x 128): the default image size of every entry point.
PAPER_IMAGE_SIZE = 128


@dataclass(frozen=True)
class Preprocessing:
    """Resize to ``image_size`` x ``image_size``, scale to [0, 1], then ``(x - mean) / std``."""

    image_size: int
    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        check_image_size(self.image_size)
        for name in ("mean", "std"):
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) != 3:
                raise ParameterError(param_message(name, "three floats (one per RGB channel)", value))
            object.__setattr__(self, name, value)
        if any(s <= 0 for s in self.std):
            raise ParameterError(param_message("std", "three positive floats", self.std))

    def as_dict(self) -> dict:
        return {"image_size": self.image_size, "mean": list(self.mean), "std": list(self.std)}


def check_image_size(image_size: object) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ParameterError(param_message("image_size", "a positive integer (pixels per side)",
                                           image_size))
    return image_size
