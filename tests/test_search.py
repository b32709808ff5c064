"""The NSGA-II search through the Python API: fronts, objectives, files, limits, errors."""

import csv
import math
import random

import numpy as np
import pandas as pd
import pytest

import graftsearch as gs
from graftsearch.taps._selection import to_bits
from graftsearch.optimize._archive import Archive
from graftsearch.optimize._parallel import Evaluator
from graftsearch.optimize._runfiles import COLUMNS, CONVERGENCE_COLUMNS
from graftsearch.optimize._settings import parse_size
from search_problems import (CentroidFitness, CountingFitness, FlakyFitness, InfoFitness,
                             exhaustive, exhaustive_front, generated_features, make_taps,
                             strip_time)

CHANNELS = [8, 8, 16, 16, 32, 32, 64, 64, 96, 128]


@pytest.fixture
def problem():
    taps = make_taps(CHANNELS)
    return taps, gs.HeadSpec(num_classes=5, hidden=16), InfoFitness(len(taps))


def _front(result, metric="params"):
    return sorted({(float(s), float(p)) for s, p in zip(result.pareto[metric], result.pareto.val_accuracy)})


# --- acceptance 2: a synthetic problem with a known front ------------------------------------

def test_search_finds_the_known_front(problem):
    taps, head, fit = problem
    settings = gs.SearchSettings(p_min=0.5, population=32, generations=20, seed=0)
    result = gs.run_search(taps, head, fit, settings)
    truth = exhaustive_front(exhaustive(taps, head, fit, settings))
    assert result.feasible
    assert _front(result) == truth
    assert result.evaluations < 2 ** len(taps) - 1  # found without trying everything
    smallest = min(truth)
    assert (result.best.params, result.best.val_accuracy) == smallest
    assert result.pareto["rank"].tolist() == list(range(1, len(truth) + 1))


def test_max_accuracy_front_respects_size_max(problem):
    taps, head, fit = problem
    limit = taps.cost((1, 2, 3, 4, 5, 6, 7), head).params
    settings = gs.SearchSettings(objective="max-accuracy", size_max=limit, population=32,
                                 generations=40, seed=0)
    result = gs.run_search(taps, head, fit, settings)
    truth = exhaustive_front(exhaustive(taps, head, fit, settings))
    assert _front(result) == truth
    assert result.best.val_accuracy == max(p for _, p in truth)
    assert result.best.params <= limit
    over = result.archive[result.archive.params > limit]
    assert len(over) and over.val_accuracy.isna().all() and not over.feasible.any()
    assert np.allclose(over.violation, (over.params - limit) / limit)


# --- acceptance 6: both objectives end to end on a tiny generated problem --------------------

@pytest.mark.parametrize("objective", ["min-size", "max-accuracy"])
def test_both_objectives_end_to_end(tiny, tmp_path, objective):
    taps = tiny.taps()
    head = gs.HeadSpec(num_classes=3, hidden=8)
    features = generated_features(taps, informative=[3, 5], n_classes=3, seed=1, signal=0.8)
    calls = []

    class Counting(CentroidFitness):
        def evaluate(self, selection):
            calls.append(selection)
            return super().evaluate(selection)

    fitness = Counting(features)
    if objective == "min-size":
        settings = gs.SearchSettings(p_min=0.8, population=8, generations=10, seed=3)
    else:
        settings = gs.SearchSettings(objective="max-accuracy", size_metric="size_mib",
                                     size_max=f"{taps.cost((1, 2, 3, 4, 5), head).params * 4}B",
                                     population=8, generations=10, seed=3)
    progress = []
    result = gs.run_search(taps, head, fitness, settings, run_dir=tmp_path / "run",
                           progress=progress.append)
    assert result.feasible, result.message

    truth = exhaustive(taps, head, CentroidFitness(features), settings)
    feasible = [(b, s, p) for b, s, p, v in truth if v == 0.0]
    if objective == "min-size":
        best = min(feasible, key=lambda t: (t[1], -t[2], t[0]))
    else:
        best = min(feasible, key=lambda t: (-t[2], t[1], t[0]))
    assert result.best.bits == best[0]
    assert result.best.val_accuracy == best[2]

    # no selection trained twice; size-rejected selections never trained
    assert len(calls) == len(set(calls)) == result.evaluations
    untrained = result.archive[result.archive.val_accuracy.isna()]
    assert len(untrained) > 0 if objective == "max-accuracy" else len(untrained) == 0
    assert set(untrained.bits).isdisjoint({to_bits(c, len(taps)) for c in calls})

    run = tmp_path / "run"
    for name in ("evaluations.csv", "pareto.csv", "convergence.csv", "taps.csv", "checkpoint.pkl"):
        assert (run / name).is_file()
    header = next(csv.reader(open(run / "evaluations.csv")))
    assert tuple(header) == COLUMNS
    assert tuple(next(csv.reader(open(run / "pareto.csv")))) == COLUMNS + ("rank",)
    assert tuple(next(csv.reader(open(run / "convergence.csv")))) == CONVERGENCE_COLUMNS
    evals = pd.read_csv(run / "evaluations.csv", dtype={"bits": str, "taps": str})
    assert len(evals) == len(result.archive) == evals.bits.nunique()
    assert evals.taps.tolist() == result.archive.taps.tolist()
    pareto = pd.read_csv(run / "pareto.csv", dtype={"bits": str})
    assert pareto.bits.iloc[0] == result.best.bits and pareto.feasible.all()

    copy = result.to_csv(tmp_path / "copy")
    for name in ("evaluations.csv", "pareto.csv", "convergence.csv"):
        assert (copy / name).read_bytes() == (run / name).read_bytes()

    assert [p.info["generation"] for p in progress] == list(range(result.generations + 1))
    assert all(p.stage == "search" for p in progress)
    assert {"evaluations", "archive_hits", "hypervolume", "best"} <= set(progress[-1].info)
    hv = result.history.hypervolume.tolist()
    assert hv == sorted(hv) and hv[-1] > 0


