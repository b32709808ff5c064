"""Constrained domination, sorting, crowding, tournaments, variation and hypervolume."""

import math
import random

import pytest

from graftsearch.optimize._domination import (dominates, make_individual, rank_fronts, select_survivors,
                                     tournament)
from graftsearch.optimize._hypervolume import hypervolume_2d, nondominated_indices
from graftsearch.optimize._variation import SearchRandom, initial_population, make_offspring, repair


# (P, size, violation)
@pytest.mark.parametrize("a, b, expected", [
    # a feasible solution dominates an infeasible one, however good the infeasible one looks
    ((0.50, 900, 0.0), (0.99, 10, 0.01), True),
    ((0.99, 10, 0.01), (0.50, 900, 0.0), False),
    # of two infeasible ones the smaller violation dominates, objectives aside
    ((0.10, 900, 0.2), (0.90, 10, 0.3), True),
    ((0.90, 10, 0.3), (0.10, 900, 0.2), False),
    # equal violations: neither
    ((0.10, 900, 0.2), (0.90, 10, 0.2), False),
    ((0.90, 10, 0.2), (0.10, 900, 0.2), False),
    # rejected on size (P NaN) vs a failed evaluation (violation inf)
    ((math.nan, 500, 0.5), (math.nan, 100, math.inf), True),
    ((math.nan, 100, math.inf), (math.nan, 500, 0.5), False),
    # two feasible ones: Pareto dominance on (P max, size min)
    ((0.90, 100, 0.0), (0.80, 200, 0.0), True),
    ((0.90, 100, 0.0), (0.90, 200, 0.0), True),   # same P, smaller
    ((0.90, 100, 0.0), (0.80, 100, 0.0), True),   # same size, better P
    ((0.90, 200, 0.0), (0.80, 100, 0.0), False),  # a trade-off
    ((0.80, 100, 0.0), (0.90, 200, 0.0), False),
    ((0.90, 100, 0.0), (0.90, 100, 0.0), False),  # ties
])
def test_constrained_domination_hand_made(a, b, expected):
    assert dominates(a, b) is expected


def _population(spec):
    return {name: make_individual(bits, p, size, v) for name, (bits, p, size, v) in spec.items()}


HAND = {
    "A": ("1000", 0.90, 100, 0.0),
    "B": ("0100", 0.80, 50, 0.0),
    "C": ("0010", 0.85, 120, 0.0),      # dominated by A
    "D": ("0001", 0.99, 10, 0.10),      # looks best, infeasible
    "E": ("1100", 0.95, 20, 0.05),
    "F": ("1010", 0.30, 999, 0.10),     # same violation as D
    "G": ("1001", math.nan, 40, math.inf),  # failed
}


def test_sorting_uses_constrained_domination():
    inds = _population(HAND)
    fronts = rank_fronts(list(inds.values()))
    named = [sorted(k for k, v in inds.items() if any(v is x for x in f)) for f in fronts]
    assert named == [["A", "B"], ["C"], ["E"], ["D", "F"], ["G"]]
    assert [inds[k].fitness.rank for k in "ABCDEFG"] == [1, 1, 2, 4, 3, 4, 5]


def test_survivors_take_whole_fronts_then_least_crowded():
    inds = _population(HAND)
    chosen = select_survivors(list(inds.values()), 3)
    assert {id(x) for x in chosen} == {id(inds[k]) for k in "ABC"}
    chosen = select_survivors(list(inds.values()), 5)
    assert {id(x) for x in chosen[:4]} == {id(inds[k]) for k in "ABCE"}
    assert chosen[4] is inds["D"] or chosen[4] is inds["F"]


def test_crowding_distance_prefers_extremes():
    inds = [make_individual(format(i + 1, "03b"), p, s, 0.0)
            for i, (p, s) in enumerate([(0.5, 10), (0.6, 20), (0.62, 21), (0.9, 90)])]
    rank_fronts(inds)
    d = [x.fitness.crowding_dist for x in inds]
    assert math.isinf(d[0]) and math.isinf(d[3])
    # (0.6, 20) sits between close neighbours: (0.12/0.4 + 11/80) / 2; (0.62, 21) does not
    assert d[1] == pytest.approx((0.12 / 0.4 + 11 / 80) / 2)
    assert d[2] == pytest.approx((0.30 / 0.4 + 70 / 80) / 2)
    # from a front of 4 keep 3: the most crowded point goes
    survivors = select_survivors(inds + [make_individual("111", 0.1, 999, 0.0)], 3)
    assert all(x is not inds[1] for x in survivors) and any(x is inds[2] for x in survivors)


