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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

from graftsearch._utils import labels as L
from graftsearch.optimize._archive import Record, Scored
from graftsearch.optimize._hypervolume import nondominated_indices
from graftsearch.optimize._runfiles import CONVERGENCE_COLUMNS, RunFiles, parse_bool, records_frame
from graftsearch.optimize._settings import SearchSettings

if TYPE_CHECKING:
    import pandas as pd

LEAST_VIOLATING = 10


def preference(objective: str, size: float, val_accuracy: float, bits: str) -> tuple:
    """The sort key of the search's order of preference (smallest first), the one order every
    pick follows: the search's, the final training's and the report's."""
    p = val_accuracy if math.isfinite(val_accuracy) else -math.inf
    if objective == "min-size":
        return (size, -p, bits)
    return (-p, size, bits)


def preference_key(record: Record, settings: SearchSettings) -> tuple:
    return preference(settings.objective, record.size(settings.size_metric), record.val_accuracy,
                      record.bits)


def one_se_first(order: Sequence[int], sizes: Sequence[float], accuracies: Sequence[float],
                 ses: Sequence[Optional[float]], bits: Sequence[str]) -> List[int]:
    """``order`` (feasible selections, most accurate first) with the one-standard-error pick moved
    to the front: the smallest selection whose P is at least the best P minus the best's
    standard error (ties: the higher P, then the bit string). Without a standard error the
    best stays first."""
    order = list(order)
    if not order:
        return order
    top = order[0]
    se = ses[top]
    if se is None or not math.isfinite(float(se)):
        return order
    floor = float(accuracies[top]) - float(se)
    within = [i for i in order if float(accuracies[i]) >= floor]
    chosen = min(within, key=lambda i: preference("min-size", float(sizes[i]),
                                                  float(accuracies[i]), str(bits[i])))
    return [chosen] + [i for i in order if i != chosen]


def feasible_mask(frame: "pd.DataFrame") -> "pd.Series":
    return frame["feasible"].map(parse_bool).astype(bool)


def order_rows(frame: "pd.DataFrame", objective: str,
               size_metric: str = "params", pick: Optional[str] = "best") -> "pd.DataFrame":
    """Every row of a table of selections (a run's pareto.csv) in the order the search ranks
    them: feasible rows first by :func:`preference_key` (``pick="one-se"``: the one-standard-
    error pick first, :func:`one_se_first`), then the others by violation as
    :func:`least_violating` orders them."""
    # the objective as the search reads it: anything but max-accuracy is min-size
    objective = "max-accuracy" if objective == "max-accuracy" else "min-size"
    if not len(frame):
        return frame
    feasible = feasible_mask(frame).tolist()
    keys = [(0.0,) + preference(objective, float(size), float(p), str(bits)) if ok else
            (1.0, float(violation)) + preference(objective, float(size), float(p), str(bits))
            for ok, size, p, bits, violation in zip(feasible, frame[size_metric],
                                                    frame["val_accuracy"], frame["bits"],
                                                    frame["violation"])]
    order = sorted(range(len(keys)), key=keys.__getitem__)
    if pick == "one-se" and objective == "max-accuracy" and "val_accuracy_se" in frame.columns:
        n_ok = sum(feasible)
        se = [None if not math.isfinite(float(v)) else float(v) for v in frame["val_accuracy_se"]]
        order = one_se_first(order[:n_ok], frame[size_metric].tolist(),
                             frame["val_accuracy"].tolist(), se,
                             frame["bits"].astype(str).tolist()) + order[n_ok:]
    return frame.iloc[order]


def order_front(frame: "pd.DataFrame", objective: str,
                size_metric: str = "params", pick: Optional[str] = "best") -> "pd.DataFrame":
    """The feasible rows of a table of selections, best first (the search's rank 1 first)."""
    ordered = order_rows(frame, objective, size_metric, pick)
    return ordered[feasible_mask(ordered)] if len(ordered) else ordered


def feasible_front(records: Sequence[Record], settings: SearchSettings) -> List[Record]:
    """Feasible non-dominated records in the objective's order of preference."""
    feasible = [r for r in records if r.feasible]
    sizes = [r.size(settings.size_metric) for r in feasible]
    kept = nondominated_indices(sizes, [r.val_accuracy for r in feasible])
    front = sorted((feasible[i] for i in kept), key=lambda r: preference_key(r, settings))
    if settings.pick == "one-se" and settings.objective == "max-accuracy":
        order = one_se_first(range(len(front)), [r.size(settings.size_metric) for r in front],
                             [r.val_accuracy for r in front],
                             [r.val_accuracy_se for r in front], [r.bits for r in front])
        front = [front[i] for i in order]
    return front


