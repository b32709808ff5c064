"""The fitness base class, and the plumbing the built-in fitnesses share.

:class:`Fitness` is what the search accepts: a bound, picklable, deterministic function from a
selection of taps to an :class:`~graftsearch.Evaluation`. The built-in ``mlp`` and ``fast``
proxies derive from :class:`_Proxy` (here), a user callable is wrapped by
:class:`~graftsearch.fitness.CustomFitness`, and anything else subclasses :class:`Fitness`
directly.
"""

from __future__ import annotations

import abc
import json
import os
from typing import Any, Tuple

from graftsearch._utils.checks import is_int
from graftsearch._utils.errors import DataError, ParameterError, param_message
from graftsearch.features._source import FeatureSource
from graftsearch.fitness._evaluation import Evaluation

#: Bumped whenever a proxy's numbers change for the same settings, so that a checkpoint made
#: with older numbers is not resumed with newer ones (it is part of ``key()``).
PROXY_VERSION = 1


class Fitness(abc.ABC):
    """Base class of every fitness the search can use: P(G_s) of a selection of taps.

    Subclass it and implement :meth:`evaluate`; override :meth:`key` as soon as the instance has
    settings, data or a seed that change its numbers, and set :attr:`name`.
    :func:`~graftsearch.run_search` accepts only instances of subclasses of this class. The
    built-ins (``make_fitness("mlp" | "fast" | fn, ...)``) are subclasses too.

    The contract the search relies on:

    * **Bound.** The instance holds everything an evaluation needs (features, labels, settings,
      seed); the search passes it nothing but the selection.
    * **Deterministic.** Two instances with the same :meth:`key` give the same Evaluation for
      the same selection, in any process and in any order of evaluation: the search evaluates a
      generation in chunks on several processes or Dask workers, and a resumed run mixes
      evaluations made before and after the interruption. Derive anything random from a seed
      and the selection (``derive_seed(seed, taps.bits(selection))``), never from global state,
      and fix torch's thread count when a result depends on it.
    * **Picklable.** With ``n_jobs != 1`` the instance is pickled to worker processes (once per
      chunk of selections), with a Dask scheduler scattered to every worker once per batch.
      Keep features as a :class:`~graftsearch.features.FeatureSource` (a FeatureCache pickles
      as its path), not as open files or lambdas; large derived state can be left out of the
      pickle (``__getstate__``) and rebuilt once per process, as the ``fast`` proxy does. A Dask
      worker may call :meth:`evaluate` of the same instance from several threads at once, so
      keep no per-call state on ``self``.
    * **Honest.** Fit on the ``train`` split, score on ``val``; ``test`` is kept for the final
      model.

    Example (P from a toy rule on the selection's feature width)::

        import graftsearch as gs

        class WidthFitness(gs.Fitness):
            name = "width"

            def __init__(self, taps, *, scale=1000.0):
                self.taps, self.scale = taps, scale

            def evaluate(self, selection):
                d = self.taps.feature_dim(selection)
                return gs.Evaluation(val_accuracy=d / (d + self.scale), fidelity=self.name)

            def key(self):
                return f"width:{self.scale}"

        result = gs.run_search(taps, head, WidthFitness(taps), gs.SearchSettings(p_min=0.5))

    For P computed from a selection's cached features, a plain function ``fn(ctx)`` or a
    :class:`~graftsearch.FitnessFunction` given to :func:`~graftsearch.make_fitness` is
    shorter: it gets the features through a :class:`~graftsearch.SelectionContext`.
    """

    #: A short label of the kind of fitness ("mlp", "fast", a custom function's name): the
    #: search names the fitness by it in its log, the default :meth:`key` includes it, and the
    #: built-ins pass it on as ``Evaluation.fidelity`` (kept on every record of the result).
    name: str = ""

    @abc.abstractmethod
    def evaluate(self, selection: Tuple[int, ...]) -> Evaluation:
        """The fitness of ``selection``.

        ``selection`` is normalised by the search: a non-empty tuple of distinct 1-based tap
        indices in increasing order, into the TapList the search was given (the bit string
        ``"01100"`` arrives as ``(2, 3)``). The search keeps an archive, so a selection
        normally comes once, but a resumed run redoes the generation it was stopped in: do not
        count on it. Under ``objective="max-accuracy"`` no selection over ``size_max`` comes.

        Return an :class:`~graftsearch.Evaluation`: ``val_accuracy`` is P, a float in [0, 1]
        that the search maximises (anything else makes the selection a failure);
        ``val_loss`` (NaN when there is none), ``extras`` (further named floats, the same names
        for every selection: they become columns of ``evaluations.csv``) and ``fidelity``
        (usually :attr:`name`) are optional.

        A selection that cannot be scored (a diverged training, a singular fit) is a failure,
        not an error: return ``Evaluation(val_accuracy=math.nan, failed=True, error="why")``.
        The search records it as infeasible, lists it with its error and goes on. It does the
        same for any other exception raised here and for a return value that is not an
        Evaluation, but with a message of its own. A :class:`~graftsearch.GraftSearchError`
        (e.g. :class:`~graftsearch.FitnessError`) is not caught: it stops the search, so raise
        one only to fail fast on purpose.
        """

    def key(self) -> str:
        """What identifies this fitness in a checkpoint: same key, same results.

        Two instances with the same key must return the same Evaluation for the same
        selection; instances that may differ must have different keys. The search stores the
        key in ``checkpoint.pkl`` and refuses to resume a run whose fitness key has changed, so
        put into it everything that changes the numbers (settings, a fingerprint of the
        features, the seed, a version of the code) and nothing that does not (thread counts,
        logging). The default, the class's module and qualified name plus :attr:`name`, only
        suits a fitness without settings.
        """
        return f"{type(self).__module__}.{type(self).__qualname__}:{self.name}"