# --- acceptance 5: an impossible p_min --------------------------------------------------------

def test_infeasible_p_min_gives_least_violating_and_a_message(tmp_path):
    taps = make_taps([4, 4, 8, 8, 8])
    head = gs.HeadSpec(num_classes=4, hidden=8)
    noise = generated_features(taps, informative=[], n_classes=4, seed=2)
    settings = gs.SearchSettings(p_min=0.999, population=8, generations=3, seed=0)
    result = gs.run_search(taps, head, CentroidFitness(noise), settings, run_dir=tmp_path)
    assert not result.feasible
    top = result.archive.val_accuracy.max()
    assert result.best.val_accuracy == top and not result.best.feasible
    assert result.best.violation == pytest.approx(0.999 - top)
    assert "No selection reached p_min = 0.999" in result.message
    assert f"{0.999 - top:.4f} short" in result.message
    v = result.pareto.violation.tolist()
    assert 0 < len(v) <= 10 and v == sorted(v) and not result.pareto.feasible.any()
    written = pd.read_csv(tmp_path / "pareto.csv", dtype={"bits": str})
    assert written.bits.tolist() == result.pareto.bits.tolist()


# --- memoisation (the fitness issue's acceptance 4, implemented by the archive) ---------------

def test_archive_evaluates_each_selection_once(problem):
    taps, head, _ = problem
    fit = CountingFitness(len(taps))
    settings = gs.SearchSettings(p_min=0.5)
    archive = Archive(taps, head, settings)
    with Evaluator(fit) as run:
        first = archive.evaluate(["1000000000", "1000000000", "0100000000"], run, generation=0)
        again = archive.evaluate(["1000000000"], run, generation=1)
    assert fit.calls == [(1,), (2,)]
    assert [r.bits for r in first] == ["1000000000", "0100000000"] and again == []
    assert archive.hits == 1 and archive["1000000000"].generation == 0


def test_sizes_of_unevaluated_candidates_are_exact_and_their_memo_is_bounded(problem, monkeypatch):
    from graftsearch.optimize import _archive

    taps, head, _ = problem
    archive = Archive(taps, head, gs.SearchSettings(objective="max-accuracy", size_max=10**9))
    monkeypatch.setattr(_archive, "SIZE_MEMO", 3)
    picks = ["1000000000", "0110000000", "0000000011", "1111111111"]
    for bits in picks + picks:  # the second pass reads the memo (until it is cleared)
        expected = taps.cost([i + 1 for i, c in enumerate(bits) if c == "1"], head).params
        assert archive.size_of(bits) == float(expected)
        assert len(archive._sizes) <= 3


def test_search_never_trains_a_selection_twice(problem):
    taps, head, _ = problem
    fit = CountingFitness(len(taps))
    result = gs.run_search(taps, head, fit, gs.SearchSettings(p_min=0.5, population=16, generations=20))
    assert len(fit.calls) == len(set(fit.calls)) == result.evaluations == len(result.archive)


# --- failures, limits, determinism -------------------------------------------------------------

