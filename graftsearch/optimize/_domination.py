"""Deb's constrained domination on top of DEAP's NSGA-II tools.

DEAP's ``selNSGA2`` sorts by plain Pareto dominance. The individuals here are DEAP individuals
whose fitness class's ``dominates`` follows Deb's rules (so DEAP's ``sortNondominated`` would sort
them correctly); :func:`rank_fronts` computes the same constrained fronts with numpy:

1. a feasible solution (violation 0) dominates an infeasible one;
2. of two infeasible solutions, the one with the smaller violation dominates (equal violations:
   neither);
3. of two feasible solutions, Pareto dominance on (P maximised, size minimised).

Crowding distance is DEAP's ``assignCrowdingDist`` on the objective values; for selections
without a P (rejected on size, or failed) the P used for crowding is 0. The binary tournament
is Deb's crowded comparison: lower rank wins, then larger crowding distance, then a coin flip.
"""

from __future__ import annotations

import math
import random
from itertools import chain
from typing import List, Sequence

import numpy as np
from deap import base, creator, tools

WEIGHTS = (1.0, -1.0)  # P maximised, size minimised


class ConstrainedFitness(base.Fitness):
    """A DEAP fitness with a constraint violation and Deb's constrained domination."""

    weights = WEIGHTS

    def __init__(self, values=(), violation: float = 0.0):
        super().__init__(values)
        self.violation = float(violation)
        self.rank = 0
        self.crowding_dist = 0.0

    @property
    def feasible(self) -> bool:
        return self.violation == 0.0

    def dominates(self, other: "ConstrainedFitness", obj=slice(None)) -> bool:  # type: ignore[override]
        return constrained_dominates(self.wvalues, self.violation, other.wvalues, other.violation)

    # sortNondominated groups individuals by fitness: equal objectives with different violations
    # must not share a group.
    def __hash__(self) -> int:
        return hash((self.wvalues, self.violation))

    def __eq__(self, other) -> bool:
        return self.wvalues == other.wvalues and self.violation == getattr(other, "violation", None)

    def __ne__(self, other) -> bool:
        return not self.__eq__(other)

    def __deepcopy__(self, memo):
        copy_ = self.__class__()
        copy_.wvalues = self.wvalues
        copy_.violation = self.violation
        copy_.rank = self.rank
        copy_.crowding_dist = self.crowding_dist
        return copy_


def constrained_dominates(wa: Sequence[float], va: float, wb: Sequence[float], vb: float) -> bool:
    """Whether solution a dominates b; ``w*`` are weighted objectives (larger is better)."""
    if va == 0.0 and vb == 0.0:
        not_worse = all(x >= y for x, y in zip(wa, wb))
        return not_worse and any(x > y for x, y in zip(wa, wb))
    if va == 0.0:
        return True
    if vb == 0.0:
        return False
    return va < vb


def dominates(a: tuple, b: tuple) -> bool:
    """Constrained domination of ``(P, size, violation)`` tuples (P may be NaN when infeasible)."""
    return constrained_dominates(_weighted(a[0], a[1]), float(a[2]), _weighted(b[0], b[1]), float(b[2]))


def _weighted(p: float, size: float) -> tuple:
    p = 0.0 if p is None or not math.isfinite(p) else float(p)
    return (p * WEIGHTS[0], float(size) * WEIGHTS[1])


# Created once, under names no other DEAP user is likely to pick, so that importing this module in
# a worker process is enough to unpickle individuals.
if not hasattr(creator, "GraftSearchFitness"):
    creator.create("GraftSearchFitness", ConstrainedFitness)
if not hasattr(creator, "GraftSearchIndividual"):
    creator.create("GraftSearchIndividual", list, fitness=creator.GraftSearchFitness)


def make_individual(bits: str, p: float, size: float, violation: float):
    """A DEAP individual (list of 0/1) with its constrained fitness filled in."""
    ind = creator.GraftSearchIndividual(int(c) for c in bits)
    ind.fitness.values = (0.0 if p is None or not math.isfinite(p) else float(p), float(size))
    ind.fitness.violation = float(violation)
    return ind


def bits_of(individual) -> str:
    return "".join("1" if b else "0" for b in individual)


def rank_fronts(individuals: Sequence, k: int | None = None) -> List[list]:
    """Constrained non-dominated fronts, with rank and (DEAP's) crowding distance set.

    The same fronts (as sets) as DEAP's ``sortNondominated`` with
    :meth:`ConstrainedFitness.dominates`, but the
    domination matrix is computed with numpy in one go instead of a Python call per pair: the
    sort runs every generation and was most of the search's own cost. Fronts are returned until
    they hold at least ``k`` individuals; within a front, individuals keep their input order
    (DEAP's order differs, so ties in crowding distance may keep other survivors than DEAP would;
    the result is deterministic either way).
    """
    inds = list(individuals)
    k = len(inds) if k is None else k
    if not inds:
        return []
    w = np.array([ind.fitness.wvalues for ind in inds], dtype=float)
    v = np.array([ind.fitness.violation for ind in inds], dtype=float)
    feasible = v == 0.0
    pareto = (w[:, None, :] >= w[None, :, :]).all(-1) & (w[:, None, :] > w[None, :, :]).any(-1)
    # dom[i, j]: i dominates j under Deb's rules (see constrained_dominates)
    dom = np.where(feasible[:, None],
                   np.where(feasible[None, :], pareto, True),
                   np.where(feasible[None, :], False, v[:, None] < v[None, :]))
    dominated_by = dom.sum(axis=0)
    remaining = np.ones(len(inds), dtype=bool)
    fronts: List[list] = []
    covered = 0
    while covered < k and remaining.any():
        idx = np.flatnonzero(remaining & (dominated_by == 0))
        remaining[idx] = False
        dominated_by = dominated_by - dom[idx].sum(axis=0)
        front = [inds[i] for i in idx]
        fronts.append(front)
        covered += len(front)
    for rank, front in enumerate(fronts, start=1):
        tools.emo.assignCrowdingDist(front)
        for ind in front:
            ind.fitness.rank = rank
    return fronts


def select_survivors(individuals: Sequence, k: int) -> list:
    """NSGA-II environmental selection of ``k`` individuals: whole fronts, then least crowded."""
    if k >= len(individuals):
        fronts = rank_fronts(individuals)
        return list(chain(*fronts))
    fronts = rank_fronts(individuals, k)
    chosen = list(chain(*fronts[:-1]))
    last = sorted(fronts[-1], key=lambda ind: ind.fitness.crowding_dist, reverse=True)
    chosen.extend(last[: k - len(chosen)])
    return chosen


def crowded_better(a, b) -> int:
    """1 when a wins the crowded comparison, -1 when b wins, 0 on a tie."""
    if a.fitness.rank != b.fitness.rank:
        return 1 if a.fitness.rank < b.fitness.rank else -1
    if a.fitness.crowding_dist != b.fitness.crowding_dist:
        return 1 if a.fitness.crowding_dist > b.fitness.crowding_dist else -1
    return 0


def tournament(individuals: Sequence, k: int, rng: random.Random | None = None) -> list:
    """``k`` winners of binary tournaments between two distinct random individuals."""
    rng = rng or random
    chosen = []
    for _ in range(k):
        if len(individuals) == 1:
            chosen.append(individuals[0])
            continue
        a, b = rng.sample(list(individuals), 2)
        verdict = crowded_better(a, b)
        if verdict == 0:
            verdict = 1 if rng.random() < 0.5 else -1
        chosen.append(a if verdict > 0 else b)
    return chosen
