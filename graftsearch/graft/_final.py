"""Final training of the chosen graft, its test metrics, its cost beside the donor's, and export.

The head of G_s is trained on the cached features of the selection with the paper's schedule
(Adam, batch 16, 18 epochs, keeping the best validation epoch) and grafted onto the kept trunk;
optionally the whole graft is then fine-tuned end to end on images. The test split is used here
for the first time. The result is written to ``best/`` of the run directory: ``model.pt``,
``model.torchscript.pt`` (and ``model.onnx``), ``metrics.json`` and ``confusion.csv``.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import shutil
import tempfile
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from graftsearch._utils.device import resolve_device
from graftsearch._utils.atomic import write_text
from graftsearch._utils.checks import is_int
from graftsearch._utils.errors import ParameterError, SearchError, param_message
from graftsearch.graft._export import DeployableModel, ExportResult, export_model
from graftsearch.graft._record import (DonorMetrics, ExportInfo, FinalMetrics, GraftMetrics,
                                       SearchPick, SizeReduction)
from graftsearch.graft._settings import FinalSettings
from graftsearch.optimize._result import order_front
from graftsearch.optimize._runfiles import CONFUSION, METRICS, RunFiles, load_run
from graftsearch.features._source import selection_features
from graftsearch.graft._model import GraftedModel
from graftsearch.training._imagetrain import logits_on_images, loss_and_accuracy, train_epoch
from graftsearch.taps._head import HeadSpec
from graftsearch.training._metrics import ClassificationMetrics, compute_metrics
from graftsearch.donors._normalize import Normalize
from graftsearch.donors._preprocessing import Preprocessing
from graftsearch._utils.progress import ProgressCallback, report
from graftsearch._utils.seeding import derive_seed
from graftsearch.taps._records import params_mib
from graftsearch.taps._trace import count_macs, count_params
from graftsearch._version import __version__

logger = logging.getLogger("graftsearch")


@dataclass
class FinalModel:
    """The trained graft, its deployable form and every measurement of it.

    ``record`` is what ``best/metrics.json`` holds (a :class:`FinalMetrics`) and ``metrics`` the
    same as a JSON object (a copy); ``val`` and ``test`` are the graft's metrics, ``donor_val``
    and ``donor_test`` the donor's (None when it has no classifier for these classes or no images
    were given).
    """

    graft: GraftedModel
    model: DeployableModel
    fit: Any
    val: ClassificationMetrics
    test: ClassificationMetrics
    donor_val: Optional[ClassificationMetrics] = None
    donor_test: Optional[ClassificationMetrics] = None
    record: FinalMetrics = field(default_factory=FinalMetrics)
    export: Optional[ExportResult] = None
    int8_model: Optional[DeployableModel] = None

    @property
    def metrics(self) -> Dict[str, Any]:
        return self.record.to_json()


# ---------------------------------------------------------------------------------------------
# helpers


def _preprocessing_of(features, donor) -> Preprocessing:
    pre = getattr(features, "preprocessing", None)
    if isinstance(pre, Preprocessing):
        return pre
    return dataclasses.replace(donor.preprocessing, image_size=features.taps.image_size)


def _logits_on_features(head: nn.Module, x: np.ndarray) -> np.ndarray:
    head = head.eval()
    with torch.no_grad():
        return head(torch.from_numpy(np.asarray(x, dtype=np.float32))).numpy()


def make_loader_for(dataset, split: str, pre: Preprocessing, settings: FinalSettings, *,
                    shuffle=False, augment: bool = False, batch_size: Optional[int] = None,
                    seed: int = 0, skip_bad: bool = False):
    from graftsearch.data._loading import make_loader

    return make_loader(dataset, split, pre, batch_size=batch_size or settings.batch_size,
                       num_workers=settings.num_workers, shuffle=shuffle, seed=seed,
                       augment=augment, skip_bad_images=skip_bad)


_loader = make_loader_for


def donor_has_classifier_for(donor, classes: Sequence[str]) -> bool:
    """True when the donor's outputs are exactly ``classes`` in order (e.g. a cultivated donor)."""
    return donor.class_names is not None and list(donor.class_names) == list(classes)


