"""How a head is trained (:class:`TrainSchedule`), apart from the loop that trains it, so that the
settings load without torch (the command line's --help)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from graftsearch._utils.checks import is_int, is_real
from graftsearch._utils.errors import ParameterError, param_message


@dataclass(frozen=True, kw_only=True)
class TrainSchedule:
    """How a head is trained: Adam with cross-entropy, mini-batches reshuffled every epoch.

    ``patience`` stops training after that many epochs without a lower validation loss (None:
    run all ``epochs``); ``keep_best`` restores the weights of the epoch with the lowest
    validation loss at the end (otherwise the last epoch's weights are kept).
    """

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float = 0.0
    patience: Optional[int] = None
    keep_best: bool = True

    def __post_init__(self) -> None:
        if not is_int(self.epochs) or self.epochs < 1:
            raise ParameterError(param_message("epochs", "an integer >= 1", self.epochs))
        if not is_int(self.batch_size) or self.batch_size < 1:
            raise ParameterError(param_message("batch_size", "an integer >= 1", self.batch_size))
        if not is_real(self.lr) or self.lr <= 0:
            raise ParameterError(param_message("lr", "a float > 0", self.lr))
        if not is_real(self.weight_decay) or self.weight_decay < 0:
            raise ParameterError(param_message("weight_decay", "a float >= 0", self.weight_decay))
        if self.patience is not None and (not is_int(self.patience) or self.patience < 1):
            raise ParameterError(param_message("patience", "an integer >= 1 or None (no early stop)",
                                               self.patience))
        if not isinstance(self.keep_best, bool):
            raise ParameterError(param_message("keep_best", "a bool", self.keep_best))

    def as_dict(self) -> dict:
        return {"epochs": int(self.epochs), "batch_size": int(self.batch_size), "lr": float(self.lr),
                "weight_decay": float(self.weight_decay),
                "patience": None if self.patience is None else int(self.patience),
                "keep_best": self.keep_best}


#: The paper's rootstock training: 18 epochs, batch 16, Adam at 1e-3; we keep the best epoch.
PAPER_SCHEDULE = TrainSchedule(epochs=18, batch_size=16, lr=1e-3, keep_best=True)
