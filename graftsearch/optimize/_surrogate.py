"""Surrogates that screen offspring before they are evaluated.

Two models: :class:`GPSurrogate` (the default, ``surrogate="gp"``; described at its
definition below, with :func:`gain_order` and :func:`model_places`) and the ridge screen
(``surrogate="ridge"``), which the rest of this docstring describes.

Every fitness call costs a training (seconds to minutes with the ``mlp`` proxy), while the size
of a selection is exact from the tap list. So each generation can breed several times as many
offspring as it has places, predict the P of each from the evaluations so far, and spend the
fitness calls on the ones whose predicted (P, size) would survive NSGA-II's own selection. Half
of the places are filled so, the other half with offspring taken as bred: on the peers
benchmark's problems, screening every place stalled the search at larger budgets (the model,
fitted on its own picks, narrows what is tried), while half kept the gain at small budgets.

The model is ridge regression of P on the selection's bits and their pairwise products (a
second-order model: taps that help alone, and pairs that are redundant or complementary; bits
only above :data:`MAX_PAIR_TAPS` taps), standardised, with an unpenalised intercept and the ridge
weight chosen by leave-one-out error (closed form for ridge), so
it needs no settings and no randomness. Candidates are ranked on an optimistic P, the prediction
plus the model's leave-one-out RMSE: a candidate predicted just short of ``p_min`` or of the
front is still worth a call when the model is that uncertain, and a poor model screens little.
Predictions steer only which offspring are evaluated; every record in the archive still holds
the fitness's own value. The model sees the latest :data:`FIT_WINDOW` evaluations only.
"""

from __future__ import annotations

import math
import threading
from typing import List, Sequence, Tuple

import numpy as np

#: Ridge weights tried, by leave-one-out error, relative to the number of features.
_ALPHAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
#: Fewer evaluations than this and the model is not fitted (offspring are taken as bred).
MIN_RECORDS = 8
#: The share of a generation's bred places chosen by the model; the rest are taken as bred.
SCREENED_SHARE = 0.5
#: The model is fitted on at most this many evaluations, the latest: its cost per generation
#: then stays bounded (refitting on all of 6,554 cost about 7 ms per fitness call, measured),
#: and the latest are those nearest the front NSGA-II is moving.
FIT_WINDOW = 1024


#: Above this many taps the model keeps the bits only (pairs would be n^2 / 2 columns).
MAX_PAIR_TAPS = 60


_BLAS = None


def _one_blas_thread():
    """A context in which BLAS and LAPACK run on one thread. The model's matrices are small
    (at most FIT_WINDOW rows, about a hundred columns for 14 taps), where a threaded
    eigendecomposition mostly waits on its threads, and the search process shares the cores
    with the fitness's workers. Measured side by side on 2 busy cores, with numpy's default of
    a BLAS thread per core: a 14-tap search to 5% of its space on a lookup-table fitness took
    2.0 s with the fit threaded and 0.67 s on one thread (pymoo's NSGA-II: 0.52 s). (The peers
    benchmark sets one BLAS thread for every tool, so its tables do not show this.) The limit
    holds for the whole process while a fit runs (other threads' numpy work included). The
    controller is built once; entering a limit costs tens of microseconds."""
    global _BLAS
    if _BLAS is None:
        from threadpoolctl import ThreadpoolController

        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")


#: The limit is process-wide, and each limit restores what it found on entry: two fits at once
#: in two threads could otherwise restore each other's "1" and leave BLAS on one thread for good.
_BLAS_LOCK = threading.Lock()


def _features(bits: Sequence[str]) -> np.ndarray:
    bits = list(bits)
    # one byte per tap: b"1" is 49; the strings all have the same length (one per tap)
    x = (np.frombuffer("".join(bits).encode("ascii"), dtype=np.uint8).reshape(len(bits), -1)
         == ord("1")).astype(float)
    n = x.shape[1]
    if n > MAX_PAIR_TAPS:
        return x
    iu, ju = np.triu_indices(n, k=1)
    return np.hstack([x, x[:, iu] * x[:, ju]])


