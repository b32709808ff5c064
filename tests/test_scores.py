"""Transferability scores (graftsearch.fitness._scores), each against a direct computation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from graftsearch.fitness._scores import (class_means, h_score, ledoit_wolf, logme, logme_fit,
                                         sfda_score)


def _data(n=60, d=5, k=3, seed=0, signal=1.5):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    x = rng.normal(size=(n, d)) + signal * rng.normal(size=(k, d))[y]
    return x, y


def test_h_score_equals_the_covariance_formula():
    x, y = _data()
    total = np.cov(x.T, bias=True)
    means = np.stack([x[y == c].mean(axis=0) for c in range(3)])
    g = means[y]  # each row replaced by its class mean: E[x | y]
    want = np.trace(np.linalg.pinv(total) @ np.cov(g.T, bias=True))
    assert h_score(x, y) == pytest.approx(want, rel=1e-10)
    assert h_score(x, y) > h_score(*_data(signal=0.0))


def _direct_evidence(x, t, alpha, beta):
    # the paper's equation, with dense matrices: A = alpha I + beta F^T F, m = beta A^-1 F^T t
    n, d = x.shape
    a = alpha * np.eye(d) + beta * x.T @ x
    m = beta * np.linalg.solve(a, x.T @ t)
    res = x @ m - t
    return (n / 2 * math.log(beta) + d / 2 * math.log(alpha) - n / 2 * math.log(2 * math.pi)
            - beta / 2 * res @ res - alpha / 2 * m @ m - np.linalg.slogdet(a)[1] / 2)


@pytest.mark.parametrize("n,d", [(40, 6), (8, 12)])  # more images than features, and fewer
def test_logme_evidence_is_the_direct_one_at_its_maximum(n, d):
    x, y = _data(n=n, d=d, k=2, seed=3)
    t = (y == 1).astype(float)
    evidence, alpha, beta = logme_fit(x, t)
    # with fewer images than features the regression interpolates: beta grows to ~1e11 and the
    # dense A reaches a condition number of ~1e11, so the direct value holds ~6 digits there
    tol = 1e-8 if n > d else 1e-6
    assert evidence == pytest.approx(_direct_evidence(x, t, alpha, beta), abs=tol)
    if n < d:
        return  # an interpolating fit: the evidence rises towards a limit as beta grows
    h = 1e-4  # the fixed point maximises the evidence over log alpha and log beta
    for da, db in ((h, 0), (-h, 0), (0, h), (0, -h)):
        assert _direct_evidence(x, t, alpha * math.exp(da), beta * math.exp(db)) <= evidence + 1e-9


def test_logme_averages_the_classes_per_image_and_prefers_informative_features():
    x, y = _data()
    want = np.mean([logme_fit(x, (y == c).astype(float))[0] / len(x) for c in range(3)])
    assert logme(x, y) == pytest.approx(want, abs=1e-12)
    assert logme(x, y) > logme(*_data(signal=0.0))


def test_ledoit_wolf_equals_sklearn_on_class_centred_rows():
    covariance = pytest.importorskip("sklearn.covariance")
    x, y = _data(d=7)
    means, _ = class_means(x, y, 3)
    want = covariance.ledoit_wolf_shrinkage(x - means[y], assume_centered=True)
    assert ledoit_wolf(x, y, means) == pytest.approx(want, abs=1e-12)


def test_sfda_score_equals_a_direct_two_class_fisher_computation():
    x, y = _data(n=50, d=4, k=2, seed=5, signal=1.0)
    g = 0.2
    xc = x - x.mean(axis=0)
    m0, m1 = xc[y == 0].mean(axis=0), xc[y == 1].mean(axis=0)
    within = sum(np.outer(r, r) for r in xc - np.where(y[:, None] == 1, m1, m0)) / len(x)
    within = (1 - g) * within + g * np.trace(within) / 4 * np.eye(4)
    w = np.linalg.solve(within, m1 - m0)  # Fisher's direction for two classes
    w /= math.sqrt(w @ within @ w)        # unit variance within classes, as the projection has
    p = [float(np.mean(y == c)) for c in (0, 1)]
    probs = []
    for row, label in zip(xc, y):
        z = row @ w
        logit = [z * (m @ w) - 0.5 * (m @ w) ** 2 + math.log(pc) for m, pc in ((m0, p[0]), (m1, p[1]))]
        e = np.exp(np.array(logit) - max(logit))
        probs.append(e[label] / e.sum())
    assert sfda_score(x, y, shrinkage=g) == pytest.approx(np.mean(probs), abs=1e-10)
    assert sfda_score(x, y) > sfda_score(*_data(n=50, d=4, k=2, seed=5, signal=0.0))


def test_scores_refuse_one_class_and_bad_shapes():
    x, _ = _data()
    with pytest.raises(ValueError, match="one class"):
        logme(x, np.zeros(len(x)))
    with pytest.raises(ValueError, match=r"expected features \(n, d\) and labels \(n,\)"):
        h_score(x[:, 0], np.arange(len(x)) % 2)
