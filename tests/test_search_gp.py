"""The GP screen (``surrogate="gp"``): the Gaussian process against the textbook formulas, the
hypervolume gain against the hypervolume itself, the order of picks, how many places the
model takes, the candidates beside the bred pool, and the window with a resume."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import graftsearch as gs
from graftsearch.optimize import _surrogate as S
from graftsearch.optimize._hypervolume import hypervolume_2d
from graftsearch.optimize._variation import flips
from search_problems import (InfoFitness, assert_latest_windows, make_taps, objective_limit, spy_on_windows,
                             stop_then_resume, strip_time)

CHANNELS = [8, 8, 16, 16, 32, 32, 64, 64, 96, 128]


def _data(n=7, m=30, seed=0):
    rng = np.random.default_rng(seed)
    combos = ["".join(c) for c in itertools.product("01", repeat=n) if "1" in c]
    bits = [combos[i] for i in rng.choice(len(combos), m, replace=False)]
    w = rng.normal(size=n)
    p = np.array([0.6 + 0.04 * sum(w[i] for i, c in enumerate(b) if c == "1") for b in bits])
    return bits, np.clip(p + rng.normal(scale=0.01, size=m), 0, 1)


def _kernel(a, b, length):
    x = np.array([[c == "1" for c in s] for s in a], float)
    z = np.array([[c == "1" for c in s] for s in b], float)
    hamming = np.abs(x[:, None, :] - z[None, :, :]).sum(axis=2)
    return np.exp(-hamming / length)


def test_the_gp_equals_the_textbook_formulas_and_its_leave_one_out_error_equals_refitting():
    bits, p = _data()
    model = S.GPSurrogate(bits, p)
    y0 = p.mean()
    errors = {}
    for length in S.GP_LENGTHS:
        for noise in S.GP_NOISES:
            k = _kernel(bits, bits, length) + noise * np.eye(len(bits))
            res = []
            for i in range(len(bits)):  # refit without point i (the centring of all kept)
                keep = np.arange(len(bits)) != i
                weights = np.linalg.solve(k[np.ix_(keep, keep)], p[keep] - y0)
                res.append(p[i] - (y0 + k[i, keep] @ weights))
            errors[(length, noise)] = np.mean(np.square(res))
    chosen = min(errors, key=errors.get)
    assert (model.length, model.noise) == chosen
    assert model.loo_mse == pytest.approx(errors[chosen], rel=1e-8)
    # posterior mean and variance at new points, the prior variance by maximum likelihood
    length, noise = chosen
    k = _kernel(bits, bits, length) + noise * np.eye(len(bits))
    new = ["1111111", "0000001", bits[3]]
    cross = _kernel(new, bits, length)
    variance = (p - y0) @ np.linalg.solve(k, p - y0) / len(bits)
    mean, sd = model.predict(new)
    np.testing.assert_allclose(mean, y0 + cross @ np.linalg.solve(k, p - y0), atol=1e-10)
    direct = (1 + noise - np.einsum("ij,ji->i", cross, np.linalg.solve(k, cross.T))) * variance
    np.testing.assert_allclose(sd, np.sqrt(direct), atol=1e-10)
    assert sd[2] < sd[0]  # an evaluated selection is known better than a far one


def test_the_gp_needs_a_few_evaluations():
    bits, p = _data(m=S.MIN_RECORDS - 1)
    with pytest.raises(ValueError, match="at least"):
        S.GPSurrogate(bits, p)


def _hv(points, reference):
    """graftsearch's hypervolume of (size, P) points with the box up to reference = (size, P)."""
    x_ref, p_ref = reference
    return hypervolume_2d([(s, 1.0 - q) for s, q in points], (x_ref, 1.0 - p_ref))


@pytest.mark.parametrize("seed", range(5))
def test_the_gain_is_the_hypervolume_a_candidate_adds(seed):
    rng = np.random.default_rng(seed)
    front = [(float(s), float(q)) for s, q in zip(rng.uniform(1, 10, 6), rng.uniform(0.3, 0.9, 6))]
    sizes, p = rng.uniform(0, 11, 40), rng.uniform(0.2, 1.0, 40)
    reference = (10.5, 0.4)
    gain = S.hv_gain(front, sizes, p, reference)
    base = _hv(front, reference)
    expected = [_hv(front + [(s, q)], reference) - base for s, q in zip(sizes, p)]
    np.testing.assert_allclose(gain, expected, atol=1e-12)
    assert (gain > 0).any() and (gain == 0).any()  # both kinds occur (else this tests little)


