"""The archive of a search: every distinct selection evaluated, keyed by its bit string.

A selection is evaluated at most once per run: asking again returns the stored record (an
"archive hit"). The archive travels in ``checkpoint.pkl``, so a resumed run never trains a
selection twice either. A selection's size is exact before any training; for ``max-accuracy``
a selection over ``size_max`` is recorded as infeasible without calling the fitness (P = NaN).

A failed evaluation (the fitness raised, or returned no finite P in [0, 1]) is recorded with
``violation = inf``: infeasible, behind every other selection, never on the front.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import AbstractSet, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from graftsearch.fitness._evaluation import Evaluation
from graftsearch.taps._head import HeadSpec
from graftsearch.taps._selection import from_bits, taps_string
from graftsearch.optimize._settings import SearchSettings
from graftsearch.taps._records import Cost, TapList

#: Sizes of screened-but-unevaluated candidates remembered at most (about 100 bytes each).
SIZE_MEMO = 1 << 16

logger = logging.getLogger("graftsearch")

FAILED_VIOLATION = math.inf


@dataclass(frozen=True, kw_only=True)
class Scored:
    """A selection (``bits``, one 0/1 per tap), its exact size and its fitness: the fields a
    :class:`Record` of the archive and a :class:`~graftsearch.optimize.Pick` share."""

    bits: str
    params: int
    size_mib: float
    macs: int
    val_accuracy: float
    val_loss: float
    feasible: bool
    violation: float
    generation: int
    # None when unknown (not NaN: records must compare equal after a checkpoint round trip);
    # a class-level default too, so records pickled before the column existed still read
    val_accuracy_se: Optional[float] = None
    # MiB of the int8 copy's tensors; None unless the tap list has int8 sizes (same defaults)
    int8_mib: Optional[float] = None
    extras: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def scored_fields(cls, source: "Scored") -> Dict[str, object]:
        """The shared fields of ``source`` as keyword arguments (``extras`` copied)."""
        out = {f.name: getattr(source, f.name) for f in fields(Scored)}
        out["extras"] = dict(source.extras)
        return out


@dataclass(frozen=True, kw_only=True)
class Record(Scored):
    """One evaluated selection, as it appears in ``evaluations.csv``."""

    evaluated_at: str
    trained: bool = True
    failed: bool = False
    error: str = ""
    fidelity: str = ""

    @property
    def taps(self) -> Tuple[int, ...]:
        return tuple(i + 1 for i, c in enumerate(self.bits) if c == "1")

    @property
    def taps_text(self) -> str:
        return taps_string(self.taps)

    def size(self, metric: str) -> float:
        return float(getattr(self, metric))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def make_record(bits: str, evaluation: Optional[Evaluation], *, taps: TapList, head: HeadSpec,
                settings: SearchSettings, generation: int, evaluated_at: str,
                cost: Optional[Cost] = None) -> Record:
    """The archive record of ``bits``; ``evaluation`` None means rejected on size alone."""
    if cost is None:
        cost = taps.cost(from_bits(bits, len(taps)), head)
    size = float(cost.metric(settings.size_metric))
    if evaluation is None:
        return Record(bits=bits, params=cost.params, size_mib=cost.size_mib, macs=cost.macs,
                      int8_mib=cost.int8_mib, val_accuracy=math.nan, val_loss=math.nan, feasible=False,
                      violation=settings.violation(math.nan, size), generation=generation,
                      evaluated_at=evaluated_at, trained=False)
    p = evaluation.val_accuracy
    failed = bool(evaluation.failed) or not _valid_p(p)
    error = evaluation.error
    if failed and not evaluation.failed:
        error = f"the fitness returned val_accuracy={p!r}, not a float in [0, 1]"
    if failed:
        violation = FAILED_VIOLATION
        p = math.nan
    else:
        p = float(p)
        violation = float(settings.violation(p, size))
    loss = evaluation.val_loss
    loss = float(loss) if isinstance(loss, (int, float)) and not isinstance(loss, bool) else math.nan
    se = getattr(evaluation, "val_accuracy_se", None)
    se = float(se) if (isinstance(se, (int, float)) and not isinstance(se, bool) and not failed
                       and math.isfinite(se) and se >= 0) else None
    extras = {str(k): float(v) for k, v in dict(evaluation.extras or {}).items()}
    return Record(bits=bits, params=cost.params, size_mib=cost.size_mib, macs=cost.macs,
                  int8_mib=cost.int8_mib, val_accuracy=p, val_loss=loss, val_accuracy_se=se, feasible=violation == 0.0,
                  violation=violation,
                  generation=generation, evaluated_at=evaluated_at, extras=extras, trained=True,
                  failed=failed, error=str(error or ""), fidelity=str(evaluation.fidelity or ""))


def _valid_p(p) -> bool:
    return (isinstance(p, (int, float)) and not isinstance(p, bool) and math.isfinite(p)
            and 0.0 <= p <= 1.0)


Runner = Callable[[Sequence[Tuple[int, ...]]], List[Evaluation]]


class Archive:
    """Evaluated selections in the order they were first evaluated."""

    def __init__(self, taps: TapList, head: HeadSpec, settings: SearchSettings):
        self.taps = taps
        self.head = head
        self.settings = settings
        self._records: Dict[str, Record] = {}
        self._trained = 0
        self.hits = 0
        self._costs: Dict[str, Cost] = {}  # the size check and the record share one computation
        self._sizes: Dict[str, float] = {}  # see size_of

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, bits: str) -> bool:
        return bits in self._records

    def __getitem__(self, bits: str) -> Record:
        return self._records[bits]

    def keys(self) -> AbstractSet[str]:
        """The bit strings evaluated so far (a live view)."""
        return self._records.keys()

    def records(self) -> List[Record]:
        return list(self._records.values())

    @property
    def trained(self) -> int:
        """Number of fitness calls made (selections rejected on size alone do not count)."""
        return self._trained

    def size_feasible(self, bits: str) -> bool:
        if self.settings.objective != "max-accuracy":
            return True
        # size_of keeps no Cost for a selection never evaluated (the screens ask of many)
        return self.size_of(bits) <= self.settings.size_max  # type: ignore[operator]

    def size_of(self, bits: str) -> float:
        """The size of ``bits`` in the search's size metric (exact, without a fitness call)."""
        cost = self._costs.get(bits)
        if cost is not None:
            return float(cost.metric(self.settings.size_metric))
        # screened candidates are mostly never evaluated, so their Costs are not kept; their
        # sizes are (a float each, the same candidates are bred again and again), up to a bound
        size = self._sizes.get(bits)
        if size is None:
            if len(self._sizes) >= SIZE_MEMO:
                self._sizes.clear()
            cost = self.taps.cost(from_bits(bits, len(self.taps)), self.head)
            size = self._sizes[bits] = float(cost.metric(self.settings.size_metric))
        return size

    def _cost(self, bits: str) -> Cost:
        cost = self._costs.get(bits)
        if cost is None:
            cost = self._costs[bits] = self.taps.cost(from_bits(bits, len(self.taps)), self.head)
        return cost

    def evaluate(self, bits_list: Iterable[str], run: Runner, *, generation: int,
                 budget: Optional[int] = None) -> List[Record]:
        """Evaluate the selections not yet in the archive; return the new records in order.

        ``run`` maps a list of selections (tap indices) to their evaluations (in order).
        ``budget`` caps the number of fitness calls of this batch; selections beyond it are
        left out (neither evaluated nor recorded).
        """
        new: List[str] = []
        seen = set()
        for bits in bits_list:
            if bits in self._records:
                self.hits += 1
            elif bits not in seen:
                seen.add(bits)
                new.append(bits)
        to_train: List[str] = []
        rejected: List[str] = []
        for bits in new:
            (to_train if self.size_feasible(bits) else rejected).append(bits)
        if budget is not None and len(to_train) > budget:
            dropped = set(to_train[max(budget, 0):])
            to_train = to_train[:max(budget, 0)]
            new = [b for b in new if b not in dropped]
        evaluations = run([from_bits(b, len(self.taps)) for b in to_train]) if to_train else []
        if len(evaluations) != len(to_train):
            raise RuntimeError("the evaluation runner returned a different number of results")
        by_bits = dict(zip(to_train, evaluations))
        stamp = _now()
        records = []
        for bits in new:
            record = make_record(bits, by_bits.get(bits), taps=self.taps, head=self.head,
                                 settings=self.settings, generation=generation, evaluated_at=stamp,
                                 cost=self._costs.pop(bits, None))
            if record.failed:
                logger.warning("evaluation of taps %s failed: %s", record.taps_text, record.error)
            self._records[bits] = record
            self._trained += record.trained
            records.append(record)
        return records

    def restore(self, records: Iterable[Record], hits: int) -> None:
        self._records = {r.bits: r for r in records}
        self._trained = sum(1 for r in self._records.values() if r.trained)
        self.hits = hits
