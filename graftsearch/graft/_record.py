"""``best/metrics.json``: what final training measured, as a typed record.

Final training builds a :class:`FinalMetrics`, :func:`~graftsearch.graft._final.write_best`
writes it and the report reads it back. ``to_json`` gives the JSON object the file holds (keys
sorted by the writer); ``from_json`` reads any such object, a missing key reading as None, so a
file from an older run or a partial one made by hand still reports. The classification summaries
(``val``, ``test``) and the measurements whose shape depends on what could be measured
(``latency``, ``memory``, ``int8``) stay JSON objects.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Type, TypeVar

from graftsearch._utils.atomic import write_json
from graftsearch._utils.errors import SearchError
from graftsearch.optimize._runfiles import RunFiles

T = TypeVar("T")

Json = Dict[str, Any]


# Keys written by earlier versions, read into the field that replaced them.
_RENAMED = {"SearchPick": {"search_val_accuracy": "proxy_val_accuracy"}}


def _from(cls: Type[T], data: Optional[Mapping[str, Any]]) -> T:
    data = dict(data) if isinstance(data, Mapping) else {}
    for new, old in _RENAMED.get(cls.__name__, {}).items():
        if data.get(new) is None and old in data:
            data[new] = data[old]
            data.setdefault("search_source", "proxy val")
    return cls(**{f.name: copy.deepcopy(data.get(f.name)) for f in dataclasses.fields(cls)})


@dataclass
class GraftMetrics:
    """``graft``: the grafted model's size, metrics and training history. ``variants`` holds val
    and test summaries of each way the pick was trained (``head_only``, ``fine_tuned``,
    ``distilled``); ``variant`` names the one kept (best on val)."""

    params: Optional[int] = None
    size_mib: Optional[float] = None
    macs: Optional[int] = None
    val: Optional[Json] = None
    test: Optional[Json] = None
    per_class: Optional[List[Json]] = None
    confusion: Optional[List[List[int]]] = None
    best_epoch: Optional[int] = None
    history: Optional[List[Json]] = None
    fine_tuned: Optional[bool] = None
    fine_tune_history: Optional[List[Json]] = None
    variant: Optional[str] = None
    variants: Optional[Dict[str, Json]] = None
    distill_note: Optional[str] = None


@dataclass
class DonorMetrics:
    """``donor``: the donor's size and, when it could be tested, its metrics (``note`` says why
    not)."""

    name: Optional[str] = None
    params: Optional[int] = None
    size_mib: Optional[float] = None
    macs: Optional[int] = None
    val: Optional[Json] = None
    test: Optional[Json] = None
    note: Optional[str] = None


@dataclass
class SizeReduction:
    params: Optional[int] = None
    factor: Optional[float] = None
    percent: Optional[float] = None


@dataclass
class SearchPick:
    """``search_pick``: how the model was chosen from a run's front (final training from a run).

    ``search_val_accuracy`` is the pick's accuracy on the front it was picked from, and
    ``search_source`` says which that is (``"proxy val"``, or ``"refined val"`` when the run
    refined its front); each candidate of ``top_k > 1`` carries the same two plus its final val
    accuracy."""

    search_val_accuracy: Optional[float] = None
    search_source: Optional[str] = None
    objective: Optional[str] = None
    candidates: Optional[List[Json]] = None


@dataclass
class ExportInfo:
    """``export``: the files written into ``best/`` and how closely they reproduce the model."""

    files: Optional[List[str]] = None
    onnx_note: Optional[str] = None
    max_abs_diff: Optional[Any] = None


_SECTIONS: Dict[str, type] = {"graft": GraftMetrics, "donor": DonorMetrics,
                              "size_reduction": SizeReduction, "search_pick": SearchPick,
                              "export": ExportInfo}
# written only when known: a model trained without a run has no search_pick, and export is
# added by write_best
_ONLY_WHEN_SET = ("search_pick", "export")


@dataclass
class FinalMetrics:
    """The contents of ``best/metrics.json``."""

    graftsearch_version: Optional[str] = None
    bits: Optional[str] = None
    taps: Optional[str] = None
    selection: Optional[List[int]] = None
    tap_names: Optional[List[str]] = None
    image_size: Optional[int] = None
    mean: Optional[List[float]] = None
    std: Optional[List[float]] = None
    class_names: Optional[List[str]] = None
    head: Optional[Json] = None
    graft: GraftMetrics = field(default_factory=GraftMetrics)
    donor: DonorMetrics = field(default_factory=DonorMetrics)
    size_reduction: SizeReduction = field(default_factory=SizeReduction)
    latency: Optional[Json] = None
    memory: Optional[Json] = None
    int8: Optional[Json] = None
    settings: Optional[Json] = None
    search_pick: Optional[SearchPick] = None
    export: Optional[ExportInfo] = None

    def to_json(self) -> Json:
        out: Json = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None and f.name in _ONLY_WHEN_SET:
                continue
            out[f.name] = (dataclasses.asdict(value) if dataclasses.is_dataclass(value)
                           else copy.deepcopy(value))
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "FinalMetrics":
        values: Dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = data.get(f.name)
            section = _SECTIONS.get(f.name)
            if section is None:
                values[f.name] = copy.deepcopy(raw)
            elif raw is None and f.name in _ONLY_WHEN_SET:
                values[f.name] = None
            else:
                values[f.name] = _from(section, raw)
        return cls(**values)

    def write(self, path) -> Path:
        write_json(path, self.to_json())
        return Path(path)

    @classmethod
    def read(cls, path) -> "FinalMetrics":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise SearchError(f"'{path}' is not valid JSON ({exc}). Train the final model again "
                              "to rewrite it.") from exc
        if not isinstance(data, Mapping):
            raise SearchError(f"'{path}' does not hold a JSON object; it was not written by "
                              "graftsearch. Train the final model again to rewrite it.")
        return cls.from_json(data)


def read_metrics(run_dir) -> Optional[FinalMetrics]:
    """``best/metrics.json`` of a run directory; None before final training."""
    path = RunFiles(run_dir).metrics
    return FinalMetrics.read(path) if path.is_file() else None