def test_the_gain_of_an_empty_front_is_the_candidates_own_box():
    gain = S.hv_gain([], np.array([2.0, 5.0, 12.0]), np.array([0.9, 0.3, 0.9]), (10.0, 0.5))
    np.testing.assert_allclose(gain, [8.0 * 0.4, 0.0, 0.0])


def test_picks_go_by_gain_and_a_pick_covers_what_it_is_expected_to():
    front = [(4.0, 0.6)]
    reference = (10.0, 0.5)
    sizes = [2.0, 2.0, 6.0, 3.0]
    mean = [0.8, 0.8, 0.7, 0.55]
    upper = [0.8, 0.8, 0.7, 0.55]
    # the first two are the same point: once one is taken (at its mean), the other adds
    # nothing; the third adds a little above the first's level; the fourth nothing
    assert S.gain_order(front, sizes, mean, [upper], reference, 4) == [0]
    assert S.gain_order(front, sizes, mean, [upper], reference, 1) == [0]
    # optimism in turn: the second pick is judged by the second list
    second = [0.8, 0.8, 0.95, 0.55]
    assert S.gain_order(front, sizes, mean, [upper, second], reference, 4) == [0, 2]
    # the front takes a pick in at its mean, not its optimistic P: (2.5, 0.8) still adds
    # above the first pick's mean 0.6, though its optimistic 0.9 would dominate it
    assert S.gain_order(front, [2.0, 2.5], [0.6, 0.8], [[0.9, 0.8]], reference, 2) == [0, 1]


