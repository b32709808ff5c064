"""How a donor is fine-tuned (:class:`CultivateSettings`), apart from the training, so that the
settings load without torch (the command line's --help)."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional

from graftsearch._utils.checks import is_int, is_real
from graftsearch._utils.device import check_device
from graftsearch._utils.errors import ParameterError, param_message
from graftsearch.donors._preprocessing import check_image_size
from graftsearch.training._recipe import recipe
from graftsearch.training._schedule import TrainSchedule

HEADS = ("auto", "paper", "replace")
PAPER_TRAINABLE_TAPS = 17


@dataclass(frozen=True, kw_only=True)
class CultivateSettings:
    """How a donor is fine-tuned on a dataset.

    ``head``: ``"paper"`` (the paper's Flatten + 2 x Dense 256 head; VGG16 donors only),
    ``"replace"`` (the donor's own classifier with its last Linear replaced) or ``"auto"``
    (paper for vgg16, else replace). ``image_size`` defaults to 128 for the paper head and to
    the donor's own size otherwise. ``trainable_taps``: the last that many taps (and the head)
    train, everything before is frozen (with its batch-norm statistics); None trains all.
    ``recipe`` is the fine-tuning recipe (``standard``: AdamW, warm-up and cosine decay per step
    over ``epochs``, a 10x rate for the new classifier, label smoothing, random flips and crops;
    ``paper``: the paper's Adam at 1e-4, batch 16, plain cross-entropy, no augmentation);
    ``lr``, ``batch_size``, ``weight_decay`` and ``augment`` override the recipe's when set.
    At most ``epochs``; ``patience`` stops after that many epochs without a lower validation
    loss (None: never) and the best epoch's weights are kept. ``device`` ``auto`` takes CUDA
    when present.
    """

    head: str = "auto"
    image_size: Optional[int] = None
    trainable_taps: Optional[int] = PAPER_TRAINABLE_TAPS
    recipe: str = "standard"
    epochs: int = 18
    batch_size: Optional[int] = None
    lr: Optional[float] = None
    weight_decay: Optional[float] = None
    patience: Optional[int] = 3
    augment: Optional[bool] = None
    dropout: float = 0.5
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ParameterError(param_message("head", f"one of {list(HEADS)}", self.head))
        if self.image_size is not None:
            check_image_size(self.image_size)
        if self.trainable_taps is not None and (not is_int(self.trainable_taps)
                                                or self.trainable_taps < 0):
            raise ParameterError(param_message("trainable_taps", "an integer >= 0 or None (all)",
                                               self.trainable_taps))
        rec = self.resolved_recipe()  # checks the recipe and the fields that override it
        # the training fields are checked as the head-training schedule checks them
        TrainSchedule(epochs=self.epochs, batch_size=rec.batch_size, lr=rec.lr,
                      weight_decay=rec.weight_decay, patience=self.patience)
        for name, low in (("seed", 0), ("num_workers", 0)):
            value = getattr(self, name)
            if not is_int(value) or value < low:
                raise ParameterError(param_message(name, f"an integer >= {low}", value))
        if not is_real(self.dropout) or not 0 <= self.dropout < 1:
            raise ParameterError(param_message("dropout", "a float in [0, 1)", self.dropout))
        if self.augment is not None and not isinstance(self.augment, bool):
            raise ParameterError(param_message("augment", "a bool or None (the recipe's)",
                                               self.augment))
        check_device(self.device)

    def resolved_recipe(self):
        """The recipe with the fields set here (lr, batch size, weight decay, augment) in it."""
        rec = recipe(self.recipe)
        changes = {k: getattr(self, k) for k in ("lr", "batch_size", "weight_decay", "augment")
                   if getattr(self, k) is not None}
        return dataclasses.replace(rec, **changes) if changes else rec

    def as_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["resolved_recipe"] = self.resolved_recipe().as_dict()
        return d
