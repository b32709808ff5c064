"""Your own fitness: a callable, or a :class:`FitnessFunction` subclass, that scores a selection.

The function receives a :class:`SelectionContext` (the selected taps, lazy access to the cached
features and labels of the train and val splits, a seed for this selection) and returns the
performance P, either as a float in [0, 1] or as a mapping with ``"val_accuracy"`` (or
``"performance"``), optionally ``"val_loss"``, and any further named metrics, which become
columns of ``evaluations.csv``. :class:`CustomFitness` wraps it in a :class:`Fitness`, which
the search uses. A function that raises, returns NaN or returns the wrong type gets the selection
recorded as failed (the run goes on), or, with ``fail_fast=True``, a :class:`FitnessError`.

Example (P = macro-F1 of a nearest-class-mean classifier, its accuracy as an extra column)::

    import numpy as np
    import graftsearch as gs

    def macro_f1(ctx):
        x, y = ctx.features("train"), ctx.labels("train")
        means = np.stack([x[y == k].mean(0) for k in range(len(ctx.classes))])
        xv, yv = ctx.features("val"), ctx.labels("val")
        scores = -((xv[:, None, :] - means[None]) ** 2).sum(-1)
        m = gs.compute_metrics(yv, scores)
        return {"val_accuracy": m.f1_macro, "ncm_accuracy": m.accuracy}

    fitness = gs.make_fitness(macro_f1, cache, seed=0)
"""

from __future__ import annotations

import json
import math
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np

from graftsearch._utils.errors import FitnessError, ParameterError, param_message
from graftsearch.fitness._evaluation import Evaluation
from graftsearch.features._source import FeatureSource, selection_features
from graftsearch.fitness._base import Fitness, as_feature_source, check_seed
from graftsearch.fitness._settings import check_threads
from graftsearch._utils.threads import torch_threads
from graftsearch._utils.seeding import derive_seed
from graftsearch.taps._selection import taps_string
from graftsearch.taps._records import Tap

#: Names a custom fitness cannot use for extra metrics: the columns graftsearch writes itself.
RESERVED_METRICS = frozenset({
    "bits", "taps", "n_taps", "deepest_tap", "params", "size_mib", "macs", "int8_mib", "val_accuracy",
    "val_loss", "val_accuracy_se", "feasible", "violation", "generation", "evaluated_at", "rank", "failed", "error",
    "fidelity", "performance"})

_EXPECTED = ("a float in [0, 1], or a mapping with 'val_accuracy' (or 'performance') in [0, 1], "
             "optionally 'val_loss' and 'val_accuracy_se' (its standard error, >= 0), and further "
             "named float metrics")


class SelectionContext:
    """What a custom fitness sees for one selection.

    ``selection`` holds the sorted 1-based tap indices, ``bits`` the 0/1 string, ``taps`` the
    selected :class:`~graftsearch.taps.Tap` records, ``classes`` the class names, ``seed`` a seed for
    this selection (derived from the run's seed and ``bits``: use it for anything random, so that
    the result does not depend on which process evaluates the selection or when).
    ``features(split)`` is the (images, d) float32 concatenation of the selected taps' features
    and ``labels(split)`` the class indices; both are read on first use. Only the ``train`` and
    ``val`` splits can be read: the test split is kept for the final model.
    """

    def __init__(self, source: FeatureSource, selection: Tuple[int, ...], bits: str, seed: int):
        self.selection = selection
        self.bits = bits
        self.taps: Tuple[Tap, ...] = tuple(source.taps.tap(i) for i in selection)
        self.classes = list(source.classes)
        self.seed = seed
        self._source = source
        self._features: Dict[str, np.ndarray] = {}

    @property
    def splits(self) -> Tuple[str, ...]:
        return tuple(s for s in self._source.splits if s != "test")

    @property
    def num_features(self) -> int:
        return sum(t.channels for t in self.taps)

    def _check(self, split: str) -> None:
        if split == "test":
            raise FitnessError(
                "A fitness must not read the 'test' split: it is kept for testing the final model. "
                "Score selections on 'val'.")
        if split not in self.splits:
            raise ParameterError(param_message("split", f"one of {list(self.splits)}", split))

    def features(self, split: str) -> np.ndarray:
        self._check(split)
        if split not in self._features:
            self._features[split] = selection_features(self._source, split, self.selection)
        return self._features[split]

    def labels(self, split: str) -> np.ndarray:
        self._check(split)
        return np.asarray(self._source.labels(split), dtype=np.int64)

    def __repr__(self) -> str:
        return f"SelectionContext(taps={taps_string(self.selection)}, d={self.num_features})"


class FitnessFunction:
    """Base class of a custom fitness: subclass it and implement ``__call__(self, ctx)``.

    ``__call__`` receives a :class:`SelectionContext` and returns P as a float in [0, 1], or a
    mapping with ``"val_accuracy"`` (or ``"performance"``), optionally ``"val_loss"``, and further
    named float metrics (the same names for every selection; they become CSV columns). It must be
    deterministic: use ``ctx.seed`` for anything random. ``name`` labels the fitness in the run
    files; :meth:`settings` (by default the instance's public attributes that JSON can hold) is
    part of the fitness key, so a resumed run with other settings is refused.
    """

    name: str = "custom"

    def __call__(self, ctx: SelectionContext) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement __call__(self, ctx).")

    def settings(self) -> Dict[str, Any]:
        out = {}
        for key, value in sorted(vars(self).items()):
            if key.startswith("_"):
                continue
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                value = repr(value)
            out[key] = value
        return out


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 120:
        text = text[:117] + "..."
    return f"{type(value).__name__} {text}" if not isinstance(value, Mapping) else f"the mapping {text}"


