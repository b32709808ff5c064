"""Transferability scores of a feature matrix for a labelling, from their papers, in numpy.

They score how well features ``x`` (n, d) suit labels ``y`` (n,) without training a head, on
one split (the train split: unlike the proxies they need no validation images):

- :func:`h_score` (Bao et al., ICIP 2019): ``tr(cov(x)^+ cov(E[x | y]))``, the between-class
  spread in units of the total covariance;
- :func:`logme` (You et al., ICML 2021): the log marginal evidence per image of a Bayesian
  linear regression from ``x`` to each one-hot column, with its prior and noise precisions set
  by evidence maximisation (fixed-point updates on one SVD of ``x``), averaged over classes;
- :func:`sfda_score` (after Shao et al., ECCV 2022, "SFDA"): a Fisher discriminant projection
  with the within-class scatter shrunk towards a multiple of the identity, then the mean
  probability of the true class under nearest-class-mean posteriors in the projected space.
  It differs from SFDA in three ways: the shrinkage is Ledoit-Wolf's (as the ``fast`` proxy's
  LDA) instead of SFDA's ``exp(-a * lambda_max(S_w))``; the posteriors are not passed through
  SFDA's extra softmax before the mean; and SFDA's second, "self-challenging" step (re-weighting
  confusable classes) is left out.

Agostinelli et al. (ECCV 2022) warn that no such score wins everywhere; the fitness benchmark
measures each against the final model's test accuracy before any becomes a default.
"""

from __future__ import annotations

import math
from typing import Tuple

import numpy as np

_MAX_ITER = 100
_TOL = 1e-5


def _check(x, y) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    if x.ndim != 2 or y.ndim != 1 or len(x) != len(y) or len(x) < 2:
        raise ValueError(f"expected features (n, d) and labels (n,), n >= 2; got {x.shape} and {y.shape}")
    classes, codes = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise ValueError("the labels hold one class; a transferability score needs two or more")
    return x, codes, classes


def class_means(x: np.ndarray, codes: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """``(means (k, d), counts (k,))`` of the rows of each class."""
    counts = np.bincount(codes, minlength=k).astype(np.float64)
    sums = np.zeros((k, x.shape[1]))
    np.add.at(sums, codes, x)
    return sums / counts[:, None], counts


def h_score(x, y) -> float:
    """``tr(cov(x)^+ cov(E[x | y]))``, covariances with 1/n; larger is more separable."""
    x, codes, classes = _check(x, y)
    centred = x - x.mean(axis=0)
    means, counts = class_means(centred, codes, len(classes))
    total = centred.T @ centred / len(x)
    between = (means.T * (counts / len(x))) @ means  # cov of each row's class mean
    return float(np.trace(np.linalg.pinv(total, hermitian=True) @ between))


def _evidence_terms(sigma2: np.ndarray, z: np.ndarray, tail: float, n: int, d: int,
                    alpha: float, beta: float) -> Tuple[float, float, float]:
    """(log evidence, ||w||^2, residual^2) of the regression at ``alpha``, ``beta`` in the
    SVD basis: ``sigma2`` the squared singular values, ``z = U^T y``, ``tail`` the part of
    ``||y||^2`` outside the column space of x."""
    denom = alpha + beta * sigma2
    w2 = float(np.sum(beta ** 2 * sigma2 * z ** 2 / denom ** 2))
    res2 = float(np.sum((alpha * z / denom) ** 2) + tail)
    logdet = float(np.sum(np.log(denom)) + (d - len(sigma2)) * math.log(alpha))
    evidence = (n / 2 * math.log(beta) + d / 2 * math.log(alpha) - n / 2 * math.log(2 * math.pi)
                - beta / 2 * res2 - alpha / 2 * w2 - logdet / 2)
    return evidence, w2, res2


def logme_fit(x, target) -> Tuple[float, float, float]:
    """``(log evidence, alpha, beta)`` of Bayesian linear regression from ``x`` to ``target``
    (n,) with prior precision alpha and noise precision beta maximising the evidence."""
    x = np.asarray(x, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    n, d = x.shape
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    keep = s > s.max(initial=0.0) * 1e-10 if len(s) else s > 0
    u, sigma2 = u[:, keep], s[keep] ** 2
    z = u.T @ target
    tail = max(float(target @ target - z @ z), 0.0)
    alpha, beta = 1.0, 1.0
    for _ in range(_MAX_ITER):
        gamma = float(np.sum(beta * sigma2 / (alpha + beta * sigma2)))
        _, w2, res2 = _evidence_terms(sigma2, z, tail, n, d, alpha, beta)
        new_alpha = gamma / max(w2, 1e-300)
        new_beta = (n - gamma) / max(res2, 1e-300)
        done = (abs(new_alpha - alpha) / alpha < _TOL and abs(new_beta - beta) / beta < _TOL)
        alpha, beta = new_alpha, new_beta
        if done:
            break
    evidence, _, _ = _evidence_terms(sigma2, z, tail, n, d, alpha, beta)
    return evidence, alpha, beta


def logme(x, y) -> float:
    """LogME: the maximised log evidence per image, averaged over the one-hot columns of ``y``."""
    x, codes, classes = _check(x, y)
    n = len(x)
    return float(np.mean([logme_fit(x, (codes == k).astype(np.float64))[0] / n
                          for k in range(len(classes))]))


def ledoit_wolf(x: np.ndarray, codes: np.ndarray, means: np.ndarray) -> float:
    """The Ledoit-Wolf shrinkage intensity of the pooled within-class covariance towards
    ``tr(S) / d * I`` (the ``fast`` proxy's rule)."""
    r = x - means[codes]
    n, d = r.shape
    s = r.T @ r / n
    mu = np.trace(s) / d
    delta = float(np.sum((s - mu * np.eye(d)) ** 2))
    beta = float(np.sum((r ** 2).T @ (r ** 2)) / n - np.sum(s ** 2)) / n
    return 0.0 if delta <= 0 else float(min(max(beta / delta, 0.0), 1.0))


def sfda_score(x, y, shrinkage: float | None = None) -> float:
    """The mean probability of the true class after a shrunk Fisher projection (see the module
    docstring); ``shrinkage`` None takes Ledoit-Wolf's."""
    x, codes, classes = _check(x, y)
    k, (n, d) = len(classes), x.shape
    x = x - x.mean(axis=0)
    means, counts = class_means(x, codes, k)
    within = (x - means[codes]).T @ (x - means[codes]) / n
    between = (means.T * (counts / n)) @ means
    g = ledoit_wolf(x, codes, means) if shrinkage is None else float(shrinkage)
    within = (1 - g) * within + g * np.trace(within) / d * np.eye(d)
    # generalised eigenvectors of (between, within), whitened by the within scatter
    evals, evecs = np.linalg.eigh(within)
    whiten = evecs / np.sqrt(np.maximum(evals, 1e-12))
    b_evals, b_evecs = np.linalg.eigh(whiten.T @ between @ whiten)
    top = np.argsort(b_evals)[::-1][:k - 1]
    w = whiten @ b_evecs[:, top]          # within-whitened discriminant directions
    px, pm = x @ w, means @ w
    logits = px @ pm.T - 0.5 * np.sum(pm ** 2, axis=1) + np.log(counts / n)
    logits -= logits.max(axis=1, keepdims=True)
    prob = np.exp(logits)
    prob /= prob.sum(axis=1, keepdims=True)
    return float(np.mean(prob[np.arange(n), codes]))
