"""The ``mlp`` proxy: P(G_s) from the run's head trained briefly on the selection's cached
train features, scored on val."""

from __future__ import annotations

import math
from typing import Any, Tuple

from graftsearch._utils.errors import FitnessError, ParameterError, param_message
from graftsearch._utils.seeding import derive_seed
from graftsearch._utils.threads import torch_threads
from graftsearch.features._source import selection_features
from graftsearch.fitness._base import _Proxy
from graftsearch.fitness._evaluation import Evaluation, binomial_se
from graftsearch.fitness._settings import MLPSettings
from graftsearch.training._headtrain import train_head


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
        se = binomial_se(float(fit.val_accuracy), len(self.source.labels("val")))
        return Evaluation(val_accuracy=float(fit.val_accuracy), val_loss=float(fit.val_loss),
                          val_accuracy_se=se, fidelity=self.name)
