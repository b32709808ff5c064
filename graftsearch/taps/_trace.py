"""torch.fx helpers: cut a donor down to what computes a set of taps, and count MACs.

The trunk of a grafted model is built with torchvision's ``create_feature_extractor``, which traces
the donor and keeps only the modules the requested outputs depend on, so a graft never holds
unused donor parameters.
"""

from __future__ import annotations

import copy
import warnings
from typing import Dict, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from graftsearch._utils.errors import DonorError


class ScriptedLeaf(nn.Module):
    """A TorchScript submodule wrapped so that hooks and torch.fx see it as one opaque layer."""

    def __init__(self, scripted: nn.Module):
        super().__init__()
        self.scripted = scripted

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scripted(x)


def build_trunk(module: nn.Module, tap_names: Sequence[str], *, donor_name: str = "donor") -> nn.Module:
    """A GraphModule returning ``{"t0": out(tap_names[0]), ...}``; it shares modules with ``module``."""
    from torchvision.models.feature_extraction import create_feature_extractor

    return_nodes = {name: f"t{i}" for i, name in enumerate(tap_names)}
    was_training = module.training
    module.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return create_feature_extractor(
                module, return_nodes=return_nodes,
                tracer_kwargs={"leaf_modules": [ScriptedLeaf]},
            )
    except Exception as exc:  # torch.fx raises many types for untraceable code
        raise DonorError(
            f"The donor '{donor_name}' cannot be cut at taps {list(tap_names)}: torch.fx could not "
            f"trace it ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
            "graftsearch needs a donor whose forward torch.fx can trace (no data-dependent "
            "control flow before the deepest tap)."
        ) from exc
    finally:
        module.train(was_training)


def meta_clone(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose parameters and buffers live on the meta device (no memory)."""
    memo: Dict[int, object] = {}
    for p in module.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    for b in module.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(module, memo)


def count_macs(module: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass, counted by torch.utils.flop_counter (FLOPs / 2)."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(example)
    finally:
        module.train(was_training)
    return int(counter.get_total_flops()) // 2


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
