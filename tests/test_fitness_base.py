"""graftsearch.Fitness: the base class the search requires of every fitness."""

from __future__ import annotations

import csv
import pickle

import pytest

import graftsearch as gs
from graftsearch.fitness import Fitness
from graftsearch.optimize import run_search
from test_proxies import make_source


class DepthFitness(Fitness):
    """The smallest useful fitness: P grows with the deepest selected tap."""

    name = "depth"

    def __init__(self, n_taps: int):
        self.n_taps = n_taps

    def evaluate(self, selection):
        return gs.Evaluation(val_accuracy=max(selection) / self.n_taps, fidelity=self.name)


class DuckFitness:
    """What the search took before the base class: evaluate() alone."""

    def evaluate(self, selection):
        return gs.Evaluation(val_accuracy=0.5)


def _taps(n: int = 5) -> gs.taps.TapList:
    taps = [gs.taps.Tap(index=i, name=f"layer{i}", channels=4, height=4, width=4, params_upto=100 * i,
                        macs_upto=1000 * i) for i in range(1, n + 1)]
    return gs.taps.TapList(taps, donor_name="generated", image_size=16)


def test_fitness_without_evaluate_cannot_be_instantiated():
    class NoEvaluate(Fitness):
        name = "nothing"

    with pytest.raises(TypeError, match="evaluate"):
        NoEvaluate()


def test_a_minimal_subclass_runs_through_the_search(tmp_path):
    taps = _taps()
    fitness = DepthFitness(len(taps))
    settings = gs.SearchSettings(p_min=0.7, population=6, generations=3, seed=0)
    result = run_search(taps, gs.HeadSpec(num_classes=3, hidden=8), fitness, settings, run_dir=tmp_path)
    assert result.best is not None and result.best.val_accuracy >= 0.7
    with open(tmp_path / "evaluations.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == result.evaluations and {r.fidelity for r in result.records} == {"depth"}
    # the default key names the class, so the same fitness resumes the run
    assert fitness.key() == f"{__name__}.DepthFitness:depth"
    again = run_search(taps, gs.HeadSpec(num_classes=3, hidden=8), pickle.loads(pickle.dumps(fitness)),
                       settings, run_dir=tmp_path)
    assert again.evaluations == result.evaluations


@pytest.mark.parametrize("fitness, hint", [
    (DuckFitness(), r"Add graftsearch\.Fitness to the bases of DuckFitness"),
    (lambda selection: 0.5, r"Subclass graftsearch\.Fitness and implement evaluate\(selection\) -> "
                            r"Evaluation \(see `help\(graftsearch\.Fitness\)`\)\. A function fn\(ctx\) "
                            r"becomes one with graftsearch\.make_fitness"),
    (DepthFitness, r"Pass an instance, DepthFitness\(\.\.\.\), not the class"),
    (None, r"Subclass graftsearch\.Fitness and implement evaluate\(selection\) -> Evaluation"),
])
def test_the_search_refuses_what_is_not_a_fitness_and_says_how_to_write_one(fitness, hint):
    with pytest.raises(gs.ParameterError, match=r"^The 'fitness' parameter must be an object with "
                       r"evaluate\(selection\) -> Evaluation that subclasses graftsearch\.Fitness\. "
                       r"Got .* instead\. " + hint):
        run_search(_taps(), gs.HeadSpec(num_classes=3), fitness, gs.SearchSettings(p_min=0.5))


def test_every_built_in_fitness_is_a_fitness_with_its_key():
    source = make_source()
    for fitness in (gs.make_fitness("mlp", source), gs.make_fitness("fast", source),
                    gs.make_fitness(lambda ctx: 0.5, source)):
        assert isinstance(fitness, Fitness)
        assert fitness.key().startswith("{") and fitness.name in fitness.key()