def _freeze_batchnorm(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


VARIANTS = ("head_only", "fine_tuned", "distilled")


def fine_tune(graft: GraftedModel, dataset, pre: Preprocessing, settings: FinalSettings, *,
              teacher: Optional[nn.Module] = None, progress: Optional[ProgressCallback] = None,
              skip_bad: bool = False, tag: Optional[str] = None) -> List[Dict[str, float]]:
    """Train the graft's trunk and head end to end on the training images with the settings'
    recipe, distilling from ``teacher`` (a network on the same normalised images whose outputs
    are the dataset's classes) when given; keep the best validation epoch (lowest loss).

    Batch-norm statistics stay those of the donor: the kept trunk is the donor's own, already
    fitted to these images when the donor was cultivated. The head has been trained on cached
    features already, so every parameter gets the same rate."""
    from graftsearch.training._recipe import (distillation_loss, make_optimizer, make_scheduler,
                                              recipe)

    rec = recipe(settings.recipe)
    rec = dataclasses.replace(rec, lr=float(settings.fine_tune_lr or rec.lr), head_lr_scale=1.0,
                              batch_size=int(settings.fine_tune_batch_size or rec.batch_size))
    tag = tag or ("distill" if teacher is not None else "fine-tune")
    device = resolve_device(settings.device)
    history: List[Dict[str, float]] = []
    train = make_loader_for(dataset, "train", pre, settings, shuffle=True, augment=rec.augment,
                            batch_size=rec.batch_size, seed=derive_seed(settings.seed, tag),
                            skip_bad=skip_bad)
    val = make_loader_for(dataset, "val", pre, settings, skip_bad=skip_bad)
    smoothing = rec.label_smoothing

    def loss(logits, y, soft):
        if soft is None:
            return torch.nn.functional.cross_entropy(logits, y, label_smoothing=smoothing)
        return distillation_loss(logits, soft, y, temperature=settings.distill_temperature,
                                 alpha=settings.distill_alpha, label_smoothing=smoothing)

    graft.to(device)
    if teacher is not None:
        teacher.to(device)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(settings.seed, tag, "dropout"))
            opt = make_optimizer(graft, rec)
            sched = make_scheduler(opt, rec, settings.fine_tune_epochs * max(1, len(train)))
            best = (math.inf, copy.deepcopy(graft.state_dict()), 0)
            since_best = 0
            for epoch in range(1, settings.fine_tune_epochs + 1):
                entry = train_epoch(graft, train, opt, device, before=_freeze_batchnorm,
                                    scheduler=sched, loss=loss, teacher=teacher)
                z, yv = logits_on_images(graft, val, device)
                val_loss, val_acc = loss_and_accuracy(z, yv)
                history.append({"epoch": epoch, **entry, "val_loss": val_loss,
                                "val_accuracy": val_acc})
                if val_loss < best[0]:
                    best, since_best = (val_loss, copy.deepcopy(graft.state_dict()), epoch), 0
                else:
                    since_best += 1
                # the log shows what the callback shows: fine-tuning takes minutes per variant
                logger.info("%s epoch %d: train loss %.4f, val loss %.4f acc %.4f", tag, epoch,
                            entry.get("train_loss", math.nan), val_loss, val_acc)
                report(progress, tag, epoch, settings.fine_tune_epochs, val_loss=val_loss,
                       val_accuracy=val_acc)
                if settings.fine_tune_patience is not None and since_best >= settings.fine_tune_patience:
                    break
    finally:
        if teacher is not None:
            teacher.cpu()
    graft.load_state_dict(best[1])
    graft.cpu().eval()
    for entry in history:
        entry["best"] = entry["epoch"] == best[2]
    return history


def _donor_module_with_normalize(donor) -> nn.Module:
    return nn.Sequential(Normalize(donor.preprocessing.mean, donor.preprocessing.std),
                         donor.module).eval()