def test_failed_evaluations_are_recorded_not_fatal(problem):
    taps, head, _ = problem
    # initial="singles": the first population holds taps "3" alone, whose P is NaN
    result = gs.run_search(taps, head, FlakyFitness(len(taps)),
                           gs.SearchSettings(p_min=0.3, population=16, generations=5,
                                             initial="singles"))
    failed = result.archive[result.archive.bits.str[1] == "1"]
    assert len(failed) and (failed.violation == math.inf).all() and not failed.feasible.any()
    assert failed.val_accuracy.isna().all()
    assert not result.pareto.bits.str[1].eq("1").any()
    assert "out of memory" in result.failures.error.iloc[0]
    nan_p = result.failures[result.failures.taps == "3"]
    assert len(nan_p) == 1 and "val_accuracy=nan" in nan_p.error.iloc[0]


def test_a_fail_fast_fitness_error_stops_the_search(problem):
    taps, head, _ = problem

    class Strict(InfoFitness):
        def evaluate(self, selection):
            raise gs.FitnessError(f"selection {selection}: the fitness returned 'abc'")

    with pytest.raises(gs.FitnessError, match="returned 'abc'"):
        gs.run_search(taps, head, Strict(len(taps)), gs.SearchSettings(p_min=0.5))


def test_evaluation_budget_is_exact(problem):
    taps, head, _ = problem
    fit = CountingFitness(len(taps))
    result = gs.run_search(taps, head, fit, gs.SearchSettings(p_min=0.5, population=16,
                                                              generations=100, max_evaluations=50))
    assert result.evaluations == 50 == len(fit.calls)
    assert result.stopped_by == "max_evaluations"


def test_stagnation_and_exhaustion_stop_the_search(problem):
    taps, head, fit = problem
    stalled = gs.run_search(taps, head, fit, gs.SearchSettings(p_min=0.5, population=16,
                                                              generations=500, stagnation=3))
    assert stalled.stopped_by == "stagnation" and stalled.generations < 500
    hv = stalled.history.hypervolume.tolist()
    assert hv[-1] == hv[-4] and hv[-4] > hv[-5]
    small = make_taps([4, 8, 16])
    everything = gs.run_search(small, gs.HeadSpec(num_classes=2, hidden=0), InfoFitness(3),
                               gs.SearchSettings(p_min=0.1, population=4, generations=50))
    assert everything.stopped_by == "exhausted" and len(everything.archive) == 7


def test_wall_clock_limit(problem):
    _, head, _ = problem
    taps = make_taps([8] * 20)  # a space far too large to exhaust in the time allowed
    result = gs.run_search(taps, head, InfoFitness(20), gs.SearchSettings(
        p_min=0.5, generations=10**6, max_seconds=0.3))
    assert result.stopped_by == "max_seconds"


def test_same_seed_same_files_other_seed_other_search(problem, tmp_path):
    taps, head, fit = problem
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        gs.run_search(taps, head, fit, gs.SearchSettings(p_min=0.5, population=12, generations=6,
                                                         seed=seed), run_dir=tmp_path / name)
    for f in ("evaluations.csv", "pareto.csv"):
        assert strip_time(tmp_path / "a" / f) == strip_time(tmp_path / "b" / f)
    assert strip_time(tmp_path / "a" / "evaluations.csv") != strip_time(tmp_path / "c" / "evaluations.csv")
    extras = pd.read_csv(tmp_path / "a" / "evaluations.csv").columns[len(COLUMNS):].tolist()
    assert extras == ["macro_f1"]


def test_the_callers_random_state_is_left_alone(problem):
    taps, head, fit = problem
    random.seed(11)
    expected = random.random()
    random.seed(11)
    gs.run_search(taps, head, fit, gs.SearchSettings(p_min=0.5, population=8, generations=2))
    assert random.random() == expected


def test_refine_reevaluates_the_front(problem, tmp_path):
    taps, head, fit = problem
    refiner = CountingFitness(len(taps), seed=9)
    result = gs.run_search(taps, head, fit, gs.SearchSettings(p_min=0.5, population=16, generations=8,
                                                              refine="front"),
                           refine_fitness=refiner, run_dir=tmp_path)
    refined = result.refined
    assert len(refiner.calls) == len(refined) and (tmp_path / "refined.csv").is_file()
    for bits, p in zip(result.pareto.bits, result.pareto.val_accuracy):
        selection = tuple(i + 1 for i, c in enumerate(bits) if c == "1")
        assert p == refiner.evaluate(selection).val_accuracy
    with_neighbours = gs.run_search(taps, head, fit, gs.SearchSettings(
        p_min=0.5, population=16, generations=8, refine="front+neighbours"),
        refine_fitness=CountingFitness(len(taps), seed=9))
    assert len(with_neighbours.refined) > len(refined)


