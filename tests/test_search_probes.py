"""max-accuracy's probes and climb: a tap that no trained selection holds yet is tried alone, the largest
first, one place per generation, each tap at most once; never under min-size."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import graftsearch as gs
from graftsearch.optimize import _search
from graftsearch.optimize._variation import flips
from search_problems import InfoFitness, make_taps, stop_then_resume, strip_time

CHANNELS = [8, 8, 16, 16, 32, 32, 64, 64, 96, 128]


def _setup(**kw):
    taps, head = make_taps(CHANNELS), gs.HeadSpec(num_classes=5, hidden=16)
    # the deepest tap with the two smallest fits: nearly every random selection that holds it
    # is over the cap
    cap = taps.cost((1, 2, 10), head).params
    settings = gs.SearchSettings(**(dict(objective="max-accuracy", size_max=cap, p_min=None,
                                         population=12, generations=8, seed=3, screen=4,
                                         surrogate="gp") | kw))
    return taps, head, settings


class DeepFitness(InfoFitness):
    """InfoFitness where the deepest tap alone carries most of the information."""

    def __init__(self, n_taps: int):
        super().__init__(n_taps)
        self.q = 0.5 * self.q * 0.3
        self.q[-1] = 0.9

    def key(self) -> str:
        return "deep:" + super().key()


def _single(index: int, n: int) -> str:
    return "".join("1" if i == index - 1 else "0" for i in range(n))


def test_each_generation_probes_the_largest_untried_tap_alone():
    taps, head, settings = _setup()
    result = gs.run_search(taps, head, InfoFitness(len(taps)), settings)
    n = len(taps)
    by_generation = {}
    for r in result.records:
        by_generation.setdefault(r.generation, []).append(r)
    probed = 0
    for g in range(1, result.generations + 1):
        covered = {t for r in result.records if r.generation < g and r.trained for t in r.taps}
        evaluated = {r.bits for r in result.records if r.generation < g}
        untried = [i for i in range(1, n + 1) if i not in covered
                   and _single(i, n) not in evaluated
                   and taps.cost((i,), head).params <= settings.size_max]
        bits = [r.bits for r in by_generation.get(g, [])]
        if untried:
            largest = max(untried, key=lambda i: (taps.cost((i,), head).params, -i))
            # the probe comes first in its generation, and no other untried tap is tried alone
            assert bits[0] == _single(largest, n)
            assert not {_single(i, n) for i in untried if i != largest} & set(bits)
            probed += 1
    assert probed >= 1
    # tap 10 fits with taps 1 and 2 only: the first generation probes it
    assert by_generation[1][0].bits == _single(10, n)


def test_with_probes_every_seed_reaches_the_deep_tap_and_without_them_most_do_not():
    """The hand-made problem: tap 10 alone carries most of the information and fits under the
    cap only with taps 1 and 2; a search of 40 evaluations per seed."""
    taps, head, settings = _setup()
    fitness = DeepFitness(len(taps))
    n = len(taps)
    combos = [c for k in range(1, n + 1) for c in itertools.combinations(range(1, n + 1), k)]
    best = max(fitness.evaluate(c).val_accuracy for c in combos
               if taps.cost(c, head).params <= settings.size_max)
    close = {}
    for places in (0, 1):
        close[places] = 0
        for result in _short_runs("PROBE_PLACES", places):
            top = max(r.val_accuracy for r in result.records if r.trained)
            close[places] += top >= best - 0.005
    assert close[1] == 6
    assert close[0] < 6


def test_min_size_makes_no_probes(monkeypatch):
    taps, head, _ = _setup()
    settings = gs.SearchSettings(p_min=0.5, population=12, generations=6, seed=3, screen=4,
                                 surrogate="gp")
    plain = gs.run_search(taps, head, InfoFitness(len(taps)), settings)
    monkeypatch.setattr(_search, "PROBE_PLACES", 0)
    off = gs.run_search(taps, head, InfoFitness(len(taps)), settings)
    assert [r.bits for r in plain.records] == [r.bits for r in off.records]


def test_a_resumed_search_probes_as_the_uninterrupted_one(tmp_path):
    taps, head, settings = _setup()
    gs.run_search(taps, head, InfoFitness(len(taps)), settings, run_dir=tmp_path / "a")
    stop_then_resume(taps, head, lambda: InfoFitness(len(taps)), settings, tmp_path / "b", 2)
    for name in ("evaluations.csv", "pareto.csv"):
        assert strip_time(tmp_path / "a" / name) == strip_time(tmp_path / "b" / name)


def test_the_climb_takes_the_picks_best_predicted_neighbour(monkeypatch):
    taps, head, settings = _setup()
    steps = []  # (front[0] bits, evaluated keys before, taken, model, returned)
    climb = _search._Run._climb

    def spy(self, model, front, taken, k):
        out = climb(self, model, front, taken, k)
        steps.append((front[0].bits if front else None, set(self.archive.keys()), set(taken), model,
                      out, self.generation + 1))
        return out

    monkeypatch.setattr(_search._Run, "_climb", spy)
    # a wider cap than the other tests': the pick has feasible neighbours for longer
    settings = gs.SearchSettings(**(settings.as_dict()
                                    | {"size_max": taps.cost((1, 2, 3, 4, 5, 10), head).params}))
    result = gs.run_search(taps, head, DeepFitness(len(taps)), settings)
    by_generation = {}
    for r in result.records:
        by_generation.setdefault(r.generation, set()).add(r.bits)
    climbed = 0
    for top, before, taken, model, out, generation in steps:
        valid = [b for b in flips(top, 1)
                 if b not in before and b not in taken
                 and taps.cost(_taps_of(b), head).params <= settings.size_max]
        if not valid:
            assert out == []
            continue
        mean, _ = model.predict(valid)
        assert out == [valid[int(np.argmax(mean))]]  # argmax keeps the first of equal means
        assert out[0] in by_generation[generation]
        climbed += 1
    assert climbed >= 3


def test_with_the_climb_every_seed_tries_the_deep_tap_with_company():
    company = {}
    for places in (0, 1):
        company[places] = 0
        for result in _short_runs("CLIMB_PLACES", places):
            company[places] += any(r.trained and 10 in r.taps and len(r.taps) > 1
                                   for r in result.records)
    assert company[1] == 6
    assert company[0] < 6


def _short_runs(constant: str, places: int):
    """Searches of 40 evaluations on the hand-made problem, seeds 0-5, with the search's
    ``constant`` set to ``places`` for each run."""
    taps, head, _ = _setup()
    saved = getattr(_search, constant)
    for seed in range(6):
        setattr(_search, constant, places)
        try:
            result = gs.run_search(taps, head, DeepFitness(len(taps)),
                                   _setup(seed=seed, generations=100, max_evaluations=40)[2])
        finally:
            setattr(_search, constant, saved)
        yield result


def _taps_of(bits: str):
    return tuple(i + 1 for i, c in enumerate(bits) if c == "1")