def _check_same_inputs(donor, features, dataset) -> None:
    """A head trained on one donor's features must not be grafted onto another donor's trunk."""
    manifest = getattr(features, "manifest", None)
    cached = ((manifest or {}).get("inputs") or {}).get("donor") or {}
    if cached.get("weights_sha256"):
        if donor.fingerprint() != cached["weights_sha256"]:
            raise ParameterError(param_message(
                "donor", f"the donor the feature cache was built from ('{cached.get('name')}', "
                f"weights {cached['weights_sha256'][:12]})",
                f"'{donor.name}' with other weights ({donor.fingerprint()[:12]})",
                "Pass the same donor (or checkpoint) as for the cache, or build the cache from "
                "this donor."))
    if dataset is not None and list(dataset.classes) != list(features.classes):
        raise ParameterError(param_message("dataset", f"the dataset of the features (classes "
                                           f"{list(features.classes)})", list(dataset.classes)))


# ---------------------------------------------------------------------------------------------
# the final model, stage by stage


class _Stages:
    """Reports each stage of final training as one step of ``final`` progress."""

    def __init__(self, progress: Optional[ProgressCallback], settings: FinalSettings,
                 fine_tunes: int):
        self.progress = progress
        self.total = 4 + fine_tunes + int(settings.quantize is not None)
        self.step = 0

    def __call__(self, message: str) -> None:
        self.step += 1
        logger.info("final %d/%d: %s", self.step, self.total, message)
        report(self.progress, "final", self.step, self.total, message=message)


def _check_inputs(donor, features, head: Optional[HeadSpec], dataset,
                  settings: Optional[FinalSettings]) -> Tuple[FinalSettings, HeadSpec]:
    """The settings and head to use (defaults filled in), after checking that they, the feature
    source and the dataset fit together."""
    settings = settings if settings is not None else FinalSettings()
    if not isinstance(settings, FinalSettings):
        raise ParameterError(param_message("settings", "a FinalSettings", type(settings).__name__))
    classes = list(features.classes)
    head = head if head is not None else HeadSpec(num_classes=len(classes))
    if not isinstance(head, HeadSpec):
        raise ParameterError(param_message("head", "a HeadSpec", type(head).__name__))
    if head.num_classes != len(classes):
        raise ParameterError(param_message("head", f"a HeadSpec with num_classes={len(classes)} "
                                           "(the dataset's classes)", head))
    missing = [s for s in ("train", "val", "test") if s not in tuple(features.splits)]
    if missing:
        raise ParameterError(param_message("features", "a feature source with train, val and test "
                                           "splits", f"one without {missing}"))
    if (settings.fine_tune or settings.quantize) and dataset is None:
        raise ParameterError(param_message(
            "dataset", "the ImageDataset of the cache when fine_tune or quantize is set", None,
            "Pass dataset=load_dataset(...) (the CLI does this for you)."))
    _check_same_inputs(donor, features, dataset)
    return settings, head


@dataclass
class _Split:
    """The selection's cached features and labels of one split."""

    x: np.ndarray
    y: np.ndarray


def _train_head_on_features(donor, features, indices: Sequence[int], head: HeadSpec,
                            settings: FinalSettings, progress: Optional[ProgressCallback]
                            ) -> Tuple[GraftedModel, Any, Dict[str, _Split]]:
    """The graft with its head trained on the cached features (the paper's schedule by
    default), the fit, and those features."""
    from graftsearch.training._headtrain import train_head

    taps = features.taps
    data = {s: _Split(selection_features(features, s, indices),
                      np.asarray(features.labels(s), dtype=np.int64))
            for s in ("train", "val", "test")}
    fit = train_head(data["train"].x, data["train"].y, data["val"].x, data["val"].y, head=head,
                     schedule=settings.schedule,
                     seed=derive_seed(settings.seed, "final", taps.bits(indices)),
                     progress=progress)
    graft = GraftedModel(donor, list(indices), head, taps=taps)
    graft.head.load_state_dict(fit.head.state_dict())
    graft.eval()
    for p in graft.parameters():
        p.requires_grad_(True)  # the whole graft, for an optional fine-tuning
    return graft, fit, data


def _skips_bad_images(features) -> bool:
    """Images the cache left out as undecodable are left out of image passes too."""
    skipped = getattr(features, "skipped", None)
    return bool(skipped()) if callable(skipped) else False


