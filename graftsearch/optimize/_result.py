"""What a search returns: the front, the best pick per objective, every evaluation, and history.

The best pick follows the objective: ``min-size`` takes the smallest feasible selection (ties: the
higher P), ``max-accuracy`` the feasible selection with the highest P (ties: the smaller size);
remaining ties go to the bit string that sorts first. ``pareto`` lists the feasible
non-dominated selections in that order of preference, ``rank`` 1 being the best pick. When no
selection is feasible, ``feasible`` is False, ``pareto`` holds the least-violating selections
(smallest violation first) and ``message`` says how close the search came.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from graftsearch.optimize._archive import Record
from graftsearch.optimize._hypervolume import nondominated_indices
from graftsearch.optimize._runfiles import COLUMNS, CONVERGENCE_COLUMNS, RunFiles, extras_keys
from graftsearch.optimize._settings import SearchSettings

LEAST_VIOLATING = 10


def preference_key(record: Record, settings: SearchSettings) -> tuple:
    size = record.size(settings.size_metric)
    p = record.val_accuracy if math.isfinite(record.val_accuracy) else -math.inf
    if settings.objective == "min-size":
        return (size, -p, record.bits)
    return (-p, size, record.bits)


def feasible_front(records: Sequence[Record], settings: SearchSettings) -> List[Record]:
    """Feasible non-dominated records in the objective's order of preference."""
    feasible = [r for r in records if r.feasible]
    sizes = [r.size(settings.size_metric) for r in feasible]
    kept = nondominated_indices(sizes, [r.val_accuracy for r in feasible])
    return sorted((feasible[i] for i in kept), key=lambda r: preference_key(r, settings))


def least_violating(records: Sequence[Record], settings: SearchSettings,
                    k: int = LEAST_VIOLATING) -> List[Record]:
    ordered = sorted(records, key=lambda r: (r.violation,) + preference_key(r, settings))
    return ordered[:k]


def front_or_closest(records: Sequence[Record], settings: SearchSettings) -> Tuple[List[Record], bool]:
    front = feasible_front(records, settings)
    if front:
        return front, True
    return least_violating(records, settings), False


@dataclass(frozen=True)
class Pick:
    """One selection with its exact size and its fitness (a row of the CSV files).

    ``taps`` are the 1-based tap indices (use them as the selection of a
    :class:`~graftsearch.GraftedModel`); ``bits`` is the same selection as a 0/1 string.
    """

    bits: str
    taps: Tuple[int, ...]
    n_taps: int
    deepest_tap: int
    params: int
    size_mib: float
    macs: int
    val_accuracy: float
    val_loss: float
    feasible: bool
    violation: float
    generation: int
    extras: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def from_record(cls, record: Record) -> "Pick":
        taps = record.taps
        return cls(bits=record.bits, taps=taps, n_taps=len(taps), deepest_tap=taps[-1],
                   params=record.params, size_mib=record.size_mib, macs=record.macs,
                   val_accuracy=record.val_accuracy, val_loss=record.val_loss,
                   feasible=record.feasible, violation=record.violation,
                   generation=record.generation, extras=dict(record.extras))

    @property
    def selection(self) -> Tuple[int, ...]:
        return self.taps

    def size(self, metric: str) -> float:
        return float(getattr(self, metric))

    def as_dict(self) -> Dict[str, Any]:
        return {"bits": self.bits, "taps": ";".join(map(str, self.taps)), "n_taps": self.n_taps,
                "deepest_tap": self.deepest_tap, "params": self.params, "size_mib": self.size_mib,
                "macs": self.macs, "val_accuracy": self.val_accuracy, "val_loss": self.val_loss,
                "feasible": self.feasible, "violation": self.violation,
                "generation": self.generation, **dict(self.extras)}


_DTYPES = {"bits": str, "taps": str, "n_taps": "int64", "deepest_tap": "int64", "params": "int64",
           "size_mib": "float64", "macs": "int64", "val_accuracy": "float64", "val_loss": "float64",
           "feasible": bool, "violation": "float64", "generation": "int64", "evaluated_at": str}


def records_frame(records: Sequence[Record], ranks: Optional[Sequence[int]] = None):
    import pandas as pd

    extras = extras_keys(records)
    rows = []
    for i, r in enumerate(records):
        taps = r.taps
        row = {"bits": r.bits, "taps": r.taps_text, "n_taps": len(taps), "deepest_tap": taps[-1],
               "params": r.params, "size_mib": r.size_mib, "macs": r.macs,
               "val_accuracy": r.val_accuracy, "val_loss": r.val_loss, "feasible": r.feasible,
               "violation": r.violation, "generation": r.generation, "evaluated_at": r.evaluated_at}
        row.update({k: r.extras.get(k, math.nan) for k in extras})
        if ranks is not None:
            row["rank"] = ranks[i]
        rows.append(row)
    columns = list(COLUMNS) + extras + (["rank"] if ranks is not None else [])
    frame = pd.DataFrame(rows, columns=columns)
    return frame.astype({k: v for k, v in _DTYPES.items()} | ({"rank": "int64"} if ranks is not None else {}))


