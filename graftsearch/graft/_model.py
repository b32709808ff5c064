"""The grafted model G_s(x) = M(concat_{i in S} GAP(f_i(x))) as a real nn.Module."""

from __future__ import annotations

import copy
from typing import List, Optional, Sequence, Union

import torch
from torch import nn

from graftsearch._utils.errors import ParameterError, param_message
from graftsearch.taps._head import HeadSpec
from graftsearch.taps._selection import SelectionLike
from graftsearch.taps._records import Cost, Tap, TapList
from graftsearch.taps._trace import build_trunk, count_macs, count_params


class GraftedModel(nn.Module):
    """A donor cut after its deepest selected tap, each selected tap pooled, then a dense head.

    ``donor`` is a :class:`~graftsearch.Donor`; ``selection`` is tap indices (1-based), a bit
    string or booleans; ``head`` is a :class:`HeadSpec` (the default head is built) or any
    ``nn.Module`` mapping the concatenated pooled features to logits. The model takes inputs
    already normalised as the donor expects (see :class:`~graftsearch.donors.Preprocessing`); it holds
    its own copy of the kept donor layers and none of the others.
    """

    def __init__(self, donor, selection: SelectionLike, head: Union[HeadSpec, nn.Module], *,
                 image_size: Optional[int] = None, taps: Optional[TapList] = None):
        super().__init__()
        tap_list = taps if taps is not None else donor.taps(image_size)
        indices = tap_list.normalize(selection)
        chosen = [tap_list.tap(i) for i in indices]
        self.selection: List[int] = list(indices)
        self.tap_names: List[str] = [t.name for t in chosen]
        self.image_size: int = tap_list.image_size
        self.feature_dim: int = sum(t.channels for t in chosen)
        self._taps = tuple(chosen)
        self._tap_list = tap_list
        self._head_spec = head if isinstance(head, HeadSpec) else None
        trunk = build_trunk(donor.module, self.tap_names, donor_name=donor.name)
        self.trunk = copy.deepcopy(trunk)  # never share weights with the donor
        if isinstance(head, HeadSpec):
            self.head = head.build(self.feature_dim)
        elif isinstance(head, nn.Module):
            self.head = head
        else:
            raise ParameterError(param_message("head", "a HeadSpec or an nn.Module", head))
        self._keys: List[str] = [f"t{i}" for i in range(len(chosen))]

    @property
    def taps(self) -> Sequence[Tap]:
        return self._taps

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """concat of the global average pool of every selected tap, in tap order: (N, feature_dim)."""
        outputs = self.trunk(x)
        return torch.cat([outputs[k].mean(dim=(2, 3)) for k in self._keys], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pooled(x))

    def num_params(self) -> int:
        return count_params(self)

    def measured_cost(self) -> Cost:
        """Params counted on this module and MACs counted by torch's flop counter at its image size."""
        device = next(self.parameters()).device
        example = torch.zeros(1, 3, self.image_size, self.image_size, device=device)
        return Cost.from_params(self.num_params(), count_macs(self, example))
