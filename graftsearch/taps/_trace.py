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


def _nested(names: Sequence[str]) -> bool:
    return any(a != b and b.startswith(a + ".") for a in names for b in names)


def _kept_nodes(graph, tap_node) -> set:
    """The nodes that dead-code elimination keeps when ``tap_node`` is the only output.

    The same rule as ``Graph.eliminate_dead_code`` (a node stays when it is impure or has a user
    that stays), applied without editing the graph, so one trace serves every prefix.
    """
    kept: set = set()
    for node in reversed(graph.nodes):
        if node.op == "output":
            continue
        if node is tap_node or node.is_impure() or any(u in kept for u in node.users):
            kept.add(node)
    return kept


def _node_params(trunk: nn.Module, nodes) -> Dict[int, int]:
    """``{id(parameter): numel}`` of the attributes and modules that ``nodes`` reference."""
    found: Dict[int, int] = {}
    for node in nodes:
        if node.op not in ("call_module", "get_attr"):
            continue
        owner = trunk
        for part in str(node.target).split("."):
            owner = getattr(owner, part)
        tensors = owner.parameters() if isinstance(owner, nn.Module) else (
            [owner] if isinstance(owner, nn.Parameter) else [])
        for p in tensors:
            found[id(p)] = p.numel()
    return found


def prefix_costs(module: nn.Module, tap_names: Sequence[str], example: torch.Tensor, *,
                 donor_name: str = "donor") -> list:
    """``[(parameter ids, parameters, MACs)]`` of the trunk cut after each tap, in one pass.

    Each entry equals ``count_params`` and ``count_macs`` of ``build_trunk(module, [tap])``:
    the trunk for every tap is traced once, each node's FLOPs are counted on one forward, and a
    prefix sums the nodes its own trunk would keep (``_kept_nodes``). Nested tap names, which
    ``create_feature_extractor`` resolves differently together than alone, are cut one by one.
    """
    if _nested(tap_names):
        out = []
        for name in tap_names:
            trunk = build_trunk(module, [name], donor_name=donor_name)
            ids = frozenset(id(p) for p in trunk.parameters())
            out.append((ids, count_params(trunk), count_macs(trunk, example)))
        return out
    trunk = build_trunk(module, list(tap_names), donor_name=donor_name)
    was_training = trunk.training
    trunk.eval()  # selects the eval graph, the one count_macs runs
    try:
        graphs = [trunk.train_graph, trunk.eval_graph] if hasattr(trunk, "eval_graph") else [trunk.graph]
        flops: Dict[object, int] = {}

        class _PerNode(torch.fx.Interpreter):
            def run_node(self, node):
                before = counter.get_total_flops()
                result = super().run_node(node)
                flops[node] = counter.get_total_flops() - before
                return result

        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            _PerNode(trunk).run(example)
        outputs = [next(n for n in g.nodes if n.op == "output").args[0] for g in graphs]
        eval_outputs = next(n for n in trunk.graph.nodes if n.op == "output").args[0]
        result = []
        for i in range(len(tap_names)):
            params: Dict[int, int] = {}
            for graph, outs in zip(graphs, outputs):
                params.update(_node_params(trunk, _kept_nodes(graph, outs[f"t{i}"])))
            macs = sum(flops.get(n, 0) for n in _kept_nodes(trunk.graph, eval_outputs[f"t{i}"]))
            result.append((frozenset(params), sum(params.values()), int(macs) // 2))
        return result
    finally:
        trunk.train(was_training)
