"""Passes of a whole model over image loaders: one training epoch, and logits of a split.

Shared by donor cultivation and end-to-end fine-tuning of a graft; loaders yield
``(normalised images, labels, positions)`` as :func:`~graftsearch.data.make_loader` makes them.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from graftsearch._utils.errors import DataError

LossFn = Callable[[torch.Tensor, torch.Tensor, Optional[torch.Tensor]], torch.Tensor]


def train_epoch(module: nn.Module, loader, optimizer: torch.optim.Optimizer, device: torch.device,
                *, before: Optional[Callable[[nn.Module], None]] = None,
                scheduler=None, loss: Optional[LossFn] = None,
                teacher: Optional[nn.Module] = None) -> Dict[str, float]:
    """One training epoch; returns the mean train loss and the train accuracy.

    ``before(module)`` runs after ``module.train()`` (e.g. to keep frozen batch-norm layers in
    eval mode); ``scheduler`` steps after every optimiser step; ``loss(logits, labels,
    teacher_logits)`` replaces plain cross-entropy, and ``teacher`` (kept in eval mode) supplies
    ``teacher_logits`` on the same batch, augmentation included (None without a teacher).
    """
    module.train()
    if before is not None:
        before(module)
    if teacher is not None:
        teacher.eval()
    seen, loss_sum, correct = 0, 0.0, 0
    for images, y, _ in loader:
        images, y = images.to(device), y.to(device)
        logits = module(images)
        if teacher is not None:
            with torch.no_grad():
                soft = teacher(images)
        else:
            soft = None
        value = F.cross_entropy(logits, y) if loss is None else loss(logits, y, soft)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        seen += len(y)
        loss_sum += float(value.detach()) * len(y)
        correct += int((logits.argmax(1) == y).sum())
    if not seen:
        raise DataError("The training split has no usable images.")
    return {"train_loss": loss_sum / seen, "train_accuracy": correct / seen}


def logits_on_images(module: nn.Module, loader, device: torch.device) -> Tuple[np.ndarray, np.ndarray]:
    """Logits and labels of every image of ``loader`` (normalised images in, as a loader yields)."""
    was_training = module.training
    module.eval()
    logits: List[np.ndarray] = []
    labels: List[np.ndarray] = []
    try:
        with torch.inference_mode():
            for images, y, _ in loader:
                logits.append(module(images.to(device)).float().cpu().numpy())
                labels.append(y.numpy())
    finally:
        module.train(was_training)
    if not logits:
        raise DataError("A split with no usable images cannot be evaluated.")
    return np.concatenate(logits), np.concatenate(labels)


def loss_and_accuracy(logits: np.ndarray, labels: np.ndarray) -> Tuple[float, float]:
    loss = float(F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)))
    return loss, float((logits.argmax(1) == labels).mean())
