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

    Always: the train standardisation (``mean``, ``scale``), ``counts`` the images per class and
    the raw val features (rows x D, float32). With z the train-standardised features of all taps
    (D columns), what each probe needs on top, made by :meth:`prepare` when a proxy of that
    probe asks: for lda and ridge ``gram`` = z^T z (D x D), ``class_sums`` = z^T onehot(y)
    (D x K) and ``fourth``, the T x T matrix sum_i q_ia q_ib of per-tap squared norms of
    class-centred rows (what Ledoit-Wolf needs); for logistic ``rows`` = z^T (D x n, float32).
    The source itself is not kept: a fold's copy of the features would stay in memory for
    nothing.
    """

    def __init__(self, source: FeatureSource):
        taps = source.taps
        y = np.asarray(source.labels("train"), dtype=np.int64)
        n, k = len(y), len(source.classes)
        if n < 2:
            raise DataError(f"The train split has {n} image(s); the fast proxy needs at least 2.")
        offsets = np.concatenate([[0], np.cumsum(taps.channels)]).astype(np.int64)
        dim = int(offsets[-1])
        mean = np.empty(dim)
        scale = np.empty(dim)
        for t in range(len(taps)):  # tap by tap: the rule is per channel, memory stays small
            sl = slice(offsets[t], offsets[t + 1])
            mean[sl], scale[sl] = standardisation(source.features("train", t + 1))
        self.n, self.k, self.offsets = n, k, offsets
        self.counts = np.bincount(y, minlength=k).astype(np.float64)
        self.mean, self.scale = mean, scale
        # raw, not standardised: float32 holds cached features exactly; the standardisation is
        # folded into the coefficients at scoring time, in float64
        self.val_x = np.concatenate([np.asarray(source.features("val", t + 1), dtype=np.float32)
                                     for t in range(len(taps))], axis=1)
        if not np.isfinite(self.val_x).all():
            raise DataError("The val features contain NaN or infinite values; rebuild the feature cache.")
        self.val_y = np.asarray(source.labels("val"), dtype=np.int64)
        self.train_y = y
        self.gram: Optional[np.ndarray] = None
        self.class_sums: Optional[np.ndarray] = None
        self.fourth: Optional[np.ndarray] = None
        self.rows: Optional[np.ndarray] = None
        self.onehot_t: Optional[torch.Tensor] = None  # K x n float32, made with the rows

    @property
    def dim(self) -> int:
        return int(self.offsets[-1])

    def rows_bytes(self) -> int:
        return self.dim * self.n * 4

    def prepare(self, source: FeatureSource, *, gram: bool, rows: bool) -> "_GramStats":
        """Make (once each) the Gram blocks and/or the transposed rows from ``source``, the
        source these statistics were computed from."""
        with _STATS_LOCK:
            if gram and self.gram is None:
                self._make_gram(source)
            if rows and self.rows is None:
                check_rows_memory(self.rows_bytes(), self.n, self.dim)
                self._make_rows(source)
        return self

    def _chunk(self) -> int:
        return max(64, (32 << 20) // (8 * max(1, self.dim)))  # ~32 MiB of float64 rows

    def _make_gram(self, source: FeatureSource) -> None:
        n, k, dim, step = self.n, self.k, self.dim, self._chunk()
        onehot = np.zeros((n, k))
        onehot[np.arange(n), self.train_y] = 1.0
        gram = torch.zeros((dim, dim), dtype=torch.float64)
        class_sums = torch.zeros((dim, k), dtype=torch.float64)
        for start in range(0, n, step):
            z = torch.from_numpy(self._train_rows(source, start, start + step))
            gram += z.T @ z
            class_sums += z.T @ torch.from_numpy(onehot[start:start + step])
        class_means = class_sums / torch.from_numpy(np.maximum(self.counts, 1.0))
        taps = len(self.offsets) - 1
        sq = np.empty((n, taps))
        for start in range(0, n, step):
            z = torch.from_numpy(self._train_rows(source, start, start + step))
            centred = (z - class_means.T[torch.from_numpy(self.train_y[start:start + step])]) ** 2
            for t in range(taps):
                sq[start:start + len(z), t] = centred[:, self.offsets[t]:self.offsets[t + 1]].sum(dim=1).numpy()
        self.class_sums = class_sums.numpy()
        self.fourth = (torch.from_numpy(sq).T @ torch.from_numpy(sq)).numpy()
        self.gram = gram.numpy()  # last: a proxy that sees it sees the other two

    def _make_rows(self, source: FeatureSource) -> None:
        # transposed: a selection's channels are a gather of whole rows, and its products with
        # the K x n class scores are the fast shapes
        rows = np.empty((self.dim, self.n), dtype=np.float32)
        step = self._chunk()
        for start in range(0, self.n, step):
            rows[:, start:start + step] = self._train_rows(source, start, start + step).T
        onehot = torch.zeros((self.k, self.n), dtype=torch.float32)
        onehot[torch.from_numpy(self.train_y), torch.arange(self.n)] = 1.0
        self.onehot_t = onehot
        self.rows = rows  # last: a proxy that sees it sees the targets too

    def _train_rows(self, source: FeatureSource, start: int, stop: int) -> np.ndarray:
        parts = [np.asarray(source.features("train", t + 1)[start:stop], dtype=np.float64)
                 for t in range(len(self.offsets) - 1)]
        z = (np.concatenate(parts, axis=1) - self.mean) / self.scale
        if not np.isfinite(z).all():
            raise DataError("The train features contain NaN or infinite values; rebuild the "
                            "feature cache.")
        return z

    def columns(self, indices: Tuple[int, ...]) -> np.ndarray:
        return np.concatenate([np.arange(self.offsets[i - 1], self.offsets[i]) for i in indices])


def _memory_bytes() -> int:
    """The memory this process may use, in bytes: the machine's physical memory, or the
    container's limit (cgroup v2 or v1) where that is lower; 0 where nothing says."""
    import os

    try:
        total = int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        total = 0
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as fh:
                text = fh.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) > 0:
            total = min(total, int(text)) if total else int(text)
    return total


