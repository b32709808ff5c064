"""Training a head on pooled feature arrays: the one trainer used by the `mlp` proxy and the final
model.

Features are standardised with train-split statistics for training; the standardisation is then
folded into the head's first Linear, so the returned head takes raw pooled features and has
exactly ``HeadSpec.params(d)`` parameters. Everything random (initialisation, shuffling,
dropout) comes from the one ``seed``, inside a forked RNG, so a call does not disturb or depend
on the caller's global torch RNG.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from graftsearch._utils.checks import is_int
from graftsearch._utils.errors import DataError, Described, FitnessError, ParameterError, param_message
from graftsearch.taps._head import HeadSpec
from graftsearch.training._schedule import TrainSchedule
from graftsearch._utils.progress import ProgressCallback, report

# A channel whose train-split std is below this (relative to its mean, at least 1) is constant: it
# is centred but not scaled. An absolute threshold would scale float32 rounding noise of a
# constant channel (std ~1e-9) up to unit variance, and the folded head would then amplify
# rounding differences between runtimes (eager, TorchScript, ONNX) a billion times.
_MIN_RELATIVE_STD = 1e-6


def unscaled_channels(mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Mask of channels too close to constant to be scaled to unit variance."""
    return ~(scale > _MIN_RELATIVE_STD * np.maximum(1.0, np.abs(mean)))
# Rows per forward pass when scoring a split (bounds memory, not results).
_EVAL_ROWS = 8192





@dataclass(frozen=True)
class HeadFit:
    """A trained head and how it got there.

    ``head`` is in eval mode and takes raw pooled features (standardisation folded in);
    ``val_accuracy`` and ``val_loss`` are those of the kept epoch (``best_epoch`` when
    ``keep_best``, else the last); ``history`` has one dict per epoch run with ``epoch``,
    ``train_loss``, ``train_accuracy`` (on the training batches, dropout active), ``val_loss``
    and ``val_accuracy``. ``mean`` and ``scale`` are the train-split statistics that were folded.
    """

    head: nn.Module
    val_accuracy: float
    val_loss: float
    best_epoch: int
    history: List[Dict[str, float]]
    mean: np.ndarray = field(repr=False)
    scale: np.ndarray = field(repr=False)

    @property
    def epochs_run(self) -> int:
        return len(self.history)


def _check_xy(x: object, y: object, split: str, num_classes: int, dim: Optional[int]) -> tuple:
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.number):
        raise DataError(param_message(f"x_{split}", "a 2-D numeric array (images, features)",
                                      Described(f"an array of shape {x.shape} and dtype {x.dtype}")))
    if dim is not None and x.shape[1] != dim:
        raise DataError(param_message(f"x_{split}", f"{dim} feature columns like x_train",
                                      Described(f"{x.shape[1]} columns")))
    if y.ndim != 1 or len(y) != len(x) or not (np.issubdtype(y.dtype, np.integer) or y.size == 0):
        raise DataError(param_message(f"y_{split}", f"a 1-D integer array of {len(x)} labels",
                                      Described(f"an array of shape {y.shape} and dtype {y.dtype}")))
    if len(y) == 0:
        raise DataError(f"The {split} split is empty; a head needs at least one {split} image.")
    if y.min() < 0 or y.max() >= num_classes:
        raise DataError(param_message(f"y_{split}", f"class indices in 0..{num_classes - 1} "
                                      f"(head.num_classes={num_classes})",
                                      Described(f"{int(y.min())}..{int(y.max())}")))
    return x, y.astype(np.int64)


