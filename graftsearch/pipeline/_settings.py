"""Settings of a whole ``graftsearch run``: one flat, frozen dataclass.

Every field is a command-line flag (``p_min`` <-> ``--p-min``) and a key of a ``--config`` TOML
file, and is written to the run directory's ``config.json``; the CLI builds this same dataclass,
so the command line, config files and the Python API cannot drift apart. Precedence: field
defaults < ``preset`` < config file < flags.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

from graftsearch._utils.errors import Described, ParameterError, close_matches_hint, param_message

GROUPS = ("donor", "data", "head", "cache", "fitness", "search", "final", "run")
PROXIES = ("fast", "mlp")
DEMO_DATA = "demo:digits"
REFINES = ("none", "front", "front+neighbours")


def _f(default: Any, group: str, help: str, *, choices: Tuple[str, ...] = (), kind: type | None = None):
    return field(default=default, metadata={"group": group, "help": help, "choices": choices,
                                            "kind": kind})


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """Everything ``graftsearch run`` does, with the paper's setup as defaults."""

    # donor
    donor: Optional[str] = _f("vgg16", "donor", "torchvision model, 'efficientnet_lite0' or "
                                                "'paper_vgg16' (unset with --donor-checkpoint: "
                                                "what the checkpoint holds)", kind=str)
    weights: Optional[str] = _f("IMAGENET1K_V1", "donor",
                                "the donor's weights name ('none' for random weights)", kind=str)
    donor_checkpoint: Optional[str] = _f(None, "donor", "load the donor from this file instead",
                                         kind=str)
    trust_checkpoint: bool = _f(False, "donor", "allow a pickled whole-model checkpoint (runs code)")
    donor_classes: Optional[int] = _f(None, "donor", "outputs of the donor's classifier (checkpoints)",
                                      kind=int)
    taps: Optional[str] = _f(None, "donor", "comma-separated module names to tap instead of the "
                                            "automatic taps", kind=str)
    cultivate: int = _f(0, "donor", "first fine-tune the donor on the train split for this many "
                                    "epochs (the paper's step 1; 0: graft from the weights as they are)")
    # data
    data: str = _f("deepweeds", "data", "images: a DeepWeeds dir, an image-folder tree, a CSV "
                                        "listing, 'deepweeds' (default data dir) or kind:PATH")
    split: str = _f("paper", "data", "'paper' (stratified 60/20/20 by seed), 'official:K' "
                                     "(DeepWeeds fold K) or 'column'")
    split_column: Optional[str] = _f(None, "data", "CSV column holding train/val/test "
                                                   "(with --split column)", kind=str)
    image_size: int = _f(128, "data", "input side length in pixels")
    skip_bad_images: bool = _f(False, "data", "leave undecodable images out instead of stopping")
    # head
    head_width: int = _f(256, "head", "hidden units of the grafted head (0: a linear head)")
    dropout: float = _f(0.5, "head", "dropout of the grafted head")
    # cache
    cache_dir: Optional[str] = _f(None, "cache", "feature cache directory (default "
                                                 "~/.cache/graftsearch or $GRAFTSEARCH_CACHE)", kind=str)
    dtype: str = _f("float32", "cache", "dtype of cached features", choices=("float32", "float16"))
    device: str = _f("auto", "cache", "device for image passes: auto, cpu or cuda[:N]")
    batch_size: int = _f(64, "cache", "images per batch when caching features")
    workers: Optional[int] = _f(None, "cache", "data loader worker processes (default: by cores)",
                                kind=int)
    # fitness
    proxy: str = _f("fast", "fitness", "fitness proxy during the search", choices=PROXIES)
    refine: str = _f("front", "fitness", "re-rank the final front (and neighbours) with the mlp "
                                         "proxy", choices=REFINES)
    proxy_epochs: int = _f(40, "fitness", "most epochs of an mlp proxy training")
    proxy_batch_size: int = _f(128, "fitness", "batch size of an mlp proxy training")
    proxy_lr: float = _f(1e-3, "fitness", "learning rate of an mlp proxy training")
    proxy_patience: Optional[int] = _f(5, "fitness", "early stop of an mlp proxy after this many "
                                                     "epochs without a lower val loss", kind=int)
    # search
    objective: str = _f("min-size", "search", "min-size (needs --p-min) or max-accuracy "
                                              "(needs --size-max)", choices=("min-size", "max-accuracy"))
    p_min: Optional[float] = _f(None, "search", "lowest acceptable validation accuracy (min-size)",
                                kind=float)
    size_max: Optional[str] = _f(None, "search", "largest acceptable size (max-accuracy), e.g. "
                                                 "2M, 1934665, 7.5MiB", kind=str)
    size_metric: str = _f("params", "search", "what 'size' means", choices=("params", "size_mib", "macs"))
    population: int = _f(32, "search", "selections per generation")
    generations: int = _f(40, "search", "generations after the initial population")
    max_evaluations: Optional[int] = _f(None, "search", "stop after this many fitness evaluations",
                                        kind=int)
    max_seconds: Optional[float] = _f(None, "search", "stop the search after this many seconds",
                                      kind=float)
    stagnation: Optional[int] = _f(None, "search", "stop after this many generations without "
                                                   "hypervolume gain", kind=int)
    crossover: str = _f("uniform", "search", "crossover operator", choices=("uniform", "two-point"))
    cx_prob: float = _f(0.9, "search", "crossover probability")
    mut_prob: float = _f(1.0, "search", "probability that an offspring is mutated")
    indpb: Optional[float] = _f(None, "search", "bit-flip probability (default 1 / number of taps)",
                                kind=float)
    seed: int = _f(0, "search", "the run's one seed (splits, search, trainings)")
    n_jobs: int = _f(1, "search", "parallel fitness evaluations (joblib processes; -1: all cores)")
    dask_scheduler: Optional[str] = _f(None, "search", "evaluate on a Dask cluster at this address "
                                                       "(tcp://HOST:PORT)", kind=str)
    # final
    final_epochs: int = _f(18, "final", "epochs of the final head training (the paper: 18)")
    final_batch_size: int = _f(16, "final", "batch size of the final head training (the paper: 16)")
    final_lr: float = _f(1e-3, "final", "learning rate of the final head training")
    top_k: int = _f(1, "final", "train the best k picks of the front and keep the best on val")
    fine_tune: bool = _f(False, "final", "also fine-tune the kept trunk end to end (slow on CPU)")
    quantize: bool = _f(False, "final", "also export an int8 copy and report its accuracy")
    latency_runs: int = _f(50, "final", "timed passes for the latency measurement (0: skip)")
    # run
    run_dir: Optional[str] = _f(None, "run", "run directory (default runs/<donor>-<objective>-<time>)",
                                kind=str)
    preset: Optional[str] = _f(None, "run", "start from a preset ('demo': offline digits with "
                                            "efficientnet_lite0)", kind=str)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check_type(f, getattr(self, f.name))
        if self.weights is not None and self.weights.lower() == "none":
            object.__setattr__(self, "weights", None)
        if self.preset is not None and self.preset not in PRESETS:
            raise ParameterError(param_message("preset", f"one of {sorted(PRESETS)}", self.preset))
        for name, low in (("cultivate", 0), ("image_size", 1), ("head_width", 0), ("batch_size", 1),
                          ("proxy_epochs", 1), ("proxy_batch_size", 1), ("final_epochs", 1),
                          ("final_batch_size", 1), ("top_k", 1), ("latency_runs", 0)):
            if getattr(self, name) < low:
                raise ParameterError(param_message(name, f"an integer >= {low}", getattr(self, name)))
        if self.workers is not None and self.workers < 0:
            raise ParameterError(param_message("workers", "an integer >= 0 or unset", self.workers))
        if self.proxy_patience is not None and self.proxy_patience < 1:
            raise ParameterError(param_message("proxy_patience", "an integer >= 1 or unset",
                                               self.proxy_patience))
        for name in ("proxy_lr", "final_lr"):
            if not math.isfinite(getattr(self, name)) or getattr(self, name) <= 0:
                raise ParameterError(param_message(name, "a float > 0", getattr(self, name)))
        if not 0 <= self.dropout < 1:
            raise ParameterError(param_message("dropout", "a float in [0, 1)", self.dropout))
        # the parts check themselves; building them here reports a bad value before any work
        self.search_settings()
        self.head_spec(num_classes=2)
        self.donor_spec()
        self.data_spec()

    # -- the parts -----------------------------------------------------------------------------

    def donor_spec(self):
        from graftsearch.donors._zoo import DonorSpec

        return DonorSpec(name=self.donor, weights=None if self.donor_checkpoint else self.weights,
                         checkpoint=self.donor_checkpoint, num_classes=self.donor_classes,
                         trust_checkpoint=self.trust_checkpoint,
                         taps=tuple(t for t in self.taps.split(",") if t.strip()) if self.taps else None,
                         image_size=self.image_size)

    def data_spec(self):
        from graftsearch.data._sources import DataSpec

        source = self.data
        if source == DEMO_DATA:
            from graftsearch.data._demo import default_demo_dir

            source = f"folder:{default_demo_dir()}"
        return DataSpec(source=source, split=self.split, seed=self.seed,
                        split_column=self.split_column)

    def head_spec(self, num_classes: int):
        from graftsearch.taps._head import HeadSpec

        return HeadSpec(num_classes=num_classes, hidden=self.head_width, dropout=self.dropout)

    def search_settings(self):
        from graftsearch.optimize._settings import SearchSettings

        return SearchSettings(objective=self.objective, p_min=self.p_min, size_max=self.size_max,
                              size_metric=self.size_metric, population=self.population,
                              generations=self.generations, max_evaluations=self.max_evaluations,
                              max_seconds=self.max_seconds, stagnation=self.stagnation,
                              crossover=self.crossover, cx_prob=self.cx_prob, mut_prob=self.mut_prob,
                              indpb=self.indpb, seed=self.seed, n_jobs=self.n_jobs,
                              dask_scheduler=self.dask_scheduler,
                              refine="none" if self.proxy == "mlp" else self.refine)

    def mlp_settings(self):
        from graftsearch.fitness._proxies import MLPSettings

        return MLPSettings(epochs=self.proxy_epochs, batch_size=self.proxy_batch_size,
                           lr=self.proxy_lr, patience=self.proxy_patience,
                           hidden=self.head_width, dropout=self.dropout)

    def final_settings(self):
        from graftsearch.graft._final import FinalSettings
        from graftsearch.training._headtrain import TrainSchedule

        schedule = TrainSchedule(epochs=self.final_epochs, batch_size=self.final_batch_size,
                                 lr=self.final_lr, keep_best=True)
        return FinalSettings(schedule=schedule, seed=self.seed, fine_tune=self.fine_tune,
                             quantize=self.quantize, latency_runs=self.latency_runs,
                             device=self.device, batch_size=self.batch_size)

    def cultivate_settings(self):
        from graftsearch.cultivate._cultivate import CultivateSettings

        return CultivateSettings(epochs=self.cultivate, seed=self.seed, device=self.device,
                                 image_size=self.image_size)

    # -- serialisation -------------------------------------------------------------------------

    def as_dict(self) -> Dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def to_toml(self) -> str:
        lines = ["# graftsearch run settings (`graftsearch run --config FILE`; flags override)"]
        by_group: Dict[str, list] = {g: [] for g in GROUPS}
        for f in dataclasses.fields(self):
            by_group[f.metadata["group"]].append(f)
        for group in GROUPS:
            lines.append("")
            lines.append(f"# --- {group} ---")
            for f in by_group[group]:
                value = getattr(self, f.name)
                if value is None and f.name == "weights":
                    lines.append('weights = "none"')
                elif value is None:
                    lines.append(f"# {f.name} =   # unset: {f.metadata['help']}")
                else:
                    lines.append(f"{f.name} = {_toml_value(value)}")
        return "\n".join(lines) + "\n"

    def resolved(self) -> "RunSettings":
        """These settings with a concrete run directory."""
        if self.run_dir is not None:
            return self
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return dataclasses.replace(self, run_dir=str(Path("runs") / f"{self.donor or 'checkpoint'}-{self.objective}-{stamp}"))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))


