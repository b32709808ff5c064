"""The files a search keeps in its run directory.

``evaluations.csv`` (one row per distinct evaluated selection, appended after every generation),
``pareto.csv`` (the current front, plus ``rank``), ``convergence.csv`` (one row per generation),
``refined.csv`` (the re-evaluated selections when the run refines its front), ``taps.csv`` and
``checkpoint.pkl``. Everything except the appended ``evaluations.csv`` is written to a temporary
file and renamed; on resume ``evaluations.csv`` is rewritten from the checkpoint's archive, so
rows of generations after the last checkpoint (or a half-written last line) disappear.

Numbers are written so that the same run gives the same bytes: floats as Python's shortest
round-trip ``repr``, NaN as an empty field, infinity as ``inf``. ``evaluated_at`` (UTC, ISO 8601)
is the only column that depends on the clock.
"""

from __future__ import annotations

import csv
import io
import math
import os
import pickle
import platform
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

from graftsearch.optimize._archive import Record
from graftsearch._utils.atomic import write_json, write_bytes, write_text
from graftsearch._utils.errors import SearchError

COLUMNS = ("bits", "taps", "n_taps", "deepest_tap", "params", "size_mib", "macs", "val_accuracy",
           "val_loss", "feasible", "violation", "generation", "evaluated_at")
CONVERGENCE_COLUMNS = ("generation", "evaluations", "hypervolume", "best_bits", "best_size",
                       "best_val_accuracy", "n_feasible", "elapsed_s")
CHECKPOINT_FORMAT = "graftsearch-search"
CHECKPOINT_VERSION = 1


def fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    return str(value)


def extras_keys(records: Iterable[Record]) -> List[str]:
    keys = set()
    for r in records:
        keys.update(r.extras)
    return sorted(keys)


def record_row(record: Record, extras: Sequence[str], rank: Optional[int] = None) -> List[str]:
    taps = record.taps
    row = [record.bits, record.taps_text, len(taps), taps[-1], record.params, record.size_mib,
           record.macs, record.val_accuracy, record.val_loss, record.feasible, record.violation,
           record.generation, record.evaluated_at]
    row += [record.extras.get(k, math.nan) for k in extras]
    if rank is not None:
        row.append(rank)
    return [fmt(v) for v in row]


def records_csv(records: Sequence[Record], *, extras: Optional[Sequence[str]] = None,
                ranks: Optional[Sequence[int]] = None, header: bool = True) -> str:
    """CSV text of ``records`` (DESIGN.md columns, then sorted extras, then ``rank`` if given)."""
    extras = extras_keys(records) if extras is None else list(extras)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if header:
        writer.writerow(list(COLUMNS) + list(extras) + (["rank"] if ranks is not None else []))
    for i, record in enumerate(records):
        writer.writerow(record_row(record, extras, None if ranks is None else ranks[i]))
    return buf.getvalue()


def history_csv(history: Sequence[Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CONVERGENCE_COLUMNS)
    for entry in history:
        writer.writerow([fmt(entry.get(k)) for k in CONVERGENCE_COLUMNS])
    return buf.getvalue()


def parse_bool(value: Any) -> bool:
    """A boolean CSV field as the run files write it ("True"/"False"; "1"/"yes" also read)."""
    return str(value).strip().lower() in ("true", "1", "yes")


EVALUATIONS, CHECKPOINT = "evaluations.csv", "checkpoint.pkl"


def versions() -> Dict[str, str]:
    """The versions a run directory's config.json records."""
    import deap
    import torch
    import torchvision

    from graftsearch._version import __version__

    return {"graftsearch": __version__, "torch": torch.__version__,
            "torchvision": torchvision.__version__, "deap": getattr(deap, "__version__", "?"),
            "python": platform.python_version()}


class RunFiles:
    """Reading and writing one run directory."""

    def __init__(self, root: os.PathLike | str):
        self.root = Path(root)
        self.evaluations = self.root / EVALUATIONS
        self.pareto = self.root / "pareto.csv"
        self.convergence = self.root / "convergence.csv"
        self.refined = self.root / "refined.csv"
        self.taps = self.root / "taps.csv"
        self.checkpoint = self.root / CHECKPOINT
        self._extras: Optional[List[str]] = None

    def prepare(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise SearchError(f"The run directory {str(self.root)!r} is a file. Choose a directory "
                              "(it is created when missing).")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SearchError(f"Cannot create the run directory {str(self.root)!r}: {exc.strerror}. "
                              "Choose a writable location.") from None

    def write_taps(self, taps) -> None:
        taps.to_csv(self.taps)

    def write_search_config(self, settings) -> None:
        """config.json with the search settings, unless ``graftsearch run`` wrote a complete one
        (which holds them too): the report and the final training read the objective there."""
        import json

        path = self.root / "config.json"
        if path.is_file():
            try:
                if "settings" in json.loads(path.read_text()):
                    return
            except (OSError, ValueError):
                pass  # damaged: rewrite it
        write_json(path, {"search": settings.as_dict(), "versions": versions()})

    def rewrite_evaluations(self, records: Sequence[Record]) -> None:
        self._extras = extras_keys(records)
        write_text(self.evaluations, records_csv(records, extras=self._extras))

    def append_evaluations(self, new: Sequence[Record], everything: Sequence[Record]) -> None:
        """Append ``new``; rewrite the whole file when they bring extra columns of their own."""
        if self._extras is None or not self.evaluations.exists() or not set(extras_keys(new)) <= set(self._extras):
            self.rewrite_evaluations(everything)
            return
        if not new:
            return
        with open(self.evaluations, "a", encoding="utf-8", newline="") as fh:
            fh.write(records_csv(new, extras=self._extras, header=False))
            fh.flush()
            os.fsync(fh.fileno())

    def write_pareto(self, records: Sequence[Record], ranks: Sequence[int]) -> None:
        write_text(self.pareto, records_csv(records, ranks=ranks))

    def write_refined(self, records: Sequence[Record]) -> None:
        write_text(self.refined, records_csv(records))

    def write_convergence(self, history: Sequence[Mapping[str, Any]]) -> None:
        write_text(self.convergence, history_csv(history))

    def save_checkpoint(self, state: Dict[str, Any]) -> None:
        payload = dict(state, format=CHECKPOINT_FORMAT, version=CHECKPOINT_VERSION)
        write_bytes(self.checkpoint, pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))

    def load_checkpoint(self) -> Dict[str, Any]:
        try:
            with open(self.checkpoint, "rb") as fh:
                state = pickle.load(fh)
        except Exception as exc:
            raise SearchError(
                f"The checkpoint {str(self.checkpoint)!r} cannot be read ({type(exc).__name__}: "
                f"{exc}). Start the search in a new run directory, or delete the checkpoint to start "
                "this one over.") from None
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise SearchError(f"{str(self.checkpoint)!r} is not a graftsearch search checkpoint. "
                              "Choose another run directory.")
        if state.get("version") != CHECKPOINT_VERSION:
            raise SearchError(f"The checkpoint {str(self.checkpoint)!r} has format version "
                              f"{state.get('version')}, this graftsearch reads version "
                              f"{CHECKPOINT_VERSION}. Start the search in a new run directory.")
        return state
