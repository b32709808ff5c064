"""A Head2Toe-style probe (Evci et al., ICML 2022): a linear head on the pooled features of every
tap of a frozen donor, each tap normalised, with a group-lasso penalty that switches whole taps off.

The objective is ``CE(W x + b) + lam * sum_g sqrt(d_g) ||W_g||_F`` with one group per tap (its
channels), minimised by proximal gradient descent (a full-batch gradient step on the cross-entropy,
then the group soft-threshold: ISTA). Features are standardised per channel with train-split statistics
and each tap is divided by ``sqrt(channels)`` so that wide and narrow taps start on equal terms.
``lam`` is chosen on the validation split from a small grid; the head is refit on the surviving
taps without the penalty, as Head2Toe does after its selection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np
import torch
from torch.nn import functional as F


@dataclass
class GroupLassoFit:
    lam: float
    kept: Tuple[int, ...]          # positions (0-based) of the taps with a non-zero group
    val_accuracy: float
    weight: np.ndarray
    bias: np.ndarray


def _standardise(train: np.ndarray, *others: np.ndarray, widths: Sequence[int]):
    mean = train.mean(0)
    std = train.std(0)
    std[std < 1e-6] = 1.0
    scale = np.concatenate([np.full(w, np.sqrt(w)) for w in widths]) * std
    return [((x - mean) / scale).astype(np.float32) for x in (train, *others)]


def _groups(widths: Sequence[int]) -> List[slice]:
    out, start = [], 0
    for w in widths:
        out.append(slice(start, start + w))
        start += w
    return out


def fit_group_lasso(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                    widths: Sequence[int], *, lam: float, steps: int = 500, lr: float = 1.0,
                    seed: int = 0) -> GroupLassoFit:
    """One proximal-gradient fit at penalty ``lam`` on standardised features."""
    torch.manual_seed(seed)
    n_classes = int(max(y_train.max(), y_val.max())) + 1
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train.astype(np.int64))
    w = torch.zeros(n_classes, xt.shape[1], requires_grad=True)
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.SGD([w, b], lr=lr, momentum=0.0)  # ISTA: plain steps keep the threshold exact
    groups = _groups(widths)
    sizes = torch.tensor([np.sqrt(g.stop - g.start) for g in groups], dtype=torch.float32)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(xt @ w.T + b, yt).backward()
        opt.step()
        with torch.no_grad():
            for g, size in zip(groups, sizes):
                norm = torch.linalg.norm(w[:, g])
                shrink = torch.clamp(1 - lr * lam * size / (norm + 1e-12), min=0.0)
                w[:, g] *= shrink
    with torch.no_grad():
        kept = tuple(i for i, g in enumerate(groups) if float(torch.linalg.norm(w[:, g])) > 0)
        pred = (torch.from_numpy(x_val) @ w.T + b).argmax(1).numpy()
    return GroupLassoFit(lam=lam, kept=kept, val_accuracy=float((pred == y_val).mean()),
                         weight=w.detach().numpy(), bias=b.detach().numpy())


def head2toe(x_train, y_train, x_val, y_val, widths: Sequence[int], *,
             lams: Sequence[float] = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1), seed: int = 0):
    """Choose the penalty on val, then refit without it on the kept taps.

    Returns ``(kept tap positions, predict(x) -> logits, chosen lam, val accuracy of the refit)``;
    ``predict`` takes raw (unstandardised) features of every tap."""
    xs_train, xs_val = _standardise(x_train, x_val, widths=widths)
    best = None
    for lam in lams:
        fit = fit_group_lasso(xs_train, y_train, xs_val, y_val, widths, lam=lam, seed=seed)
        if fit.kept and (best is None or fit.val_accuracy > best.val_accuracy):
            best = fit
    if best is None:
        best = fit_group_lasso(xs_train, y_train, xs_val, y_val, widths, lam=0.0, seed=seed)
    groups = _groups(widths)
    cols = np.concatenate([np.arange(groups[i].start, groups[i].stop) for i in best.kept])
    refit = fit_group_lasso(xs_train[:, cols], y_train, xs_val[:, cols], y_val,
                            [widths[i] for i in best.kept], lam=0.0, seed=seed)
    mean = x_train.mean(0)
    std = x_train.std(0)
    std[std < 1e-6] = 1.0
    scale = np.concatenate([np.full(w, np.sqrt(w)) for w in widths]) * std

    def predict(x: np.ndarray) -> np.ndarray:
        z = ((x - mean) / scale).astype(np.float32)[:, cols]
        return z @ refit.weight.T + refit.bias

    return best.kept, predict, best.lam, refit.val_accuracy
