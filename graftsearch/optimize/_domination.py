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
    # the genes are 0/1 ints (or bools): indexing "01" maps them in C, the search's hot loop
    return "".join(map("01".__getitem__, individual))


def crowding_distances(values: np.ndarray, front_of: np.ndarray) -> np.ndarray:
    """DEAP's ``assignCrowdingDist`` within each front, bit for bit, for all fronts at once:
    ``values`` are the rows' objective values, ``front_of`` the front each row is in.

    DEAP sorts a front by each objective in turn with Python's stable sort, each sort starting
    from the order the previous one left, and adds each middle point's normalised gap per
    objective in that order; stable lexsorts keyed on the front reproduce the orders and the
    additions (one numpy pass instead of one Python call per front: a population has dozens)."""
    n, nobj = values.shape
    distances = np.zeros(n)
    if n == 0:
        return distances
    front_of = np.asarray(front_of)
    order = np.arange(n)
    for i in range(nobj):
        order = order[np.lexsort((values[order, i], front_of[order]))]
        column, front = values[order, i], front_of[order]
        first = np.r_[True, front[1:] != front[:-1]]
        last = np.r_[front[1:] != front[:-1], True]
        group = np.cumsum(first) - 1
        span = (column[last] - column[first])[group]
        middle = np.flatnonzero(~first & ~last & (span != 0))
        distances[order[middle]] += ((column[middle + 1] - column[middle - 1])
                                     / (nobj * span[middle]))
        distances[order[first | last]] = math.inf
    return distances


def front_ranks(values: np.ndarray, violation: np.ndarray, k: int | None = None
                ) -> List[np.ndarray]:
    """Constrained non-dominated fronts of rows of objective ``values`` (P, size) with their
    ``violation``: index arrays, in input order within a front, until they hold ``k`` rows.

    The same fronts (as sets) as DEAP's ``sortNondominated`` with
    :meth:`ConstrainedFitness.dominates`, in O(n log n) instead of a Python call per pair: the
    sort runs every generation and on every screened offspring. With two objectives, feasible
    rows taken by P descending (then size ascending) join the first front whose latest member,
    the smallest in it, does not dominate them; a front dominating a row implies every earlier
    one does, so the front is found by bisection. Infeasible rows follow, one front per
    violation, the smallest first (Deb's rules)."""
    n = len(values)
    if n == 0:
        return []
    k = n if k is None else k
    values = np.asarray(values, dtype=float)
    violation = np.asarray(violation, dtype=float)
    rank = np.empty(n, dtype=np.int64)
    feasible = np.flatnonzero(violation == 0.0)
    p, size = values[:, 0], values[:, 1]
    last_p: List[float] = []  # per front, its latest (smallest) member's P and size
    last_size: List[float] = []
    order = feasible[np.lexsort((size[feasible], -p[feasible]))]
    for j, pj, sj in zip(order.tolist(), p[order].tolist(), size[order].tolist()):
        lo, hi = 0, len(last_size)
        while lo < hi:  # the first front whose latest member does not dominate row j
            mid = (lo + hi) // 2
            if last_size[mid] < sj or (last_size[mid] == sj and last_p[mid] > pj):
                lo = mid + 1
            else:
                hi = mid
        if lo == len(last_size):
            last_p.append(pj)
            last_size.append(sj)
        else:
            last_p[lo], last_size[lo] = pj, sj
        rank[j] = lo
    infeasible = np.flatnonzero(violation != 0.0)
    levels, level_of = np.unique(violation[infeasible], return_inverse=True)
    rank[infeasible] = len(last_size) + level_of.reshape(-1)
    by_rank = np.argsort(rank, kind="stable")  # input order within a front
    counts = np.bincount(rank, minlength=len(last_size) + len(levels))
    fronts: List[np.ndarray] = []
    covered = 0
    for front in np.split(by_rank, np.cumsum(counts)[:-1]):
        if covered >= k:
            break
        fronts.append(front)
        covered += len(front)
    return fronts


def rank_fronts(individuals: Sequence, k: int | None = None) -> List[list]:
    """Constrained non-dominated fronts of DEAP individuals (see :func:`front_ranks`), with
    ``fitness.rank`` and (DEAP's) ``fitness.crowding_dist`` set.

    Within a front, individuals keep their input order (DEAP's order differs, so ties in
    crowding distance may keep other survivors than DEAP would; the result is deterministic
    either way)."""
    inds = list(individuals)
    if not inds:
        return []
    values = np.array([ind.fitness.values for ind in inds], dtype=float)
    fronts = front_ranks(values, np.array([ind.fitness.violation for ind in inds], dtype=float), k)
    ranked = np.concatenate(fronts)
    front_of = np.repeat(np.arange(len(fronts)), [len(f) for f in fronts])
    crowding = np.empty(len(inds))
    crowding[ranked] = crowding_distances(values[ranked], front_of)
    out: List[list] = []
    for rank, idx in enumerate(fronts, start=1):
        front = [inds[i] for i in idx]
        for ind, i in zip(front, idx.tolist()):
            ind.fitness.rank = rank
            ind.fitness.crowding_dist = float(crowding[i])
        out.append(front)
    return out


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
