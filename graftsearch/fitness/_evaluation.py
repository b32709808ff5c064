"""The result of evaluating one selection, shared by fitness functions and the search."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping


@dataclass(frozen=True)
class Evaluation:
    """Fitness of one selection.

    ``val_accuracy`` is P (maximised by the search); ``val_accuracy_se`` its standard error
    (the built-in proxies: the binomial ``sqrt(P (1 - P) / n_val)``; NaN when unknown);
    ``val_loss`` is NaN when the fitness has none; ``extras`` are further named metrics that become CSV columns; ``failed`` marks a
    selection whose fitness raised or returned garbage (``error`` says what), which the search
    records but treats as infeasible; ``fidelity`` names the proxy that produced it.
    """

    val_accuracy: float
    val_loss: float = math.nan
    val_accuracy_se: float = math.nan
    extras: Mapping[str, float] = field(default_factory=dict)
    failed: bool = False
    error: str = ""
    fidelity: str = ""


def binomial_se(accuracy: float, n: int) -> float:
    """The standard error of an accuracy measured on ``n`` independent images (NaN for n < 1)."""
    if n < 1 or not math.isfinite(accuracy):
        return math.nan
    p = min(1.0, max(0.0, float(accuracy)))
    return math.sqrt(p * (1.0 - p) / n)