class _Surrogate:
    """A model of P fitted on evaluated selections at construction (``_fit``), under one BLAS
    thread and the lock that guards that setting."""

    def __init__(self, bits: Sequence[str], p: Sequence[float]) -> None:
        if len(bits) < MIN_RECORDS:
            raise ValueError(f"a surrogate needs at least {MIN_RECORDS} evaluations")
        with _BLAS_LOCK, _one_blas_thread():
            self._fit(bits, p)

    def _fit(self, bits: Sequence[str], p: Sequence[float]) -> None:
        raise NotImplementedError


class RidgeSurrogate(_Surrogate):
    """P predicted from bits and pairs of bits; fitted once per generation on the latest
    evaluations (see :data:`FIT_WINDOW`)."""

    def _fit(self, bits: Sequence[str], p: Sequence[float]) -> None:
        x = _features(bits)
        y = np.asarray(p, dtype=float)
        self._mean = x.mean(axis=0)
        self._scale = x.std(axis=0)
        self._scale[self._scale == 0] = 1.0  # a bit constant so far carries no information
        z = (x - self._mean) / self._scale
        self._y0 = float(y.mean())
        yc = y - self._y0
        # ridge through one eigendecomposition, of z'z (features x features) or, with fewer
        # evaluations than features, of zz' (4x cheaper than the SVD of z for thousands of
        # rows): every alpha's fit, coefficients and leave-one-out error follow from it
        m, d = z.shape
        if m >= d:
            lam, v = np.linalg.eigh(z.T @ z)
            zv = z @ v  # = U S of the SVD
        else:
            lam, zv = np.linalg.eigh(z @ z.T)  # zv = U here; its S is folded into the weights
        lam = np.clip(lam, 0.0, None)  # rounding can leave a zero eigenvalue slightly negative
        uty = zv.T @ yc
        best = None
        for a in _ALPHAS:
            w = 1.0 / (lam + a * d)
            if m >= d:
                fitted = zv @ (w * uty)
                hat_w = w  # hat = sum_j (zv_ij)^2 / (lam_j + alpha)
            else:
                fitted = zv @ (lam * w * uty)
                hat_w = lam * w  # hat = sum_j u_ij^2 lam_j / (lam_j + alpha)
            # diagonal of the hat matrix, the unpenalised intercept's 1/m included: then
            # e_i / (1 - h_ii) is exactly the error of a refit without point i
            hat = 1.0 / m + np.einsum("ij,j,ij->i", zv, hat_w, zv)
            loo = np.mean(((yc - fitted) / np.maximum(1.0 - hat, 1e-9)) ** 2)
            if best is None or loo < best[0]:
                coef = v @ (w * uty) if m >= d else z.T @ (zv @ (w * uty))
                best = (loo, coef)
        self.loo_mse = float(best[0])
        self._coef = best[1]

    def predict(self, bits: Sequence[str]) -> np.ndarray:
        z = (_features(bits) - self._mean) / self._scale
        return np.clip(self._y0 + z @ self._coef, 0.0, 1.0)

    def optimistic(self, bits: Sequence[str]) -> np.ndarray:
        """The prediction plus the leave-one-out RMSE (an upper confidence bound), in [0, 1]."""
        return np.clip(self.predict(bits) + np.sqrt(self.loo_mse), 0.0, 1.0)


def screen_order(predicted: List[tuple], known: List[tuple]) -> List[int]:
    """Indices of ``predicted`` candidates, best first, as NSGA-II's survival would rank them
    among ``known`` individuals: each item is ``(bits, P, size, violation)``.

    Candidates are ranked with the known ones by constrained non-dominated sorting, then by
    crowding distance within a front, then in the order they were bred.
    """
    from graftsearch.optimize._domination import crowding_distances, front_ranks

    items = list(known) + list(predicted)
    values = np.array([(0.0 if p is None or not math.isfinite(p) else float(p), float(size))
                       for _, p, size, _ in items], dtype=float)
    rank = np.zeros(len(items), dtype=int)
    for r, idx in enumerate(front_ranks(values, np.array([v for *_, v in items], dtype=float)),
                            start=1):
        rank[idx] = r
    crowding = crowding_distances(values, rank)
    offset = len(known)
    keyed = [(int(rank[offset + i]), -float(crowding[offset + i]), i)
             for i in range(len(predicted))]
    return [i for _, _, i in sorted(keyed)]


