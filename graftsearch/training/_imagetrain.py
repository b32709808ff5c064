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


def input_format(module: nn.Module, images: torch.Tensor) -> torch.memory_format:
    """``channels_last`` when ``module`` runs on channels-last batches like ``images``, else the
    contiguous format.

    oneDNN's CPU convolutions are much faster on channels-last (NHWC) tensors: measured on
    EfficientNet-Lite0 at 128 px with 2 threads, a training step 1.37x and a forward pass 1.8x.
    A module that calls ``.view`` on a 4-D activation fails on them, so one image is run first,
    in eval mode and without gradients (no batch-norm statistics move).
    """
    if images.dim() != 4:
        return torch.contiguous_format
    # every submodule's own mode comes back (frozen batch-norm layers stay in eval mode)
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        # no_grad, not inference_mode: a module that caches a tensor on its first call must
        # be able to use it in training afterwards
        with torch.no_grad():
            module(images[:1].contiguous(memory_format=torch.channels_last))
        return torch.channels_last
    except Exception:  # any failure on channels-last: the contiguous pass reports real errors
        return torch.contiguous_format
    finally:
        for m, mode in modes:
            m.training = mode


class BatchFormat:
    """The memory format of every batch of one pass over a loader, chosen on the first batch.

    Called on a batch (training), it probes the module once with :func:`input_format`;
    :meth:`infer` (inference, where a pass changes nothing) tries the first batch itself
    channels-last and falls back to the contiguous format (running that batch again only then).
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.format: Optional[torch.memory_format] = None

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4:
            return images
        if self.format is None:
            self.format = input_format(self.module, images)
        return images.contiguous(memory_format=self.format)

    def infer(self, run: Callable[[torch.Tensor], object], images: torch.Tensor):
        """``run(images)`` in the chosen format (``run`` calls this pass's module)."""
        if self.format is None and images.dim() == 4:
            try:
                out = run(images.contiguous(memory_format=torch.channels_last))
                self.format = torch.channels_last
                return out
            except Exception:  # the contiguous run below reports a real error
                self.format = torch.contiguous_format
        return run(self(images))


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
    formatted = BatchFormat(module)
    teacher_formatted = BatchFormat(teacher) if teacher is not None else None
    for images, y, _ in loader:
        images, y = formatted(images.to(device)), y.to(device)
        logits = module(images)
        if teacher is not None:
            with torch.no_grad():
                soft = teacher(teacher_formatted(images))
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
    formatted = BatchFormat(module)
    try:
        with torch.inference_mode():
            for images, y, _ in loader:
                out = formatted.infer(module, images.to(device))
                logits.append(out.float().cpu().numpy())
                labels.append(y.numpy())
    finally:
        module.train(was_training)
    if not logits:
        raise DataError("A split with no usable images cannot be evaluated.")
    return np.concatenate(logits), np.concatenate(labels)


def loss_and_accuracy(logits: np.ndarray, labels: np.ndarray) -> Tuple[float, float]:
    loss = float(F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)))
    return loss, float((logits.argmax(1) == labels).mean())