@dataclass
class _Variant:
    """One way of training the pick (head only, fine-tuned, distilled) and how it did."""

    graft: GraftedModel
    val: ClassificationMetrics
    test: ClassificationMetrics
    history: List[Dict[str, float]] = field(default_factory=list)

    def summary(self) -> Dict[str, Any]:
        return {"val": self.val.summary(), "test": self.test.summary(),
                "epochs": len(self.history),
                "best_epoch": next((h["epoch"] for h in self.history if h.get("best")), None)}


def _test_on_features(graft: GraftedModel, data: Mapping[str, _Split], classes: Sequence[str]
                      ) -> Tuple[ClassificationMetrics, ClassificationMetrics]:
    """Val and test metrics of a graft whose trunk is the donor's: its head on cached features."""
    zv = _logits_on_features(graft.head, data["val"].x)
    zt = _logits_on_features(graft.head, data["test"].x)
    return (compute_metrics(data["val"].y, zv, classes=classes),
            compute_metrics(data["test"].y, zt, classes=classes))


def _test_on_images(graft: GraftedModel, dataset, pre: Preprocessing, settings: FinalSettings,
                    classes: Sequence[str], skip_bad: bool, device: torch.device
                    ) -> Tuple[ClassificationMetrics, ClassificationMetrics]:
    """Val and test metrics on images (the trunk has changed, cached features no longer apply)."""
    try:
        zv, yv = logits_on_images(graft.to(device), _loader(dataset, "val", pre, settings,
                                                             skip_bad=skip_bad), device)
        zt, yt = logits_on_images(graft, _loader(dataset, "test", pre, settings,
                                                  skip_bad=skip_bad), device)
    finally:
        graft.cpu()
    return compute_metrics(yv, zv, classes=classes), compute_metrics(yt, zt, classes=classes)


def _teacher(donor, classes: Sequence[str], settings: FinalSettings) -> Tuple[Optional[nn.Module], str]:
    """The donor as a distillation teacher, or None and why not."""
    if not settings.distill:
        return None, "distillation off (distill=False)."
    if not donor_has_classifier_for(donor, classes):
        return None, ("no distillation: the donor's classifier is not one for these classes "
                      "(cultivate the donor to distil from it).")
    return donor.module, ""


def _choose(variants: Mapping[str, _Variant]) -> str:
    """The variant with the best validation accuracy; a tie goes to the simpler (earlier) one.
    Only validation data decides: the test split is reported, never used to choose."""
    order = [v for v in VARIANTS if v in variants]
    return max(order, key=lambda v: (variants[v].val.accuracy, -order.index(v)))


def _test_donor(donor, dataset, pre: Preprocessing, settings: FinalSettings,
                classes: Sequence[str], skip_bad: bool, device: torch.device
                ) -> Tuple[Optional[ClassificationMetrics], Optional[ClassificationMetrics], str]:
    """The donor's val and test metrics when they can be measured, else None and why not."""
    if not settings.donor_metrics:
        return None, None, "not measured (donor_metrics=False)."
    if not donor_has_classifier_for(donor, classes):
        return None, None, ("not measured: the donor's classifier is not one for these classes; "
                            "cultivate it with `graftsearch donor train` to compare.")
    if dataset is None:
        return None, None, "not measured: no images were given (dataset=None)."
    donor_module = donor.module.to(device)
    try:
        zdv, ydv = logits_on_images(donor_module, _loader(dataset, "val", pre, settings,
                                                           skip_bad=skip_bad), device)
        zdt, ydt = logits_on_images(donor_module, _loader(dataset, "test", pre, settings,
                                                           skip_bad=skip_bad), device)
    finally:
        donor.module.cpu()
    return (compute_metrics(ydv, zdv, classes=classes), compute_metrics(ydt, zdt, classes=classes),
            "")


@dataclass
class _Cost:
    """The graft's and the donor's size, latency and memory."""

    graft_params: int
    donor_params: int
    donor_macs: Optional[int]
    latency: Optional[Dict[str, Any]]
    memory: Optional[Dict[str, Any]]