def as_feature_source(source: Any, name: str = "source") -> FeatureSource:
    """``source`` itself when it is a FeatureSource; a path opens a finished feature cache."""
    if isinstance(source, (str, os.PathLike)):
        from graftsearch.features._cache import FeatureCache

        source = FeatureCache.open(source)
    if not isinstance(source, FeatureSource):
        raise ParameterError(param_message(
            name, "a FeatureSource (a FeatureCache, an ArrayFeatures) or a feature cache path",
            type(source).__name__, "Build one with `graftsearch cache` or graftsearch.build_cache()."))
    missing = [s for s in ("train", "val") if s not in tuple(source.splits)]
    if missing:
        raise DataError(param_message(name, "features with a 'train' and a 'val' split",
                                      f"splits {list(source.splits)}"))
    if len(source.classes) < 2:
        raise DataError(param_message(name, "features of at least 2 classes", list(source.classes)))
    return source


def check_seed(seed: Any) -> int:
    if not is_int(seed) or seed < 0:
        raise ParameterError(param_message("seed", "an integer >= 0", seed))
    return int(seed)


class _Proxy(Fitness):
    """What the built-in proxies share: the bound source and seed, selection checks, ``key()``.

    Each proxy is bound to its features and seed and is deterministic: every random draw comes
    from ``derive_seed(seed, bits)`` and torch runs on a fixed number of threads (``threads``)
    inside ``evaluate``. Only the train split is fitted and only the val split scored.
    """

    def __init__(self, source: Any, seed: Any, settings: Any):
        self.source = as_feature_source(source)
        self.seed = check_seed(seed)
        self.settings = settings
        self.taps = self.source.taps

    def key(self) -> str:
        """Fitness kind, proxy version, settings, features fingerprint and seed, as JSON."""
        return json.dumps({"fitness": self.name, "version": PROXY_VERSION,
                           "settings": self.settings.as_dict(),
                           "features": self.source.fingerprint, "seed": self.seed},
                          sort_keys=True, separators=(",", ":"))

    def _normalize(self, selection: Any) -> Tuple[Tuple[int, ...], str]:
        indices = self.taps.normalize(selection)
        return indices, self.taps.bits(indices)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.source!r}, seed={self.seed}, settings={self.settings!r})"