# ---------------------------------------------------------------------------------------------
# surrogate="gp": a Gaussian process on the bits, and the hypervolume each candidate may add

#: Length scales of the Hamming kernel tried (by leave-one-out error), in bits flipped.
GP_LENGTHS = (1.0, 2.0, 4.0)
#: Noise variances tried (by leave-one-out error), relative to the kernel's prior variance:
#: P values a bit flip apart differ by a few images of binomial noise.
GP_NOISES = (1e-2, 1e-1)
#: The GP is fitted on the latest this many evaluations: a Cholesky factor of that size per
#: generation (256 reached the same hypervolumes as 512 and 1,024 on the peers benchmark's
#: plant-seedlings min-size problem, 10 seeds, at a fraction of the cost).
GP_WINDOW = 256
#: Optimism of a candidate's P, in predictive standard deviations, taken in turn per place:
#: 0.5 keeps to what the model is sure of (what max-accuracy needs at small budgets), 1.0
#: explores (what min-size's wide front needs); alternating did both on the peers benchmark.
GP_BETAS = (0.5, 1.0)
#: Candidates beside the bred pool: the front's unevaluated neighbours up to this many bit
#: flips, at most :data:`GP_NEAR_MAX` of them (a random subset beyond, from the search's RNG).
GP_FLIPS = 2
GP_NEAR_MAX = 2048
#: min-size: the model's share of a generation's bred places, half at first, grows linearly to
#: all of them at this many evaluations (0: all from the start); max-accuracy: all throughout.
GP_RAMP = 256


def model_places(k: int, objective: str, evaluations: int, ramp: int = GP_RAMP) -> int:
    """How many of ``k`` bred places the model chooses (the rest are taken as bred), after
    ``evaluations``; min-size's share grows from half to all over ``ramp`` evaluations.

    Measured on the peers benchmark (20 seeds): with every min-size place chosen by the model
    from the start, the DeepWeeds-size problem's hypervolume at 2% of its space fell short of
    the plain ridge screen (0.978 against 0.990) while half kept it (0.993); the plant-seedlings
    problem needed all places at 5% (0.993 against 0.981 with half). Early, NSGA-II's own
    offspring find what a model fitted on a few hundred points does not yet predict; later, the
    model's picks are worth more. Max-accuracy did best with all places throughout. With
    generations of 16 and no local step (the defaults since), over seeds 10-29 (not the
    benchmark's 0-9) at 1% of the space, min-size: a ramp over 256 evaluations gave
    plant-seedlings 0.943 of the exhaustive hypervolume against 0.921 with the former defaults,
    DeepWeeds-size 0.985 against 0.978; every place from the start gave 0.949 and 0.966."""
    if objective == "max-accuracy" or ramp <= 0:
        share = 1.0
    else:
        share = 0.5 + 0.5 * min(1.0, evaluations / ramp)
    return max(1, min(k, int(round(k * share))))


def _bit_matrix(bits: Sequence[str]) -> np.ndarray:
    bits = list(bits)
    # one byte per tap: b"1" is 49; the strings all have the same length (one per tap)
    return (np.frombuffer("".join(bits).encode("ascii"), dtype=np.uint8).reshape(len(bits), -1)
            == ord("1")).astype(float)


def _lower_inverse(lower: np.ndarray) -> np.ndarray:
    """The inverse of a lower-triangular matrix (numpy has no triangular solve; torch's, on one
    thread so that the result does not depend on the thread count, is several times cheaper
    than a general solve)."""
    import torch

    from graftsearch._utils.threads import torch_threads

    with torch_threads(1):
        t = torch.from_numpy(lower)
        return torch.linalg.solve_triangular(
            t, torch.eye(len(lower), dtype=t.dtype), upper=False).numpy()


