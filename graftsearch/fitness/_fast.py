"""The ``fast`` proxy: P(G_s) from a cheap probe: shrinkage LDA or ridge in closed form from
train-split Gram blocks precomputed once over all taps, or a few L-BFGS steps of multinomial
logistic regression on the standardised train rows (kept once over all taps)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

from graftsearch._utils.errors import DataError, ParameterError, param_message
from graftsearch._utils.threads import torch_threads
from graftsearch.features._source import FeatureSource
from graftsearch.fitness._base import _Proxy
from graftsearch.fitness._evaluation import Evaluation, binomial_se
from graftsearch.fitness._settings import FastSettings
from graftsearch.training._headtrain import standardisation
from graftsearch.training._metrics import cross_entropy

def fold_assignment(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """The fold (0..folds-1) of each row: each class's rows, shuffled by ``seed``, dealt round
    the folds in turn (stratified; fold sizes differ by at most one per class)."""
    from graftsearch._utils.seeding import derive_seed

    y = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(derive_seed(seed, "folds"))
    out = np.empty(len(y), dtype=np.int64)
    start = 0
    for c in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == c))
        out[rows] = (start + np.arange(len(rows))) % folds
        start += len(rows)  # the next class starts where this one stopped: sizes stay even
    return out


def fold_sources(source: FeatureSource, folds: int, seed: int) -> list:
    """``folds`` in-memory sources over train and val together: in each, one fold is "val"
    and the other rows are "train" (see :func:`fold_assignment`)."""
    from graftsearch.features._source import ArrayFeatures

    y = np.concatenate([np.asarray(source.labels(s), dtype=np.int64) for s in ("train", "val")])
    if len(y) < 2 * folds:
        raise DataError(f"k-fold scoring with {folds} folds needs at least {2 * folds} train and "
                        f"val images; got {len(y)}. Use fewer folds.")
    x = [np.concatenate([np.asarray(source.features(s, t.index), dtype=np.float32)
                         for s in ("train", "val")]) for t in source.taps]
    fold = fold_assignment(y, folds, seed)
    out = []
    for k in range(folds):
        held, kept = fold == k, fold != k
        out.append(ArrayFeatures(source.taps, source.classes,
                                 {"train": [a[kept] for a in x], "val": [a[held] for a in x]},
                                 {"train": y[kept], "val": y[held]},
                                 fingerprint=f"{source.fingerprint}|fold {k} of {folds}|{seed}"))
    return out


class _GramStats:
    """Everything a ``fast`` evaluation needs, computed once over all taps of the train split.

    With z the train-standardised features of all taps (D columns): ``gram`` = z^T z (D x D),
    ``class_sums`` = z^T onehot(y) (D x K), ``counts`` the images per class, ``fourth`` the T x T
    matrix sum_i q_ia q_ib of per-tap squared norms of class-centred rows (what Ledoit-Wolf needs),
    and the raw val features (rows x D, float32).
    """

    def __init__(self, source: FeatureSource):
        taps = source.taps
        y = np.asarray(source.labels("train"), dtype=np.int64)
        n, k = len(y), len(source.classes)
        if n < 2:
            raise DataError(f"The train split has {n} image(s); the fast proxy needs at least 2.")
        counts = np.bincount(y, minlength=k).astype(np.float64)
        offsets = np.concatenate([[0], np.cumsum(taps.channels)]).astype(np.int64)
        dim = int(offsets[-1])
        mean = np.empty(dim)
        scale = np.empty(dim)
        for t in range(len(taps)):  # tap by tap: the rule is per channel, memory stays small
            sl = slice(offsets[t], offsets[t + 1])
            mean[sl], scale[sl] = standardisation(source.features("train", t + 1))
        onehot = np.zeros((n, k))
        onehot[np.arange(n), y] = 1.0
        gram = torch.zeros((dim, dim), dtype=torch.float64)
        class_sums = torch.zeros((dim, k), dtype=torch.float64)
        rows = max(64, (32 << 20) // (8 * dim))  # ~32 MiB per chunk of standardised rows
        for start in range(0, n, rows):
            z = torch.from_numpy(self._standardised(source, "train", start, start + rows, offsets, mean, scale))
            gram += z.T @ z
            class_sums += z.T @ torch.from_numpy(onehot[start:start + rows])
        class_means = class_sums / torch.from_numpy(np.maximum(counts, 1.0))
        sq = np.empty((n, len(taps)))
        for start in range(0, n, rows):
            z = torch.from_numpy(self._standardised(source, "train", start, start + rows, offsets, mean, scale))
            centred = (z - class_means.T[torch.from_numpy(y[start:start + rows])]) ** 2
            for t in range(len(taps)):
                sq[start:start + len(z), t] = centred[:, offsets[t]:offsets[t + 1]].sum(dim=1).numpy()
        self.n, self.counts, self.offsets = n, counts, offsets
        self.mean, self.scale = mean, scale
        self.gram = gram.numpy()
        self.class_sums = class_sums.numpy()
        self.fourth = (torch.from_numpy(sq).T @ torch.from_numpy(sq)).numpy()
        # raw, not standardised: float32 holds cached features exactly; the standardisation is
        # folded into the coefficients at scoring time, in float64
        self.val_x = np.concatenate([np.asarray(source.features("val", t + 1), dtype=np.float32)
                                     for t in range(len(taps))], axis=1)
        if not np.isfinite(self.val_x).all():
            raise DataError("The val features contain NaN or infinite values; rebuild the feature cache.")
        self.val_y = np.asarray(source.labels("val"), dtype=np.int64)
        self.train_y = y
        #: the standardised train rows, transposed (D x n, float32): only the logistic probe
        #: needs them, so they are made by :meth:`keep_rows` when one asks (the source itself
        #: is not kept: a fold's copy of the features would stay in memory for nothing)
        self.rows: Optional[np.ndarray] = None

    def keep_rows(self, source: FeatureSource) -> np.ndarray:
        """Make (once) and return :attr:`rows` from ``source``, the source these statistics were
        computed from. Transposed, a selection's channels are a gather of whole rows, and its
        products with the K x n class scores are the fast shapes."""
        with _STATS_LOCK:
            if self.rows is None:
                rows = np.empty((int(self.offsets[-1]), self.n), dtype=np.float32)
                step = max(64, (32 << 20) // (8 * max(1, int(self.offsets[-1]))))
                for start in range(0, self.n, step):
                    rows[:, start:start + step] = self._standardised(
                        source, "train", start, start + step, self.offsets, self.mean,
                        self.scale).T
                self.rows = rows
            return self.rows

    @staticmethod
    def _standardised(source, split, start, stop, offsets, mean, scale) -> np.ndarray:
        parts = [np.asarray(source.features(split, t + 1)[start:stop], dtype=np.float64)
                 for t in range(len(offsets) - 1)]
        z = (np.concatenate(parts, axis=1) - mean) / scale
        if not np.isfinite(z).all():
            raise DataError(f"The {split} features contain NaN or infinite values; rebuild the "
                            "feature cache.")
        return z

    def columns(self, indices: Tuple[int, ...]) -> np.ndarray:
        return np.concatenate([np.arange(self.offsets[i - 1], self.offsets[i]) for i in indices])


# One per process: a fitness pickled to a worker recomputes its statistics once there (instead
# of shipping D x D matrices with every chunk of selections) and later chunks reuse them.
_STATS: "OrderedDict[str, _GramStats]" = OrderedDict()
_STATS_KEPT = 2
_STATS_LOCK = threading.RLock()
_FOLDS: "OrderedDict[str, list]" = OrderedDict()


def _stats_for(source: FeatureSource, threads: Optional[int], rows: bool) -> _GramStats:
    key = f"{source.fingerprint}|{threads}"
    with _STATS_LOCK:
        stats = _STATS.get(key)
        if stats is None:
            with torch_threads(threads):
                stats = _GramStats(source)
            _STATS[key] = stats
            while len(_STATS) > _STATS_KEPT:
                _STATS.popitem(last=False)
        _STATS.move_to_end(key)
        if rows:
            stats.keep_rows(source)
        return stats


@dataclass(frozen=True)
class ProbeFit:
    """One probe fit of the ``fast`` proxy (what :meth:`FastProxy.fit` returns).

    ``coef`` (d x K) and ``intercept`` (K) act on train-standardised features of the selection;
    ``regularization`` is the shrinkage (lda), alpha (ridge) or penalty (logistic) used; ``val_scores`` are the val
    images' class scores.
    """

    coef: np.ndarray
    intercept: np.ndarray
    regularization: float
    val_scores: np.ndarray
    val_accuracy: float
    val_loss: float


def _mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # torch, not numpy: its thread count is the one torch_threads fixes, numpy's BLAS is not
    return (torch.from_numpy(np.ascontiguousarray(a)) @ torch.from_numpy(np.ascontiguousarray(b))).numpy()


def _solve_spd(matrix: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    a = torch.from_numpy(matrix)
    low, info = torch.linalg.cholesky_ex(a)
    if int(info) != 0:  # singular (no shrinkage on rank-deficient features): least-squares solve
        return torch.linalg.lstsq(a, torch.from_numpy(rhs), driver="gelsd").solution.numpy()
    return torch.cholesky_solve(torch.from_numpy(rhs), low).numpy()


def ledoit_wolf_shrinkage(stats: _GramStats, indices: Tuple[int, ...], cols: np.ndarray,
                          scatter: np.ndarray) -> float:
    """Ledoit-Wolf shrinkage of the within-class covariance of the selection, from Gram blocks.

    The same number as ``sklearn.covariance.ledoit_wolf_shrinkage`` on the class-centred,
    standardised train rows of the selection (``assume_centered=True``), without the rows:
    sum_i ||x_i||^4 is the sum of the selection's block of ``fourth``.
    """
    n, p = stats.n, len(cols)
    taps = np.asarray(indices) - 1
    beta_ = float(stats.fourth[np.ix_(taps, taps)].sum())
    delta_ = float((scatter ** 2).sum()) / n ** 2
    trace = float(np.trace(scatter)) / n
    mu = trace / p
    beta = (beta_ / n - delta_) / (p * n)
    delta = (delta_ - 2.0 * mu * trace + p * mu ** 2) / p
    if delta <= 0.0:
        return 0.0
    return float(min(max(beta, 0.0), delta) / delta)


class FastProxy(_Proxy):
    """P = val accuracy of a cheap probe on the selection's standardised features.

    The train-split Gram blocks of all taps are computed once (at construction, and once per
    worker process); an lda or ridge evaluation then slices the selection's blocks and solves in
    its d dimensions: O(d^3 + d^2 K) for the fit, plus O(n_val d K) to score the val images;
    nothing grows with the number of train images.

    ``logistic`` (default): a softmax regression fitted by a few L-BFGS iterations on the
    standardised train rows (O(iterations n d K) per evaluation); ``val_loss`` is the val
    cross-entropy. ``lda``: shrinkage LDA, with Ledoit-Wolf shrinkage per selection (``"auto"``);
    ``val_loss`` is the mean cross-entropy of the LDA posteriors (softmax of the discriminant
    scores). ``ridge``: ridge on one-hot targets, alpha by GCV (an eigendecomposition per
    evaluation) or fixed; ``val_loss`` is the mean squared error against one-hot targets.
    """

    name = "fast"

    def __init__(self, source: Any, *, seed: int = 0, settings: FastSettings = FastSettings()):
        if not isinstance(settings, FastSettings):
            raise ParameterError(param_message("settings", "a FastSettings", type(settings).__name__))
        super().__init__(source, seed, settings)
        self._stats: Optional[_GramStats] = None
        self._folds: Optional[list] = None
        if settings.folds > 1:
            self._get_folds()
        else:
            self._stats = _stats_for(self.source, settings.threads, self._needs_rows)

    @property
    def _needs_rows(self) -> bool:
        return self.settings.probe == "logistic"

    def __getstate__(self) -> Dict[str, Any]:
        state = dict(self.__dict__)
        state["_stats"] = None  # rebuilt (once per process) from the source where it lands
        state["_folds"] = None
        return state

    def _get_stats(self) -> _GramStats:
        if self._stats is None:
            self._stats = _stats_for(self.source, self.settings.threads, self._needs_rows)
        return self._stats

    def _get_folds(self) -> list:
        if self._folds is None:
            key = (f"{self.source.fingerprint}|{self.settings.threads}|folds "
                   f"{self.settings.folds}|{self.seed}")
            with _STATS_LOCK:  # once per process, as the plain statistics
                folds = _FOLDS.get(key)
                if folds is None or (self._needs_rows and folds[0].rows is None):
                    sources = fold_sources(self.source, self.settings.folds, self.seed)
                    with torch_threads(self.settings.threads):
                        folds = folds or [_GramStats(f) for f in sources]
                        if self._needs_rows:
                            for stats, fold_source in zip(folds, sources):
                                stats.keep_rows(fold_source)
                    _FOLDS[key] = folds
                    while len(_FOLDS) > _STATS_KEPT:
                        _FOLDS.popitem(last=False)
                _FOLDS.move_to_end(key)
            self._folds = folds
        return self._folds

    def evaluate(self, selection: Tuple[int, ...]) -> Evaluation:
        if self.settings.folds > 1:
            indices, _ = self._normalize(selection)
            fits = [self._fit(stats, indices) for stats in self._get_folds()]
            accuracy = np.array([f.val_accuracy for f in fits])
            se = float(accuracy.std(ddof=1) / np.sqrt(len(fits)))
            return Evaluation(val_accuracy=float(accuracy.mean()),
                              val_loss=float(np.mean([f.val_loss for f in fits])),
                              val_accuracy_se=se, fidelity=self.name)
        fit = self.fit(selection)
        se = binomial_se(fit.val_accuracy, len(self.source.labels("val")))
        return Evaluation(val_accuracy=fit.val_accuracy, val_loss=fit.val_loss,
                          val_accuracy_se=se, fidelity=self.name)

    def fit(self, selection: Tuple[int, ...], fold: Optional[int] = None) -> ProbeFit:
        """The probe of ``selection``: coefficients, regularisation and val scores (with
        ``folds`` > 1: of fold ``fold``, 0-based, scored on that fold's held-out rows)."""
        indices, _ = self._normalize(selection)
        if self.settings.folds > 1:
            if fold is None or not 0 <= fold < self.settings.folds:
                raise ParameterError(param_message(
                    "fold", f"a fold in 0..{self.settings.folds - 1}", fold))
            return self._fit(self._get_folds()[fold], indices)
        return self._fit(self._get_stats(), indices)

    def _fit(self, stats: _GramStats, indices: Tuple[int, ...]) -> ProbeFit:
        cols = stats.columns(indices)
        with torch_threads(self.settings.threads):
            if self.settings.probe == "lda":
                coef, intercept, reg = self._lda(stats, indices, cols)
            elif self.settings.probe == "logistic":
                coef, intercept, reg = self._logistic(stats, cols)
            else:
                coef, intercept, reg = self._ridge(stats, cols)
            coef_raw = coef / stats.scale[cols][:, None]
            intercept_raw = intercept - _mm(stats.mean[cols][None, :], coef_raw)[0]
            scores = _mm(stats.val_x[:, cols].astype(np.float64), coef_raw) + intercept_raw
        y = stats.val_y
        accuracy = float(np.mean(scores.argmax(axis=1) == y))
        if self.settings.probe != "ridge":
            # 0.0 + x: a perfect fit would otherwise write "-0.0" to the CSV.
            loss = 0.0 + cross_entropy(scores, y)
        else:
            target = np.zeros_like(scores)
            target[np.arange(len(y)), y] = 1.0
            loss = float(((scores - target) ** 2).sum(axis=1).mean())
        return ProbeFit(coef=coef, intercept=intercept, regularization=reg, val_scores=scores,
                        val_accuracy=accuracy, val_loss=loss)

    def _lda(self, stats: _GramStats, indices, cols) -> Tuple[np.ndarray, np.ndarray, float]:
        sums = stats.class_sums[cols]
        means = sums / np.maximum(stats.counts, 1.0)
        # within-class scatter: sum_i (z_i - m_yi)(z_i - m_yi)^T = z^T z - sum_k n_k m_k m_k^T
        scatter = stats.gram[np.ix_(cols, cols)] - _mm(means, sums.T)
        shrinkage = self.settings.shrinkage
        if shrinkage == "auto":
            shrinkage = ledoit_wolf_shrinkage(stats, indices, cols, scatter)
        cov = scatter * ((1.0 - shrinkage) / stats.n)
        mu = float(np.trace(scatter)) / stats.n / len(cols)
        cov[np.diag_indices_from(cov)] += shrinkage * (mu if mu > 0 else 1.0)
        coef = _solve_spd(cov, means)
        priors = stats.counts / stats.n
        with np.errstate(divide="ignore"):
            intercept = -0.5 * np.einsum("dk,dk->k", means, coef) + np.log(priors)
        return coef, intercept, float(shrinkage)

    def _logistic(self, stats: _GramStats, cols) -> Tuple[np.ndarray, np.ndarray, float]:
        zt = torch.from_numpy(stats.rows[cols])  # d x n (kept when the proxy was made)
        n, k = zt.shape[1], len(stats.counts)
        onehot = torch.zeros((k, n), dtype=torch.float32)
        onehot[torch.from_numpy(stats.train_y), torch.arange(n)] = 1.0
        penalty = float(self.settings.penalty)
        wt = torch.zeros((k, len(cols)), dtype=torch.float32)
        b = torch.zeros((k, 1), dtype=torch.float32)
        # strong Wolfe line search: each step is accepted only on enough decrease, so a fixed
        # number of iterations gives the same fit whatever the scale of the features
        # max_eval spelt out (torch's default, 5/4 of the iterations): the line search's
        # evaluations count against it, so a fit may stop before ``iterations`` steps
        iterations = self.settings.iterations
        opt = torch.optim.LBFGS([wt, b], lr=1.0, max_iter=iterations, max_eval=iterations * 5 // 4,
                                history_size=10, line_search_fn="strong_wolfe")

        def closure():
            # the gradient by hand (no autograd): the softmax's is p - onehot, one matmul back
            logp = torch.log_softmax(wt @ zt + b, dim=0)
            residual = (logp.exp() - onehot) / n
            wt.grad = (zt @ residual.T).T.contiguous() + (2.0 * penalty) * wt
            b.grad = residual.sum(dim=1, keepdim=True)
            return -(logp * onehot).sum() / n + penalty * (wt * wt).sum()

        opt.step(closure)
        return (wt.T.numpy().astype(np.float64), b[:, 0].numpy().astype(np.float64), penalty)

    def _ridge(self, stats: _GramStats, cols) -> Tuple[np.ndarray, np.ndarray, float]:
        n = stats.n
        gram = stats.gram[np.ix_(cols, cols)]
        sums = stats.class_sums[cols]  # = z^T (Y - ybar): z is centred
        ybar = stats.counts / n
        if self.settings.alpha == "gcv":
            evals, evecs = torch.linalg.eigh(torch.from_numpy(gram))
            e = evals.clamp_min(0.0).numpy()[None, :]
            v = evecs.numpy()
            q = _mm(v.T, sums)
            q2 = (q ** 2).sum(axis=1)[None, :]
            lam = n * np.asarray(self.settings.alphas)[:, None]
            dof = (e / (e + lam)).sum(axis=1) + 1.0  # +1: the unpenalised intercept
            rss = float(n - (stats.counts ** 2).sum() / n) - (q2 * (e + 2 * lam) / (e + lam) ** 2).sum(axis=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                gcv = np.where(dof < n, (rss / n) / (1.0 - dof / n) ** 2, np.inf)
            best = int(np.argmin(gcv))
            alpha = self.settings.alphas[best]
            coef = _mm(v, q / (e[0] + lam[best, 0])[:, None])
        else:
            alpha = float(self.settings.alpha)
            shifted = gram.copy()
            shifted[np.diag_indices_from(shifted)] += alpha * n
            coef = _solve_spd(shifted, sums)
        return coef, ybar.copy(), float(alpha)
