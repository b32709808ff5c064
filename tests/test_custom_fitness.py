"""Custom fitness: the SelectionContext, return values, bad returns, and the example."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import graftsearch as gs
from graftsearch._utils.seeding import derive_seed
from test_proxies import make_source

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def source():
    return make_source()


def test_context_gives_the_selection_and_lazy_features(source):
    seen = {}

    def fn(ctx):
        seen["ctx"] = ctx
        assert ctx._features == {}  # nothing read before asked
        seen["x"] = ctx.features("train")
        seen["y"] = ctx.labels("val")
        return 0.5

    fitness = gs.fitness.CustomFitness(fn, source, seed=9)
    ev = fitness.evaluate((2, 4))
    assert ev == gs.Evaluation(val_accuracy=0.5, fidelity="fn")
    ctx = seen["ctx"]
    assert ctx.selection == (2, 4) and ctx.bits == "01010"
    assert [t.index for t in ctx.taps] == [2, 4] and ctx.taps[0] == source.taps.tap(2)
    assert ctx.classes == list(source.classes) and ctx.num_features == 6 + 3
    assert ctx.seed == derive_seed(9, "01010")
    assert ctx.splits == ("train", "val")
    assert seen["x"].dtype == np.float32 and seen["x"].shape == (150, 9)
    np.testing.assert_array_equal(seen["x"], gs.features.selection_features(source, "train", (2, 4)))
    np.testing.assert_array_equal(seen["y"], source.labels("val"))


def test_mapping_with_extras_and_val_loss(source):
    def fn(ctx):
        return {"performance": np.float32(0.75), "val_loss": 0.3, "recall_floor": 0.5, "n": len(ctx.selection)}

    ev = gs.make_fitness(fn, source, seed=0).evaluate((1, 2, 3))
    assert ev.val_accuracy == 0.75 and ev.val_loss == 0.3
    assert ev.extras == {"recall_floor": 0.5, "n": 3.0} and not ev.failed


def test_a_returned_standard_error_is_the_evaluations_and_a_csv_column(source, tmp_path):
    def fn(ctx):
        return {"val_accuracy": 0.5 + 0.1 * len(ctx.selection) / 5, "val_accuracy_se": 0.02}

    ev = gs.make_fitness(fn, source, seed=0).evaluate((1, 2))
    assert ev.val_accuracy_se == 0.02 and ev.extras == {}
    unknown = gs.make_fitness(lambda ctx: {"val_accuracy": 0.7, "val_accuracy_se": math.nan},
                              source, seed=0).evaluate((1,))
    assert not unknown.failed and math.isnan(unknown.val_accuracy_se)
    settings = gs.SearchSettings(objective="max-accuracy", size_max="1M", population=8,
                                 generations=1, seed=0)
    gs.run_search(source.taps, gs.HeadSpec(num_classes=3), gs.make_fitness(fn, source, seed=0),
                  settings, run_dir=tmp_path)
    header, first = (tmp_path / "evaluations.csv").read_text().splitlines()[:2]
    columns = header.split(",")
    assert columns[columns.index("val_loss") + 1] == "val_accuracy_se"
    assert first.split(",")[columns.index("val_accuracy_se")] == "0.02"


class Threshold(gs.FitnessFunction):
    name = "threshold"

    def __init__(self, level):
        self.level = level

    def __call__(self, ctx):
        return {"val_accuracy": self.level, "d": float(ctx.num_features)}


def test_fitness_function_subclass_and_key(source):
    fitness = gs.make_fitness(Threshold(0.25), source, seed=1)
    assert isinstance(fitness, gs.fitness.CustomFitness) and fitness.name == "threshold"
    assert fitness.evaluate((5,)) == gs.Evaluation(val_accuracy=0.25, extras={"d": 4.0}, fidelity="threshold")
    key = fitness.key()
    assert key == gs.make_fitness(Threshold(0.25), source, seed=1).key()
    assert '"level":0.25' in key and source.fingerprint in key
    assert key != gs.make_fitness(Threshold(0.5), source, seed=1).key()
    assert key != gs.make_fitness(Threshold(0.25), source, seed=2).key()


def test_deterministic_under_the_context_seed(source):
    def noisy(ctx):
        return float(np.random.default_rng(ctx.seed).uniform())

    a = gs.make_fitness(noisy, source, seed=3)
    first = [a.evaluate(s).val_accuracy for s in [(1,), (2,), (1, 2)]]
    b = gs.make_fitness(noisy, source, seed=3)
    assert [b.evaluate(s).val_accuracy for s in [(1, 2), (2,), (1,)]][::-1] == first


def _nan(ctx):
    return float("nan")


def _raises(ctx):
    raise ValueError("no features here")


def _text(ctx):
    return "high"


def _no_key(ctx):
    return {"accuracy": 0.9}


def _above_one(ctx):
    return 1.3


def _reserved(ctx):
    return {"val_accuracy": 0.9, "params": 12}


def _bad_extra(ctx):
    return {"val_accuracy": 0.9, "note": "good"}


def _reads_test(ctx):
    return float(ctx.labels("test").mean())


def _bool(ctx):
    return True


def _negative_se(ctx):
    return {"val_accuracy": 0.8, "val_accuracy_se": -0.01}


BAD = [
    (_nan, r"returned the performance nan"),
    (_raises, r"raised ValueError: no features here"),
    (_text, r"returned str 'high'"),
    (_no_key, r"returned the mapping \{'accuracy': 0\.9\} \(no 'val_accuracy' or 'performance' key\)"),
    (_above_one, r"returned the performance 1\.3"),
    (_reserved, r"returned a metric named 'params' \(a column graftsearch writes itself\)"),
    (_bad_extra, r"returned note=str 'good'"),
    (_reads_test, r"raised FitnessError: A fitness must not read the 'test' split"),
    (_bool, r"returned bool True"),
    (_negative_se, r"returned val_accuracy_se=float -0\.01 \(a standard error is a finite float "
                   r">= 0, or NaN when unknown\)"),
]


@pytest.mark.parametrize("fn, what", BAD, ids=[f.__name__ for f, _ in BAD])
def test_bad_returns_are_recorded_as_failed(source, fn, what):
    ev = gs.fitness.CustomFitness(fn, source).evaluate((1, 3))
    assert ev.failed and math.isnan(ev.val_accuracy) and ev.fidelity == fn.__name__
    assert f"The fitness '{fn.__name__}' " in ev.error
    assert "selection 1;3 (bits 10100)" in ev.error
    assert re.search(what, ev.error), ev.error


@pytest.mark.parametrize("fn, what", BAD, ids=[f.__name__ for f, _ in BAD])
def test_bad_returns_raise_with_fail_fast(source, fn, what):
    fitness = gs.make_fitness(fn, source, seed=0, fail_fast=True)
    with pytest.raises(gs.FitnessError, match=rf"The fitness '{fn.__name__}' {what}.* for selection "
                                              r"1;3 \(bits 10100\)"):
        fitness.evaluate((1, 3))


def test_unimplemented_subclass_fails_clearly(source):
    class Empty(gs.FitnessFunction):
        pass

    ev = gs.fitness.CustomFitness(Empty(), source).evaluate((2,))
    assert ev.failed and "Empty must implement __call__(self, ctx)" in ev.error


def test_construction_errors(source):
    with pytest.raises(gs.ParameterError, match=r"'fn' parameter must be a callable fn\(ctx\) or a "
                                                r"FitnessFunction instance\. Got 'the class Threshold' "
                                                r"instead\. Pass an instance: Threshold\(\)\."):
        gs.fitness.CustomFitness(Threshold, source)
    with pytest.raises(gs.ParameterError, match=r"'fn' parameter must be a callable .* Got 'float'"):
        gs.fitness.CustomFitness(0.9, source)
    with pytest.raises(gs.ParameterError, match=r"'settings' parameter must be no proxy settings with a "
                                                r"custom fitness\. Got \['epochs'\]"):
        gs.make_fitness(_nan, source, seed=0, epochs=3)


def test_pickles_for_workers(source):
    import pickle

    fitness = gs.make_fitness(Threshold(0.4), source, seed=0)
    assert pickle.loads(pickle.dumps(fitness)).evaluate((1,)) == fitness.evaluate((1,))


@pytest.mark.slow
def test_the_example_runs_end_to_end(tmp_path):
    run = tmp_path / "run"
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "custom_fitness.py"), "--run-dir", str(run),
                          "--generations", "2", "--population", "6", "--recall-floor", "0.2"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "macro-F1" in out.stdout and "best under" in out.stdout
    header = (run / "evaluations.csv").read_text().splitlines()[0].split(",")
    assert header[-2:] == ["min_class_recall", "plain_accuracy"]


def test_one_se_search_picks_the_smallest_graft_within_one_se_of_the_best(source, tmp_path):
    from graftsearch.graft._final import front_picks

    def fn(ctx):  # more taps, more accuracy, each step inside the noise of the next
        return {"val_accuracy": 0.80 + 0.01 * len(ctx.selection), "val_accuracy_se": 0.015}

    settings = gs.SearchSettings(objective="max-accuracy", size_max="1M", population=8,
                                 generations=3, seed=0, pick="one-se")
    result = gs.run_search(source.taps, gs.HeadSpec(num_classes=3),
                           gs.make_fitness(fn, source, seed=0), settings, run_dir=tmp_path)
    top = max(result.front, key=lambda r: r.val_accuracy)
    within = [r for r in result.front if r.val_accuracy >= top.val_accuracy - 0.015]
    assert result.best.bits == min(within, key=lambda r: r.params).bits != top.bits
    assert front_picks(tmp_path)[0][0]["bits"] == result.best.bits  # what final training takes