class GPSurrogate(_Surrogate):
    """P predicted by a Gaussian process on the bits: kernel exp(-hamming / length) (selections
    a few taps apart have similar P), a constant mean (the evaluations' mean), the length and
    the noise chosen by exact leave-one-out error, the prior variance by maximum likelihood.
    Fitted once per generation on the latest :data:`GP_WINDOW` evaluations; deterministic."""

    def _fit(self, bits: Sequence[str], p: Sequence[float]) -> None:
        x = self._x = _bit_matrix(bits)
        self._ones = x.sum(axis=1)
        y = np.asarray(p, dtype=float)
        self._y0 = float(y.mean())
        yc = y - self._y0
        m = len(y)
        hamming = self._ones[:, None] + self._ones[None, :] - 2.0 * (x @ x.T)
        eye = np.eye(m)
        best = None
        for length in GP_LENGTHS:
            prior = np.exp(-hamming / length)
            for noise in GP_NOISES:
                chol = np.linalg.cholesky(prior + noise * eye)
                inv_chol = _lower_inverse(chol)
                alpha = inv_chol.T @ (inv_chol @ yc)
                # the error of a refit without point i is alpha_i / (K^-1)_ii, exactly
                inv_diag = (inv_chol ** 2).sum(axis=0)
                loo = float(np.mean((alpha / inv_diag) ** 2))
                if best is None or loo < best[0]:
                    best = (loo, length, noise, inv_chol, alpha)
        self.loo_mse, self.length, self.noise, self._inv_chol, self._alpha = best
        self._variance = max(float(yc @ self._alpha) / m, 1e-12)

    def predict(self, bits: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
        """(mean, standard deviation) of the P of each of ``bits`` (noise included)."""
        with _BLAS_LOCK, _one_blas_thread():
            z = _bit_matrix(bits)
            hamming = z.sum(axis=1)[:, None] + self._ones[None, :] - 2.0 * (z @ self._x.T)
            cross = np.exp(-hamming / self.length)
            mean = self._y0 + cross @ self._alpha
            v = self._inv_chol @ cross.T
            var = np.maximum(1.0 + self.noise - (v ** 2).sum(axis=0), 0.0) * self._variance
        return mean, np.sqrt(var)


def hv_gain(front: Sequence[Tuple[float, float]], sizes: Sequence[float], p: Sequence[float],
            reference: Tuple[float, float]) -> np.ndarray:
    """The area each candidate ``(sizes[j], p[j])`` would add to the region that ``front``
    ((size, P) pairs) dominates, in the plane of size (minimised) and P (maximised), inside
    the box up to ``reference`` = (size, P)."""
    x_ref, p_ref = reference
    # the front's staircase: for P in (low[i], high[i]] the smallest size reaching it is wide[i]
    low, wide, top = [p_ref], [], p_ref
    for size, q in sorted((float(s), float(q)) for s, q in front if q > p_ref and s < x_ref):
        if q > top:
            wide.append(size)
            low.append(q)
            top = q
    wide.append(x_ref)
    low_a = np.asarray(low)
    high_a = np.append(low_a[1:], np.inf)
    sizes = np.asarray(sizes, dtype=float)[:, None]
    p = np.asarray(p, dtype=float)[:, None]
    width = np.maximum(np.asarray(wide)[None, :] - sizes, 0.0)
    height = np.maximum(np.minimum(p, high_a[None, :]) - low_a[None, :], 0.0)
    return (width * height).sum(axis=1)


def gain_order(front: Sequence[Tuple[float, float]], sizes: Sequence[float],
               mean: Sequence[float], uppers: Sequence[Sequence[float]],
               reference: Tuple[float, float], k: int) -> List[int]:
    """Up to ``k`` candidates, one at a time: the one whose optimistic P adds the most area to
    the front (pick i takes its optimism from ``uppers[i % len(uppers)]``); the front then
    takes in that candidate at its ``mean`` P, so that the next pick is credited only with what
    this one is not expected to cover. Equal gains go to the earlier candidate; candidates
    that add nothing are not returned."""
    current = list(front)
    alive = np.ones(len(sizes), dtype=bool)
    chosen: List[int] = []
    while len(chosen) < k and alive.any():
        gain = hv_gain(current, sizes, uppers[len(chosen) % len(uppers)], reference)
        gain[~alive] = -1.0
        i = int(np.argmax(gain))
        if gain[i] <= 0.0:
            break
        chosen.append(i)
        alive[i] = False
        current.append((float(sizes[i]), float(mean[i])))
    return chosen