def _is_number(value: Any) -> bool:
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


class CustomFitness(Fitness):
    """A user's fitness function as a :class:`Fitness` (``name``, ``evaluate``, ``key``).

    ``fn`` is a callable ``fn(ctx) -> float | Mapping`` or a :class:`FitnessFunction`; ``source``
    a feature source (or a feature cache path); ``seed`` the run's seed, from which each
    selection's ``ctx.seed`` is derived. A bad return or an exception gives
    ``Evaluation(failed=True, error=...)``; with ``fail_fast`` it raises :class:`FitnessError`.
    ``threads`` fixes torch's thread count while ``fn`` runs (None: leave it).
    """

    def __init__(self, fn: Any, source: Any, *, seed: int = 0, fail_fast: bool = False,
                 threads: Optional[int] = 1):
        if not callable(fn):
            raise ParameterError(param_message(
                "fn", "a callable fn(ctx) or a FitnessFunction instance", type(fn).__name__,
                "Pass the function itself, not its result."))
        if isinstance(fn, type):
            raise ParameterError(param_message(
                "fn", "a callable fn(ctx) or a FitnessFunction instance", f"the class {fn.__name__}",
                f"Pass an instance: {fn.__name__}()."))
        if not isinstance(fail_fast, bool):
            raise ParameterError(param_message("fail_fast", "a bool", fail_fast))
        check_threads(threads)
        self.fn = fn
        self.source = as_feature_source(source)
        self.seed = check_seed(seed)
        self.fail_fast = fail_fast
        self.threads = threads
        self.name = str(getattr(fn, "name", None) or getattr(fn, "__name__", None) or type(fn).__name__)

    def key(self) -> str:
        fn = self.fn
        ident = (f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', '')}"
                 if hasattr(fn, "__qualname__") else f"{type(fn).__module__}.{type(fn).__qualname__}")
        settings = fn.settings() if isinstance(fn, FitnessFunction) else {}
        return json.dumps({"fitness": "custom", "function": ident, "name": self.name,
                           "settings": settings, "features": self.source.fingerprint,
                           "seed": self.seed}, sort_keys=True, separators=(",", ":"), default=repr)

    def context(self, selection: Any) -> SelectionContext:
        """The :class:`SelectionContext` ``fn`` receives for ``selection``."""
        taps = self.source.taps
        indices = taps.normalize(selection)
        bits = taps.bits(indices)
        return SelectionContext(self.source, indices, bits, derive_seed(self.seed, bits))

    def evaluate(self, selection: Tuple[int, ...]) -> Evaluation:
        ctx = self.context(selection)
        where = f"selection {taps_string(ctx.selection)} (bits {ctx.bits})"
        try:
            with torch_threads(self.threads):
                result = self.fn(ctx)
        except Exception as exc:  # a user's function may raise anything
            return self._fail(f"The fitness '{self.name}' raised {type(exc).__name__}: {exc} for {where}.", exc)
        try:
            return self._interpret(result)
        except _BadReturn as bad:
            return self._fail(f"The fitness '{self.name}' returned {bad} for {where}; expected "
                              f"{_EXPECTED}.", None)

    def _fail(self, message: str, cause: Optional[BaseException]) -> Evaluation:
        if self.fail_fast:
            raise FitnessError(message) from cause
        return Evaluation(val_accuracy=math.nan, failed=True, error=message, fidelity=self.name)

    def _interpret(self, result: Any) -> Evaluation:
        extras: Dict[str, float] = {}
        val_loss = se = math.nan
        if _is_number(result):
            perf = float(result)
        elif isinstance(result, Mapping):
            keys = [k for k in ("val_accuracy", "performance") if k in result]
            if len(keys) != 1:
                raise _BadReturn(f"{_describe(result)} ("
                                 + ("no 'val_accuracy' or 'performance' key" if not keys
                                    else "both 'val_accuracy' and 'performance'") + ")")
            value = result[keys[0]]
            if not _is_number(value):
                raise _BadReturn(f"{keys[0]}={_describe(value)}")
            perf = float(value)
            for name, value in result.items():
                if name in keys:
                    continue
                if name == "val_loss":
                    if not _is_number(value):
                        raise _BadReturn(f"val_loss={_describe(value)}")
                    val_loss = float(value)
                    continue
                if name == "val_accuracy_se":  # NaN: not known
                    if not _is_number(value) or float(value) < 0 or math.isinf(float(value)):
                        raise _BadReturn(f"val_accuracy_se={_describe(value)} (a standard error "
                                         "is a finite float >= 0, or NaN when unknown)")
                    se = float(value)
                    continue
                if not isinstance(name, str) or not name:
                    raise _BadReturn(f"a metric named {name!r} (names must be non-empty strings)")
                if name in RESERVED_METRICS:
                    raise _BadReturn(f"a metric named {name!r} (a column graftsearch writes itself)")
                if not _is_number(value):
                    raise _BadReturn(f"{name}={_describe(value)}")
                extras[name] = float(value)
        else:
            raise _BadReturn(_describe(result))
        if not math.isfinite(perf) or not 0.0 <= perf <= 1.0:
            raise _BadReturn(f"the performance {perf!r}")
        return Evaluation(val_accuracy=perf, val_loss=val_loss, val_accuracy_se=se, extras=extras,
                          fidelity=self.name)

    def __repr__(self) -> str:
        return f"CustomFitness({self.name!r}, {self.source!r}, seed={self.seed}, fail_fast={self.fail_fast})"


class _BadReturn(Exception):
    """A fitness's return value that is not a performance (message: what was returned)."""