def _measure_cost(model: DeployableModel, graft: GraftedModel, donor, pre: Preprocessing,
                  settings: FinalSettings) -> _Cost:
    example = torch.zeros(1, 3, pre.image_size, pre.image_size)
    g_params = graft.num_params()
    d_params = count_params(donor.module)
    try:
        d_macs: Optional[int] = count_macs(donor.module, example)
    except Exception:  # a donor whose classifier does not fit this image size
        d_macs = None
    latency = memory = None
    donor_runner = _donor_module_with_normalize(donor)
    if settings.latency_runs:
        from graftsearch.graft._measure import compare_latency

        try:
            lat = compare_latency({"graft": model, "donor": donor_runner}, pre.image_size,
                                  runs=settings.latency_runs, warmup=settings.latency_warmup,
                                  threads=settings.threads)
            latency = {k: v.as_dict() for k, v in lat.items()}
            latency["ratio"] = lat["donor"].median_ms / lat["graft"].median_ms
        except Exception as exc:  # the donor's own head may not run at this size
            latency = {"graft": None, "donor": None, "error": f"{type(exc).__name__}: {exc}"}
    if settings.memory:
        from graftsearch.graft._measure import measure_peak_memory

        threads = settings.threads or 1
        memory = {"graft": measure_peak_memory(model, pre.image_size, threads=threads).as_dict(),
                  "donor": measure_peak_memory(donor_runner, pre.image_size,
                                               threads=threads).as_dict()}
    return _Cost(graft_params=g_params, donor_params=d_params, donor_macs=d_macs,
                 latency=latency, memory=memory)


def _metrics_record(*, donor, graft: GraftedModel, bits: str, indices: Sequence[int],
                    head: HeadSpec, pre: Preprocessing, classes: Sequence[str], fit,
                    fine_tune_history: List[Dict[str, float]],
                    variants: Mapping[str, "_Variant"], chosen: str, distill_note: str,
                    val: ClassificationMetrics, test: ClassificationMetrics,
                    donor_val: Optional[ClassificationMetrics],
                    donor_test: Optional[ClassificationMetrics], donor_note: str, cost: _Cost,
                    int8: Optional[Dict[str, Any]], settings: FinalSettings) -> FinalMetrics:
    g_params, d_params = cost.graft_params, cost.donor_params
    return FinalMetrics(
        graftsearch_version=__version__,
        bits=bits, taps=";".join(str(i) for i in indices), selection=list(indices),
        tap_names=list(graft.tap_names), image_size=pre.image_size,
        mean=list(pre.mean), std=list(pre.std), class_names=list(classes), head=head.as_dict(),
        graft=GraftMetrics(params=g_params, size_mib=params_mib(g_params),
                           macs=graft.measured_cost().macs, val=val.summary(),
                           test=test.summary(), per_class=test.as_dict()["per_class"],
                           confusion=test.confusion.tolist(), best_epoch=fit.best_epoch,
                           history=fit.history, fine_tuned=chosen != "head_only",
                           fine_tune_history=fine_tune_history, variant=chosen,
                           variants={k: v.summary() for k, v in variants.items()},
                           distill_note=distill_note or None),
        donor=DonorMetrics(name=donor.name, params=d_params, size_mib=params_mib(d_params),
                           macs=cost.donor_macs, val=donor_val.summary() if donor_val else None,
                           test=donor_test.summary() if donor_test else None, note=donor_note),
        size_reduction=SizeReduction(params=d_params - g_params, factor=d_params / g_params,
                                     percent=100.0 * (1 - g_params / d_params)),
        latency=cost.latency, memory=cost.memory, int8=int8, settings=settings.as_dict())


