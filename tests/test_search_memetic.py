"""The search's optional parts: a local step around the front each generation
(``local_search``) and the first population's rule (``initial``); each keeps determinism,
resume and no-duplicate guarantees."""

from __future__ import annotations

import dataclasses
import pickle
import random

import pytest

import graftsearch as gs
from graftsearch.fitness._evaluation import Evaluation
from graftsearch.optimize._variation import flip_neighbours
from search_problems import InfoFitness, make_taps, objective_limit, stop_then_resume, strip_time

CHANNELS = [8, 8, 16, 16, 32, 32, 64, 64, 96, 128]


class PairFitness(gs.Fitness):
    """P = 1 when taps 2 and 4 are both selected, else 0.5 per one of them held (0 for none)."""

    name = "pair"

    def evaluate(self, selection):
        held = len({2, 4} & set(selection))
        return Evaluation(val_accuracy=1.0 if held == 2 else 0.5 * held)

    def key(self) -> str:
        return "pair"


def test_flip_neighbours_in_source_order_skipping_what_is_known():
    rng = random.Random(0)
    got = flip_neighbours(["100", "011"], 10, rng, skip=lambda b: b == "110")
    # every one-bit neighbour of "100" but the skipped "110" and the empty "000", then "011"'s
    assert got[:1] == ["101"] and set(got[1:]) == {"111", "001", "010"} and len(got) == 4
    assert flip_neighbours(["100", "011"], 2, random.Random(0), skip=lambda b: False) == \
        flip_neighbours(["100", "011"], 2, random.Random(0), skip=lambda b: False)
    assert len(flip_neighbours(["100"], 1, rng, skip=lambda b: False)) == 1


def test_the_local_step_evaluates_the_missing_neighbour_next():
    """Nothing is feasible among the single taps; the two closest (taps 2 and 4) are one flip
    from the only feasible pair, which the local step evaluates in generation 1."""
    taps = make_taps([8] * 6)
    head = gs.HeadSpec(num_classes=3, hidden=4)
    settings = gs.SearchSettings(p_min=1.0, population=6, generations=1, seed=0, local_search=6,
                                 initial="singles")
    result = gs.run_search(taps, head, PairFitness(), settings)
    first = [r for r in result.records if r.generation == 0]
    assert sorted(r.taps for r in first) == [(i,) for i in range(1, 7)]
    found = next(r for r in result.records if r.taps == (2, 4))
    assert found.generation == 1 and result.feasible and result.best.taps == (2, 4)
    # the six places of generation 1 went to neighbours of tap 2 (the first least violating)
    second = [r.taps for r in result.records if r.generation == 1]
    assert all(2 in t and len(t) == 2 for t in second[:5])


def _settings(**kw):
    return gs.SearchSettings(**(dict(p_min=0.5, population=12, generations=6, seed=4,
                                     local_search=4) | kw))


class Stop(Exception):
    pass


def test_with_the_local_step_a_resumed_run_equals_an_uninterrupted_one(tmp_path):
    taps, head = make_taps(CHANNELS), gs.HeadSpec(num_classes=5, hidden=16)
    full = gs.run_search(taps, head, InfoFitness(len(taps)), _settings(), run_dir=tmp_path / "a")
    again = gs.run_search(taps, head, InfoFitness(len(taps)), _settings(), run_dir=tmp_path / "c")
    assert strip_time(tmp_path / "a" / "evaluations.csv") == strip_time(tmp_path / "c" / "evaluations.csv")

    def stop(p):
        if p.stage == "search" and p.info["generation"] == 3:
            raise Stop

    with pytest.raises(Stop):
        gs.run_search(taps, head, InfoFitness(len(taps)), _settings(), run_dir=tmp_path / "b",
                      progress=stop)
    assert pickle.loads((tmp_path / "b" / "checkpoint.pkl").read_bytes())["generation"] == 3
    resumed = gs.run_search(taps, head, InfoFitness(len(taps)), _settings(), run_dir=tmp_path / "b")
    for name in ("evaluations.csv", "pareto.csv"):
        assert strip_time(tmp_path / "a" / name) == strip_time(tmp_path / "b" / name)
    assert resumed.best == full.best
    bits = [r.bits for r in full.records]
    assert len(bits) == len(set(bits))  # never the same selection twice
    # the local step changes what is searched (else this test would not test it)
    plain = gs.run_search(taps, head, InfoFitness(len(taps)), _settings(local_search=0))
    assert [r.bits for r in plain.records] != bits


