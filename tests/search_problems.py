"""Small deterministic search problems shared by the search tests (picklable, module level)."""

from __future__ import annotations

import hashlib
import itertools
import math
import time
from typing import Sequence, Tuple

import numpy as np

import graftsearch as gs
from graftsearch.taps._selection import to_bits
from graftsearch.fitness._evaluation import Evaluation


def make_taps(channels: Sequence[int], *, donor_name: str = "synthetic", image_size: int = 32) -> gs.taps.TapList:
    """A tap list whose prefix costs grow with depth (like a real trunk)."""
    taps, params, macs = [], 0, 0
    previous = 3
    for i, c in enumerate(channels, start=1):
        params += previous * c * 9 + c
        macs += previous * c * 9 * 64
        taps.append(gs.taps.Tap(index=i, name=f"layer{i}", channels=c, height=8, width=8,
                                params_upto=params, macs_upto=macs))
        previous = c
    return gs.taps.TapList(taps, donor_name=donor_name, image_size=image_size)


def _jitter(key: str) -> float:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") / 2**32


class InfoFitness(gs.Fitness):
    """P = 1 - prod(1 - q_t) over the selected taps, times a small deterministic jitter.

    Deeper taps carry more information (q grows with depth), so the front trades size for P.
    """

    name = "info"

    def __init__(self, n_taps: int, *, seed: int = 0, ceiling: float = 0.97):
        rng = np.random.default_rng(seed)
        self.q = np.sort(rng.uniform(0.05, 0.6, size=n_taps))
        self.q = self.q[rng.permutation(n_taps)] * 0.5 + self.q * 0.5
        self.seed = seed
        self.ceiling = ceiling

    def evaluate(self, selection: Tuple[int, ...]) -> Evaluation:
        miss = 1.0
        for i in selection:
            miss *= 1.0 - float(self.q[i - 1])
        p = self.ceiling * (1.0 - miss) * (0.98 + 0.02 * _jitter(f"{self.seed}:{selection}"))
        return Evaluation(val_accuracy=round(p, 6), val_loss=round(1.0 - p, 6),
                          extras={"macro_f1": round(p * 0.9, 6)}, fidelity="info")

    def key(self) -> str:
        return f"info:{len(self.q)}:{self.seed}:{self.ceiling}"


class CountingFitness(InfoFitness):
    """InfoFitness that counts its calls (in-process only)."""

    def __init__(self, n_taps: int, **kw):
        super().__init__(n_taps, **kw)
        self.calls = []

    def evaluate(self, selection):
        self.calls.append(tuple(selection))
        return super().evaluate(selection)


class SleepyFitness(InfoFitness):
    """InfoFitness that takes a while, so a process running it can be killed mid-generation."""

    def __init__(self, n_taps: int, *, delay: float = 0.02, **kw):
        super().__init__(n_taps, **kw)
        self.delay = delay

    def evaluate(self, selection):
        time.sleep(self.delay)
        return super().evaluate(selection)

    def key(self) -> str:  # the delay does not change results
        return super().key()


class FlakyFitness(InfoFitness):
    """Raises for selections that contain tap 2 and returns NaN for tap 3 alone."""

    def evaluate(self, selection):
        if 2 in selection:
            raise RuntimeError("out of memory (simulated)")
        if tuple(selection) == (3,):
            return Evaluation(val_accuracy=math.nan)
        return super().evaluate(selection)


class CentroidFitness(gs.Fitness):
    """Validation accuracy of a nearest-centroid classifier on the selected taps' features."""

    name = "centroid"

    def __init__(self, features):
        self.features = features

    def evaluate(self, selection):
        from graftsearch.features._source import selection_features

        xtr = selection_features(self.features, "train", selection, dtype=np.float64)
        xva = selection_features(self.features, "val", selection, dtype=np.float64)
        ytr, yva = self.features.labels("train"), self.features.labels("val")
        mu, sd = xtr.mean(0), xtr.std(0) + 1e-9
        xtr, xva = (xtr - mu) / sd, (xva - mu) / sd
        centroids = np.stack([xtr[ytr == c].mean(0) for c in range(len(self.features.classes))])
        d = ((xva[:, None, :] - centroids[None]) ** 2).sum(-1)
        acc = float((d.argmin(1) == yva).mean())
        return Evaluation(val_accuracy=acc, val_loss=float(d.min(1).mean()), fidelity="centroid")

    def key(self) -> str:
        return f"centroid:{self.features.fingerprint}"