def train_final(donor, features, selection, *, head: Optional[HeadSpec] = None, dataset=None,
                settings: Optional[FinalSettings] = None, out_dir=None,
                progress: Optional[ProgressCallback] = None) -> FinalModel:
    """Train, test, measure and (with ``out_dir``) export the graft of ``selection``.

    ``features`` is the run's feature source (a :class:`~graftsearch.FeatureCache` or
    :class:`~graftsearch.ArrayFeatures`) with train, val and test splits; ``dataset`` (the
    :class:`ImageDataset` the cache was built from) is needed for fine-tuning, donor metrics and
    int8 accuracy, which run on images. ``head`` defaults to the paper's head for the dataset's
    classes. ``out_dir`` (a run's ``best/``) receives model.pt, model.torchscript.pt, model.onnx
    (when available), metrics.json and confusion.csv.
    """
    settings, head = _check_inputs(donor, features, head, dataset, settings)
    classes = list(features.classes)
    indices = features.taps.normalize(selection)
    pre = _preprocessing_of(features, donor)
    tune = settings.fine_tune if settings.fine_tune is not None else dataset is not None
    teacher, distill_note = _teacher(donor, classes, settings) if tune else (None, "")
    stage = _Stages(progress, settings, int(tune) + int(teacher is not None))

    stage("training the head on cached features")
    graft, fit, data = _train_head_on_features(donor, features, indices, head, settings, progress)
    skip_bad = _skips_bad_images(features)
    device = resolve_device(settings.device) if dataset is not None else torch.device("cpu")
    variants: Dict[str, _Variant] = {"head_only": _Variant(graft, *_test_on_features(graft, data, classes))}
    if tune:
        for name, by in (("fine_tuned", None), ("distilled", teacher)):
            if name == "distilled" and by is None:
                continue
            stage("fine-tuning the graft end to end on images"
                  + (" with distillation from the donor" if by is not None else ""))
            tuned = copy.deepcopy(graft)
            history = fine_tune(tuned, dataset, pre, settings, teacher=by, progress=progress,
                                skip_bad=skip_bad)
            variants[name] = _Variant(tuned, *_test_on_images(tuned, dataset, pre, settings,
                                                              classes, skip_bad, device), history)
    chosen = _choose(variants)
    graft, val, test = variants[chosen].graft, variants[chosen].val, variants[chosen].test
    fine_tune_history = variants[chosen].history

    stage("testing the donor")
    donor_val, donor_test, donor_note = _test_donor(donor, dataset, pre, settings, classes,
                                                    skip_bad, device)
    model = DeployableModel(graft, mean=pre.mean, std=pre.std, image_size=pre.image_size,
                            class_names=classes).eval()

    stage("measuring latency and memory beside the donor")
    cost = _measure_cost(model, graft, donor, pre, settings)
    int8, int8_model = None, None
    if settings.quantize:
        stage("quantising to int8")
        int8, int8_model = _int8(graft, dataset, pre, settings, skip_bad, progress)

    record = _metrics_record(donor=donor, graft=graft, bits=features.taps.bits(indices),
                             indices=indices, head=head, pre=pre, classes=classes, fit=fit,
                             fine_tune_history=fine_tune_history, variants=variants,
                             chosen=chosen, distill_note=distill_note,
                             val=val, test=test, donor_val=donor_val, donor_test=donor_test,
                             donor_note=donor_note, cost=cost, int8=int8, settings=settings)
    result = FinalModel(graft=graft, model=model, fit=fit, val=val, test=test, donor_val=donor_val,
                        donor_test=donor_test, record=record, int8_model=int8_model)
    if out_dir is not None:
        stage("exporting")
        write_best(result, donor, out_dir, onnx=settings.onnx)
    return result


def _int8(graft: GraftedModel, dataset, pre: Preprocessing, settings: FinalSettings,
          skip_bad: bool, progress) -> Tuple[Dict[str, Any], Optional[DeployableModel]]:
    """The int8 copy of the graft as a DeployableModel, and what metrics.json says of it."""
    from graftsearch.graft._int8 import int8_latency, make_int8

    def tune(module, *, settings, teacher, tag):
        return fine_tune(module, dataset, pre, settings, teacher=teacher, progress=progress,
                         skip_bad=skip_bad, tag=tag)

    info, quantized = make_int8(graft, dataset, pre, settings, make_loader=_loader, tune=tune,
                                skip_bad=skip_bad)
    if quantized is None:
        return info, None
    if settings.latency_runs:
        try:
            info.update(int8_latency(graft, quantized, info["engine"], pre.image_size, settings))
        except Exception as exc:  # a measurement, not the model: report it
            info["latency_error"] = f"{type(exc).__name__}: {exc}"
    model = DeployableModel(quantized, mean=pre.mean, std=pre.std, image_size=pre.image_size,
                            class_names=list(dataset.classes)).eval()
    return info, model


_INT8_TOLERANCE = 1e-4  # as the float32 files: the same int8 kernels run in both