def test_the_local_step_stays_within_size_max():
    taps, head = make_taps(CHANNELS), gs.HeadSpec(num_classes=5, hidden=16)
    cap = taps.cost([6], head).params
    result = gs.run_search(taps, head, InfoFitness(len(taps)), gs.SearchSettings(
        objective="max-accuracy", size_max=cap, population=12, generations=5, seed=1,
        local_search=6))
    local = [r for r in result.records if r.generation > 0]
    assert local and all(r.params <= cap for r in result.records if r.trained)


def test_a_random_first_population_holds_no_rule_of_singles():
    taps, head = make_taps(CHANNELS), gs.HeadSpec(num_classes=5, hidden=16)
    singles = gs.run_search(taps, head, InfoFitness(len(taps)), _settings(generations=0, initial="singles"))
    random_start = gs.run_search(taps, head, InfoFitness(len(taps)), _settings(generations=0))
    assert [r.taps for r in singles.records[:10]] == [(i,) for i in range(1, 11)]
    assert sum(len(r.taps) == 1 for r in random_start.records) < 10
    assert len(random_start.records) == 12


class AddFitness(gs.Fitness):
    """P = the sum of fixed weights of the taps held, capped at 1: tap 3 first, then 5, then 1
    (the rest add little), so forward selection's path is known."""

    name = "add"
    weights = {1: 0.2, 2: 0.01, 3: 0.5, 4: 0.02, 5: 0.3, 6: 0.03}

    def evaluate(self, selection):
        return Evaluation(val_accuracy=min(1.0, sum(self.weights[i] for i in selection)))

    def key(self) -> str:
        return "add"


def test_a_greedy_start_follows_forward_selection_up_to_twice_the_population():
    taps, head = make_taps([8] * 6), gs.HeadSpec(num_classes=3, hidden=4)
    settings = gs.SearchSettings(p_min=0.5, population=8, generations=0, seed=0, initial="greedy")
    asked = [r.taps for r in gs.run_search(taps, head, AddFitness(), settings).records]
    # every single tap, every pair with tap 3 (the best single), every triple with 3 and 5,
    # then the first quadruple: the cap of 2 x population = 16 is reached within that step
    assert asked[:6] == [(i,) for i in range(1, 7)]
    assert asked[6:11] == [(1, 3), (2, 3), (3, 4), (3, 5), (3, 6)]
    assert asked[11:15] == [(1, 3, 5), (2, 3, 5), (3, 4, 5), (3, 5, 6)]
    assert asked[15:] == [(1, 2, 3, 5)]


def test_a_greedy_start_stops_where_p_stops_rising_and_fills_the_population_at_random():
    taps, head = make_taps([8] * 6), gs.HeadSpec(num_classes=3, hidden=4)
    settings = gs.SearchSettings(p_min=0.5, population=32, generations=0, seed=2, initial="greedy")
    asked = [r.taps for r in gs.run_search(taps, head, AddFitness(), settings).records]
    # 1,3,5 reaches P = 1 (the cap): no quadruple raises it, so the path ends after them
    path = [(i,) for i in range(1, 7)] + [(i, 3) if i < 3 else (3, i) for i in (1, 2, 4, 5, 6)] + \
        [tuple(sorted((3, 5, i))) for i in (1, 2, 4, 6)] + [tuple(sorted((1, 3, 5, i))) for i in (2, 4, 6)]
    assert asked[:18] == path
    assert len(asked) == 32 and len(set(asked)) == 32  # the fill repeats nothing


def test_a_greedy_start_stays_within_size_max_and_resumes_exactly(tmp_path):
    taps, head = make_taps(CHANNELS), gs.HeadSpec(num_classes=5, hidden=16)
    for objective in ("min-size", "max-accuracy"):
        settings = _settings(initial="greedy", **objective_limit(taps, head, objective))
        full = gs.run_search(taps, head, InfoFitness(len(taps)), settings, run_dir=tmp_path / objective / "a")
        stop_then_resume(taps, head, lambda: InfoFitness(len(taps)), settings, tmp_path / objective / "b", 0)
        for name in ("evaluations.csv", "pareto.csv"):
            assert strip_time(tmp_path / objective / "a" / name) == strip_time(tmp_path / objective / "b" / name)
        # the path's first step: every single tap within size_max (tap 8 alone is the cap), all
        # trained, in tap order
        singles = 10 if objective == "min-size" else 8
        first = full.records[:singles]
        assert [r.taps for r in first] == [(i,) for i in range(1, singles + 1)]
        assert all(r.trained for r in first)