def least_violating(records: Sequence[Record], settings: SearchSettings,
                    k: int = LEAST_VIOLATING) -> List[Record]:
    ordered = sorted(records, key=lambda r: (r.violation,) + preference_key(r, settings))
    return ordered[:k]


def front_or_closest(records: Sequence[Record], settings: SearchSettings) -> Tuple[List[Record], bool]:
    front = feasible_front(records, settings)
    if front:
        return front, True
    return least_violating(records, settings), False


@dataclass(frozen=True, kw_only=True)
class Pick(Scored):
    """One selection with its exact size and its fitness (a row of the CSV files).

    ``taps`` are the 1-based tap indices (use them as the selection of a
    :class:`~graftsearch.GraftedModel`); ``bits`` is the same selection as a 0/1 string.
    """

    taps: Tuple[int, ...]
    n_taps: int
    deepest_tap: int

    @classmethod
    def from_record(cls, record: Record) -> "Pick":
        taps = record.taps
        return cls(taps=taps, n_taps=len(taps), deepest_tap=taps[-1],
                   **Scored.scored_fields(record))

    @property
    def selection(self) -> Tuple[int, ...]:
        return self.taps

    def size(self, metric: str) -> float:
        return float(getattr(self, metric))

    def as_dict(self) -> Dict[str, Any]:
        return {"bits": self.bits, "taps": ";".join(map(str, self.taps)), "n_taps": self.n_taps,
                "deepest_tap": self.deepest_tap, "params": self.params, "size_mib": self.size_mib,
                "macs": self.macs, "int8_mib": self.int8_mib, "val_accuracy": self.val_accuracy,
                "val_loss": self.val_loss, "val_accuracy_se": self.val_accuracy_se,
                "feasible": self.feasible, "violation": self.violation,
                "generation": self.generation, **dict(self.extras)}


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
    if settings.size_metric == "int8_mib" and record.int8_mib is not None:
        text += f", {record.int8_mib:.3f} int8 MiB"
    return text


def _limit_text(settings: SearchSettings) -> str:
    return settings.format_size(settings.size_max)


def summary_message(settings: SearchSettings, front: Sequence[Record], feasible: bool, *,
                    evaluations: int, generations: int, stopped_by: str, refined: bool = False) -> str:
    ran = (f"{evaluations} evaluations over {generations} generations (stopped by {stopped_by})"
           + ("; P re-evaluated with the refining fitness" if refined else ""))
    best = front[0]
    acc = L.accuracy(L.search_source(refined))  # the front's own accuracy, named
    if feasible:
        if settings.objective == "min-size":
            what = f"smallest selection with {acc} >= {settings.p_min:g}"
        elif settings.pick == "one-se":
            what = (f"smallest selection within {_limit_text(settings)} and within one standard "
                    f"error of the most accurate one's {acc}")
        else:
            what = f"most accurate selection within {_limit_text(settings)}"
        return (f"The {what}: taps {best.taps_text} ({_size_text(best, settings)}), {acc} "
                f"{best.val_accuracy:.4f}. Front of {len(front)} selections after {ran}.")
    if best.failed or math.isinf(best.violation):
        return (f"No selection could be evaluated: every evaluation failed after {ran} "
                f"(first error: {best.error}). Check the fitness.")
    if settings.objective == "min-size":
        return (f"No selection reached p_min = {settings.p_min:g}. The closest was taps "
                f"{best.taps_text} with {acc} {best.val_accuracy:.4f}, "
                f"{settings.p_min - best.val_accuracy:.4f} short ({_size_text(best, settings)}), "
                f"after {ran}. Lower p_min, search longer, or use a donor or fitness that separates "
                "the classes better.")
    return (f"No evaluated selection fits size_max = {_limit_text(settings)}. The closest was taps "
            f"{best.taps_text} ({_size_text(best, settings)}), {best.violation:.1%} over, after "
            f"{ran}. Raise size_max or use a smaller head.")