def _export_int8(final: FinalModel, out: Path, export: ExportResult, files: List[str]) -> None:
    """model.int8.torchscript.pt beside the float32 files; its size and fidelity go into the
    int8 section of metrics.json (a failure there too, never the export)."""
    from graftsearch.graft._export import INT8_TORCHSCRIPT, export_int8

    info = final.record.int8
    try:
        diff = export_int8(final.int8_model, out / INT8_TORCHSCRIPT, engine=info["engine"],
                           method=info["method"])
    except Exception as exc:  # the int8 file is an extra: the float32 export stands
        logger.warning("int8 export failed: %s", exc)
        info["export_error"] = f"{type(exc).__name__}: {exc}"
        return
    if not diff <= _INT8_TOLERANCE:  # NaN too: a file that disagrees is not shipped
        (out / INT8_TORCHSCRIPT).unlink()
        info["export_error"] = (f"the TorchScript int8 file's logits differ from the in-process "
                                f"int8 model's by {diff:.3g} (> {_INT8_TOLERANCE}); not exported")
        logger.warning("int8 export: %s", info["export_error"])
        return
    export.max_abs_diff["int8_torchscript"] = diff
    files.append(INT8_TORCHSCRIPT)
    info.update(file=INT8_TORCHSCRIPT, file_mib=(out / INT8_TORCHSCRIPT).stat().st_size / 2**20,
                float32_file_mib=export.torchscript.stat().st_size / 2**20,
                max_abs_diff_vs_in_process=diff)


