"""The built-in proxies' settings (:class:`FastSettings`, :class:`MLPSettings`), apart from the
proxies, so that the settings load without torch or numpy (the command line's --help)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional, Tuple, Union

from graftsearch._utils.checks import is_int, is_real
from graftsearch._utils.errors import ParameterError, close_matches_hint, param_message
from graftsearch.taps._head import HeadSpec
from graftsearch.training._schedule import TrainSchedule

#: The built-in proxies, by the name ``make_fitness`` and ``--fitness`` take.
FITNESS_KINDS = ("mlp", "fast")


def check_threads(threads: Any) -> None:
    if threads is not None and (not is_int(threads) or threads < 1):
        raise ParameterError(param_message(
            "threads", "an integer >= 1, or None to keep the process's torch threads", threads))


PROBES = ("lda", "ridge", "logistic")


def _check_choice(name: str, value: Any, choices: Tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in choices:
        hint = close_matches_hint(value, choices) if isinstance(value, str) else ""
        raise ParameterError(param_message(name, f"one of {', '.join(map(repr, choices))}", value,
                                           hint or None))


@dataclass(frozen=True, kw_only=True)
class FastSettings:
    """Settings of the ``fast`` proxy.

    ``probe="logistic"`` (default, chosen with ``benchmarks/proxy_truth.py`` by how well it
    ranks selections as their final trained grafts test, see
    ``benchmarks/results/proxy_truth.md``): multinomial logistic regression (softmax) on
    standardised features, minimising the mean train cross-entropy plus ``penalty * ||W||^2``
    (intercepts unpenalised) with at most ``iterations`` L-BFGS iterations from zero (and at most
    5/4 as many loss evaluations, the line search's included, so a fit may take fewer steps); the
    few iterations are part of the probe (an early stop, as the mlp proxy's), not a tolerance.
    It keeps the standardised train rows of all taps in memory (float32: train images x
    channels x 4 bytes). ``probe="lda"`` (the default of runs made before the logistic probe
    existed): linear discriminant analysis with the within-class covariance
    shrunk towards a multiple of the identity, ``(1 - g) S + g tr(S)/d I``; ``shrinkage`` is g in
    [0, 1] or ``"auto"``. ``probe="ridge"``: ridge least squares on one-hot targets with penalty
    ``alpha * n_train`` on standardised features; ``alpha`` is a float > 0 or ``"gcv"``
    (generalised cross-validation over ``alphas``, one eigendecomposition per evaluation).
    ``threads`` is the torch thread count for the precomputation and every evaluation.
    ``folds``: 1 (default) fits on train and scores val; k >= 2 scores by stratified k-fold
    cross-validation over train and val together (folds drawn from the proxy's seed; each
    fold's Gram blocks computed once): P is the mean fold accuracy and its standard error the
    fold standard deviation / sqrt(k).
    """

    probe: str = "logistic"
    shrinkage: Union[float, str] = "auto"
    alpha: Union[float, str] = "gcv"
    alphas: Tuple[float, ...] = tuple(float(10.0 ** (k / 4)) for k in range(-16, 9))
    penalty: float = 1e-3
    iterations: int = 20
    threads: Optional[int] = 1
    folds: int = 1

    def __post_init__(self) -> None:
        _check_choice("probe", self.probe, PROBES)
        if not is_real(self.penalty) or self.penalty <= 0:
            raise ParameterError(param_message("penalty", "a finite float > 0", self.penalty))
        if not is_int(self.iterations) or self.iterations < 1:
            raise ParameterError(param_message("iterations", "an integer >= 1", self.iterations))
        if isinstance(self.folds, bool) or not isinstance(self.folds, int) or self.folds < 1:
            raise ParameterError(param_message("folds", "an integer >= 1 (1: train -> val)",
                                               self.folds))
        if self.shrinkage != "auto" and (not is_real(self.shrinkage)
                                         or not 0.0 <= float(self.shrinkage) <= 1.0):
            raise ParameterError(param_message("shrinkage", "a float in [0, 1] or 'auto'", self.shrinkage))
        if self.alpha != "gcv" and (not is_real(self.alpha)
                                    or self.alpha <= 0):
            raise ParameterError(param_message("alpha", "a float > 0 or 'gcv'", self.alpha))
        alphas = tuple(self.alphas) if isinstance(self.alphas, (tuple, list)) else None
        if not alphas or not all(is_real(a) and a > 0 for a in alphas):
            raise ParameterError(param_message("alphas", "a non-empty tuple of floats > 0", self.alphas))
        object.__setattr__(self, "alphas", tuple(float(a) for a in alphas))
        check_threads(self.threads)

    def as_dict(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {"probe": self.probe, "threads": self.threads}
        if self.folds > 1:  # absent at 1: the keys of earlier runs stay what they were
            d["folds"] = self.folds
        if self.probe == "lda":
            d["shrinkage"] = self.shrinkage if self.shrinkage == "auto" else float(self.shrinkage)
        elif self.probe == "logistic":
            d["penalty"], d["iterations"] = float(self.penalty), int(self.iterations)
        else:
            d["alpha"] = self.alpha if self.alpha == "gcv" else float(self.alpha)
            if self.alpha == "gcv":
                d["alphas"] = list(self.alphas)
        return d


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
