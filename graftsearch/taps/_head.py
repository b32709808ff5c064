"""The rootstock's dense head M: Linear(d, hidden) -> ReLU -> Dropout -> Linear(hidden, classes)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

from graftsearch._utils.errors import ParameterError, param_message


@dataclass(frozen=True, kw_only=True)
class HeadSpec:
    """Shape of the head grafted onto the pooled taps.

    ``hidden=0`` gives a single ``Linear(d, num_classes)`` (a linear probe).
    """

    num_classes: int
    hidden: int = 256
    dropout: float = 0.5

    def __post_init__(self) -> None:
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 2:
            raise ParameterError(param_message("num_classes", "an integer >= 2", self.num_classes))
        if isinstance(self.hidden, bool) or not isinstance(self.hidden, int) or self.hidden < 0:
            raise ParameterError(param_message("hidden", "an integer >= 0 (0: no hidden layer)",
                                               self.hidden))
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= float(self.dropout) < 1.0:
            raise ParameterError(param_message("dropout", "a float in [0, 1)", self.dropout))

    def build(self, in_features: int) -> "nn.Sequential":
        from torch import nn  # the settings stay importable without torch (the CLI's --help)

        if self.hidden == 0:
            return nn.Sequential(nn.Linear(in_features, self.num_classes))
        return nn.Sequential(
            nn.Linear(in_features, self.hidden),
            nn.ReLU(),
            nn.Dropout(float(self.dropout)),
            nn.Linear(self.hidden, self.num_classes),
        )

    def params(self, in_features: int) -> int:
        if self.hidden == 0:
            return in_features * self.num_classes + self.num_classes
        return (in_features * self.hidden + self.hidden) + (self.hidden * self.num_classes + self.num_classes)

    def macs(self, in_features: int) -> int:
        # Matches torch.utils.flop_counter on the built head: one MAC per weight, biases uncounted.
        if self.hidden == 0:
            return in_features * self.num_classes
        return in_features * self.hidden + self.hidden * self.num_classes

    def as_dict(self) -> dict:
        return {"num_classes": self.num_classes, "hidden": self.hidden, "dropout": float(self.dropout)}