def write_best(final: FinalModel, donor, out_dir, *, onnx: Optional[bool] = None) -> ExportResult:
    """Export ``final.model`` and write metrics.json and confusion.csv into ``out_dir``.

    Everything is written into a temporary directory beside ``out_dir`` that replaces it only
    when complete, so an interrupted or failed export never leaves a half-written ``best/``.
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    old = out.with_name(f".{out.name}-old-{os.getpid()}")
    try:
        export = export_model(final.model, tmp, donor=donor, metrics=final.metrics, onnx=onnx)
        files = [p.name for p in (export.model_pt, export.torchscript, export.onnx) if p is not None]
        if final.int8_model is not None:
            _export_int8(final, tmp, export, files)
        final.record.export = ExportInfo(files=files, onnx_note=export.onnx_note,
                                         max_abs_diff=export.max_abs_diff)
        final.record.write(tmp / METRICS)
        write_text(tmp / CONFUSION, final.test.confusion_csv())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    export.model_pt = out / export.model_pt.name
    export.torchscript = out / export.torchscript.name
    export.onnx = out / export.onnx.name if export.onnx is not None else None
    final.export = export
    return export


# ---------------------------------------------------------------------------------------------
# from a run directory


def front_picks(run_dir, *, top_k: int = 1) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    """The ``top_k`` best selections of a run's front, best first, and the run's settings."""
    run = load_run(run_dir)
    order = order_front(run.pareto, run.objective, run.size_metric, run.pick)
    if not len(order):
        raise SearchError(f"The run '{run.root}' has no feasible selection to train. Relax the "
                          "constraint (p_min or size_max) in a new run (the feature cache is "
                          "reused), or search longer with `graftsearch resume RUN_DIR "
                          "--generations N`.")
    picks = [dict(r) for _, r in order.head(top_k).iterrows()]
    settings = {"objective": run.objective, "size_metric": run.size_metric,
                "p_min": run.setting("p_min"), "size_max": run.setting("size_max"),
                "pick": run.pick}
    return picks, settings


def _front_source(run_dir, picks: Sequence[Mapping[str, Any]]) -> str:
    """Which accuracy the picks carry: refined val when refined.csv holds each of them at that
    value (the run refined its front), else proxy val."""
    from graftsearch._utils import labels as L
    from graftsearch.optimize._runfiles import read_records

    path = RunFiles(run_dir).refined
    if not path.is_file():
        return L.PROXY_VAL
    refined = read_records(path)
    values = dict(zip(refined["bits"].astype(str), refined["val_accuracy"].astype(float)))
    same = all(str(p["bits"]) in values and math.isclose(values[str(p["bits"])],
                                                         float(p["val_accuracy"]), abs_tol=1e-12)
               for p in picks)
    return L.REFINED_VAL if same else L.PROXY_VAL


def train_final_from_run(run_dir, donor, features, *, dataset=None, head: Optional[HeadSpec] = None,
                         settings: Optional[FinalSettings] = None, top_k: int = 1,
                         progress: Optional[ProgressCallback] = None) -> FinalModel:
    """Train the run's best pick (or the best of its ``top_k`` picks after final training) and
    write ``best/`` in ``run_dir``.

    With ``top_k > 1`` every pick's head is trained with the final schedule and the choice is
    made again on those validation accuracies: min-size takes the smallest pick that still
    reaches p_min (else the most accurate), max-accuracy the most accurate (with the run's
    ``pick="one-se"``: the smallest within one binomial standard error of it). Only validation
    data decides; the test split is used once, for the chosen model.
    """
    from graftsearch.training._headtrain import train_head

    if not is_int(top_k) or top_k < 1:
        raise ParameterError(param_message("top_k", "an integer >= 1", top_k))
    settings = settings if settings is not None else FinalSettings()
    _check_same_inputs(donor, features, dataset)
    picks, run_settings = front_picks(run_dir, top_k=top_k)
    source = _front_source(run_dir, picks)
    chosen = picks[0]
    candidates = []
    if len(picks) > 1:
        head_spec = head if head is not None else HeadSpec(num_classes=len(features.classes))
        y_train = np.asarray(features.labels("train"), dtype=np.int64)
        y_val = np.asarray(features.labels("val"), dtype=np.int64)
        for pick in picks:
            sel = features.taps.normalize(str(pick["bits"]))
            fit = train_head(selection_features(features, "train", sel), y_train,
                             selection_features(features, "val", sel), y_val, head=head_spec,
                             schedule=settings.schedule,
                             seed=derive_seed(settings.seed, "final", features.taps.bits(sel)))
            candidates.append({"bits": pick["bits"], "taps": pick["taps"],
                               "params": int(pick["params"]), "size_mib": float(pick["size_mib"]),
                               "search_val_accuracy": float(pick["val_accuracy"]),
                               "search_source": source,
                               "final_val_accuracy": fit.val_accuracy,
                               "final_val_loss": fit.val_loss})
        metric = run_settings["size_metric"]
        size = {c["bits"]: float(next(p for p in picks if p["bits"] == c["bits"])[metric])
                for c in candidates}
        if run_settings["pick"] == "one-se" and run_settings["objective"] == "max-accuracy":
            # the same rule on the final val accuracies, with their binomial standard errors
            from graftsearch.fitness._evaluation import binomial_se
            from graftsearch.optimize._result import one_se_first

            ranked = sorted(range(len(candidates)), key=lambda i: (
                -candidates[i]["final_val_accuracy"], size[candidates[i]["bits"]],
                candidates[i]["bits"]))
            order = one_se_first(ranked, [size[c["bits"]] for c in candidates],
                                 [c["final_val_accuracy"] for c in candidates],
                                 [binomial_se(c["final_val_accuracy"], len(y_val)) for c in candidates],
                                 [str(c["bits"]) for c in candidates])
            best = candidates[order[0]]
        elif run_settings["objective"] == "max-accuracy" or run_settings["p_min"] is None:
            best = max(candidates, key=lambda c: (c["final_val_accuracy"], -float(
                next(p for p in picks if p["bits"] == c["bits"])[metric])))
        else:
            reaching = [c for c in candidates if c["final_val_accuracy"] >= float(run_settings["p_min"])]
            best = reaching[0] if reaching else max(candidates, key=lambda c: c["final_val_accuracy"])
        chosen = next(p for p in picks if p["bits"] == best["bits"])
    final = train_final(donor, features, str(chosen["bits"]), head=head, dataset=dataset,
                        settings=settings, out_dir=None, progress=progress)
    final.record.search_pick = SearchPick(search_val_accuracy=float(chosen["val_accuracy"]),
                                          search_source=source,
                                          objective=run_settings["objective"],
                                          candidates=candidates)
    write_best(final, donor, RunFiles(run_dir).best, onnx=settings.onnx)
    return final
