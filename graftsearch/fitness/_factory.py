"""``make_fitness``: a fitness from its kind's name (``"mlp"``, ``"fast"``) or a user callable."""

from __future__ import annotations

from typing import Any

from graftsearch._utils.errors import Described, ParameterError, close_matches_hint, param_message
from graftsearch.fitness._base import Fitness
from graftsearch.fitness._custom import CustomFitness, FitnessFunction
from graftsearch.fitness._fast import FastProxy
from graftsearch.fitness._mlp import MLPProxy
from graftsearch.fitness._settings import FITNESS_KINDS, FastSettings, MLPSettings



def make_fitness(kind: Any, source: Any = None, *, seed: int = 0, fail_fast: bool = False,
                 **settings: Any) -> Fitness:
    """A fitness for the search: ``"mlp"``, ``"fast"``, or a callable / FitnessFunction.

    ``settings`` are the fields of :class:`MLPSettings` or :class:`FastSettings` (``settings=``
    also takes a whole settings object). A callable ``fn(ctx)`` or a :class:`FitnessFunction`
    becomes a :class:`CustomFitness` (``fail_fast`` applies to it only).
    """
    if callable(kind) and not isinstance(kind, (str, type)) or isinstance(kind, FitnessFunction):
        if settings:
            raise ParameterError(param_message(
                "settings", "no proxy settings with a custom fitness", sorted(settings)))
        return CustomFitness(kind, source, seed=seed, fail_fast=fail_fast)
    if not isinstance(kind, str) or kind not in FITNESS_KINDS:
        hint = close_matches_hint(kind, FITNESS_KINDS) if isinstance(kind, str) else ""
        raise ParameterError(param_message(
            "kind", "'mlp', 'fast', or a callable taking a SelectionContext", kind,
            hint or "Subclass graftsearch.FitnessFunction for your own fitness."))
    cls, settings_cls = (MLPProxy, MLPSettings) if kind == "mlp" else (FastProxy, FastSettings)
    given = settings.pop("settings", None)
    if given is not None:
        if settings:
            raise ParameterError(param_message("settings", "either a settings object or fields, not both",
                                               sorted(settings)))
        return cls(source, seed=seed, settings=given)
    fields = sorted(settings_cls.__dataclass_fields__)
    unknown = sorted(set(settings) - set(fields))
    if unknown:
        raise ParameterError(param_message(
            "settings", f"fields of {settings_cls.__name__} for the '{kind}' fitness "
            f"({', '.join(fields)})", Described(", ".join(f"'{u}'" for u in unknown)),
            close_matches_hint(unknown[0], fields) or None))
    return cls(source, seed=seed, settings=settings_cls(**settings))