def test_tournament_prefers_lower_rank_then_crowding():
    good = make_individual("10", 0.9, 1, 0.0)
    bad = make_individual("01", 0.1, 9, 0.0)
    rank_fronts([good, bad])
    rng = random.Random(0)
    assert all(w is good for w in tournament([good, bad], 50, rng))
    a, b = make_individual("10", 0.9, 9, 0.0), make_individual("01", 0.1, 1, 0.0)
    a.fitness.rank = b.fitness.rank = 1
    a.fitness.crowding_dist, b.fitness.crowding_dist = 2.0, 1.0
    assert all(w is a for w in tournament([a, b], 50, rng))


def test_initial_population_rule():
    rng = random.Random(1)
    pop = initial_population(6, 10, rng)
    assert len(pop) == len(set(pop)) == 10 and all("1" in b for b in pop)
    singles = {"".join("1" if j == i else "0" for j in range(6)) for i in range(6)}
    assert singles <= set(pop)  # population >= taps: every single-tap selection
    small = initial_population(6, 4, random.Random(1))
    assert len(set(small)) == 4 and all("1" in b for b in small)
    assert sorted(initial_population(3, 9, rng)) == sorted(format(v, "03b") for v in range(1, 8))


def test_offspring_are_distinct_new_and_never_empty():
    rng = random.Random(3)
    for trial in range(30):
        parents = [make_individual(b, 0.5 + 0.1 * i, 10 + i, 0.0) for i, b in enumerate(["001", "010", "100"])]
        rank_fronts(parents)
        kids = make_offspring(parents, 4, crossover="two-point" if trial % 2 else "uniform",
                              cx_prob=1.0, mut_prob=1.0, indpb=0.9, rng=rng)
        assert len(kids) == 4 and len(set(kids)) == 4
        assert not set(kids) & {"001", "010", "100"}
        assert all("1" in k for k in kids)


def test_repair_switches_on_a_tap_and_escapes_duplicates():
    rng = random.Random(0)
    assert "1" in repair([0, 0, 0, 0], set(), rng)
    taken = {"1000", "0100", "0010", "0001", "1100"}
    fixed = repair([1, 0, 0, 0], taken, rng)
    assert fixed not in taken and "1" in fixed


def test_search_random_does_not_touch_the_callers_random():
    random.seed(42)
    expected = [random.random() for _ in range(3)]
    random.seed(42)
    rnd = SearchRandom(7)
    with rnd.active() as r:
        first = r.random()
    got = [random.random() for _ in range(3)]
    assert got == expected
    assert first == random.Random(7).random()


def test_hypervolume_hand_computed():
    assert hypervolume_2d([(0.5, 0.5)]) == pytest.approx(0.6 * 0.5)
    two = hypervolume_2d([(0.2, 0.6), (0.5, 0.3)])
    assert two == pytest.approx(0.9 * 0.4 + 0.6 * 0.3)
    assert hypervolume_2d([(0.2, 0.6), (0.5, 0.3), (0.6, 0.5)]) == pytest.approx(two)  # dominated
    assert hypervolume_2d([(1.2, 0.1), (0.5, 1.0)]) == 0.0  # outside the reference box
    assert hypervolume_2d([]) == 0.0


def test_nondominated_keeps_ties_and_drops_dominated():
    sizes = [10, 10, 20, 20, 30, 5]
    accs = [0.8, 0.8, 0.9, 0.7, 0.9, 0.1]
    assert sorted(nondominated_indices(sizes, accs)) == [0, 1, 2, 5]


def _random_population(rng, n):
    # few distinct values, so that ties, duplicates and equal violations are common
    return [make_individual("0", rng.choice([0.5, 0.6, 0.7, rng.random()]),
                            float(rng.choice([1, 2, 3, rng.randint(1, 100)])),
                            rng.choice([0.0, 0.0, 0.0, 0.5, 1.0, 2.0])) for _ in range(n)]


def test_fronts_are_deaps_constrained_fronts_on_random_populations_with_ties():
    from deap import tools

    rng = random.Random(1)
    for _ in range(500):
        inds = _random_population(rng, rng.randint(1, 60))
        k = rng.choice([None, rng.randint(1, len(inds))])
        ours = [sorted(map(id, f)) for f in rank_fronts(inds, k)]
        theirs = [sorted(map(id, f)) for f in tools.sortNondominated(inds, k or len(inds))]
        assert ours == theirs


def test_crowding_distances_are_deaps_bit_for_bit():
    from deap import tools

    rng = random.Random(2)
    for _ in range(300):
        inds = _random_population(rng, rng.randint(1, 40))
        fronts = rank_fronts(inds)
        ours = [[x.fitness.crowding_dist for x in f] for f in fronts]
        for front in fronts:
            tools.emo.assignCrowdingDist(front)
        assert ours == [[x.fitness.crowding_dist for x in f] for f in fronts]


def test_bits_of_reads_int_and_bool_genes():
    from graftsearch.optimize._domination import bits_of

    assert bits_of([1, 0, True, False, 0]) == "10100"