def _check_type(f: dataclasses.Field, value: Any) -> None:
    default = f.default
    kind = f.metadata.get("kind") or type(default)
    choices = f.metadata.get("choices") or ()
    if value is None:
        if default is None or str(f.type).startswith("Optional"):
            return
        raise ParameterError(param_message(f.name, f"a {kind.__name__}", None))
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    else:
        ok = isinstance(value, kind)
    if not ok:
        what = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(kind, kind.__name__)
        raise ParameterError(param_message(f.name, what, value))
    if choices and value not in choices:
        raise ParameterError(param_message(f.name, f"one of {list(choices)}", value))


FIELDS = {f.name: f for f in dataclasses.fields(RunSettings)}

# A preset replaces defaults; a config file and flags still override it.
PRESETS: Dict[str, Dict[str, Any]] = {
    "demo": {
        "donor": "efficientnet_lite0", "weights": "IMAGENET", "data": DEMO_DATA,
        "image_size": 64, "proxy": "fast", "refine": "front", "population": 16, "generations": 8,
        "final_epochs": 18, "latency_runs": 20,
    },
}


def settings_from(*layers: Mapping[str, Any]) -> RunSettings:
    """Merge layers of settings (later wins) over the defaults, applying any preset first."""
    merged: Dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if key not in FIELDS:
                hint = close_matches_hint(key, FIELDS) or ("Use `graftsearch run --print-config` "
                                                            "to see every setting.")
                raise ParameterError(f"Unknown setting '{key}': expected one of the settings of "
                                     f"`graftsearch run` (its flags without '--', '_' for '-'). "
                                     f"{hint}")
            merged[key] = value
    preset = merged.get("preset")
    if preset is not None:
        if preset not in PRESETS:
            raise ParameterError(param_message("preset", f"one of {sorted(PRESETS)}", preset))
        merged = {**PRESETS[preset], **merged}
    if merged.get("donor_checkpoint") and "donor" not in merged:
        merged["donor"] = None  # the checkpoint says what it holds
    return RunSettings(**merged)


def read_config(path) -> Dict[str, Any]:
    """Settings from a TOML file or a run directory's config.json (its ``settings``)."""
    p = Path(path)
    if p.is_dir():
        p = p / "config.json"
    if not p.is_file():
        raise ParameterError(param_message("config", "an existing .toml or config.json file", str(path)))
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix == ".json":
            data = json.loads(text)
        else:
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # pragma: no cover
                import tomli as tomllib
            data = tomllib.loads(text)
    except ValueError as exc:
        raise ParameterError(f"The config file '{p}' cannot be parsed: {exc}") from exc
    if p.suffix == ".json" and isinstance(data, dict):
        if "settings" not in data and "search" in data:
            raise ParameterError(
                f"The config file '{p}' holds the settings of a search started from Python "
                "(graftsearch.search or graftsearch.run_search), not of `graftsearch run`. "
                "Resume it by calling the same function again with the same run_dir.")
        data = data.get("settings", data)
    if not isinstance(data, dict):
        raise ParameterError(param_message("config", "a table of settings", Described(type(data).__name__)))
    return data
