"""The exact int8 size of a graft, from the tap list (``--size-metric int8_mib``).

What an int8 graft ships is its tensors: int8 weights (one byte each), their per-channel scales
(float64) and zero points (int64), float32 biases, the activation scales and zero points, and the
head's float32 input standardisation. :func:`int8_tap_bytes` quantises the donor's trunk once
(torch.ao FX, every tap an output, weights only: sizes do not depend on calibration) and adds up,
for each tap, the tensors of every graph node that tap depends on; :meth:`HeadSpec.int8_bytes`
gives the head's share by formula. :func:`int8_payload_bytes` measures a built module the other
way, from the tensor entries of the file ``torch.save`` writes, so the two can be checked against
each other. The archive around the tensors (pickle, zip headers, TorchScript code) is not part of
this size: it does not grow with the graft. The exported TorchScript file DEFLATE-compresses the
tensors, so it is usually smaller than this size by an amount that depends on the trained
weights, which no tap list can know.
"""

from __future__ import annotations

import copy
import io
import warnings
import zipfile
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from graftsearch._utils.errors import DonorError, ExportError


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
                          f"{torch.backends.quantized.supported_engines}); run without --quantize "
                          "and with a size metric other than int8_mib.")
    return found[0]


_PER_CHANNEL = (torch.per_channel_affine, torch.per_channel_symmetric,
                torch.per_channel_affine_float_qparams)


def weights_per_channel(engine: str) -> bool:
    """Whether ``engine``'s default int8 weights have one scale per output channel."""
    from torch.ao.quantization import get_default_qconfig

    return get_default_qconfig(engine).weight().qscheme in _PER_CHANNEL


def tensor_bytes(value) -> int:
    """Bytes ``torch.save`` writes for the tensors in ``value`` (a tensor, or a tuple / list of
    them as quantised linear layers keep their packed weights); other values count 0."""
    if isinstance(value, (tuple, list)):
        return sum(tensor_bytes(v) for v in value)
    if not isinstance(value, torch.Tensor):
        return 0
    if value.is_quantized:
        size = value.numel() * value.element_size()
        if value.qscheme() in _PER_CHANNEL:
            scales, zeros = value.q_per_channel_scales(), value.q_per_channel_zero_points()
            size += scales.numel() * scales.element_size() + zeros.numel() * zeros.element_size()
        return size
    return value.numel() * value.element_size()


def state_bytes(module: nn.Module) -> int:
    """Bytes of the tensors in ``module``'s state dict (see :func:`tensor_bytes`)."""
    return sum(tensor_bytes(v) for v in module.state_dict().values())


def int8_payload_bytes(module: nn.Module) -> int:
    """Bytes of the tensor entries of ``torch.save(module.state_dict())``: what an int8 copy
    ships, measured on the file rather than counted."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save(module.state_dict(), buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as archive:
        return sum(i.file_size for i in archive.infolist()
                   if i.filename.split("/")[-2:-1] == ["data"])


def quantize_weights_fx(module: nn.Module, example: torch.Tensor, engine: str) -> nn.Module:
    """``module`` (eval) through torch.ao FX static quantisation with the engine's default
    per-channel weights, calibrated on ``example`` alone (for sizes, not for accuracy)."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = engine
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_fx(module.eval(), get_default_qconfig_mapping(engine), (example,))
        with torch.no_grad():
            prepared(example)
        return convert_fx(prepared).eval()


def _quantized_copy(module: nn.Module, image_size: int, engine: Optional[str],
                    donor_name: str) -> nn.Module:
    """An int8 copy of ``module`` (weights only; ``module`` itself is never touched: FX
    preparation marks the modules it sees)."""
    example = torch.randn(1, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    try:
        return quantize_weights_fx(copy.deepcopy(module).cpu(), example,
                                   engine or quantization_engine())
    except Exception as exc:  # torch.fx / ao raise many types for layers they cannot quantise
        raise _cannot_quantise(donor_name, exc) from exc


def donor_int8_bytes(module: nn.Module, image_size: int, *, engine: str | None = None,
                     donor_name: str = "donor") -> int:
    """Bytes of the tensors of the whole donor's int8 copy (classifier included), the size a
    relative ``--size-max 30%`` is a share of when the size metric is int8_mib."""
    return state_bytes(_quantized_copy(module, image_size, engine, donor_name))


def _cannot_quantise(donor_name: str, exc: Exception) -> DonorError:
    first = str(exc).splitlines()[0] if str(exc) else ""
    return DonorError(f"The donor '{donor_name}' cannot be quantised to int8 to measure int8_mib "
                      f"({type(exc).__name__}: {first}). Use --size-metric params or size_mib.")


def _node_bytes(quantized: nn.Module) -> Dict[str, int]:
    """Bytes each node of a converted GraphModule holds (its module's or attribute's tensors)."""
    out: Dict[str, int] = {}
    for node in quantized.graph.nodes:
        if node.op == "call_module":
            out[node.name] = state_bytes(quantized.get_submodule(node.target))
        elif node.op == "get_attr":
            owner, _, attr = str(node.target).rpartition(".")
            value = getattr(quantized.get_submodule(owner) if owner else quantized, attr)
            out[node.name] = (state_bytes(value) if isinstance(value, nn.Module)
                              else tensor_bytes(value))
    return out


def int8_tap_bytes(module: nn.Module, tap_names: Sequence[str], image_size: int, *,
                   engine: str | None = None, donor_name: str = "donor") -> Tuple[int, ...]:
    """For each tap (in order), the int8 bytes of the donor prefix a graft needs when that tap
    is its deepest: the tensors of every node of the quantised trunk that this tap, or an
    earlier one, depends on."""
    from graftsearch.taps._trace import build_trunk

    trunk = build_trunk(module, tap_names, donor_name=donor_name)
    quantized = _quantized_copy(trunk, image_size, engine, donor_name)
    sizes = _node_bytes(quantized)
    output = next(n for n in quantized.graph.nodes if n.op == "output")
    results = output.args[0]
    keys = [f"t{i}" for i in range(len(tap_names))]
    seen: set = set()
    total = 0
    out: List[int] = []
    for key in keys:
        stack = [results[key]]
        while stack:
            node = stack.pop()
            if not isinstance(node, torch.fx.Node) or node.name in seen:
                continue
            seen.add(node.name)
            total += sizes.get(node.name, 0)
            stack.extend(node.all_input_nodes)
        out.append(total)
    counted = sum(sizes.values())
    if counted != state_bytes(quantized):  # a tensor no node holds: the count would be wrong
        raise DonorError(f"The int8 trunk of '{donor_name}' holds tensors outside its graph "
                         f"({state_bytes(quantized) - counted} bytes); int8_mib cannot be "
                         "measured exactly for it. Use --size-metric params or size_mib.")
    return tuple(out)
