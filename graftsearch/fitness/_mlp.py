"""The ``mlp`` proxy: P(G_s) from the run's head trained briefly on the selection's cached
train features, scored on val."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional, Tuple

from graftsearch._utils.errors import FitnessError, ParameterError, param_message
from graftsearch._utils.seeding import derive_seed
from graftsearch._utils.threads import torch_threads
from graftsearch.features._source import selection_features
from graftsearch.fitness._base import _Proxy, check_threads
from graftsearch.fitness._evaluation import Evaluation
from graftsearch.taps._head import HeadSpec
from graftsearch.training._headtrain import TrainSchedule, train_head


@dataclass(frozen=True, kw_only=True)
class MLPSettings:
    """Settings of the ``mlp`` proxy: the head's shape and a short training schedule.

    Defaults were chosen with ``benchmarks/fitness_proxies.py`` (accuracy against time, see
    ``benchmarks/results/fitness_proxies.md``): Adam at 1e-3, batch 128, at most 40 epochs, stop
    after 5 epochs without a lower val loss, keep the best epoch (``keep_best``: P and the val
    loss are those of the epoch with the lowest val loss). ``hidden`` and ``dropout`` should
    match the run's head. ``threads`` is the torch thread count inside ``evaluate`` (None: leave
    the process's).
    """

    epochs: int = 40
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: Optional[int] = 5
    keep_best: bool = True
    hidden: int = 256
    dropout: float = 0.5
    threads: Optional[int] = 1

    def __post_init__(self) -> None:
        self.schedule  # validates the schedule fields, with their own messages
        HeadSpec(num_classes=2, hidden=self.hidden, dropout=self.dropout)
        check_threads(self.threads)

    @property
    def schedule(self) -> TrainSchedule:
        return TrainSchedule(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                             weight_decay=self.weight_decay, patience=self.patience,
                             keep_best=self.keep_best)

    def head(self, num_classes: int) -> HeadSpec:
        return HeadSpec(num_classes=num_classes, hidden=self.hidden, dropout=self.dropout)

    def as_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["lr"], d["weight_decay"], d["dropout"] = float(self.lr), float(self.weight_decay), float(self.dropout)
        return d


class MLPProxy(_Proxy):
    """P = val accuracy of the run's head trained on the selection's cached train features.

    One :func:`~graftsearch.training.train_head` run per evaluation, seeded with
    ``derive_seed(seed, bits)``; features standardised with train-split statistics.
    """

    name = "mlp"

    def __init__(self, source: Any, *, seed: int = 0, settings: MLPSettings = MLPSettings()):
        if not isinstance(settings, MLPSettings):
            raise ParameterError(param_message("settings", "an MLPSettings", type(settings).__name__))
        super().__init__(source, seed, settings)
        self.head = settings.head(len(self.source.classes))

    def evaluate(self, selection: Tuple[int, ...]) -> Evaluation:
        indices, bits = self._normalize(selection)
        x_train = selection_features(self.source, "train", indices)
        x_val = selection_features(self.source, "val", indices)
        try:
            with torch_threads(self.settings.threads):
                fit = train_head(x_train, self.source.labels("train"), x_val,
                                 self.source.labels("val"), head=self.head,
                                 schedule=self.settings.schedule, seed=derive_seed(self.seed, bits))
        except FitnessError as exc:
            # Divergence on one selection is that selection's problem, not the search's: record
            # it as failed (infeasible) and let the search go on; the result lists the error.
            return Evaluation(val_accuracy=math.nan, failed=True, error=str(exc), fidelity=self.name)
        return Evaluation(val_accuracy=float(fit.val_accuracy), val_loss=float(fit.val_loss),
                          fidelity=self.name)
