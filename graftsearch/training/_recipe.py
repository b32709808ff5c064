"""Fine-tuning recipes for networks trained on images: the donor (cultivation) and the graft.

``standard`` is a modern transfer-learning recipe measured in ``benchmarks/grafting.py``: AdamW,
a linear warm-up then cosine decay per step, a larger learning rate for the new classifier than
for the pretrained body (the classifier starts from random weights, the body from good ones),
label smoothing, random flips and crops. ``paper`` is the paper's Keras setting: Adam at a
constant rate, plain cross-entropy, no augmentation.

Batch norm: layers that belong to a frozen prefix stay in eval mode (their statistics are part of
what is frozen); trainable ones update their statistics with the training batches, which at
batch 32 are large enough to estimate them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Sequence

if TYPE_CHECKING:  # torch loads with the training, not with the settings (the CLI's --help)
    import torch
    from torch import nn

from graftsearch._utils.checks import is_int, is_real
from graftsearch._utils.errors import ParameterError, param_message

RECIPES = ("standard", "paper")
OPTIMIZERS = ("adamw", "adam")
SCHEDULES = ("cosine", "constant")


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """How a network is fine-tuned on images.

    ``lr`` is the body's learning rate; the new classifier's parameters get ``lr *
    head_lr_scale``. ``warmup`` is the fraction of all steps over which the rate rises linearly
    from 0; ``schedule`` ``cosine`` then decays it to 0 by the last step (``constant`` keeps it).
    ``label_smoothing`` is that of the cross-entropy; ``augment`` adds random flips and crops.
    """

    name: str
    optimizer: str
    lr: float
    head_lr_scale: float
    weight_decay: float
    warmup: float
    schedule: str
    label_smoothing: float
    augment: bool
    batch_size: int

    def __post_init__(self) -> None:
        for field_name, choices in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES)):
            if getattr(self, field_name) not in choices:
                raise ParameterError(param_message(field_name, f"one of {list(choices)}",
                                                   getattr(self, field_name)))
        for field_name in ("lr", "head_lr_scale"):
            value = getattr(self, field_name)
            if not is_real(value) or value <= 0:
                raise ParameterError(param_message(field_name, "a float > 0", value))
        if not is_real(self.weight_decay) or self.weight_decay < 0:
            raise ParameterError(param_message("weight_decay", "a float >= 0", self.weight_decay))
        for field_name in ("warmup", "label_smoothing"):
            value = getattr(self, field_name)
            if not is_real(value) or not 0 <= value < 1:
                raise ParameterError(param_message(field_name, "a float in [0, 1)", value))
        if not isinstance(self.augment, bool):
            raise ParameterError(param_message("augment", "a bool", self.augment))
        if not is_int(self.batch_size) or self.batch_size < 1:
            raise ParameterError(param_message("batch_size", "an integer >= 1", self.batch_size))

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


STANDARD = Recipe(name="standard", optimizer="adamw", lr=3e-4, head_lr_scale=10.0,
                  weight_decay=0.01, warmup=0.1, schedule="cosine", label_smoothing=0.1,
                  augment=True, batch_size=32)
PAPER = Recipe(name="paper", optimizer="adam", lr=1e-4, head_lr_scale=1.0, weight_decay=0.0,
               warmup=0.0, schedule="constant", label_smoothing=0.0, augment=False,
               batch_size=16)
_BY_NAME = {"standard": STANDARD, "paper": PAPER}


def recipe(name: Any) -> Recipe:
    """The recipe called ``name`` (``standard`` or ``paper``)."""
    if isinstance(name, Recipe):
        return name
    if name not in _BY_NAME:
        raise ParameterError(param_message("recipe", f"one of {list(RECIPES)}", name))
    return _BY_NAME[name]


def make_optimizer(module: nn.Module, rec: Recipe, *, head_prefixes: Sequence[str] = ()):
    """The recipe's optimiser over ``module``'s trainable parameters; parameters whose name starts
    with one of ``head_prefixes`` (the new classifier) get ``lr * head_lr_scale``.

    Biases and normalisation weights are not decayed (decay would pull BN scales to zero)."""
    import torch

    groups: Dict[tuple, List[nn.Parameter]] = {}
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        is_head = any(name == h or name.startswith(h + ".") for h in head_prefixes)
        decay = p.dim() > 1
        groups.setdefault((is_head, decay), []).append(p)
    if not groups:
        raise ParameterError("The network has no trainable parameters; train fewer frozen taps.")
    param_groups = []
    for (is_head, decay), params in sorted(groups.items()):
        param_groups.append({"params": params,
                             "lr": rec.lr * (rec.head_lr_scale if is_head else 1.0),
                             "weight_decay": rec.weight_decay if decay else 0.0})
    cls = torch.optim.AdamW if rec.optimizer == "adamw" else torch.optim.Adam
    return cls(param_groups)


def lr_factor(rec: Recipe, total_steps: int) -> Callable[[int], float]:
    """The multiplier of the base rates after ``step`` optimiser steps (for LambdaLR)."""
    total = max(1, int(total_steps))
    warm = int(round(rec.warmup * total))

    def factor(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if rec.schedule == "constant":
            return 1.0
        progress = (step - warm) / max(1, total - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def make_scheduler(optimizer, rec: Recipe, total_steps: int):
    import torch

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(rec, total_steps))


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor, *,
                      temperature: float, alpha: float,
                      label_smoothing: float = 0.0) -> torch.Tensor:
    """``(1 - alpha) * CE(student, target) + alpha * T^2 * KL(softmax(teacher / T) ||
    softmax(student / T))`` (Hinton et al., 2015): T^2 keeps the soft term's gradients on the
    scale of the hard term's as T changes."""
    from torch.nn import functional as F

    hard = F.cross_entropy(student, target, label_smoothing=label_smoothing)
    if alpha == 0:
        return hard
    t = float(temperature)
    soft = F.kl_div(F.log_softmax(student / t, dim=1), F.log_softmax(teacher.detach() / t, dim=1),
                    reduction="batchmean", log_target=True) * (t * t)
    return (1.0 - alpha) * hard + alpha * soft


def check_distillation(temperature: Any, alpha: Any) -> None:
    if not is_real(temperature) or temperature <= 0:
        raise ParameterError(param_message("distill_temperature", "a float > 0", temperature))
    if not is_real(alpha) or not 0 <= alpha <= 1:
        raise ParameterError(param_message("distill_alpha", "a float in [0, 1]", alpha))
