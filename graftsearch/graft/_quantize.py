"""Post-training int8 quantisation of a grafted model (beyond the paper).

Static quantisation with torch.ao's FX graph mode: convolutions are fused with their batch norm
and activation, weights are quantised per channel, activations per tensor with ranges observed on
calibration images. Operations without an int8 kernel stay in float32 behind automatic
dequantisation. torch.ao.quantization is deprecated upstream in favour of the separate ``torchao``
package; its warnings are silenced here, and a failure is reported as such, never fatal.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import logging
import warnings
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Tuple

import torch
from torch import nn

from graftsearch._utils.errors import ExportError
from graftsearch.taps._int8 import quantization_engine, quantization_engines  # noqa: F401
from graftsearch.taps._records import MIB

logger = logging.getLogger("graftsearch")


class Standardize(nn.Module):
    """``(x - mean) / scale`` per feature, kept in float32 in front of a quantised head."""

    def __init__(self, mean: torch.Tensor, scale: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean.detach().clone())
        self.register_buffer("scale", scale.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.scale


def unfold_standardisation(head: nn.Module, pooled: torch.Tensor) -> nn.Sequential:
    """``head`` as Standardize(m, s) followed by a head whose first Linear takes standardised
    features; the same function in float32.

    A trained head has the train-split standardisation folded into its first Linear, so its
    weights and inputs span orders of magnitude across features: one int8 scale per tensor
    cannot hold both. Standardised inputs share one range.
    """
    mean = pooled.mean(dim=0)
    scale = pooled.std(dim=0)
    scale = torch.where(scale > 1e-12, scale, torch.ones_like(scale))
    head = copy.deepcopy(head)
    first = next(m for m in head.modules() if isinstance(m, nn.Linear))
    with torch.no_grad():
        first.bias.add_(first.weight @ mean)
        first.weight.mul_(scale[None, :])
    return nn.Sequential(Standardize(mean, scale), head)


OBSERVERS = ("histogram", "minmax")


@dataclass(frozen=True)
class Int8Recipe:
    """How an int8 copy is made: the engine, the activation observer of post-training
    calibration, and the convolutions kept in float32 (``float_layers``, module names of the
    graft's trunk); ``bias_correction`` re-measures the head's input standardisation on the
    int8 trunk's pooled features (post-training only)."""

    engine: str
    observer: str = "histogram"
    float_layers: Tuple[str, ...] = ()
    bias_correction: bool = True

    def as_dict(self) -> Dict[str, Any]:
        return {"engine": self.engine, "observer": self.observer,
                "float_layers": list(self.float_layers), "bias_correction": self.bias_correction}


def first_convolution(module: nn.Module) -> Optional[str]:
    """The name of the first Conv2d of ``module`` (the layer on raw pixels), or None."""
    return next((n for n, m in module.named_modules() if isinstance(m, nn.Conv2d)), None)


def _qconfig_mapping(recipe: Int8Recipe, *, qat: bool = False):
    from torch.ao.quantization import (MinMaxObserver, QConfig, get_default_qat_qconfig_mapping,
                                       get_default_qconfig_mapping)

    if qat:  # fake quantisation learns moving-average ranges while it trains
        mapping = get_default_qat_qconfig_mapping(recipe.engine)
    else:
        if recipe.observer not in OBSERVERS:
            raise ExportError(f"The int8 observer must be one of {list(OBSERVERS)}; got "
                              f"'{recipe.observer}'.")
        mapping = get_default_qconfig_mapping(recipe.engine)
        if recipe.observer == "minmax":
            default = mapping.global_qconfig
            # x86 / fbgemm keep 7-bit activations (reduce_range) against VNNI overflow
            reduce = recipe.engine in ("x86", "fbgemm")
            mapping.set_global(QConfig(activation=MinMaxObserver.with_args(reduce_range=reduce),
                                       weight=default.weight))
    for name in recipe.float_layers:
        mapping.set_module_name(name, None)
    return mapping


def _set_engine(engine: str) -> None:
    if engine not in torch.backends.quantized.supported_engines:
        raise ExportError(f"The quantisation engine '{engine}' is not in this torch build "
                          f"({torch.backends.quantized.supported_engines}).")
    torch.backends.quantized.engine = engine


def _graft_of(model: nn.Module):
    from graftsearch.graft._export import DeployableModel

    return model.graft if isinstance(model, DeployableModel) else model


def _graft_inputs(model: nn.Module, batches: List[torch.Tensor]) -> List[torch.Tensor]:
    from graftsearch.graft._export import DeployableModel

    if isinstance(model, DeployableModel):
        with torch.no_grad():
            return [model.normalize(x) for x in batches]
    return batches


def _pooled(graft, batches: List[torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([graft.pooled(x) for x in batches])


def quantize_int8(model: nn.Module, calibration: Iterable[torch.Tensor], *,
                  engine: Optional[str] = None, recipe: Optional[Int8Recipe] = None) -> nn.Module:
    """An int8 copy of ``model`` (CPU, eval), calibrated on the batches of ``calibration``.

    ``calibration`` yields input batches exactly as ``model`` takes them (a GraftedModel takes
    normalised images; a DeployableModel takes images in [0, 1]). ``model`` is not modified.
    For a grafted model the trunk and the head are quantised separately, the pooling and
    concatenation stay in float32 (taps have very different ranges, and an int8 concatenation
    would force them onto one scale) and the head gets its input standardisation back (see
    :func:`unfold_standardisation`), measured on the int8 trunk's features when
    ``recipe.bias_correction`` (the trunk's rounding shifts the pooled means). ``recipe``
    (default: ``Int8Recipe(engine)``, ``engine`` default: the first of
    :func:`quantization_engines`) says how; run the result with torch's quantised engine set to
    its engine (this function sets it).
    """
    batches = [x.detach().cpu() for x in calibration]
    if not batches:
        raise ExportError("int8 calibration needs at least one batch of images; got none.")
    recipe = recipe or Int8Recipe(engine or quantization_engine())
    _set_engine(recipe.engine)
    quantized = copy.deepcopy(model).cpu().eval()
    graft = _graft_of(quantized)
    from graftsearch.graft._model import GraftedModel

    if not isinstance(graft, GraftedModel):
        return _quantize_fx(quantized, batches, recipe)
    batches = _graft_inputs(quantized, batches)
    pooled = _pooled(graft, batches)
    head = unfold_standardisation(graft.head, pooled)
    graft.trunk = _quantize_fx(graft.trunk, batches, recipe)
    if recipe.bias_correction:
        pooled = _pooled(graft, batches)
        head[0] = _standardize_like(pooled)
    with torch.no_grad():
        standardised = [head[0](pooled)]
    graft.head = nn.Sequential(head[0], _quantize_fx(head[1], standardised,
                                                     dataclasses.replace(recipe, float_layers=())))
    return quantized


def _standardize_like(pooled: torch.Tensor) -> Standardize:
    scale = pooled.std(dim=0)
    return Standardize(pooled.mean(dim=0), torch.where(scale > 1e-12, scale, torch.ones_like(scale)))


def prepare_qat(graft: nn.Module, calibration: Iterable[torch.Tensor], recipe: Int8Recipe) -> nn.Module:
    """A copy of ``graft`` (a GraftedModel on normalised images, or any network) with fake
    quantisation in its trunk and head, ready to be fine-tuned; :func:`convert_qat` makes the
    int8 model of it.

    The head gets its input standardisation back first (as :func:`quantize_int8`); the
    calibration batches set the first ranges of the fake quantisers."""
    from torch.ao.quantization.quantize_fx import prepare_qat_fx

    batches = [x.detach().cpu() for x in calibration]
    if not batches:
        raise ExportError("int8 calibration needs at least one batch of images; got none.")
    _set_engine(recipe.engine)
    prepared = copy.deepcopy(graft).cpu().eval()
    from graftsearch.graft._model import GraftedModel

    graft = isinstance(prepared, GraftedModel)  # else any network: fake quantisation throughout
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if graft:
                pooled = _pooled(prepared, batches)
                head = unfold_standardisation(prepared.head, pooled)
                with torch.no_grad():
                    standardised = head[0](pooled)
                head_recipe = dataclasses.replace(recipe, float_layers=())
                prepared.head = nn.Sequential(head[0], prepare_qat_fx(
                    head[1].train(), _qconfig_mapping(head_recipe, qat=True), (standardised[:2],)))
            body = prepared.trunk if graft else prepared
            body = prepare_qat_fx(body.train(), _qconfig_mapping(recipe, qat=True), (batches[0],))
            if graft:
                prepared.trunk = body
            else:
                prepared = body
        except Exception as exc:
            raise _failure(exc) from exc
    prepared.eval()
    with torch.no_grad():
        for x in batches:
            prepared(x)
    return prepared


def convert_qat(prepared: nn.Module, engine: str) -> nn.Module:
    """The int8 model of a graft made by :func:`prepare_qat` and fine-tuned (a copy)."""
    from torch.ao.quantization.quantize_fx import convert_fx

    _set_engine(engine)
    quantized = copy.deepcopy(prepared).cpu().eval()
    from graftsearch.graft._model import GraftedModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if not isinstance(quantized, GraftedModel):
                return convert_fx(quantized).eval()
            quantized.trunk = convert_fx(quantized.trunk).eval()
            quantized.head = nn.Sequential(quantized.head[0], convert_fx(quantized.head[1]).eval())
        except Exception as exc:
            raise _failure(exc) from exc
    return quantized


def _failure(exc: Exception) -> ExportError:
    first = str(exc).splitlines()[0] if str(exc) else ""
    return ExportError(f"int8 quantisation failed ({type(exc).__name__}: {first}); run without "
                       "--quantize.")


def _quantize_fx(module: nn.Module, batches: List[torch.Tensor], recipe: Int8Recipe) -> nn.Module:
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            prepared = prepare_fx(module.eval(), _qconfig_mapping(recipe), (batches[0],))
            with torch.no_grad():
                for x in batches:
                    prepared(x)
            return convert_fx(prepared).eval()
        except Exception as exc:  # torch.fx / ao raise many types for unsupported layers
            raise _failure(exc) from exc


def serialized_mib(module: nn.Module) -> float:
    """Size in MiB of ``module``'s state dict as torch.save writes it."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save(module.state_dict(), buf)
    return len(buf.getvalue()) / MIB