def generated_features(taps: gs.taps.TapList, *, informative: Sequence[int], n_classes: int = 3,
                       n_train: int = 60, n_val: int = 30, seed: int = 0, signal: float = 2.0):
    """ArrayFeatures where the ``informative`` taps carry the class and the others are noise."""
    rng = np.random.default_rng(seed)
    feats, labels = {}, {}
    for split, n in (("train", n_train), ("val", n_val)):
        y = np.arange(n) % n_classes
        arrays = []
        for tap in taps:
            x = rng.normal(size=(n, tap.channels)).astype(np.float32)
            if tap.index in informative:
                means = np.random.default_rng(tap.index).normal(size=(n_classes, tap.channels))
                x += signal * means[y].astype(np.float32)
            arrays.append(x)
        feats[split], labels[split] = arrays, y
    from graftsearch.features._source import ArrayFeatures

    return ArrayFeatures(taps, [f"c{i}" for i in range(n_classes)], feats, labels)


def exhaustive(taps: gs.taps.TapList, head: gs.HeadSpec, fitness, settings: gs.SearchSettings):
    """Every selection's (bits, size, P, violation) by brute force."""
    rows = []
    n = len(taps)
    for k in range(1, n + 1):
        for combo in itertools.combinations(range(1, n + 1), k):
            cost = taps.cost(combo, head)
            size = cost.metric(settings.size_metric)
            if settings.objective == "max-accuracy" and size > settings.size_max:
                continue
            p = fitness.evaluate(combo).val_accuracy
            rows.append((to_bits(combo, n), size, p, settings.violation(p, size)))
    return rows


def exhaustive_front(rows):
    """Feasible non-dominated (size, P) points of ``exhaustive`` rows, as a sorted set."""
    feasible = [(s, p) for _, s, p, v in rows if v == 0.0]
    return sorted({(s, p) for s, p in feasible
                   if not any((s2 <= s and p2 >= p and (s2 < s or p2 > p)) for s2, p2 in feasible)})


def strip_time(path) -> str:
    """A CSV's text without the evaluated_at column (the only clock-dependent one)."""
    import csv
    import io

    rows = list(csv.reader(io.StringIO(open(path, encoding="utf-8").read())))
    col = rows[0].index("evaluated_at")
    return "\n".join(",".join(r[:col] + r[col + 1:]) for r in rows)


def run_killable(run_dir: str, generations: int, delay: float) -> None:
    """Entry point of the process the resume test kills: a slow search writing ``run_dir``."""
    taps = make_taps([8, 8, 16, 16, 32, 32, 64, 64, 96, 128])
    settings = gs.SearchSettings(p_min=0.5, population=12, generations=generations, seed=4)
    gs.run_search(taps, gs.HeadSpec(num_classes=5, hidden=16), SleepyFitness(len(taps), delay=delay),
                  settings, run_dir=run_dir)


class ThreadsFitness(InfoFitness):
    """InfoFitness that reports torch's thread count and its process id as extras."""

    def evaluate(self, selection):
        import os

        import torch

        ev = super().evaluate(selection)
        return Evaluation(val_accuracy=ev.val_accuracy, val_loss=ev.val_loss,
                          extras={"threads": float(torch.get_num_threads()), "pid": float(os.getpid())})


class _Stop(Exception):
    pass


def objective_limit(taps, head, objective: str) -> dict:
    """The SearchSettings fields of ``objective`` for the shared resume tests: P >= 0.5, or at
    most the size of tap 8 alone."""
    if objective == "min-size":
        return dict(p_min=0.5)
    return dict(objective="max-accuracy", size_max=taps.cost([8], head).params, p_min=None)


def stop_then_resume(taps, head, fitness_factory, settings, run_dir, generation: int,
                     between=None):
    """Run a search into ``run_dir`` that is interrupted once ``generation`` is written (then
    ``between(run_dir)`` runs, when given), then resume it there; returns the resumed result."""
    import pytest

    def stop(p):
        if p.stage == "search" and p.info["generation"] == generation:
            raise _Stop

    with pytest.raises(_Stop):
        gs.run_search(taps, head, fitness_factory(), settings, run_dir=run_dir, progress=stop)
    if between is not None:
        between(run_dir)
    return gs.run_search(taps, head, fitness_factory(), settings, run_dir=run_dir)


def spy_on_windows(monkeypatch, window_name: str, model_name: str, window: int):
    """Set the search's fit window (``_search.<window_name>``) to ``window`` and record the
    selections each fit of ``_search.<model_name>`` receives; returns that record list."""
    from graftsearch.optimize import _search

    seen = []
    fit = getattr(_search, model_name)

    def spy(bits, p):
        seen.append(list(bits))
        return fit(bits, p)

    monkeypatch.setattr(_search, window_name, window)
    monkeypatch.setattr(_search, model_name, spy)
    return seen


def assert_latest_windows(seen, records, window: int) -> None:
    """Each recorded fit saw the ``window`` latest trained records before it, in order."""
    trained = [r.bits for r in records if r.trained]  # in evaluation order
    assert seen and max(len(b) for b in seen) == window
    for bits in seen:
        end = trained.index(bits[-1]) + 1
        assert bits == trained[:end][-window:]