def test_a_greedy_start_stops_at_the_evaluation_budget():
    taps, head = make_taps([8] * 6), gs.HeadSpec(num_classes=3, hidden=4)
    settings = gs.SearchSettings(p_min=0.5, population=8, generations=3, seed=0, initial="greedy",
                                 max_evaluations=9)
    result = gs.run_search(taps, head, AddFitness(), settings)
    assert [r.taps for r in result.records] == [(i,) for i in range(1, 7)] + [(1, 3), (2, 3), (3, 4)]
    assert result.stopped_by == "max_evaluations"


class SlowAddFitness(AddFitness):
    def evaluate(self, selection):
        import time

        time.sleep(0.02)  # the six single taps take >= 0.12 s
        return super().evaluate(selection)


def test_a_greedy_start_stops_after_the_step_where_max_seconds_runs_out():
    taps, head = make_taps([8] * 6), gs.HeadSpec(num_classes=3, hidden=4)
    settings = gs.SearchSettings(p_min=0.5, population=8, generations=3, seed=0, initial="greedy",
                                 max_seconds=0.05)
    result = gs.run_search(taps, head, SlowAddFitness(), settings)
    # the first step runs whole (a population of the six single taps); no second step, no fill
    assert [r.taps for r in result.records] == [(i,) for i in range(1, 7)]
    assert result.stopped_by == "max_seconds"


@pytest.mark.parametrize("field, value, match", [
    ("local_search", -1, r"'local_search' parameter must be an integer >= 0"),
    ("initial", "forward", r"'initial' parameter must be one of 'singles', 'random', 'greedy'"),
])
def test_bad_settings_of_the_optional_parts(field, value, match):
    with pytest.raises(gs.ParameterError, match=match):
        _settings(**{field: value})


@pytest.mark.parametrize("objective", ["min-size", "max-accuracy"])
def test_a_resumed_run_with_a_wide_local_step_equals_an_uninterrupted_one(tmp_path, objective):
    """local_search as large as the population: right after a resume the step must take its
    sources from the feasible front, as the uninterrupted run does (not from the closest)."""
    taps, head = make_taps(CHANNELS), gs.HeadSpec(num_classes=5, hidden=16)
    settings = _settings(local_search=12, **objective_limit(taps, head, objective))
    gs.run_search(taps, head, InfoFitness(len(taps)), settings, run_dir=tmp_path / "a")
    stop_then_resume(taps, head, lambda: InfoFitness(len(taps)), settings, tmp_path / "b", 2)
    for name in ("evaluations.csv", "pareto.csv"):
        assert strip_time(tmp_path / "a" / name) == strip_time(tmp_path / "b" / name)


def test_a_run_directory_from_before_these_settings_still_resumes(tmp_path):
    import json

    from graftsearch.pipeline._pipeline import _check_run_dir

    # what such a run ran with: the values BEFORE_ADDED names, not today's defaults
    settings = gs.RunSettings(data="x", donor="efficientnet_lite0", p_min=0.5, initial="singles",
                              local_search=0, screen=0, proxy_folds=1, proxy_probe="lda")
    (tmp_path / "checkpoint.pkl").write_bytes(b"")
    stored = {k: v for k, v in settings.as_dict().items()
              if k not in ("initial", "local_search", "screen", "proxy_folds", "proxy_probe")}
    (tmp_path / "config.json").write_text(json.dumps({"settings": stored}))
    _check_run_dir(tmp_path, settings)  # missing settings read as the values it ran with
    with pytest.raises(gs.errors.SearchError, match=r"settings differ: proxy_probe \('lda' -> 'logistic'\)"):
        _check_run_dir(tmp_path, dataclasses.replace(settings, proxy_probe="logistic"))
    with pytest.raises(gs.errors.SearchError, match=r"settings differ: local_search \(0 -> 4\)"):
        _check_run_dir(tmp_path, dataclasses.replace(settings, local_search=4))
    # today's defaults are not what it ran with: `graftsearch resume` continues it as it was
    with pytest.raises(gs.errors.SearchError,
                       match=r"initial \('singles' -> 'random'\), "
                             r"proxy_probe \('lda' -> 'logistic'\), screen \(0 -> 8\)"
                             r".*graftsearch resume"):
        _check_run_dir(tmp_path, gs.RunSettings(data="x", donor="efficientnet_lite0", p_min=0.5))
