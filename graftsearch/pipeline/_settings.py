"""Settings of a whole ``graftsearch run``: one flat, frozen dataclass composed of its parts.

Every field is a command-line flag (``p_min`` <-> ``--p-min``) and a key of a ``--config`` TOML
file, and is written to the run directory's ``config.json``; the CLI builds this same dataclass,
so the command line, config files and the Python API cannot drift apart. Precedence: field
defaults < ``preset`` < config file < flags.

A run is made of parts, each with its own settings class (:data:`PARTS`: the donor's
:class:`DonorSpec`, the data's :class:`DataSpec`, the :class:`HeadSpec`, the cache's
:class:`CacheOptions`, :class:`SearchSettings`, :class:`MLPSettings`, the final head training's
:class:`TrainSchedule`, :class:`FinalSettings`, :class:`CultivateSettings`). Each part declares
which RunSettings field fills which of its fields; a field's default, type and choices are read
from the first part that holds it, and the parts are built from the fields by that declaration,
so every default is defined once, in its part. RunSettings adds the help text (what the command
line shows) and the settings no part has a default for:

- ``data="deepweeds"``: the paper's data (a :class:`DataSpec` needs a source);
- ``image_size=128``: the paper's input size (the parts' unset means the donor's own size);
- ``cultivate="auto"``: cultivate the donor (at most :data:`AUTO_CULTIVATE_EPOCHS` epochs,
  early stopping on validation loss) whenever its classifier does not already have the data's
  classes; ``0`` grafts from the weights as they are, ``N`` cultivates for at most N epochs;
- ``refine="front"``: the search's front is re-ranked with the mlp proxy (the same default as
  :func:`graftsearch.search`);
- ``size_max`` may be relative, ``"30%"``: that share of the (cultivated) donor's size in the
  size metric, resolved to a number before the search (:func:`resolve_size_max`);
- ``proxy="fast"``, ``top_k=1``, ``run_dir`` and ``preset``, which belong to the run alone.

Every `graftsearch` command takes the flags it shares with ``run`` from these fields, and builds
its parts with :func:`build_part`, so ``graftsearch cache`` without flags builds the cache a
``graftsearch run`` with the same flags uses.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import sys
import time
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from graftsearch._utils.device import DEVICE_HELP
from graftsearch._utils.errors import Described, ParameterError, close_matches_hint, param_message
from graftsearch.cultivate._settings import CultivateSettings
from graftsearch.data import DataSpec
from graftsearch.donors._preprocessing import PAPER_IMAGE_SIZE
from graftsearch.donors._spec import DonorSpec, NO_WEIGHTS, normalize_weights
from graftsearch.features._options import DTYPES, CacheOptions
from graftsearch.fitness._settings import FITNESS_KINDS, PROBES, FastSettings, MLPSettings
from graftsearch.graft import FinalSettings
from graftsearch.graft._settings import QUANTIZE_MODES
from graftsearch.optimize._settings import BEFORE_ADDED as SEARCH_BEFORE_ADDED, SearchSettings
from graftsearch.taps._head import HeadSpec
from graftsearch.training._schedule import PAPER_SCHEDULE, TrainSchedule

GROUPS = ("donor", "data", "head", "cache", "fitness", "search", "final", "run")
#: Settings added after run directories were already being written, with the value those runs
#: had (a run directory without one resumes as it started, whatever the default has become).
BEFORE_ADDED: Dict[str, Any] = {**SEARCH_BEFORE_ADDED, "proxy_folds": 1, "proxy_probe": "lda"}
DEMO_DATA = "demo:digits"
#: The cap on epochs of ``cultivate="auto"``; early stopping usually ends cultivation sooner.
AUTO_CULTIVATE_EPOCHS = 8
#: ``refine`` of a whole run and of :func:`graftsearch.search`: the fast proxy's front re-ranked
#: with the mlp proxy (SearchSettings' own default is "none": it has no second fitness).
RUN_REFINE = "front"
_RELATIVE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*%\s*$")


def relative_size(value: Any) -> Optional[float]:
    """The fraction of ``value`` when it is a relative size ("30%" -> 0.3), else None; a
    malformed or out-of-range percentage is an error."""
    if not isinstance(value, str) or "%" not in value:
        return None
    found = _RELATIVE.match(value)
    share = float(found.group(1)) if found else None
    if share is None or not 0 < share <= 100:
        raise ParameterError(param_message(
            "size_max", "a size ('2M', '1934665', '7.5MiB') or a share of the donor's size "
            "above 0% and at most 100% ('30%')", value))
    return share / 100.0


def resolve_size_max(value: Any, donor, size_metric: str, image_size: int) -> Any:
    """``size_max`` as the search takes it: a relative size becomes that share of ``donor``'s
    size in ``size_metric`` (parameters, MiB of float32 parameters, MACs at ``image_size``, or
    the MiB of its int8 copy's tensors)."""
    share = relative_size(value)
    if share is None:
        return value
    import torch

    from graftsearch.taps._records import params_mib
    from graftsearch.taps._trace import count_macs, count_params

    params = count_params(donor.module)
    if size_metric == "params":
        return str(int(share * params))
    if size_metric == "size_mib":
        return f"{share * params_mib(params)!r}MiB"
    if size_metric == "int8_mib":
        from graftsearch.taps._int8 import donor_int8_bytes

        return f"{share * donor_int8_bytes(donor.module, image_size, donor_name=donor.name)!r}B"
    macs = count_macs(donor.module, torch.zeros(1, 3, image_size, image_size))
    return str(int(share * macs))


# ---------------------------------------------------------------------------------------------
# the parts


@dataclass(frozen=True)
class Part:
    """A settings class of one part of a run and the RunSettings fields that fill it
    (RunSettings field -> field of ``cls``). ``defaults`` is an instance whose values are the
    part's defaults, for classes without field defaults (the paper's final schedule)."""

    cls: type
    fields: Mapping[str, str]
    defaults: Any = None

    def default(self, name: str) -> Any:
        """The default of the part's field filled by the RunSettings field ``name``
        (``dataclasses.MISSING`` when it has none)."""
        target = self.fields[name]
        if self.defaults is not None:
            return getattr(self.defaults, target)
        f = self.cls.__dataclass_fields__[target]
        if f.default_factory is not dataclasses.MISSING:
            return f.default_factory()
        return f.default


def _same_names(cls: type, *, skip: Tuple[str, ...] = ()) -> Dict[str, str]:
    return {f.name: f.name for f in dataclasses.fields(cls) if f.name not in skip}


# Order matters: a field shared by several parts takes its default from the first one
# (tests/test_settings.py checks that the others agree).
PARTS: Dict[str, Part] = {
    "donor": Part(DonorSpec, {"donor": "name", "weights": "weights",
                              "donor_checkpoint": "checkpoint",
                              "trust_checkpoint": "trust_checkpoint", "donor_classes": "num_classes",
                              "taps": "taps", "image_size": "image_size"}),
    "data": Part(DataSpec, {"data": "source", "split": "split", "split_column": "split_column",
                            "seed": "seed"}),
    "head": Part(HeadSpec, {"head_width": "hidden", "dropout": "dropout"}),
    "cache": Part(CacheOptions, {"image_size": "image_size", "cache_dir": "cache_dir",
                                 "dtype": "dtype", "device": "device", "batch_size": "batch_size",
                                 "workers": "num_workers", "skip_bad_images": "skip_bad_images"}),
    "search": Part(SearchSettings, _same_names(SearchSettings)),
    "fast": Part(FastSettings, {"proxy_folds": "folds", "proxy_probe": "probe"}),
    "mlp": Part(MLPSettings, {"proxy_epochs": "epochs", "proxy_batch_size": "batch_size",
                              "proxy_lr": "lr", "proxy_patience": "patience",
                              "head_width": "hidden", "dropout": "dropout"}),
    "final_schedule": Part(TrainSchedule, {"final_epochs": "epochs",
                                           "final_batch_size": "batch_size", "final_lr": "lr"},
                           defaults=PAPER_SCHEDULE),
    "final": Part(FinalSettings, {"seed": "seed", "fine_tune": "fine_tune", "quantize": "quantize",
                                  "latency_runs": "latency_runs", "device": "device",
                                  "batch_size": "batch_size", "recipe": "recipe",
                                  "fine_tune_epochs": "fine_tune_epochs", "distill": "distill",
                                  "distill_temperature": "distill_temperature",
                                  "distill_alpha": "distill_alpha"}),
    "cultivate": Part(CultivateSettings, {"seed": "seed", "device": "device", "recipe": "recipe",
                                          "image_size": "image_size", "workers": "num_workers"}),
}


def _data_source(data: str) -> str:
    if data == DEMO_DATA:
        from graftsearch.data._demo import default_demo_dir

        return f"folder:{default_demo_dir()}"
    return data


def prepare_data(data: str) -> None:
    """Make the data of the ``data`` setting available where it is made, not fetched (the demo)."""
    if data == DEMO_DATA:
        from graftsearch.data._demo import prepare_demo_data

        prepare_demo_data()


def _cultivate_workers(workers: Optional[int]) -> int:
    from graftsearch.features._options import default_workers

    return default_workers() if workers is None else workers


# What a part takes beyond a copy of its fields.
_DERIVED: Dict[str, Callable[[Mapping[str, Any]], Dict[str, Any]]] = {
    "data": lambda v: {"source": _data_source(v["data"])},
    # the mlp proxy is already the refining fitness: nothing to refine with
    "search": lambda v: {"refine": "none" if v["proxy"] == "mlp" else v["refine"],
                         # a share of the donor is resolved once the donor is there; until then
                         # any size stands in, so that the other fields are still checked
                         "size_max": "1" if relative_size(v["size_max"]) else v["size_max"]},
    "final": lambda v: {"schedule": build_part("final_schedule", v)},
    "cultivate": lambda v: {"num_workers": _cultivate_workers(v["workers"])},
}

_PARAMETER = re.compile(r"^The '([A-Za-z_]+)' parameter")


def build_part(name: str, values: Mapping[str, Any], **given: Any) -> Any:
    """The part ``name`` (a key of :data:`PARTS`) built from ``values`` (RunSettings fields);
    ``given`` adds fields that are not settings (a head's ``num_classes``).

    A part's error names the RunSettings field, so that it names the flag the user typed
    (``proxy_epochs``, not MLPSettings' ``epochs``).
    """
    part = PARTS[name]
    kwargs = {target: values[source] for source, target in part.fields.items()}
    kwargs.update(_DERIVED.get(name, lambda v: {})(values))
    kwargs.update(given)
    try:
        if part.defaults is not None:
            return dataclasses.replace(part.defaults, **kwargs)
        return part.cls(**kwargs)
    except ParameterError as exc:
        found = _PARAMETER.match(str(exc))
        sources = [s for s, t in part.fields.items() if found and t == found.group(1) and s != t]
        if not sources:
            raise
        renamed = f"The '{sources[0]}' parameter" + str(exc)[found.end():]
        raise type(exc)(renamed) from None


def cache_kwargs(values: Mapping[str, Any]) -> Dict[str, Any]:
    """:func:`build_cache`'s keyword arguments for the settings ``values`` (checked)."""
    options = build_part("cache", values)
    return {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}


# ---------------------------------------------------------------------------------------------
# the fields


_FROM_PART = object()


@dataclass(frozen=True)
class _Setting:
    group: str
    help: str
    default: Any = _FROM_PART
    choices: Tuple[str, ...] = ()
    kind: Optional[type] = None
    bare: Optional[str] = None  # the value of the flag given without one (`--quantize`)


def _setting(group: str, help: str, **kwargs: Any) -> Any:
    """A RunSettings field: its group and help here, its default, type and choices from its
    part unless given."""
    return _Setting(group, help, **kwargs)


def _source(name: str) -> Optional[Tuple[str, Part]]:
    for key, part in PARTS.items():
        if name in part.fields:
            return key, part
    return None


def _kind_of(cls: type, name: str, default: Any) -> type:
    """The scalar type a flag parses for the field ``name`` of ``cls``; text for anything the
    part parses itself (a size like '2M', a path, a comma-separated list)."""
    try:
        hint = typing.get_type_hints(cls)[name]
    except Exception:
        return type(default) if default is not None else str
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = args[0] if len(args) == 1 else str
    return hint if hint in (bool, int, float, str) else str


def _compose(cls: type) -> type:
    """Turn the class's ``_setting`` markers into dataclass fields (before ``dataclass`` runs)."""
    for name, value in list(vars(cls).items()):
        if not isinstance(value, _Setting):
            continue
        found = _source(name)
        if found is None and value.default is _FROM_PART:
            raise TypeError(f"RunSettings.{name} belongs to no part and declares no default")
        part_name = found[0] if found else None
        if value.default is _FROM_PART:
            default = found[1].default(name)
            if default is dataclasses.MISSING:
                raise TypeError(f"RunSettings.{name}: its part {found[0]!r} has no default for it; "
                                "declare one")
        else:
            default = value.default
        choices = value.choices
        kind = value.kind
        if found is not None:
            part = found[1]
            target = part.cls.__dataclass_fields__[part.fields[name]]
            choices = choices or tuple(target.metadata.get("choices", ()))
            kind = kind or _kind_of(part.cls, target.name, default)
        kind = kind or type(default)
        setattr(cls, name, field(default=default, metadata={
            "group": value.group, "help": value.help, "choices": tuple(choices), "kind": kind,
            "part": part_name, "bare": value.bare}))
    return cls


@dataclass(frozen=True, kw_only=True)
@_compose
class RunSettings:
    """Everything ``graftsearch run`` does, with the paper's setup as defaults."""

    # donor
    donor: Optional[str] = _setting("donor", "torchvision model, 'efficientnet_lite0', "
                                             "'paper_vgg16' or 'timm:NAME' (extra timm; unset "
                                             "with --donor-checkpoint: what the checkpoint "
                                             "holds)")
    weights: Optional[str] = _setting(
        "donor", "the donor's weights: DEFAULT (its pretrained ones: torchvision's DEFAULT, "
                 "IMAGENET for efficientnet_lite0, ImageNet VGG16 for paper_vgg16, the default "
                 "pretrained tag of a timm model), a weights name such as IMAGENET1K_V1 (a "
                 "pretrained tag such as a1_in1k for timm), or 'none' for random weights")
    donor_checkpoint: Optional[str] = _setting(
        "donor", "load the donor from this file instead: a state dict (.pth or "
                 ".safetensors), a graftsearch donor checkpoint, TorchScript or a whole model")
    trust_checkpoint: bool = _setting("donor", "allow a pickled whole-model checkpoint (it can "
                                               "run code when loaded)")
    donor_classes: Optional[int] = _setting("donor", "outputs of the donor's classifier "
                                                     "(checkpoints, paper_vgg16, random weights)")
    taps: Optional[str] = _setting("donor", "comma-separated module names to tap instead of the "
                                            "automatic taps", kind=str)
    cultivate: str = _setting("donor", "first fine-tune the donor on the train split (the "
                                       "paper's step 1): 'auto' whenever its classifier does not "
                                       f"have the data's classes (at most {AUTO_CULTIVATE_EPOCHS} "
                                       "epochs, early stopping on val loss), N: at most N epochs, "
                                       "0: graft from the weights as they are", default="auto",
                              kind=str)
    recipe: str = _setting("donor", "fine-tuning recipe of cultivation and of the graft: "
                                    "'standard' (AdamW, warm-up + cosine, label smoothing, flips "
                                    "and crops) or 'paper' (Adam 1e-4, batch 16, no augmentation)",
                           choices=("standard", "paper"))
    # data
    data: str = _setting("data", "image folder (one sub-folder per class), CSV listing "
                                 "(path,label), DeepWeeds directory (labels.csv + images/); "
                                 "'folder:', 'csv:' or 'deepweeds:' before PATH forces the kind; "
                                 "'deepweeds' alone is the default data directory "
                                 "($GRAFTSEARCH_DATA/deepweeds, downloaded on first use)",
                         default="deepweeds")
    split: str = _setting("data", "'paper' (stratified 60/20/20 drawn with the seed), "
                                  "'official:K' (DeepWeeds fold K = 0..4) or 'column' (a CSV "
                                  "column, see --split-column)")
    split_column: Optional[str] = _setting("data", "CSV column holding train/val/test (with "
                                                   "--split column; unset: 'split')")
    image_size: int = _setting("data", "input side length in pixels; the default is the paper's",
                               default=PAPER_IMAGE_SIZE)
    skip_bad_images: bool = _setting("data", "leave undecodable images (recorded) and missing "
                                             "files of a listing out instead of stopping")
    # head
    head_width: int = _setting("head", "hidden units of the grafted head (0: a linear head)")
    dropout: float = _setting("head", "dropout of the grafted head")
    # cache
    cache_dir: Optional[str] = _setting("cache", "feature cache directory (unset: "
                                                 "$GRAFTSEARCH_CACHE or ~/.cache/graftsearch)",
                                        kind=str)
    dtype: str = _setting("cache", "dtype of cached features", choices=DTYPES)
    device: str = _setting("cache", f"device for image passes: {DEVICE_HELP}")
    batch_size: int = _setting("cache", "images per batch of an image pass (caching, testing)")
    workers: Optional[int] = _setting("cache", "image-decoding worker processes (unset: "
                                               "min(4, cores - 1))")
    # fitness
    proxy: str = _setting("fitness", "fitness proxy during the search", default="fast",
                          choices=FITNESS_KINDS)
    refine: str = _setting("fitness", "re-rank the final front (and neighbours) with the mlp "
                                      "proxy", default=RUN_REFINE)
    proxy_epochs: int = _setting("fitness", "most epochs of an mlp proxy training")
    proxy_batch_size: int = _setting("fitness", "batch size of an mlp proxy training")
    proxy_lr: float = _setting("fitness", "learning rate of an mlp proxy training")
    proxy_probe: str = _setting("fitness", "fast proxy's probe: lda (shrinkage LDA), ridge, or "
                                           "logistic (a few L-BFGS steps of softmax regression)",
                                choices=PROBES)
    proxy_folds: int = _setting("fitness", "fast proxy: 1 fits train and scores val; k >= 2 "
                                           "scores by k-fold cross-validation over train and val")
    proxy_patience: Optional[int] = _setting("fitness", "early stop of an mlp proxy after this "
                                                        "many epochs without a lower val loss")
    # search
    objective: str = _setting("search", "min-size (needs --p-min) or max-accuracy (needs "
                                        "--size-max)")
    p_min: Optional[float] = _setting("search", "lowest acceptable validation accuracy (min-size)")
    size_max: Optional[str] = _setting("search", "largest acceptable size (max-accuracy), e.g. "
                                                 "2M, 1934665, 7.5MiB, or 30% (of the donor's "
                                                 "size, after cultivation)")
    size_metric: str = _setting("search", "what 'size' means")
    pick: str = _setting("search", "best: the objective's best feasible pick; one-se "
                                   "(max-accuracy): the smallest feasible graft whose accuracy is "
                                   "within one standard error of the best")
    population: int = _setting("search", "selections per generation")
    generations: int = _setting("search", "generations after the initial population")
    max_evaluations: Optional[int] = _setting("search", "stop after this many fitness evaluations")
    max_seconds: Optional[float] = _setting("search", "stop the search after this many seconds")
    stagnation: Optional[int] = _setting("search", "stop after this many generations without "
                                                   "hypervolume gain")
    crossover: str = _setting("search", "crossover operator")
    initial: str = _setting("search", "first population: random, singles (every single-tap "
                                      "selection, then random ones) or greedy (forward "
                                      "selection's path, then random ones)")
    local_search: Optional[int] = _setting("search", "places per generation given to unevaluated "
                                                     "one-bit neighbours of the front (0: off)")
    screen: int = _setting("search", "breed this many times as many offspring as places and "
                                     "let a surrogate of P choose among them (0 or 1: off)")
    surrogate: str = _setting("search", "the screen's model: gp (a Gaussian process; places by "
                                        "the hypervolume they may add) or ridge (ridge on taps "
                                        "and pairs; half the places by NSGA-II's rank)")
    cx_prob: float = _setting("search", "crossover probability")
    mut_prob: float = _setting("search", "probability that an offspring is mutated")
    indpb: Optional[float] = _setting("search", "bit-flip probability (unset: 1 / number of "
                                                "taps)")
    seed: int = _setting("search", "the run's one seed (the 'paper' split, the search, every "
                                   "training)")
    n_jobs: int = _setting("search", "parallel fitness evaluations (joblib processes; -1: all "
                                     "cores)")
    dask_scheduler: Optional[str] = _setting("search", "evaluate on a Dask cluster at this "
                                                       "address (tcp://HOST:PORT)")
    checkpoint_every: int = _setting("search", "write checkpoint.pkl every this many generations "
                                               "(and always at the end)")
    # final
    final_epochs: int = _setting("final", "epochs of the final head training (the paper: 18)")
    final_batch_size: int = _setting("final", "batch size of the final head training (the "
                                              "paper: 16)")
    final_lr: float = _setting("final", "learning rate of the final head training")
    top_k: int = _setting("final", "train the best k picks of the front and keep the best on val",
                          default=1)
    fine_tune: Optional[bool] = _setting("final", "fine-tune the graft end to end on the images "
                                                  "after the search (unset: on; also with "
                                                  "distillation from a cultivated donor; the "
                                                  "best on val is kept)")
    fine_tune_epochs: int = _setting("final", "most epochs of each end-to-end fine-tuning "
                                              "(early stopping on val loss)")
    distill: bool = _setting("final", "also fine-tune with knowledge distillation from the "
                                      "cultivated donor")
    distill_temperature: float = _setting("final", "temperature of the distillation's softened "
                                                   "logits")
    distill_alpha: float = _setting("final", "weight of the distillation term (1 - alpha on the "
                                             "labels)")
    quantize: Optional[str] = _setting("final", "also export an int8 copy "
                                                "(model.int8.torchscript.pt): ptq, post-training "
                                                "quantisation; qat, then quantisation-aware "
                                                "fine-tuning when ptq loses > 1 pp of val "
                                                "accuracy (the flag alone: ptq)",
                                 choices=QUANTIZE_MODES, bare="ptq")
    latency_runs: int = _setting("final", "timed passes for the latency measurement (0: skip)")
    # run
    run_dir: Optional[str] = _setting("run", "run directory (unset: "
                                             "runs/<donor>-<objective>-<time>)",
                                      default=None, kind=str)
    preset: Optional[str] = _setting("run", "start from a preset ('demo': offline digits with "
                                            "efficientnet_lite0)", default=None, kind=str)

    def __post_init__(self) -> None:
        if isinstance(self.quantize, bool):  # config files written before the modes existed
            object.__setattr__(self, "quantize", "ptq" if self.quantize else None)
        if isinstance(self.cultivate, int) and not isinstance(self.cultivate, bool):
            object.__setattr__(self, "cultivate", str(self.cultivate))  # epochs from Python/TOML
        for f in dataclasses.fields(self):
            _check_type(f, getattr(self, f.name))
        object.__setattr__(self, "weights", normalize_weights(self.weights))
        self.cultivate_epochs(None)  # checks the cultivate value
        relative_size(self.size_max)
        if self.preset is not None and self.preset not in PRESETS:
            raise ParameterError(param_message("preset", f"one of {sorted(PRESETS)}", self.preset))
        for name, low in (("top_k", 1),):
            if getattr(self, name) < low:
                raise ParameterError(param_message(name, f"an integer >= {low}", getattr(self, name)))
        # the parts check their own fields; building them here reports a bad value before any work
        for name in PARTS:
            given = {"num_classes": 2} if name == "head" else {}
            if name == "cultivate":
                given = {"epochs": AUTO_CULTIVATE_EPOCHS}
            build_part(name, self.as_dict(), **given)

    # -- the parts -----------------------------------------------------------------------------

    def donor_spec(self) -> DonorSpec:
        return build_part("donor", self.as_dict())

    def data_spec(self) -> DataSpec:
        return build_part("data", self.as_dict())

    def head_spec(self, num_classes: int) -> HeadSpec:
        return build_part("head", self.as_dict(), num_classes=num_classes)

    def cache_options(self) -> CacheOptions:
        return build_part("cache", self.as_dict())

    def search_settings(self, size_max: Any = None) -> SearchSettings:
        """The search's settings; a relative ``size_max`` needs its resolved value (see
        :func:`resolve_size_max`)."""
        values = self.as_dict()
        if size_max is not None:
            values["size_max"] = size_max
        elif relative_size(self.size_max):
            raise ParameterError(param_message(
                "size_max", "resolved against the donor before the search", self.size_max,
                "graftsearch run resolves it after loading (and cultivating) the donor."))
        return build_part("search", values)

    def mlp_settings(self) -> MLPSettings:
        return build_part("mlp", self.as_dict())

    def fast_settings(self) -> FastSettings:
        return build_part("fast", self.as_dict())

    def final_settings(self) -> FinalSettings:
        return build_part("final", self.as_dict())

    def cultivate_epochs(self, donor_fits: Optional[bool]) -> int:
        """Epochs to cultivate for: ``auto`` -> :data:`AUTO_CULTIVATE_EPOCHS` unless the donor's
        classifier already has the data's classes (``donor_fits``), an integer as it is."""
        value = str(self.cultivate).strip().lower()
        if value == "auto":
            return 0 if donor_fits else AUTO_CULTIVATE_EPOCHS
        if not value.isdigit():
            raise ParameterError(param_message("cultivate", "'auto' or an integer >= 0 (epochs)",
                                               self.cultivate))
        return int(value)

    def cultivate_settings(self, epochs: Optional[int] = None) -> CultivateSettings:
        return build_part("cultivate", self.as_dict(),
                          epochs=epochs if epochs else AUTO_CULTIVATE_EPOCHS)

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
                    lines.append(f'weights = "{NO_WEIGHTS}"')
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
#: Every setting's default, by field name.
DEFAULTS: Dict[str, Any] = {name: f.default for name, f in FIELDS.items()}

# A preset replaces defaults; a config file and flags still override it.
PRESETS: Dict[str, Dict[str, Any]] = {
    "demo": {
        "donor": "efficientnet_lite0", "weights": "IMAGENET", "data": DEMO_DATA,
        "image_size": 64, "proxy": "fast", "refine": "front", "population": 16, "generations": 8,
        "final_epochs": 18, "latency_runs": 20,
        # seconds, not minutes: the demo grafts from ImageNet weights and trains heads only
        "cultivate": "0", "fine_tune": False,
    },
}


def merge_layers(*layers: Mapping[str, Any]) -> Dict[str, Any]:
    """The settings given by ``layers`` (later wins), any preset applied first; defaults left out."""
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
    return merged


def settings_from(*layers: Mapping[str, Any]) -> RunSettings:
    """Merge layers of settings (later wins) over the defaults, applying any preset first."""
    return RunSettings(**merge_layers(*layers))


def values_from(*layers: Mapping[str, Any]) -> Dict[str, Any]:
    """Every setting, defaults filled in, for a command that builds only some parts
    (:func:`build_part`) and so need not satisfy the others (``graftsearch cache`` has no
    ``p_min``)."""
    return {**DEFAULTS, **merge_layers(*layers)}


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
        if isinstance(data.get("settings"), dict):  # a run directory's: it resumes as it started
            data = {**BEFORE_ADDED, **data["settings"]}
        else:
            data = data.get("settings", data)
    if not isinstance(data, dict):
        raise ParameterError(param_message("config", "a table of settings", Described(type(data).__name__)))
    return data