def test_the_model_takes_every_place_for_max_accuracy_and_a_growing_share_for_min_size():
    assert S.model_places(24, "max-accuracy", 0) == 24
    assert S.model_places(24, "min-size", 0) == 12
    assert S.model_places(24, "min-size", S.GP_RAMP // 2) == 18
    assert S.model_places(24, "min-size", S.GP_RAMP) == 24
    assert S.model_places(24, "min-size", 10 * S.GP_RAMP) == 24
    assert S.model_places(1, "min-size", 0) == 1


def test_flips_are_the_neighbours_within_one_or_two_bit_flips():
    got = flips("0110", 2)
    assert got[:4] == ["1110", "0010", "0100", "0111"]  # one flip, in bit order
    expected = {"".join(c) for c in itertools.product("01", repeat=4)
                if 1 <= sum(a != b for a, b in zip(c, "0110")) <= 2 and "1" in c}
    assert len(got) == len(set(got)) == len(expected) and set(got) == expected
    assert "0000" not in flips("0100", 1) and flips("0100", 0) == []


def _settings(**kw):
    return gs.SearchSettings(**(dict(p_min=0.5, population=12, generations=6, seed=4, screen=4,
                                     surrogate="gp") | kw))


@pytest.mark.parametrize("objective", ["min-size", "max-accuracy"])
def test_the_candidates_are_the_bred_pool_and_the_fronts_neighbours(objective, monkeypatch):
    """Every selection within two flips of the front is a candidate unless it was evaluated by
    the end of that generation (as a population member, a local-step pick or before); none is
    evaluated already or (max-accuracy) over size_max."""
    from graftsearch.optimize import _search

    taps, head = make_taps(CHANNELS), gs.HeadSpec(num_classes=5, hidden=16)
    settings = _settings(**objective_limit(taps, head, objective))
    calls = []  # (generation, front bits, candidates)
    offspring, predict = _search._Run._gp_offspring, S.GPSurrogate.predict

    def spy_offspring(self, *args, **kw):
        front = self._front if self._front is not None else []
        calls.append([self.generation + 1, [r.bits for r in front], None,
                      set(self.archive.keys())])
        return offspring(self, *args, **kw)

    def spy_predict(self, bits):
        calls[-1][2] = list(bits)
        return predict(self, bits)

    monkeypatch.setattr(_search._Run, "_gp_offspring", spy_offspring)
    monkeypatch.setattr(_search.GPSurrogate, "predict", spy_predict)
    result = gs.run_search(taps, head, InfoFitness(len(taps)), settings)
    assert len(calls) >= 3
    by_generation = {}
    for r in result.records:
        by_generation.setdefault(r.generation, set()).add(r.bits)
    neighbours_offered = 0
    for generation, front, candidates, before in calls:
        assert front and len(candidates) == len(set(candidates))
        assert not set(candidates) & before
        upto = set().union(*(v for g, v in by_generation.items() if g <= generation))
        near = {b for f in front for b in flips(f, 2)}
        if objective == "max-accuracy":
            near = {b for b in near
                    if taps.cost(tuple(i + 1 for i, c in enumerate(b) if c == "1"), head).params
                    <= settings.size_max}
        assert near - set(candidates) <= upto
        neighbours_offered += len(near & set(candidates))
    assert neighbours_offered > 0


def test_the_gp_sees_the_latest_evaluations_only_and_a_resume_still_equals_the_run(tmp_path, monkeypatch):
    taps, head = make_taps(CHANNELS), gs.HeadSpec(num_classes=5, hidden=16)
    settings = _settings(generations=8)
    wide = gs.run_search(taps, head, InfoFitness(len(taps)), settings)
    seen = spy_on_windows(monkeypatch, "GP_WINDOW", "GPSurrogate", 20)
    narrow = gs.run_search(taps, head, InfoFitness(len(taps)), settings, run_dir=tmp_path / "a")
    order = [r.bits for r in narrow.records]
    # the 20 latest records before each generation's screen, in order
    assert_latest_windows(seen, narrow.records, 20)
    # ...each ending at the last trained record of an earlier generation, a new one each time
    last = {}
    for r in narrow.records:
        if r.trained:
            last[r.generation] = r.bits
    ends = [bits[-1] for bits in seen]
    assert set(ends) <= set(last.values()) and len(set(ends)) == len(ends)
    assert [r.bits for r in wide.records] != order  # the window changes what is searched
    stop_then_resume(taps, head, lambda: InfoFitness(len(taps)), settings, tmp_path / "b", 3)
    for name in ("evaluations.csv", "pareto.csv"):
        assert strip_time(tmp_path / "a" / name) == strip_time(tmp_path / "b" / name)


def test_the_gp_screen_finds_the_best_pick_sooner_than_breeding_alone():
    """On the smooth hand-made problem, with a budget of 60 fitness calls, the GP screen reaches
    the exhaustive best min-size pick in more of 6 seeds than the unscreened search."""
    taps, head = make_taps(CHANNELS), gs.HeadSpec(num_classes=5, hidden=16)
    fitness = InfoFitness(len(taps))
    combos = [tuple(i + 1 for i in range(len(taps)) if m >> i & 1) for m in range(1, 2 ** len(taps))]
    p_min = 0.85
    feasible = [(taps.cost(c, head).params, c) for c in combos
                if fitness.evaluate(c).val_accuracy >= p_min]
    best = min(feasible)[1]
    found = {}
    for screen in (0, 8):
        found[screen] = sum(
            any(r.taps == best for r in gs.run_search(
                taps, head, InfoFitness(len(taps)),
                _settings(p_min=p_min, screen=screen, seed=seed, generations=100,
                          max_evaluations=60)).records)
            for seed in range(6))
    assert found[8] > found[0]


def test_the_neighbour_subsample_keeps_runs_equal_across_n_jobs_and_resume(tmp_path, monkeypatch):
    from graftsearch.optimize import _search

    # 5 of the front's neighbours: the subsample draws from the search's RNG every generation
    monkeypatch.setattr(_search, "GP_NEAR_MAX", 5)
    taps, head = make_taps(CHANNELS), gs.HeadSpec(num_classes=5, hidden=16)
    settings = _settings(generations=5)
    one = gs.run_search(taps, head, InfoFitness(len(taps)), settings, run_dir=tmp_path / "a")
    two = gs.run_search(taps, head, InfoFitness(len(taps)),
                        gs.SearchSettings(**(settings.as_dict() | {"n_jobs": 2})))
    assert [r.bits for r in one.records] == [r.bits for r in two.records]
    monkeypatch.setattr(_search, "GP_NEAR_MAX", 2048)
    wide = gs.run_search(taps, head, InfoFitness(len(taps)), settings)
    assert [r.bits for r in wide.records] != [r.bits for r in one.records]  # it did subsample
    monkeypatch.setattr(_search, "GP_NEAR_MAX", 5)
    stop_then_resume(taps, head, lambda: InfoFitness(len(taps)), settings, tmp_path / "b", 2)
    for name in ("evaluations.csv", "pareto.csv"):
        assert strip_time(tmp_path / "a" / name) == strip_time(tmp_path / "b" / name)
