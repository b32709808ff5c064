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

This module is the one schema of a run directory: its file names, the columns and dtypes of its
tables, writing them (:class:`RunFiles`) and reading them back (:func:`load_run`, a
:class:`SavedRun`). ``best/metrics.json`` is written by final training, a later stage, as a
``FinalMetrics`` record; only its path is named here.
"""

from __future__ import annotations

import csv
import io
import math
import os
import pickle
import platform
from pathlib import Path
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Mapping, Optional, Sequence

from graftsearch.optimize._archive import Record
from graftsearch._utils.atomic import write_json, write_bytes, write_text
from graftsearch._utils.errors import ParameterError, SearchError, param_message
from graftsearch.taps._records import SIZE_METRICS

if TYPE_CHECKING:  # pandas is imported when a run is read, not with the package
    import pandas as pd

EVALUATIONS, PARETO, CONVERGENCE, REFINED = ("evaluations.csv", "pareto.csv", "convergence.csv",
                                             "refined.csv")
TAPS, CHECKPOINT, CONFIG = "taps.csv", "checkpoint.pkl", "config.json"
BEST, METRICS, CONFUSION = "best", "metrics.json", "confusion.csv"

#: The columns of evaluations.csv, refined.csv and pareto.csv (which adds RANK), with their
#: dtypes as a DataFrame; sorted extra metrics of a custom fitness follow them as float64.
DTYPES: Dict[str, Any] = {
    "bits": str, "taps": str, "n_taps": "int64", "deepest_tap": "int64", "params": "int64",
    "size_mib": "float64", "macs": "int64", "int8_mib": "float64", "val_accuracy": "float64", "val_loss": "float64",
    "val_accuracy_se": "float64", "feasible": bool, "violation": "float64", "generation": "int64",
    "evaluated_at": str}
COLUMNS = tuple(DTYPES)
#: Columns a run written before they existed lacks (read as NaN), each with the column it follows.
ADDED_COLUMNS = {"int8_mib": "macs", "val_accuracy_se": "val_loss"}
RANK = "rank"
CONVERGENCE_DTYPES: Dict[str, Any] = {
    "generation": "int64", "evaluations": "int64", "hypervolume": "float64", "best_bits": str,
    "best_size": "float64", "best_val_accuracy": "float64", "n_feasible": "int64",
    "elapsed_s": "float64"}
CONVERGENCE_COLUMNS = tuple(CONVERGENCE_DTYPES)
TAPS_COLUMNS = ("index", "name")  # the ones a reader needs; TapList.to_csv writes more
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


def record_values(record: Record, extras: Sequence[str] = (),
                  rank: Optional[int] = None) -> Dict[str, Any]:
    """One row of the record tables, column by column (COLUMNS, ``extras``, then RANK if given)."""
    taps = record.taps
    row: Dict[str, Any] = {
        "bits": record.bits, "taps": record.taps_text, "n_taps": len(taps), "deepest_tap": taps[-1],
        "params": record.params, "size_mib": record.size_mib, "macs": record.macs,
        "int8_mib": math.nan if record.int8_mib is None else record.int8_mib,
        "val_accuracy": record.val_accuracy, "val_loss": record.val_loss,
        "val_accuracy_se": record.val_accuracy_se, "feasible": record.feasible,
        "violation": record.violation,
        "generation": record.generation, "evaluated_at": record.evaluated_at}
    row.update({k: record.extras.get(k, math.nan) for k in extras})
    if rank is not None:
        row[RANK] = rank
    return row


def record_columns(extras: Sequence[str] = (), ranked: bool = False) -> List[str]:
    return list(COLUMNS) + list(extras) + ([RANK] if ranked else [])


def record_row(record: Record, extras: Sequence[str], rank: Optional[int] = None) -> List[str]:
    return [fmt(v) for v in record_values(record, extras, rank).values()]


def records_csv(records: Sequence[Record], *, extras: Optional[Sequence[str]] = None,
                ranks: Optional[Sequence[int]] = None, header: bool = True) -> str:
    """CSV text of ``records`` (DESIGN.md columns, then sorted extras, then ``rank`` if given)."""
    extras = extras_keys(records) if extras is None else list(extras)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if header:
        writer.writerow(record_columns(extras, ranked=ranks is not None))
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


def records_frame(records: Sequence[Record],
                  ranks: Optional[Sequence[int]] = None) -> "pd.DataFrame":
    """The records as the table :func:`read_records` reads back from their CSV file."""
    import pandas as pd

    extras = extras_keys(records)
    rows = [record_values(r, extras, None if ranks is None else ranks[i])
            for i, r in enumerate(records)]
    frame = pd.DataFrame(rows, columns=record_columns(extras, ranked=ranks is not None))
    return frame.astype(_record_dtypes(ranks is not None))


def _record_dtypes(ranked: bool) -> Dict[str, Any]:
    return dict(DTYPES, **({RANK: "int64"} if ranked else {}))


def parse_bool(value: Any) -> bool:
    """A boolean CSV field as the run files write it ("True"/"False"; "1"/"yes" also read)."""
    return str(value).strip().lower() in ("true", "1", "yes")


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
    """The paths of one run directory; writes its files (:meth:`read` reads them back)."""

    def __init__(self, root: os.PathLike | str):
        self.root = Path(root)
        self.evaluations = self.root / EVALUATIONS
        self.pareto = self.root / PARETO
        self.convergence = self.root / CONVERGENCE
        self.refined = self.root / REFINED
        self.taps = self.root / TAPS
        self.checkpoint = self.root / CHECKPOINT
        self.config = self.root / CONFIG
        self.best = self.root / BEST
        self.metrics = self.best / METRICS
        self._extras: Optional[List[str]] = None

    def read(self) -> "SavedRun":
        return load_run(self.root)

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

        path = self.config
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


# ---------------------------------------------------------------------------------------------
# reading


def _typed(frame: "pd.DataFrame", dtypes: Mapping[str, Any]) -> "pd.DataFrame":
    """``frame`` with the schema's dtypes; a column that does not convert (a hand-edited file,
    an empty int field) keeps what pandas read, so such a run can still be reported."""
    for name, dtype in dtypes.items():
        if name not in frame.columns or dtype is str:  # str columns are read as str already
            continue
        column = frame[name]
        try:
            frame[name] = (column.map(parse_bool).astype(bool) if dtype is bool
                           else column.astype(dtype))
        except (TypeError, ValueError):
            pass
    return frame


def read_table(path: Path, dtypes: Mapping[str, Any], required: Sequence[str]) -> "pd.DataFrame":
    """A CSV file of the run directory with the schema's dtypes (columns it does not know, the
    extras of a custom fitness, as pandas reads them); SearchError when ``required`` are missing."""
    import pandas as pd

    text_columns = {k: str for k, v in dtypes.items() if v is str}
    try:
        frame = pd.read_csv(path, dtype=text_columns, keep_default_na=True)
    except pd.errors.EmptyDataError:
        frame = pd.DataFrame(columns=list(required))
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise SearchError(f"'{path}' lacks the column(s) {missing}; it was not written by a "
                          "graftsearch search. Rerun or resume the search to rewrite it.")
    return _typed(frame, dtypes)


def read_records(path: Path) -> "pd.DataFrame":
    """evaluations.csv, refined.csv or pareto.csv as :func:`records_frame` builds it (a column
    added since the file was written reads as NaN)."""
    import pandas as pd

    frame = read_table(path, _record_dtypes(True), [c for c in COLUMNS if c not in ADDED_COLUMNS])
    for column, after in ADDED_COLUMNS.items():
        if column not in frame.columns:
            at = list(frame.columns).index(after) + 1 if after in frame.columns else 0
            frame.insert(at, column, pd.Series(float("nan"), index=frame.index, dtype="float64"))
    return frame


def read_convergence(path: Path) -> "pd.DataFrame":
    return read_table(path, CONVERGENCE_DTYPES, CONVERGENCE_COLUMNS)


def _find(obj: Any, key: str) -> Any:
    if isinstance(obj, Mapping):
        if key in obj and obj[key] is not None:
            return obj[key]
        for value in obj.values():
            found = _find(value, key)
            if found is not None:
                return found
    return None


@dataclass
class SavedRun:
    """The tables and settings of one run directory, as :func:`load_run` reads them."""

    root: Path
    config: Dict[str, Any]
    evaluations: "pd.DataFrame"
    pareto: "pd.DataFrame"
    convergence: "pd.DataFrame"
    taps: Optional["pd.DataFrame"]

    @property
    def files(self) -> RunFiles:
        return RunFiles(self.root)

    def setting(self, *keys: str, default: Any = None) -> Any:
        """The first of ``keys`` found anywhere in config.json (nested sections included); the
        search's resolved settings first (a relative ``size_max`` is resolved there)."""
        for key in keys:
            found = _find(self.config.get("search") or {}, key) if isinstance(self.config, dict) \
                else None
            if found is None:
                found = _find(self.config, key)
            if found is not None:
                return found
        return default

    @property
    def objective(self) -> str:
        return str(self.setting("objective", default="min-size"))

    @property
    def size_metric(self) -> str:
        metric = str(self.setting("size_metric", default="params"))
        return metric if metric in SIZE_METRICS else "params"

    @property
    def pick(self) -> str:
        """How the search took its best pick from the front ("best" for runs from before)."""
        return "one-se" if self.setting("pick", default="best") == "one-se" else "best"


def load_run(run_dir) -> SavedRun:
    """Read a run directory's config and tables, with a clear error for a missing file."""
    import json

    files = RunFiles(run_dir)
    root = files.root
    if not root.is_dir():
        raise ParameterError(param_message("run_dir", "an existing run directory", str(root),
                                           "Pass the directory a `graftsearch run` wrote."))
    needed = [files.evaluations, files.pareto, files.convergence]
    missing = [p.name for p in needed if not p.is_file()]
    if missing:
        raise SearchError(f"The run directory '{root}' lacks {', '.join(missing)}; a report needs "
                          "the files of a search that finished at least one generation. Resume "
                          f"it with `graftsearch resume {root}`.")
    config: Dict[str, Any] = {}
    if files.config.is_file():  # absent when the search ran through the Python API
        try:
            config = json.loads(files.config.read_text())
        except json.JSONDecodeError as exc:
            raise SearchError(f"'{files.config}' is not valid JSON ({exc}).") from exc
    taps = read_table(files.taps, {}, TAPS_COLUMNS) if files.taps.is_file() else None
    return SavedRun(root=root, config=config, evaluations=read_records(files.evaluations),
                    pareto=read_records(files.pareto),
                    convergence=read_convergence(files.convergence), taps=taps)
