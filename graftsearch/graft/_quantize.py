"""Post-training int8 quantisation of a grafted model (beyond the paper).

Static quantisation with torch.ao's FX graph mode: convolutions are fused with their batch norm
and activation, weights are quantised per channel, activations per tensor with ranges observed on
calibration images. Operations without an int8 kernel stay in float32 behind automatic
dequantisation. torch.ao.quantization is deprecated upstream in favour of the separate ``torchao``
package; its warnings are silenced here, and a failure is reported as such, never fatal.
"""

from __future__ import annotations

import copy
import io
import logging
import warnings
from typing import Iterable, List, Optional

import torch
from torch import nn

from graftsearch._utils.errors import ExportError
from graftsearch.taps._records import MIB

logger = logging.getLogger("graftsearch")


def quantization_engines() -> List[str]:
    """The int8 CPU engines of this torch build that suit this machine, preferred first."""
    engines = torch.backends.quantized.supported_engines
    found = [e for e in ("x86", "onednn") if e in engines]
    if "x86" not in found and "fbgemm" in engines:  # x86's predecessor in older builds
        found.insert(0, "fbgemm")
    if not found and "qnnpack" in engines:  # ARM
        found = ["qnnpack"]
    return found


def quantization_engine() -> str:
    found = quantization_engines()
    if not found:
        raise ExportError("This torch build has no int8 CPU quantisation engine (supported: "
                          f"{torch.backends.quantized.supported_engines}); run without --quantize.")
    return found[0]


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


def quantize_int8(model: nn.Module, calibration: Iterable[torch.Tensor], *,
                  engine: Optional[str] = None) -> nn.Module:
    """An int8 copy of ``model`` (CPU, eval), calibrated on the batches of ``calibration``.

    ``calibration`` yields input batches exactly as ``model`` takes them (a GraftedModel takes
    normalised images; a DeployableModel takes images in [0, 1]). ``model`` is not modified.
    For a grafted model the trunk and the head are quantised separately, the pooling and
    concatenation stay in float32 (taps have very different ranges, and an int8 concatenation
    would force them onto one scale) and the head gets its input standardisation back (see
    :func:`unfold_standardisation`). ``engine`` (``x86``, ``onednn``, ``fbgemm``, ``qnnpack``;
    default: the first of :func:`quantization_engines`) becomes torch's quantised engine; run
    the result with that engine set.
    """
    from graftsearch.graft._export import DeployableModel
    from graftsearch.graft._model import GraftedModel

    batches = [x.detach().cpu() for x in calibration]
    if not batches:
        raise ExportError("int8 calibration needs at least one batch of images; got none.")
    engine = engine or quantization_engine()
    if engine not in torch.backends.quantized.supported_engines:
        raise ExportError(f"The quantisation engine '{engine}' is not in this torch build "
                          f"({torch.backends.quantized.supported_engines}).")
    torch.backends.quantized.engine = engine
    quantized = copy.deepcopy(model).cpu().eval()
    graft = quantized.graft if isinstance(quantized, DeployableModel) else quantized
    if isinstance(graft, GraftedModel):
        if isinstance(quantized, DeployableModel):
            with torch.no_grad():
                batches = [quantized.normalize(x) for x in batches]
        with torch.no_grad():
            pooled = torch.cat([graft.pooled(x) for x in batches])
        head = unfold_standardisation(graft.head, pooled)
        with torch.no_grad():
            standardised = [head[0](pooled)]
        graft.trunk = _quantize_fx(graft.trunk, batches, engine)
        graft.head = nn.Sequential(head[0], _quantize_fx(head[1], standardised, engine))
        return quantized
    return _quantize_fx(quantized, batches, engine)


def _quantize_fx(module: nn.Module, batches: List[torch.Tensor], engine: str) -> nn.Module:
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            prepared = prepare_fx(module.eval(), get_default_qconfig_mapping(engine), (batches[0],))
            with torch.no_grad():
                for x in batches:
                    prepared(x)
            return convert_fx(prepared).eval()
        except Exception as exc:  # torch.fx / ao raise many types for unsupported layers
            raise ExportError(f"int8 quantisation failed ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}); run without "
                              "--quantize.") from exc


def serialized_mib(module: nn.Module) -> float:
    """Size in MiB of ``module``'s state dict as torch.save writes it."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save(module.state_dict(), buf)
    return len(buf.getvalue()) / MIB