def check_rows_memory(need: int, images: int, channels: int) -> None:
    """The logistic probe's rows must fit in half of the memory this process may use."""
    limit = _memory_bytes() // 2
    if limit and need > limit:
        raise DataError(
            f"The logistic probe keeps the standardised train rows of all taps in memory: "
            f"{need / 2**30:.1f} GiB ({images} images x {channels} channels, float32), more "
            f"than half of the {2 * limit / 2**30:.1f} GiB this process may use. Use "
            "`--proxy-probe lda` (FastSettings(probe='lda'): its statistics do not grow with "
            "the images).")


# One per process: a fitness pickled to a worker recomputes its statistics once there (instead
# of shipping D x D matrices with every chunk of selections) and later chunks reuse them.
_STATS: "OrderedDict[str, _GramStats]" = OrderedDict()
_STATS_KEPT = 2
_STATS_LOCK = threading.RLock()
_FOLDS: "OrderedDict[str, list]" = OrderedDict()


def _stats_for(source: FeatureSource, threads: Optional[int], *, gram: bool, rows: bool) -> _GramStats:
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
        return stats.prepare(source, gram=gram, rows=rows)


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

    What a probe needs over all taps is computed once (at construction, and once per worker
    process): for lda and ridge the train-split Gram blocks, so that an evaluation slices the
    selection's blocks and solves in its d dimensions: O(d^3 + d^2 K) for the fit, plus
    O(n_val d K) to score the val images, nothing growing with the number of train images; for
    logistic the standardised train rows.

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
            self._stats = _stats_for(self.source, settings.threads, **self._needs)

    @property
    def _needs(self) -> Dict[str, bool]:
        """What of the statistics this probe uses: Gram blocks (lda, ridge) or rows (logistic)."""
        logistic = self.settings.probe == "logistic"
        return {"gram": not logistic, "rows": logistic}

    def __getstate__(self) -> Dict[str, Any]:
        state = dict(self.__dict__)
        state["_stats"] = None  # rebuilt (once per process) from the source where it lands
        state["_folds"] = None
        return state

    def _get_stats(self) -> _GramStats:
        if self._stats is None:
            self._stats = _stats_for(self.source, self.settings.threads, **self._needs)
        return self._stats

    def _get_folds(self) -> list:
        if self._folds is None:
            key = (f"{self.source.fingerprint}|{self.settings.threads}|folds "
                   f"{self.settings.folds}|{self.seed}")
            with _STATS_LOCK:  # once per process, as the plain statistics
                folds = _FOLDS.get(key)
                needs = self._needs
                if folds is None or any((needs["gram"] and f.gram is None)
                                        or (needs["rows"] and f.rows is None) for f in folds):
                    sources = fold_sources(self.source, self.settings.folds, self.seed)
                    with torch_threads(self.settings.threads):
                        folds = folds or [_GramStats(f) for f in sources]
                        if needs["rows"]:  # all folds' rows together, before any is made
                            check_rows_memory(sum(f.rows_bytes() for f in folds if f.rows is None),
                                              sum(f.n for f in folds), folds[0].dim)
                        for stats, fold_source in zip(folds, sources):
                            stats.prepare(fold_source, **needs)
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
        zt = torch.from_numpy(stats.rows[cols])  # d x n (made when the proxy was)
        n, k = zt.shape[1], stats.k
        onehot = stats.onehot_t  # made once with the rows, not per evaluation
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
