"""Settings of one search, validated once; the CLI builds the same dataclass.

Sizes given as text (``size_max="7.5MiB"``) are converted here into the unit of the chosen size
metric, so the search only ever compares numbers of one unit:

- a plain number (``1934665``, ``"1934665"``, ``7.4``) is already in the metric's unit
  (parameters, MiB or MACs);
- a count with ``k``, ``M`` or ``G`` (``"500k"``, ``"2M"``; 10^3, 10^6, 10^9) counts parameters
  for ``params`` and ``size_mib`` (converted at 4 bytes per parameter for ``size_mib``) and MACs
  for ``macs``, and is refused for ``int8_mib``;
- a byte size ``B``, ``KiB``, ``MiB``, ``GiB`` (``KB``, ``MB``, ``GB`` are read as the same
  binary units, the paper's "MB") is converted at 4 bytes per parameter for ``params``
  (``"7.5MiB"`` = 7.5 * 2^20 / 4 = 1,966,080 parameters), taken as it is for ``size_mib`` and
  ``int8_mib``, and has no meaning for ``macs``.
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, Optional, Union

from graftsearch._utils.checks import is_int, is_real
from graftsearch._utils.errors import ParameterError, param_message
from graftsearch.taps._records import BYTES_PER_PARAM, MIB, SIZE_METRICS

OBJECTIVES = ("min-size", "max-accuracy")
CROSSOVERS = ("uniform", "two-point")
REFINES = ("none", "front", "front+neighbours")
PICKS = ("best", "one-se")
INITIALS = ("singles", "random", "greedy")
SURROGATES = ("gp", "ridge")

_COUNT_SUFFIX = {"k": 1e3, "m": 1e6, "g": 1e9}
_BYTE_SUFFIX = {"b": 1, "kib": 2**10, "kb": 2**10, "mib": 2**20, "mb": 2**20, "gib": 2**30, "gb": 2**30}
_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*$")
_SIZE_HINT = "Use a number in the size metric's unit, a count like '2M' or '500k', or a byte size like '7.5MiB'."

# Settings that only say how or for how long to run: a resumed run may change them.
RESUMABLE_CHANGES = ("generations", "max_evaluations", "max_seconds", "stagnation", "n_jobs",
                     "dask_scheduler", "checkpoint_every")

SizeLike = Union[int, float, str]


def parse_size(value: SizeLike, metric: str, *, name: str = "size_max") -> float:
    """``value`` in the unit of ``metric`` (see the module docstring for the accepted forms)."""
    expected = ("a positive size: a number, a count like '2M' or '500k', or a byte size like "
                "'7.5MiB'")
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, str)):
        raise ParameterError(param_message(name, expected, value, _SIZE_HINT))
    if isinstance(value, numbers.Real):
        number = float(value)
        if not math.isfinite(number) or number <= 0:
            raise ParameterError(param_message(name, expected, value, _SIZE_HINT))
        return number
    match = _SIZE_RE.match(value)
    if not match:
        raise ParameterError(param_message(name, expected, value, _SIZE_HINT))
    number, unit = float(match.group(1)), match.group(2).lower()
    if number <= 0:
        raise ParameterError(param_message(name, expected, value, _SIZE_HINT))
    if unit == "":
        return number
    if unit in _COUNT_SUFFIX:
        if metric == "int8_mib":  # a parameter count says nothing of int8 bytes
            raise ParameterError(param_message(
                name, "a byte size (like '1.5MiB' or '800KiB') or a number of MiB when "
                "size_metric='int8_mib'", value, "Counts like '2M' apply to params and size_mib."))
        count = number * _COUNT_SUFFIX[unit]
        if metric == "size_mib":  # a count of parameters
            return count * BYTES_PER_PARAM / MIB
        return count
    if unit in _BYTE_SUFFIX:
        size_bytes = number * _BYTE_SUFFIX[unit]
        if metric == "params":
            return size_bytes / BYTES_PER_PARAM
        if metric in ("size_mib", "int8_mib"):
            return size_bytes / MIB
        raise ParameterError(param_message(
            name, "a number of MACs (like '150M') when size_metric='macs'", value,
            "Byte sizes apply to size_metric='params', 'size_mib' or 'int8_mib'."))
    raise ParameterError(param_message(name, expected, value, _SIZE_HINT))



#: Search settings added after searches were already being saved, with the value those
#: searches ran with: a checkpoint or run directory without one resumes as it started, whatever
#: the default has become.
BEFORE_ADDED: Dict[str, Any] = {"initial": "singles", "local_search": 0, "screen": 0,
                                 "surrogate": "ridge"}


@dataclass(frozen=True, kw_only=True)
class SearchSettings:
    """How the NSGA-II search runs.

    Objectives (the paper's two problems; both run as NSGA-II on (P maximised, size minimised)
    with Deb's constrained domination):

    - ``objective="min-size"``: smallest model with validation accuracy P >= ``p_min``;
      violation = max(0, p_min - P).
    - ``objective="max-accuracy"``: most accurate model with size <= ``size_max``; violation =
      max(0, size - size_max) / size_max. A selection over ``size_max`` is infeasible without
      training (its P is left NaN).

    ``size_metric`` is ``params`` (default), ``size_mib`` (params x 4 bytes / 2^20), ``macs`` or
    ``int8_mib`` (MiB of the tensors of the graft's int8 copy; the tap list must carry int8
    sizes, :meth:`TapList.with_int8_sizes`);
    ``size_max`` accepts numbers or text, converted into that metric's unit (see
    :func:`parse_size`) and stored converted.

    Evolution: ``population`` selections per generation (default 8 for 160 generations: with a
    surrogate, a smaller generation refits it more often within a small budget; 16 and, before
    that, 32 were the defaults, see the peers benchmark's ablation rows; a generation's new
    selections are one parallel batch, so with more than 8 workers a larger population keeps
    them busy), offspring by
    binary tournament
    (constrained rank, then crowding distance), ``crossover`` ("uniform": each bit swapped with
    probability 0.5, or "two-point") with probability ``cx_prob``, then bit-flip mutation with
    probability ``mut_prob`` flipping each bit with probability ``indpb`` (None: 1 / number of
    taps). ``initial`` is how the first population starts: ``"random"`` (default), ``"singles"``
    (every single-tap selection, then random ones) or ``"greedy"`` (greedy forward selection's
    path, up to twice the population, then random ones). ``local_search`` gives up to that many
    of each generation's places to the one-bit-flip neighbours, not yet evaluated, of the front's
    members, best pick first (a memetic step: the rest of the generation is bred as usual);
    0 (default) turns it off, None gives a quarter of the population. ``screen``
    (default 8; 0 or 1: off) breeds that many times as many offspring as there are places and
    lets a ``surrogate`` of P (fitted on the latest evaluations; sizes are exact) choose among
    them, so that fitness calls go where the front is predicted to move. ``surrogate="gp"``
    (default): a Gaussian process on the taps; the candidates are the bred offspring and the
    front's unevaluated neighbours within two bit flips, and places go to those whose
    optimistic P would add the most hypervolume (max-accuracy: every bred place; min-size: half
    at first, all from 256 evaluations on, the rest as bred). ``surrogate="ridge"``: ridge
    regression on taps and pairs of taps, half the places to the offspring it ranks best by
    NSGA-II's own survival rule, the other half as bred (the default before the GP; searches
    saved before this setting existed resume with it). The defaults of these and of ``population``
    were chosen on the peers benchmark (``benchmarks/results/peers.md``, the ablation rows).

    Termination, whichever comes first: ``generations`` after the initial population,
    ``max_evaluations`` fitness calls (selections rejected on size alone are free),
    ``max_seconds`` of wall-clock (summed over resumes), or ``stagnation`` generations in a row
    without hypervolume gain (while nothing is feasible: without a smaller violation).

    ``seed`` is the run's one seed. ``n_jobs`` evaluates each generation's new selections in
    that many processes (joblib, loky; -1: all cores); ``dask_scheduler`` (``tcp://HOST:PORT``)
    evaluates them on a dask.distributed cluster instead. ``refine`` re-evaluates the final
    front ("front") or the front and every selection one bit away from it
    ("front+neighbours") with a second, more faithful fitness. ``checkpoint_every`` writes
    ``checkpoint.pkl`` every that many generations (and always at the end).

    ``pick`` is how the best pick is taken from the front: ``"best"`` by the objective alone;
    ``"one-se"`` (max-accuracy) the smallest feasible selection whose P is within one standard
    error (``val_accuracy_se``) of the most accurate one's, since val accuracy on a few hundred
    images carries about a point of binomial noise. Without a standard error (a custom fitness
    that gives none), or at P = 1 (whose binomial standard error is 0), it picks as ``"best"``.
    """

    objective: str = field(default="min-size", metadata={"choices": OBJECTIVES})
    p_min: Optional[float] = None
    size_max: Optional[SizeLike] = None
    size_metric: str = field(default="params", metadata={"choices": SIZE_METRICS})
    population: int = 8
    generations: int = 160
    max_evaluations: Optional[int] = None
    max_seconds: Optional[float] = None
    stagnation: Optional[int] = None
    crossover: str = field(default="uniform", metadata={"choices": CROSSOVERS})
    initial: str = field(default="random", metadata={"choices": INITIALS})
    local_search: Optional[int] = 0
    screen: int = 8
    surrogate: str = field(default="gp", metadata={"choices": SURROGATES})
    cx_prob: float = 0.9
    mut_prob: float = 1.0
    indpb: Optional[float] = None
    seed: int = 0
    n_jobs: int = 1
    dask_scheduler: Optional[str] = None
    # Refining needs a second fitness (``run_search(refine_fitness=...)``), so a search refines
    # only when asked to; this is also the default of `graftsearch run` and graftsearch.search.
    refine: str = field(default="none", metadata={"choices": REFINES})
    pick: str = field(default="best", metadata={"choices": PICKS})
    checkpoint_every: int = 1

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.metadata.get("choices"):
                self._choice(f.name, f.metadata["choices"])
        if self.objective == "min-size":
            if self.p_min is None:
                raise ParameterError(param_message(
                    "p_min", "a float in (0, 1] when objective='min-size'", None,
                    "Pass the accuracy the model must reach, e.g. p_min=0.9 (`--p-min 0.9`)."))
            if not is_real(self.p_min) or not 0.0 < float(self.p_min) <= 1.0:
                raise ParameterError(param_message("p_min", "a float in (0, 1]", self.p_min))
            object.__setattr__(self, "p_min", float(self.p_min))
            if self.size_max is not None:
                raise ParameterError(param_message(
                    "size_max", "None when objective='min-size'", self.size_max,
                    "Use objective='max-accuracy' (`--objective max-accuracy`) to bound the size."))
        else:
            if self.size_max is None:
                raise ParameterError(param_message(
                    "size_max", "a size when objective='max-accuracy'", None,
                    "Pass the largest model allowed, e.g. size_max='2M' (`--size-max 2M`)."))
            object.__setattr__(self, "size_max", parse_size(self.size_max, self.size_metric))
            if self.p_min is not None:
                raise ParameterError(param_message(
                    "p_min", "None when objective='max-accuracy'", self.p_min,
                    "Use objective='min-size' (`--objective min-size`) to require an accuracy."))
        if self.pick == "one-se" and self.objective != "max-accuracy":
            raise ParameterError(param_message(
                "pick", "'best' when objective='min-size'", self.pick,
                "The one-standard-error rule picks among the most accurate selections "
                "(`--objective max-accuracy`); min-size already takes the smallest."))
        self._int("population", 4)
        self._int("generations", 0)
        self._int("max_evaluations", 1, optional=True)
        self._int("stagnation", 1, optional=True)
        self._int("checkpoint_every", 1)
        self._int("local_search", 0, optional=True)
        self._int("screen", 0)
        if self.max_seconds is not None:
            if not is_real(self.max_seconds) or self.max_seconds <= 0:
                raise ParameterError(param_message("max_seconds", "a positive number of seconds or None",
                                                   self.max_seconds))
            object.__setattr__(self, "max_seconds", float(self.max_seconds))
        for name in ("cx_prob", "mut_prob"):
            value = getattr(self, name)
            if not is_real(value) or not 0.0 <= value <= 1.0:
                raise ParameterError(param_message(name, "a float in [0, 1]", value))
            object.__setattr__(self, name, float(value))
        if self.indpb is not None:
            if not is_real(self.indpb) or not 0.0 < self.indpb <= 1.0:
                raise ParameterError(param_message("indpb", "a float in (0, 1] or None (1 / number of taps)",
                                                   self.indpb))
            object.__setattr__(self, "indpb", float(self.indpb))
        if not is_int(self.seed):
            raise ParameterError(param_message("seed", "an integer", self.seed))
        object.__setattr__(self, "seed", int(self.seed))
        if not is_int(self.n_jobs) or not (self.n_jobs >= 1 or self.n_jobs == -1):
            raise ParameterError(param_message("n_jobs", "a positive integer or -1 (all cores)", self.n_jobs))
        object.__setattr__(self, "n_jobs", int(self.n_jobs))
        if self.dask_scheduler is not None and (not isinstance(self.dask_scheduler, str)
                                                or not self.dask_scheduler.strip()):
            raise ParameterError(param_message("dask_scheduler", "a scheduler address like 'tcp://HOST:8786'",
                                               self.dask_scheduler))

    def _choice(self, name: str, choices) -> None:
        value = getattr(self, name)
        if value not in choices:
            from graftsearch._utils.errors import close_matches_hint

            hint = close_matches_hint(value, choices) if isinstance(value, str) else ""
            raise ParameterError(param_message(name, "one of " + ", ".join(repr(c) for c in choices),
                                               value, hint or None))

    def _int(self, name: str, low: int, *, optional: bool = False) -> None:
        value = getattr(self, name)
        if value is None and optional:
            return
        if not is_int(value) or value < low:
            expected = f"an integer >= {low}" + (" or None" if optional else "")
            raise ParameterError(param_message(name, expected, value))
        object.__setattr__(self, name, int(value))

    # ------------------------------------------------------------------------------------------
    @property
    def local_places(self) -> int:
        """Places per generation of the local step: ``local_search``, or a quarter of the
        population when it is None."""
        return self.population // 4 if self.local_search is None else self.local_search

    @property
    def size_unit(self) -> str:
        return {"params": "params", "size_mib": "MiB", "macs": "MACs",
                "int8_mib": "int8 MiB"}[self.size_metric]

    def format_size(self, value: float) -> str:
        """``value`` of the size metric as text with its unit ("1,934,665 params", "7.380 MiB")."""
        if self.size_metric in ("size_mib", "int8_mib"):
            return f"{value:.3f} {self.size_unit}"
        return f"{value:,.0f} {self.size_unit}"

    def violation(self, val_accuracy: float, size: float) -> float:
        """How far a selection is from the constraint (0 when it is met); NaN P means untrained."""
        if self.objective == "min-size":
            return max(0.0, self.p_min - val_accuracy)  # type: ignore[operator]
        return max(0.0, size - self.size_max) / self.size_max  # type: ignore[operator]

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "SearchSettings":
        """Settings as :meth:`as_dict` wrote them; a setting added since reads as the value such
        a search ran with (:data:`BEFORE_ADDED`), so an old checkpoint resumes as it started."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in BEFORE_ADDED.items() if k not in data}
        values.update({k: v for k, v in data.items() if k in known})
        return cls(**values)

    def differences(self, other: "SearchSettings", *, ignore=RESUMABLE_CHANGES) -> Dict[str, tuple]:
        """Settings that differ from ``other`` (except those a resumed run may change)."""
        mine, theirs = self.as_dict(), other.as_dict()
        return {k: (theirs[k], mine[k]) for k in mine if k not in ignore and mine[k] != theirs[k]}