@dataclass
class SearchResult:
    """The outcome of :func:`~graftsearch.run_search`.

    ``pareto`` (DataFrame): the feasible front, best pick first (``rank`` 1), or the
    least-violating selections when ``feasible`` is False; ``archive`` (DataFrame): every
    distinct evaluated selection; ``best``: the best pick (:class:`Pick`; the least-violating
    selection when nothing is feasible); ``history`` (DataFrame): one row per generation with
    the hypervolume and best pick; ``message``: a one-paragraph summary; ``stopped_by``: which
    limit ended the search (``generations``, ``max_evaluations``, ``max_seconds``,
    ``stagnation`` or ``exhausted``: every selection was evaluated). With ``refine``,
    ``refined`` holds the re-evaluated selections and ``pareto``/``best`` come from them.
    """

    settings: SearchSettings
    records: List[Record]
    front: List[Record]
    feasible: bool
    message: str
    stopped_by: str
    generations: int
    evaluations: int
    archive_hits: int
    history_records: List[Dict[str, Any]]
    run_dir: Optional[Path] = None
    refined_records: Optional[List[Record]] = None

    @property
    def best(self) -> Pick:
        return Pick.from_record(self.front[0])

    @property
    def pareto(self):
        return records_frame(self.front, ranks=list(range(1, len(self.front) + 1)))

    @property
    def archive(self):
        return records_frame(self.records)

    @property
    def refined(self):
        return None if self.refined_records is None else records_frame(self.refined_records)

    @property
    def history(self):
        import pandas as pd

        return pd.DataFrame([{k: h.get(k) for k in CONVERGENCE_COLUMNS} for h in self.history_records],
                            columns=list(CONVERGENCE_COLUMNS))

    @property
    def failures(self):
        """Selections whose evaluation failed, with the error (DataFrame: bits, taps, error)."""
        import pandas as pd

        return pd.DataFrame([{"bits": r.bits, "taps": r.taps_text, "error": r.error}
                             for r in self.records if r.failed], columns=["bits", "taps", "error"])

    def to_csv(self, directory) -> Path:
        """Write ``evaluations.csv``, ``pareto.csv``, ``convergence.csv`` (and ``refined.csv``)."""
        files = RunFiles(directory)
        files.prepare()
        files.rewrite_evaluations(self.records)
        files.write_pareto(self.front, list(range(1, len(self.front) + 1)))
        files.write_convergence(self.history_records)
        if self.refined_records is not None:
            files.write_refined(self.refined_records)
        return files.root

    def __repr__(self) -> str:
        return (f"SearchResult(objective={self.settings.objective!r}, feasible={self.feasible}, "
                f"best={self.front[0].taps_text!r}, front={len(self.front)}, "
                f"evaluations={self.evaluations}, generations={self.generations}, "
                f"stopped_by={self.stopped_by!r})")


def _size_text(record: Record, settings: SearchSettings) -> str:
    text = f"{record.params:,} params, {record.size_mib:.3f} MiB"
    if settings.size_metric == "macs":
        text += f", {record.macs:,} MACs"
    return text


def _limit_text(settings: SearchSettings) -> str:
    return settings.format_size(settings.size_max)


def summary_message(settings: SearchSettings, front: Sequence[Record], feasible: bool, *,
                    evaluations: int, generations: int, stopped_by: str, refined: bool = False) -> str:
    ran = (f"{evaluations} evaluations over {generations} generations (stopped by {stopped_by})"
           + ("; P re-evaluated with the refining fitness" if refined else ""))
    best = front[0]
    if feasible:
        if settings.objective == "min-size":
            what = f"smallest selection with val_accuracy >= {settings.p_min:g}"
        else:
            what = f"most accurate selection within {_limit_text(settings)}"
        return (f"The {what}: taps {best.taps_text} ({_size_text(best, settings)}), val_accuracy "
                f"{best.val_accuracy:.4f}. Front of {len(front)} selections after {ran}.")
    if best.failed or math.isinf(best.violation):
        return (f"No selection could be evaluated: every evaluation failed after {ran} "
                f"(first error: {best.error}). Check the fitness.")
    if settings.objective == "min-size":
        return (f"No selection reached p_min = {settings.p_min:g}. The closest was taps "
                f"{best.taps_text} with val_accuracy {best.val_accuracy:.4f}, "
                f"{settings.p_min - best.val_accuracy:.4f} short ({_size_text(best, settings)}), "
                f"after {ran}. Lower p_min, search longer, or use a donor or fitness that separates "
                "the classes better.")
    return (f"No evaluated selection fits size_max = {_limit_text(settings)}. The closest was taps "
            f"{best.taps_text} ({_size_text(best, settings)}), {best.violation:.1%} over, after "
            f"{ran}. Raise size_max or use a smaller head.")
