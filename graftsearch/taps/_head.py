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

    def int8_bytes(self, in_features: int, *, per_channel: bool = True) -> int:
        """Bytes of the tensors of this head's int8 copy (see ``graftsearch.taps._int8``): the
        float32 input standardisation (mean and scale per feature), the input's activation
        scale and zero point, and per Linear its int8 weights, float32 bias, per-channel weight
        scales (float64) and zero points (int64) when ``per_channel``, and its output's
        activation scale (float32) and zero point (int64)."""
        def linear(n_in: int, n_out: int) -> int:
            return n_in * n_out + 4 * n_out + (16 * n_out if per_channel else 0) + 12

        standardise, quantise_input = 8 * in_features, 12
        if self.hidden == 0:
            return standardise + quantise_input + linear(in_features, self.num_classes)
        return (standardise + quantise_input + linear(in_features, self.hidden)
                + linear(self.hidden, self.num_classes))

    def as_dict(self) -> dict:
        return {"num_classes": self.num_classes, "hidden": self.hidden, "dropout": float(self.dropout)}