# --- user errors -----------------------------------------------------------------------------

def test_refine_needs_a_refining_fitness(problem):
    taps, head, fit = problem
    with pytest.raises(gs.ParameterError, match="'refine_fitness' parameter must be a fitness"):
        gs.run_search(taps, head, fit, gs.SearchSettings(p_min=0.5, refine="front"))


def test_refining_fitness_needs_refine(problem):
    taps, head, fit = problem
    with pytest.raises(gs.ParameterError, match="'refine' parameter must be 'front'"):
        gs.run_search(taps, head, fit, gs.SearchSettings(p_min=0.5), refine_fitness=fit)


def test_fitness_without_evaluate(problem):
    taps, head, _ = problem
    with pytest.raises(gs.ParameterError, match="'fitness' parameter must be an object with evaluate"):
        gs.run_search(taps, head, lambda s: 0.5, gs.SearchSettings(p_min=0.5))


def test_size_max_below_the_smallest_graft(problem):
    taps, head, fit = problem
    with pytest.raises(gs.ParameterError, match=r"'size_max' parameter must be at least .*tap 1 alone"):
        gs.run_search(taps, head, fit, gs.SearchSettings(objective="max-accuracy", size_max=10))


def test_resume_false_refuses_an_existing_run(problem, tmp_path):
    taps, head, fit = problem
    settings = gs.SearchSettings(p_min=0.5, population=8, generations=1)
    gs.run_search(taps, head, fit, settings, run_dir=tmp_path)
    with pytest.raises(gs.SearchError, match="already holds a search"):
        gs.run_search(taps, head, fit, settings, run_dir=tmp_path, resume=False)


@pytest.mark.parametrize("text, metric, expected", [
    ("2M", "params", 2e6), ("1934665", "params", 1934665), ("500k", "params", 5e5),
    ("7.5MiB", "params", 7.5 * 2**20 / 4), ("7.5MB", "size_mib", 7.5), (7.38, "size_mib", 7.38),
    ("2M", "size_mib", 2e6 * 4 / 2**20), ("150M", "macs", 1.5e8), (1934665, "params", 1934665),
])
def test_size_max_forms(text, metric, expected):
    assert parse_size(text, metric) == pytest.approx(expected)
    assert gs.SearchSettings(objective="max-accuracy", size_max=text, size_metric=metric).size_max == pytest.approx(expected)


def test_size_max_bytes_for_macs():
    with pytest.raises(gs.ParameterError, match="'size_max' parameter must be a number of MACs"):
        gs.SearchSettings(objective="max-accuracy", size_max="7.5MiB", size_metric="macs")


def test_size_max_garbage():
    with pytest.raises(gs.ParameterError, match=r"'size_max' parameter must be a positive size.*Got '2 apples'"):
        gs.SearchSettings(objective="max-accuracy", size_max="2 apples")


def test_size_max_missing():
    with pytest.raises(gs.ParameterError, match="'size_max' parameter must be a size when objective='max-accuracy'"):
        gs.SearchSettings(objective="max-accuracy")


def test_p_min_out_of_range():
    with pytest.raises(gs.ParameterError, match=r"The 'p_min' parameter must be a float in \(0, 1\]. Got 1.3 instead."):
        gs.SearchSettings(p_min=1.3)


def test_p_min_missing():
    with pytest.raises(gs.ParameterError, match="'p_min' parameter must be a float in .* when objective='min-size'"):
        gs.SearchSettings()


def test_objective_typo_gets_a_hint():
    with pytest.raises(gs.ParameterError, match="Did you mean 'min-size'"):
        gs.SearchSettings(objective="min_size", p_min=0.9)


def test_population_too_small():
    with pytest.raises(gs.ParameterError, match="'population' parameter must be an integer >= 4. Got 2"):
        gs.SearchSettings(p_min=0.9, population=2)


def test_probability_out_of_range():
    with pytest.raises(gs.ParameterError, match=r"'cx_prob' parameter must be a float in \[0, 1\]"):
        gs.SearchSettings(p_min=0.9, cx_prob=1.5)


def test_n_jobs_zero():
    with pytest.raises(gs.ParameterError, match="'n_jobs' parameter must be a positive integer or -1"):
        gs.SearchSettings(p_min=0.9, n_jobs=0)


def test_both_constraints():
    with pytest.raises(gs.ParameterError, match="'size_max' parameter must be None when objective='min-size'"):
        gs.SearchSettings(p_min=0.9, size_max="2M")