def _standardise(x: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> torch.Tensor:
    out = (np.asarray(x, dtype=np.float64) - mean) / scale
    if not np.isfinite(out).all():
        raise DataError("The features contain NaN or infinite values; rebuild the feature cache.")
    return torch.from_numpy(out.astype(np.float32))


def standardisation(x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std (population) of the train split; constant channels get std 1."""
    x = np.asarray(x_train, dtype=np.float64)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[unscaled_channels(mean, scale)] = 1.0
    return mean, scale


@torch.no_grad()
def _score(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    loss_sum = 0.0
    correct = 0
    for start in range(0, len(x), _EVAL_ROWS):
        logits = model(x[start:start + _EVAL_ROWS])
        yy = y[start:start + _EVAL_ROWS]
        loss_sum += float(F.cross_entropy(logits, yy, reduction="sum"))
        correct += int((logits.argmax(dim=1) == yy).sum())
    return loss_sum / len(x), correct / len(x)


def fold_standardisation(head: nn.Module, mean: np.ndarray, scale: np.ndarray) -> None:
    """Rewrite the head's first Linear so that it takes raw features: W' = W/s, b' = b - W' m."""
    first = next(m for m in head.modules() if isinstance(m, nn.Linear))
    with torch.no_grad():
        w = first.weight.detach().double() / torch.from_numpy(scale)[None, :]
        b = first.bias.detach().double() - w @ torch.from_numpy(mean)
        first.weight.copy_(w.to(first.weight.dtype))
        first.bias.copy_(b.to(first.bias.dtype))


def train_head(x_train, y_train, x_val, y_val, *, head: HeadSpec, schedule: TrainSchedule, seed: int,
               progress: Optional[ProgressCallback] = None) -> HeadFit:
    """Train ``head`` on (x_train, y_train), validating every epoch on (x_val, y_val).

    Inputs are (images, features) arrays of raw pooled features (any float dtype, memmaps
    included) and integer class indices. Deterministic on CPU for a given ``seed`` and torch
    thread count. Reports one ``Progress(stage="train")`` per epoch to ``progress``.
    """
    if not isinstance(head, HeadSpec):
        raise ParameterError(param_message("head", "a HeadSpec", type(head).__name__))
    if not isinstance(schedule, TrainSchedule):
        raise ParameterError(param_message("schedule", "a TrainSchedule", type(schedule).__name__))
    if not is_int(seed):
        raise ParameterError(param_message("seed", "an integer", seed))
    x_train, y_train = _check_xy(x_train, y_train, "train", head.num_classes, None)
    x_val, y_val = _check_xy(x_val, y_val, "val", head.num_classes, x_train.shape[1])
    mean, scale = standardisation(x_train)
    xt, xv = _standardise(x_train, mean, scale), _standardise(x_val, mean, scale)
    yt, yv = torch.from_numpy(y_train), torch.from_numpy(y_val)
    n = len(xt)

    history: List[Dict[str, float]] = []
    # fork_rng keeps the caller's global RNG untouched; dropout draws from the global generator.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed) % 2**63)
        model = head.build(xt.shape[1])
        shuffle = torch.Generator().manual_seed(int(seed) % 2**63)
        opt = torch.optim.Adam(model.parameters(), lr=float(schedule.lr),
                               weight_decay=float(schedule.weight_decay))
        best_loss, best_epoch, best_state, since_best = math.inf, 0, None, 0
        for epoch in range(1, schedule.epochs + 1):
            model.train()
            perm = torch.randperm(n, generator=shuffle)
            xs, ys = xt[perm], yt[perm]
            loss_sum = torch.zeros((), dtype=torch.float64)
            correct = torch.zeros((), dtype=torch.int64)
            for start in range(0, n, schedule.batch_size):
                xb, yb = xs[start:start + schedule.batch_size], ys[start:start + schedule.batch_size]
                logits = model(xb)
                loss = F.cross_entropy(logits, yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                with torch.no_grad():
                    loss_sum += loss.detach().double() * len(yb)
                    correct += (logits.argmax(dim=1) == yb).sum()
            train_loss = float(loss_sum) / n
            if not math.isfinite(train_loss):
                raise FitnessError(
                    f"Training the head diverged (train loss {train_loss} at epoch {epoch}) with "
                    f"lr={schedule.lr}. Lower the 'lr' parameter.")
            model.eval()
            val_loss, val_accuracy = _score(model, xv, yv)
            history.append({"epoch": epoch, "train_loss": train_loss,
                            "train_accuracy": int(correct) / n,
                            "val_loss": val_loss, "val_accuracy": val_accuracy})
            if val_loss < best_loss:
                best_loss, best_epoch, since_best = val_loss, epoch, 0
                if schedule.keep_best:
                    best_state = copy.deepcopy(model.state_dict())
            else:
                since_best += 1
            report(progress, "train", epoch, schedule.epochs, train_loss=train_loss,
                   val_loss=val_loss, val_accuracy=val_accuracy)
            if schedule.patience is not None and since_best >= schedule.patience:
                break
    if schedule.keep_best and best_state is not None:
        model.load_state_dict(best_state)
        kept = history[best_epoch - 1]
    else:
        kept = history[-1]
    model.eval()
    fold_standardisation(model, mean, scale)
    return HeadFit(head=model, val_accuracy=kept["val_accuracy"], val_loss=kept["val_loss"],
                   best_epoch=best_epoch, history=history, mean=mean, scale=scale)
