"""Peers: graftsearch's NSGA-II against what a user would pick instead, side by side in one run.

Every tool searches the same problem with the same fitness, behind the same evaluation cache,
with the same budget of distinct evaluations:

- ``graftsearch``: :func:`graftsearch.run_search` with its defaults (constrained domination,
  archive, uniform crossover 0.9, bit-flip 1/n, population 8, a random first population, no
  local step, the surrogate screen of offspring ``screen=8`` with the GP, ``surrogate="gp"``,
  no refinement), in process; ablation rows change one part each (``ABLATION_PARTS``: no
  screen, the earlier ridge screen, the GP without the front's neighbours as candidates, the GP
  on every min-size place from the start, max-accuracy without its single-tap probes or
  without its climb, the local step on a quarter of the places, population 16);
- ``optuna``: ``NSGAIISampler(population_size=32)`` with the constraint set on each trial
  (``trial.set_constraint``; Optuna < 5: ``constraints_func``), one boolean categorical
  parameter per tap, directions (maximise P, minimise params), in-memory storage;
- ``optuna-tpe``: ``TPESampler(multivariate=True, constraints_func=...)``, Optuna's choice for
  an expensive objective at small budgets (at most ``TPE_ASKS_PER_CALL`` trials per distinct
  evaluation: its cost per trial grows with the trials). Optuna's ``GPSampler`` runs apart, at
  1% only, in ``benchmarks/peers_gp.py`` (its own time per trial is more than a second's
  fraction and grows; glue code ``run_optuna_gp`` here);
- ``pymoo``: ``NSGA2(pop_size=32, BinaryRandomSampling, TwoPointCrossover, BitflipMutation,
  eliminate_duplicates=True)`` on a binary problem with one inequality constraint (pymoo's
  feasibility-first survival and tournament), through ``pymoo.optimize.minimize``;
  ``pymoo-ux`` the same with ``UniformCrossover`` (graftsearch's operator), ``pymoo-ux-8``
  also with graftsearch's population;
- ``random``: distinct random selections; ``greedy``: greedy forward selection under size
  penalties; ``local``: first-improvement bit flips from the best single taps (all in
  ``benchmarks/_problems.py``);
- the paper's manual rule (three consecutive taps before a stage boundary) as a point, and the
  exhaustive front (every selection; by definition hypervolume fraction 1).

How the peers are glued to the problem, as a careful user would: the objective function reads
the selection, looks up its exact size (free: graftsearch's cost model), and calls the fitness
only when it has to. An empty selection is never trained: it gets P = 0, size 0 and a
constraint value of 1 (infeasible). For ``max-accuracy`` a selection over ``size_max`` is never
trained either (P = 0, constraint (size - size_max) / size_max), as graftsearch rejects it on size
alone. The fitness sits behind one evaluation cache (:class:`Meter`): a selection asked for
again is answered from it and costs no budget, for every tool.

Fitness: a lookup table of the exhaustive P values (``_problems.exhaustive_table`` of the fitness
``_problems.make_probe`` chooses: graftsearch's ``fast`` proxy) behind the meter, which counts
and times every distinct evaluation. So every tool sees identical numbers, a fitness call costs
microseconds, and each tool's own overhead (wall time minus the time spent inside the fitness)
is isolated.

Budget: B distinct evaluations at 1%, 2%, 5%, 10% of the 2^n - 1 selections (per problem
``PROBLEM_PCTS`` may keep fewer: resnet-shape's 2^16 space to 5%). Each tool runs
once per seed at the largest budget; the smaller budgets are prefixes of its sequence of
distinct evaluations (none of these tools looks at the budget before it is spent, so a run with
budget b makes exactly the first b of them; tests check it). The exception: the two Optuna
samplers stop after a number of trials proportional to their budget (``TPE_ASKS_PER_CALL``,
``NSGA_ASKS_PER_CALL``), so at a smaller budget their prefix may hold more distinct evaluations
than a run with that budget would reach (in their favour).

Measured per problem, objective and seed:

- hypervolume of the feasible front found / hypervolume of the exhaustive feasible front, in
  graftsearch's (size / full size, 1 - P) space, with the reference at the constraint (P = p_min
  for min-size, size = size_max for max-accuracy: what a feasible selection adds beyond the
  constraint; the headline) and at graftsearch's own (1.1, P = 0); each other tool against
  graftsearch per budget by a two-sided Mann-Whitney U test over the seeds;
- fitness calls until the exhaustive best pick was first evaluated, and otherwise how close the
  best pick found came (its rank among all feasible selections in graftsearch's order of
  preference, and its gap in size or P);
- each tool's overhead per distinct evaluation (wall time minus fitness time, same process,
  tools interleaved seed by seed) and the peak of memory it allocated (``tracemalloc``, a
  separate run of seed 0 after a warm-up, so that imports are not counted);
- asks: selections the tool asked for, those asked before (duplicates), those answered without
  training (empty or over ``size_max``), and repeats answered by the cache.

Usage: ``python -m benchmarks.peers [--seeds 10] [--problems A,B] [--jobs N] [--quick] [--out DIR]``
(``--jobs``: problems in that many processes at once). Writes ``peers.csv`` (per budget),
``peers_runs.csv`` (per run), ``peers_meta.json`` (per-problem notes and the process's
settings) and ``peers.md``, the page written from those three files; ``--render`` writes the page
again from them without measuring.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
import tracemalloc
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._machine import cpu_name  # noqa: E402

from benchmarks._problems import (DATA, FITNESS, FITNESS_TEXT, RESULTS, Objective, Problem, best_mask,  # noqa: E402
                                  deepweeds_problem, exhaustive_table, feasible_masks, greedy_forward,
                                  hv_of, local_search, mask_of, preference, random_search, real_problem,
                                  resnet_shape_problem,
                                  selection_of, synthetic_problem)

import numpy as np  # noqa: E402

import graftsearch as gs  # noqa: E402
from graftsearch._utils.atomic import write_text  # noqa: E402
from graftsearch.fitness._evaluation import Evaluation  # noqa: E402

BUDGET_PCTS = (1, 2, 5, 10)
QUICK_BUDGET_PCTS = (5, 10, 20)
# resnet-shape's 2^16 space: 10% would be 6,554 distinct evaluations, and Optuna's NSGA-II (whose
# cost per trial grows with the trials) up to 5x as many trials per run; 5% is the budget the
# >= 5% target is checked at
PROBLEM_PCTS = {"resnet-shape": (1, 2, 5)}
# graftsearch with one part changed (ablation rows): not peers, left out of the targets;
# each is (its SearchSettings changes, what the page calls the change)
ABLATION_PARTS = {
    "graftsearch-no-screen": ({"screen": 0}, "screen=0 (no surrogate: every offspring as bred)"),
    "graftsearch-ridge": ({"surrogate": "ridge"}, "surrogate='ridge' (the earlier screen: ridge "
                                                  "on taps and pairs of taps, half the places by "
                                                  "NSGA-II's rank of its optimistic P, half as "
                                                  "bred)"),
    "graftsearch-no-near": ({"module": {"GP_FLIPS": 0}}, "the GP chooses among the bred "
                                                         "offspring only (not the front's "
                                                         "neighbours within two bit flips)"),
    "graftsearch-no-ramp": ({"module": {"GP_RAMP": 0}}, "the GP takes every bred place from the "
                                                        "first generation on (min-size; "
                                                        "max-accuracy does anyway)"),
    "graftsearch-no-probes": ({"module": {"PROBE_PLACES": 0}}, "no single-tap probes (max-accuracy: "
                                                                "a tap no trained selection holds is "
                                                                "never tried alone; min-size has none)"),
    "graftsearch-no-climb": ({"module": {"CLIMB_PLACES": 0}}, "no climb (max-accuracy: no place "
                                                              "for the pick's best-predicted "
                                                              "one-flip neighbour; min-size has "
                                                              "none)"),
    "graftsearch-local": ({"local_search": None}, "local_search=None (a quarter of each "
                                                   "generation's places to the one-bit neighbours "
                                                   "of the front; the default before)"),
    "graftsearch-pop16": ({"population": 16}, "population=16 (the default before: half as many "
                                               "generations for the same calls)"),
}
ABLATIONS = tuple(ABLATION_PARTS)
TOOLS = ("graftsearch",) + ABLATIONS + ("optuna", "optuna-tpe", "pymoo", "pymoo-ux", "pymoo-ux-8",
                                        "random", "greedy", "local")
PEERS = ("optuna", "optuna-tpe", "pymoo", "pymoo-ux", "pymoo-ux-8")
NSGA_PEERS = ("optuna", "pymoo", "pymoo-ux", "pymoo-ux-8")
# TPE asks at most this many selections (repeats included) per distinct evaluation of its budget:
# its cost per trial grows with the number of trials, and it repeats itself as it converges
TPE_ASKS_PER_CALL = 2
# ...and runs to at most this budget (% of the space, and distinct evaluations): measured here,
# 800 TPE trials of a 14-tap problem took 9.5 s and the time per trial grows with the trials,
# so 10% (1,638 distinct evaluations, up to twice as many trials) x 10 seeds x 6 problems would
# take hours; the small budgets are where a user would pick TPE
TPE_MAX_PCT = 2
NSGA_ASKS_PER_CALL = 5  # Optuna NSGA-II: at most this many trials per distinct evaluation
# ...on resnet-shape 2x: measured here, one max-accuracy run to 3,277 distinct evaluations at 5x
# (16,385 trials, 1,512 distinct evaluations reached) took 314 s, 10 seeds of it most of an hour
PROBLEM_NSGA_ASKS = {"resnet-shape": 2}
NSGA_TRIAL_S = 314  # that measurement (seconds), quoted on the page
TPE_MAX_CALLS = 700
ALPHA = 0.05  # two-sided Mann-Whitney U test of each peer against graftsearch, per budget
POPULATION = 32  # the peers' NSGA-IIs (below their own defaults, 50 and 100: small budgets)
EMPTY_VIOLATION = 1.0


# ---------------------------------------------------------------------------------------------
# the metered fitness

class BudgetSpent(Exception):
    """Raised when a tool asks for one fitness call more than its budget."""


class Meter(gs.Fitness):
    """The fitness every tool calls: a table lookup behind one evaluation cache, which logs and
    times each distinct evaluation.

    A selection asked for again is answered from the cache without spending budget, for every
    tool alike (graftsearch's own archive answers its repeats before they reach here; Optuna and
    pymoo get the same service from the cache a competent user puts in front of an expensive
    fitness). ``budget`` counts distinct evaluations; ``repeats`` counts the asks the cache
    answered. The log is preallocated, so that it allocates little while a tool runs
    (``tracemalloc`` then sees mostly the tool's own memory; the cache's dict is the harness's).
    """

    name = "table"

    def __init__(self, table: np.ndarray, key: str, budget: int):
        self.table, self._key, self.budget = table, key, budget
        self.log = np.zeros(budget, dtype=np.int64)
        # the tool's own time (wall minus fitness) before each distinct evaluation, from
        # ``started`` (set by run_tool when the tool starts): what peers_cost adds fitness time to
        self.stamps = np.zeros(budget)
        self.started = time.perf_counter()
        self.n = 0
        self.repeats = 0
        self.seconds = 0.0
        self._seen: Dict[int, float] = {}

    def key(self) -> str:
        return self._key

    def evaluate(self, selection) -> Evaluation:
        start = time.perf_counter()
        mask = 0
        for i in selection:
            mask |= 1 << (i - 1)
        if mask in self._seen:
            self.repeats += 1
            result = Evaluation(val_accuracy=self._seen[mask], fidelity="table")
            self.seconds += time.perf_counter() - start
            return result
        if self.n >= self.budget:
            raise BudgetSpent()
        self.log[self.n] = mask
        self.stamps[self.n] = start - self.started - self.seconds
        self.n += 1
        p = self._seen[mask] = float(self.table[mask])
        result = Evaluation(val_accuracy=p, fidelity="table")
        self.seconds += time.perf_counter() - start
        return result

    def p(self, mask: int) -> float:
        """P of ``mask`` through :meth:`evaluate` (the glue code of the peers and baselines)."""
        return self.evaluate(selection_of(mask, len(bin(mask)) - 2)).val_accuracy

    @property
    def calls(self) -> np.ndarray:
        return self.log[:self.n]


class Asks:
    """What a tool asked for, as the user's glue code sees it."""

    def __init__(self):
        self.seen: set = set()
        self.total = self.duplicate = self.free = 0
        self.generations = 0

    def add(self, mask: int, free: bool) -> None:
        self.total += 1
        self.duplicate += mask in self.seen
        self.seen.add(mask)
        self.free += free


def _answer(problem: Problem, objective: Objective, meter: Meter, mask: int, asks: Asks):
    """(P, size, constraint value) of ``mask`` as a peer's objective function computes them."""
    if mask == 0:
        asks.add(0, True)
        return 0.0, 0.0, EMPTY_VIOLATION
    size = problem.size(mask)
    if not objective.size_ok(size):
        asks.add(mask, True)
        return 0.0, size, (size - objective.limit) / objective.limit
    p = meter.p(mask)
    asks.add(mask, False)
    if objective.kind == "min-size":
        return p, size, objective.limit - p
    return p, size, (size - objective.limit) / objective.limit


# ---------------------------------------------------------------------------------------------
# the tools

def run_graftsearch(problem: Problem, objective: Objective, meter: Meter, seed: int,
                    run_dir: Optional[Path] = None, **options) -> Asks:
    """graftsearch's search at its defaults; ``options`` are further SearchSettings (the
    ablation rows)."""
    settings = objective.settings(generations=10**6,
                                  max_evaluations=meter.budget, seed=seed, **options)
    result = gs.run_search(problem.taps, problem.head, meter, settings, run_dir=run_dir)
    asks = Asks()
    trained = sum(1 for r in result.records if r.trained)
    asks.total = len(result.records) + result.archive_hits
    asks.duplicate = result.archive_hits
    asks.free = len(result.records) - trained
    asks.generations = result.generations
    return asks


def run_optuna(problem: Problem, objective: Objective, meter: Meter, seed: int,
               population: int = POPULATION, sampler: str = "nsga2") -> Asks:
    """Optuna with its NSGA-II sampler (``sampler="nsga2"``) or its multivariate TPE with the
    constraint (``"tpe"``: ``TPESampler(multivariate=True, constraints_func=...)``, Optuna's
    recommendation for expensive objectives at small budgets)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")
    asks = Asks()
    names = [f"tap{i}" for i in range(1, problem.n + 1)]

    def objective_fn(trial):
        mask = 0
        for i, name in enumerate(names):
            if trial.suggest_categorical(name, [False, True]):
                mask |= 1 << i
        p, size, constraint = _answer(problem, objective, meter, mask, asks)
        if modern and sampler == "nsga2":
            trial.set_constraint("limit", constraint)
        else:
            trial.set_user_attr("constraint", (constraint,))
        return p, size

    def stop(study, trial):
        if meter.n >= meter.budget or asks.total >= cap:
            study.stop()

    # Optuna >= 5 reads NSGA-II's constraints set on the trial (constraints_func is deprecated
    # there); TPE takes constraints_func; both feed the same constrained domination
    modern = hasattr(optuna.trial.Trial, "set_constraint")
    from_attrs = {"constraints_func": lambda t: t.user_attrs["constraint"]}
    if sampler == "tpe":
        chosen = optuna.samplers.TPESampler(multivariate=True, seed=seed, **from_attrs)
        cap = TPE_ASKS_PER_CALL * meter.budget  # TPE's cost per trial grows with the trials
    elif sampler == "gp":
        # the table answers the same selection with the same P: deterministic, as the fitness
        chosen = optuna.samplers.GPSampler(seed=seed, deterministic_objective=True, **from_attrs)
        cap = TPE_ASKS_PER_CALL * meter.budget
    else:
        chosen = optuna.samplers.NSGAIISampler(population_size=population, seed=seed,
                                               **({} if modern else from_attrs))
        # Optuna's NSGA-II repeats itself as it converges, and its cost per trial grows with the
        # trials (measured here: a 1,638-evaluation run of deepweeds-size / max-accuracy spent
        # minutes on repeats): at most NSGA_ASKS_PER_CALL trials per distinct evaluation
        cap = PROBLEM_NSGA_ASKS.get(problem.name, NSGA_ASKS_PER_CALL) * meter.budget
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=chosen)
    study.optimize(objective_fn, n_trials=cap, callbacks=[stop])
    return asks


def run_optuna_tpe(problem: Problem, objective: Objective, meter: Meter, seed: int, **_) -> Asks:
    return run_optuna(problem, objective, meter, seed, sampler="tpe")


def run_optuna_gp(problem: Problem, objective: Objective, meter: Meter, seed: int, **_) -> Asks:
    return run_optuna(problem, objective, meter, seed, sampler="gp")


def run_pymoo(problem: Problem, objective: Objective, meter: Meter, seed: int,
              population: int = POPULATION, crossover: str = "two-point") -> Asks:
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.core.problem import Problem as PymooProblem
    from pymoo.operators.crossover.pntx import TwoPointCrossover
    from pymoo.operators.crossover.ux import UniformCrossover
    from pymoo.operators.mutation.bitflip import BitflipMutation
    from pymoo.operators.sampling.rnd import BinaryRandomSampling
    from pymoo.optimize import minimize

    asks = Asks()
    weights = 1 << np.arange(problem.n, dtype=np.int64)

    class Taps(PymooProblem):
        def __init__(self):
            super().__init__(n_var=problem.n, n_obj=2, n_ieq_constr=1, xl=0, xu=1, vtype=bool)

        def _evaluate(self, x, out, *args, **kwargs):
            answers = [_answer(problem, objective, meter, int(m), asks) for m in x.astype(np.int64) @ weights]
            out["F"] = np.array([(-p, size) for p, size, _ in answers])
            out["G"] = np.array([(c,) for _, _, c in answers])

    operator = UniformCrossover() if crossover == "uniform" else TwoPointCrossover()
    algorithm = NSGA2(pop_size=population, sampling=BinaryRandomSampling(), crossover=operator,
                      mutation=BitflipMutation(), eliminate_duplicates=True)
    try:
        # the generation cap only guards against a run that stops finding new selections
        minimize(Taps(), algorithm, ("n_gen", 50 * meter.budget // population + 100), seed=seed, verbose=False)
    except BudgetSpent:
        pass
    return asks


def run_pymoo_ux(problem: Problem, objective: Objective, meter: Meter, seed: int, **_) -> Asks:
    """pymoo with graftsearch's operators (uniform crossover): the operator-matched variant."""
    return run_pymoo(problem, objective, meter, seed, crossover="uniform")


def run_pymoo_ux_8(problem: Problem, objective: Objective, meter: Meter, seed: int, **_) -> Asks:
    """pymoo with graftsearch's operators and its default population."""
    return run_pymoo(problem, objective, meter, seed, population=int(_default("population")),
                     crossover="uniform")


def run_random(problem: Problem, objective: Objective, meter: Meter, seed: int, **_) -> Asks:
    asks = Asks()
    random_search(problem, meter.p, meter.budget, seed, objective)
    asks.total = asks.duplicate = 0  # it draws distinct selections; asks are its calls
    return asks


def run_greedy(problem: Problem, objective: Objective, meter: Meter, seed: int, **_) -> Asks:
    greedy_forward(problem, meter.p, meter.budget, seed, objective)
    return Asks()


def run_local(problem: Problem, objective: Objective, meter: Meter, seed: int, **_) -> Asks:
    try:
        local_search(problem, meter.p, meter.budget, seed, objective)
    except BudgetSpent:
        pass
    return Asks()


def _ablation(options: Dict[str, object]) -> Callable[..., Asks]:
    """A runner of graftsearch with some SearchSettings changed and (``"module"``) some of the
    search's constants (``graftsearch.optimize._search``) set for the run's duration."""
    from graftsearch.optimize import _search

    settings = {k: v for k, v in options.items() if k != "module"}
    constants = dict(options.get("module", {}))

    def run(problem: Problem, objective: Objective, meter: Meter, seed: int, **kw) -> Asks:
        saved = {name: getattr(_search, name) for name in constants}
        try:
            for name, value in constants.items():
                setattr(_search, name, value)
            return run_graftsearch(problem, objective, meter, seed, **settings, **kw)
        finally:
            for name, value in saved.items():
                setattr(_search, name, value)
    return run


RUNNERS: Dict[str, Callable[..., Asks]] = {
    "graftsearch": run_graftsearch,
    **{tool: _ablation(options) for tool, (options, _) in ABLATION_PARTS.items()},
    "optuna": run_optuna, "optuna-tpe": run_optuna_tpe, "optuna-gp": run_optuna_gp,
    "pymoo": run_pymoo, "pymoo-ux": run_pymoo_ux,
    "pymoo-ux-8": run_pymoo_ux_8,
    "random": run_random, "greedy": run_greedy, "local": run_local}


def run_tool(tool: str, problem: Problem, objective: Objective, table: np.ndarray, budget: int, seed: int,
             *, memory: bool = False, run_dir: Optional[Path] = None):
    """One run of ``tool``: (meter, asks, wall seconds, peak KiB or None)."""
    meter = Meter(table, problem.fitness.key(), budget)
    kwargs = {"run_dir": run_dir} if run_dir is not None else {}
    if memory:
        tracemalloc.start()
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
    start = meter.started = time.perf_counter()
    asks = RUNNERS[tool](problem, objective, meter, seed, **kwargs)
    wall = time.perf_counter() - start
    peak = None
    if memory:
        peak = (tracemalloc.get_traced_memory()[1] - base) / 1024
        tracemalloc.stop()
    return meter, asks, wall, peak


# ---------------------------------------------------------------------------------------------
# measuring

def top_of(tool: str, budgets: Dict[float, int]) -> int:
    """The largest budget ``tool`` runs to (TPE: the largest within TPE_MAX_PCT, when any)."""
    if tool == "optuna-tpe":
        within = [b for pct, b in budgets.items() if pct <= TPE_MAX_PCT and b <= TPE_MAX_CALLS]
        if within:
            return max(within)
    return max(budgets.values())


def budget_of(pct: float, problem: Problem) -> int:
    return max(1, round(pct / 100 * (2**problem.n - 1)))


def _closeness(found: Optional[int], best: int, problem: Problem, table: np.ndarray, objective: Objective,
               order: Dict[int, int]) -> tuple:
    """(rank of ``found`` among all feasible selections, its gap to the best pick)."""
    if found is None:
        return math.nan, math.nan
    if objective.kind == "min-size":
        gap = problem.size(found) / problem.size(best) - 1.0  # relative size above the best
    else:
        gap = float(table[best] - table[found])  # accuracy points below the best
    return order[found], gap


def measure(problems: Sequence[Problem], seeds: int, pcts: Sequence[float], log=print):
    """Run every tool on every problem and objective; return (per-budget rows, per-run rows, notes)."""
    import pandas as pd

    rows, runs, notes = [], [], []
    for problem in problems:
        table, spe = exhaustive_table(problem, log=log)
        every = list(range(1, 2**problem.n))
        manual = mask_of(problem.manual)
        objectives = (Objective.min_size(float(table[manual])), Objective.max_accuracy(problem.size(manual)))
        budgets = {pct: budget_of(pct, problem) for pct in pcts
                   if pct in PROBLEM_PCTS.get(problem.name, pcts)}
        top = max(budgets.values())
        for objective in objectives:
            hv_all = hv_of(every, problem, table, objective)
            hv_all_c = hv_of(every, problem, table, objective, at_constraint=True)
            ranked = sorted(feasible_masks(every, problem, table, objective),
                            key=lambda m: preference(m, problem, table, objective))
            order = {m: i + 1 for i, m in enumerate(ranked)}
            best = ranked[0]
            note = {"problem": problem.name, "describe": problem.describe, "n": problem.n,
                    "objective": objective.kind, "limit": objective.limit, "ms_per_eval": spe * 1000,
                    "manual": problem.manual, "manual_p": float(table[manual]), "manual_size": problem.size(manual),
                    "manual_hv": hv_of([manual], problem, table, objective) / hv_all,
                    "manual_hv_c": hv_of([manual], problem, table, objective, at_constraint=True) / hv_all_c,
                    "manual_rank": order.get(manual), "n_feasible": len(ranked), "best": best,
                    "best_taps": selection_of(best, problem.n), "best_p": float(table[best]),
                    "best_size": problem.size(best), "budgets": budgets}
            notes.append(note)
            for tool in TOOLS:  # warm-up: imports and first-call caches are not the tool's overhead
                run_tool(tool, problem, objective, table, min(top, 2 * POPULATION), 0)
            for seed in range(seeds):
                reference_calls = None
                for tool in TOOLS + ("graftsearch+files",):
                    name, run_dir = tool, None
                    if tool == "graftsearch+files":
                        name, run_dir = "graftsearch", Path(tempfile.mkdtemp(prefix="peers-"))
                    meter, asks, wall, _ = run_tool(name, problem, objective, table, top_of(name, budgets),
                                                    seed, run_dir=run_dir)
                    calls = [int(m) for m in meter.calls]
                    if run_dir is not None:
                        shutil.rmtree(run_dir, ignore_errors=True)
                        # writing the run directory must not change what the search does
                        assert calls == reference_calls, "graftsearch with a run directory searched differently"
                    elif tool == "graftsearch":
                        reference_calls = calls
                    hit = next((i + 1 for i, m in enumerate(calls) if m == best), None)
                    runs.append({"problem": problem.name, "objective": objective.kind, "limit": objective.limit,
                                 "tool": tool, "seed": seed, "budget": top_of(name, budgets), "fitness_calls": len(calls),
                                 "unique_calls": len(set(calls)), "wasted_calls": len(calls) - len(set(calls)),
                                 "cache_repeats": meter.repeats,
                                 "asks": asks.total if asks.total else len(calls),
                                 "duplicate_asks": asks.duplicate, "free_asks": asks.free,
                                 "generations": asks.generations or math.nan,
                                 "calls_to_best": hit, "wall_s": wall, "fitness_s": meter.seconds,
                                 "overhead_us_per_call": (wall - meter.seconds) / max(1, len(calls)) * 1e6,
                                 "peak_kib": math.nan})
                    if run_dir is not None:
                        continue
                    for pct, b in budgets.items():
                        if b > top_of(name, budgets):
                            continue  # a budget the tool was not run to
                        prefix = calls[:b]
                        found = best_mask(prefix, problem, table, objective)
                        rank, gap = _closeness(found, best, problem, table, objective, order)
                        rows.append({"problem": problem.name, "objective": objective.kind,
                                     "limit": objective.limit, "tool": tool, "seed": seed, "budget_pct": pct,
                                     "budget": b, "fitness_calls": len(prefix),
                                     "unique_calls": len(set(prefix)),
                                     "hv_fraction": hv_of(prefix, problem, table, objective) / hv_all,
                                     "hv_c_fraction": hv_of(prefix, problem, table, objective,
                                                            at_constraint=True) / hv_all_c,
                                     "found_best": found == best, "best_rank": rank, "best_gap": gap})
                log(f"  {problem.name} / {objective.kind} / seed {seed} done")
            for tool in TOOLS:  # peak memory: one more run of seed 0 under tracemalloc
                _, _, _, peak = run_tool(tool, problem, objective, table, top_of(tool, budgets), 0,
                                         memory=True)
                for r in runs:
                    if (r["problem"], r["objective"], r["tool"], r["seed"]) == (problem.name, objective.kind,
                                                                                 tool, 0):
                        r["peak_kib"] = peak
    return pd.DataFrame(rows), pd.DataFrame(runs), notes


# ---------------------------------------------------------------------------------------------
# writing

def _machine() -> str:
    import torch

    return (f"{cpu_name()}, {os.cpu_count()} cores (shared with other jobs), torch threads "
            f"{torch.get_num_threads()}, BLAS threads {os.environ.get('OPENBLAS_NUM_THREADS', '?')}")


def _versions() -> str:
    from importlib.metadata import version

    return f"graftsearch {gs.__version__}, " + ", ".join(f"{p} {version(p)}" for p in ("optuna", "pymoo", "numpy"))


def run_context() -> Dict[str, object]:
    """What the page says of the process that measured: machine and threads, versions, the
    SearchSettings defaults the discussion names, the mlp proxy's cost. Saved with a run
    (peers_meta.json), so that a page rendered again says what held when it ran."""
    return {"machine": _machine(), "versions": _versions(), "initial": _default("initial"),
            "population": _default("population"), "screen": _default("screen"), "mlp_seconds": _mlp_seconds()}


def _ms(values) -> str:
    values = np.asarray(values, dtype=float)
    if not len(values):
        return "-"
    return f"{values.mean():.4f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.4f}"


def _short(rows) -> int:
    """Seeds of ``rows`` that spent fewer unique evaluations than the budget; 0 for a frame
    that does not record calls (peers_cost's times)."""
    if not {"unique_calls", "budget"} <= set(rows.columns):
        return 0
    return int((rows.unique_calls < rows.budget).sum())


def comparisons(frame, column: str = "hv_c_fraction") -> List[dict]:
    """Every other tool against graftsearch per (problem, objective, budget): a two-sided
    Mann-Whitney U test on ``column`` over the seeds; ``verdict`` is graftsearch's "better",
    "worse" (p < ALPHA, in the direction of the rank sums) or "tie"; ``short`` counts the other
    tool's seeds that stopped before spending the budget (an ask cap, or greedy's restarts
    running out), where a verdict of "better" may owe something to the budget it left unspent."""
    from scipy.stats import mannwhitneyu

    out = []
    for (problem, objective, pct), part in frame.groupby(["problem", "objective", "budget_pct"]):
        ours = part[part.tool == "graftsearch"][column].to_numpy(dtype=float)
        for tool in TOOLS[1:]:
            rows = part[part.tool == tool]
            theirs = rows[column].to_numpy(dtype=float)
            if not len(theirs) or not len(ours):
                continue
            if np.array_equal(np.sort(ours), np.sort(theirs)) or np.ptp(np.r_[ours, theirs]) == 0:
                p_value, u = 1.0, len(ours) * len(theirs) / 2
            else:
                test = mannwhitneyu(ours, theirs, alternative="two-sided")
                p_value, u = float(test.pvalue), float(test.statistic)
            verdict = "tie" if p_value >= ALPHA else (
                "better" if u > len(ours) * len(theirs) / 2 else "worse")
            out.append({"tool": tool, "problem": problem, "objective": objective, "pct": pct,
                        "ours": float(ours.mean()), "theirs": float(theirs.mean()),
                        "both_whole": bool(min(ours.min(), theirs.min()) >= 1.0 - 1e-9),
                        "p": p_value, "verdict": verdict,
                        "short": _short(rows), "seeds": len(rows)})
    return out


def _text(x) -> str:
    return (f"{x['tool']} on {x['problem']} / {x['objective']} at {x['pct']:g}%: graftsearch "
            f"{x['ours']:.4f} vs {x['theirs']:.4f} (p = {x['p']:.3g})")


def verdicts(frame, runs) -> List[str]:
    """Lines on the search issue's targets, each computed from this run's numbers."""
    lines = []
    tests = [x for x in comparisons(frame) if x["tool"] not in ABLATIONS]
    small = [x for x in tests if x["pct"] <= 2]
    worse = [x for x in small if x["verdict"] == "worse"]
    not_better = [x for x in small if x["tool"] in NSGA_PEERS and x["verdict"] != "better"]
    n_cases = len({(x["problem"], x["objective"], x["pct"]) for x in small})
    if not small:
        lines.append("- At 1% and 2% budgets: not measured (no budget <= 2% in this run).")
    else:
        lines.append(
            f"- At 1% and 2% budgets, not significantly worse than any other tool (Mann-Whitney U, "
            f"p < {ALPHA:g}, hypervolume with the reference at the constraint, {n_cases} problem x "
            f"objective x budget cases): " + ("**met**." if not worse else
                                              f"**not met** in {len(worse)} of {len(small)} comparisons:"))
        lines += [f"  - {_text(x)}" for x in worse]
        lines.append(
            "- At 1% and 2%, significantly better than every NSGA-II peer ("
            + ", ".join(f"`{t}`" for t in NSGA_PEERS) + "): " + ("**met**." if not not_better else
                                                 f"**not met** in {len(not_better)} of "
                                                 f"{sum(x['tool'] in NSGA_PEERS for x in small)} "
                                                 "comparisons (ties unless marked):"))
        lines += [f"  - {_text(x)}" + ("" if x["verdict"] == "tie" else " **worse**")
                  + (": both reached the exhaustive front's hypervolume in every seed, where "
                     "no tool can be better" if x["both_whole"] else "")
                  for x in not_better]
        capped = [x for x in small if x["tool"] in NSGA_PEERS and x["verdict"] == "better"
                  and x["short"]]
        if capped:
            lines.append(
                f"  - {len(capped)} of these \"better\" verdicts are against a peer that stopped on "
                "its ask cap before spending the budget in some seeds (marked † in the tables): "
                + "; ".join(f"{x['tool']} on {x['problem']} / {x['objective']} at {x['pct']:g}% "
                            f"({x['short']} of {x['seeds']} seeds)" for x in capped) + ".")
    big = frame[(frame.tool == "graftsearch") & (frame.budget_pct >= 5)] \
        .groupby(["problem", "objective", "budget_pct"]).hv_c_fraction.mean()
    short = [(k, v) for k, v in big.items() if v < 0.99]
    lines.append("- At >= 5%, graftsearch's mean hypervolume fraction (reference at the constraint) "
                 ">= 0.99 on every problem: " + ("**met**" if not short else
                                                 f"**not met** in {len(short)} of {len(big)} cases")
                 + " (" + "; ".join(f"{p} / {o} at {pct:g}%: {v:.4f}" for (p, o, pct), v in big.items())
                 + ").")
    over = runs[runs.tool.isin(("graftsearch",) + PEERS)].groupby(["problem", "objective", "tool"]) \
        .overhead_us_per_call.mean().unstack()
    slower = [(p, o, peer, row["graftsearch"], row[peer]) for (p, o), row in over.iterrows()
              for peer in PEERS if row["graftsearch"] > row[peer]]
    lines.append("- Overhead per fitness call <= every peer's (means over seeds): "
                 + ("**met**." if not slower else f"**not met** in {len(slower)} of "
                    f"{len(PEERS) * len(over)} comparisons:"))
    lines += [f"  - {p} / {o}: graftsearch {g:,.0f} µs vs {peer} {v:,.0f} µs ({g / v:.1f}x)"
              for p, o, peer, g, v in slower]
    return lines


def verdict_table(frame, problem: str, objective: str) -> List[str]:
    """graftsearch against each other tool per budget: better / tie / worse with the p-value."""
    tests = [x for x in comparisons(frame) if x["problem"] == problem and x["objective"] == objective]
    pcts = sorted({x["pct"] for x in tests})
    lines = ["| budget | " + " | ".join(TOOLS[1:]) + " |", "|---:|" + "---|" * (len(TOOLS) - 1)]
    for pct in pcts:
        cells = []
        for tool in TOOLS[1:]:
            x = next((t for t in tests if t["pct"] == pct and t["tool"] == tool), None)
            cells.append("-" if x is None else f"{x['verdict']} ({x['p']:.2g})"
                         + (f" †{x['short']}" if x["short"] else ""))
        lines.append(f"| {pct:g}% | " + " | ".join(cells) + " |")
    if any(x["short"] for x in tests):
        lines += ["", "†k: in k seeds that tool stopped before spending the budget (Optuna: its ask "
                  "cap; greedy: its restarts ran out), so it is compared on fewer distinct "
                  "evaluations than graftsearch."]
    return lines


def discussion(frame, runs, notes, context: Optional[Dict[str, object]] = None) -> List[str]:
    """What this run's numbers say about where graftsearch loses, and its costs."""
    ours = runs[runs.tool == "graftsearch"]
    context = context or run_context()
    n = notes[0]["n"] if notes else 0
    every = comparisons(frame)
    tests = [x for x in every if x["tool"] not in ABLATIONS]
    lines = ["## Where another tool wins, and the costs", ""]
    worse = [x for x in tests if x["verdict"] == "worse"]
    by_tool: Dict[str, int] = {}
    for x in worse:
        by_tool[x["tool"]] = by_tool.get(x["tool"], 0) + 1
    counts = {v: sum(x["verdict"] == v for x in tests) for v in ("better", "tie", "worse")}
    lines.append(
        f"- **Verdicts.** Of {len(tests)} comparisons (every other tool, problem, objective and "
        f"budget; reference at the constraint) graftsearch is significantly better in "
        f"{counts['better']}, tied in {counts['tie']} and worse in {counts['worse']}"
        + (": " + ", ".join(f"{t} {k}" for t, k in sorted(by_tool.items(), key=lambda kv: -kv[1]))
           + " times, at budgets " + ", ".join(sorted({f"{x['pct']:g}%" for x in worse}))
           if worse else "") + ".")
    if worse:
        per_gen = float((ours.fitness_calls / ours.generations).mean())
        smallest = int(frame[frame.budget_pct == min(frame.budget_pct)].budget.min())
        start = context["initial"]
        rule = (f", {n} of them the single-tap selections" if start == "singles" else
                f" (initial='{start}')")
        size = int(context.get("population", POPULATION))  # pages measured before it was saved: 32
        lines.append(
            f"- **Small budgets.** graftsearch spends its first {size} calls on its initial "
            f"population{rule}, then "
            f"about {per_gen:.0f} new calls per generation: at {smallest:,} calls (the smallest "
            f"budget here) that is {max(0.0, (smallest - size) / per_gen):.1f} generations "
            "after the initial population.")
    for tool, (_, part) in ABLATION_PARTS.items():
        part = part.format(population=POPULATION, screen=context["screen"])
        mine = [x for x in every if x["tool"] == tool]
        if not mine:
            continue
        # the comparisons are graftsearch's view: its "worse" is the variant being better
        flips = {"better": "worse", "worse": "better", "tie": "tie"}
        tally = {v: sum(flips[x["verdict"]] == v for x in mine) for v in ("better", "worse", "tie")}
        gains = sorted({f"{x['pct']:g}%" for x in mine if x["verdict"] == "worse"})
        lines.append(
            f"- **Ablation `{tool}`**, {part}: against the default in {len(mine)} problem x "
            f"objective x budget cases, significantly better in {tally['better']}, worse in "
            f"{tally['worse']}, tied in {tally['tie']}"
            + (f" (better at {', '.join(gains)})" if gains else "") + "; mean fraction "
            + ", ".join(f"{pct:g}%: {np.mean([x['theirs'] for x in mine if x['pct'] == pct]):.4f} vs "
                        f"{np.mean([x['ours'] for x in mine if x['pct'] == pct]):.4f}"
                        for pct in sorted({x['pct'] for x in mine})) + ".")
    over = runs[runs.tool.isin(("graftsearch",) + PEERS)].groupby("tool").overhead_us_per_call.mean()
    lines.append(
        "- **Overhead.** Mean over problems and seeds, µs per distinct evaluation: "
        + ", ".join(f"{t} {v:,.0f}" for t, v in over.items())
        + f". With a real fitness this is small next to one evaluation (the `{FITNESS}` fitness "
        f"behind these tables: {_spent(notes)} ms per call{context['mlp_seconds']}).")
    rep = runs[~runs.tool.str.endswith("+files")].groupby("tool")[["asks", "cache_repeats"]].mean()
    lines.append(
        "- **Repeats.** Every tool's asks go through one evaluation cache, so a selection asked "
        "for again costs no budget (graftsearch's repeats never leave its archive). Asks per run "
        "and those answered by the cache (mean): "
        + ", ".join(f"{t} {r.asks:,.0f} / {r.cache_repeats:,.0f}" for t, r in rep.iterrows()) + ".")
    files = runs[runs.tool == "graftsearch+files"].overhead_us_per_call
    lines.append(
        f"- **Run directory.** Writing evaluations.csv, pareto.csv, convergence.csv and checkpoint.pkl "
        f"after every generation (the default, `checkpoint_every=1`) raises graftsearch's overhead to "
        f"{files.min() / 1000:.1f}-{files.max() / 1000:.1f} ms per call here: the checkpoint pickles the whole "
        "archive every generation.")
    lines.append("")
    return lines


def _default(name: str):
    """graftsearch's default of the SearchSettings field ``name`` (read off the dataclass: a
    SearchSettings() without p_min is refused)."""
    import dataclasses

    return next(f.default for f in dataclasses.fields(gs.SearchSettings) if f.name == name)


def _greedy_ends(runs) -> str:
    """How often greedy stopped (its restarts spent) before the budget, from the runs."""
    g = runs[runs.tool == "greedy"]
    if not len(g):
        return ""
    short = int((g.fitness_calls < g.budget).sum())
    return (f"`greedy` ends when its restarts do: in {short} of its {len(g)} runs before the "
            "budget was spent.")


def _mlp_seconds() -> str:
    """The mlp proxy's median seconds per evaluation from the fitness benchmark's table, if any."""
    import pandas as pd

    path = RESULTS / "fitness_proxies.csv"
    try:
        table = pd.read_csv(path)
        row = table[(table.problem == "plant-seedlings") & (table.proxy == "mlp")
                    & table.variant.str.startswith("default")].iloc[0]
    except (OSError, ValueError, IndexError, AttributeError, KeyError):
        return ""
    return (f"; the `mlp` proxy: {row.median_s:.1f} s median on plant seedlings, "
            "benchmarks/results/fitness_proxies.md")


def _spent(notes) -> str:
    """The fitness's cost per call over the problems, as "lo-hi" milliseconds."""
    ms = sorted({n["problem"]: n["ms_per_eval"] for n in notes}.values())
    return f"{ms[0]:.0f}" if len(ms) == 1 or round(ms[0]) == round(ms[-1]) else f"{ms[0]:.0f}-{ms[-1]:.0f}"


def markdown(frame, runs, notes, *, command: str, seeds: int, elapsed: float, jobs: int = 1,
             context: Optional[Dict[str, object]] = None) -> str:
    context = context or run_context()
    lines = ["# Peers: graftsearch vs Optuna (NSGA-II, TPE) vs pymoo vs random, greedy and local "
             "search vs the manual pick", "",
             f"Command: `{command}`  ",
             f"Machine: {context['machine']}; {context['versions']}; total {elapsed / 60:.1f} min"
             + (f"; the problems measured {jobs} at a time, one process each" if jobs > 1 else "") + ".  ",
             f"Seeds: {seeds} (0..{seeds - 1}); population {POPULATION} for the peers' NSGA-IIs "
             f"(`pymoo-ux-8`: graftsearch's), graftsearch at its default "
             f"({int(context.get('population', POPULATION))}; its generations unbounded: the "
             "budget stops every tool); TPE asks at "
             f"most {TPE_ASKS_PER_CALL}x its budget in trials and Optuna's NSGA-II "
             f"{NSGA_ASKS_PER_CALL}x"
             + "".join(f" ({n}: {k}x)" for n, k in PROBLEM_NSGA_ASKS.items()
                       if any(x["problem"] == n for x in notes))
             + " (a tool that stops on this cap shows fewer calls).  ",
             f"Fitness: a lookup table of the exhaustive P values of each problem ({FITNESS_TEXT}), "
             "so every tool sees identical numbers and a fitness call costs microseconds: what is timed "
             "is each tool's own overhead. **Every tool's asks go through one evaluation cache; budget = "
             "distinct evaluations** (a repeat is answered free, for every tool); empty selections "
             "and (max-accuracy) selections over size_max are answered without a call. Smaller budgets "
             "are prefixes of each run's call sequence. Verdicts: two-sided Mann-Whitney U test over "
             f"the seeds, p < {ALPHA:g}. `pymoo-ux`: pymoo with graftsearch's uniform crossover "
             "(`pymoo-ux-8`: and its population); "
             "`local`: first-improvement bit flips from the best single taps. See "
             "`benchmarks/peers.py` for the glue code.", "",
             "Objectives (both from the paper's manual pick: three consecutive taps before a stage "
             "boundary): `min-size` with p_min = P of the manual pick, `max-accuracy` with "
             "size_max = size of the manual pick.", ""]
    cut = sorted({n["problem"] for n in notes if n["problem"] in PROBLEM_PCTS})
    if cut:
        lines += ["Budgets per problem: " + "; ".join(
            f"{name} to {max(PROBLEM_PCTS[name]):g}% only (its space holds "
            f"{2**next(n['n'] for n in notes if n['problem'] == name) - 1:,} selections; a larger share "
            f"would run Optuna's NSGA-II, whose cost per trial grows with the trials, {NSGA_TRIAL_S:.0f} s "
            f"for one run to 5% at {NSGA_ASKS_PER_CALL}x, measured)"
            for name in cut) + ".", ""]
    lines += ["## Targets", ""] + verdicts(frame, runs) + [""]
    for note in notes:
        if note["objective"] == "min-size":
            lines += [f"## {note['problem']}", "", note["describe"] + ".  ",
                      f"Exhaustive: {2**note['n'] - 1:,} selections ({note['ms_per_eval']:.2f} ms each with the "
                      f"{FITNESS} fitness). Manual pick: taps {';'.join(map(str, note['manual']))}, "
                      f"P {note['manual_p']:.4f}, {note['manual_size']:,.0f} params.", ""]
        sub = frame[(frame.problem == note["problem"]) & (frame.objective == note["objective"])]
        rsub = runs[(runs.problem == note["problem"]) & (runs.objective == note["objective"])]
        pcts = sorted(sub.budget_pct.unique())
        limit = (f"p_min {note['limit']:.4f}" if note["objective"] == "min-size"
                 else f"size_max {note['limit']:,.0f} params")
        lines += [f"### {note['problem']}, {note['objective']} ({limit})", "",
                  f"Exhaustive best pick: taps {';'.join(map(str, note['best_taps']))}, "
                  f"{note['best_size']:,.0f} params, P {note['best_p']:.4f} "
                  f"({note['n_feasible']:,} feasible selections). Manual pick: rank {note['manual_rank']} of them.",
                  "", "Hypervolume fraction (mean ± sd over seeds), reference at the constraint "
                  f"({'P = p_min' if note['objective'] == 'min-size' else 'size = size_max'}):", "",
                  "| budget | calls | " + " | ".join(TOOLS) + " | manual pick |",
                  "|---:|---:|" + "---|" * (len(TOOLS) + 1)]
        for pct in pcts:
            cells = [_ms(sub[(sub.budget_pct == pct) & (sub.tool == t)].hv_c_fraction) for t in TOOLS]
            lines.append(f"| {pct:g}% | {note['budgets'][pct]:,} | " + " | ".join(cells)
                         + f" | {note['manual_hv_c']:.4f} |")
        lines += ["", "graftsearch against each tool (Mann-Whitney U on the fractions above; p-value):", ""]
        lines += verdict_table(frame, note["problem"], note["objective"])
        lines += ["", "Hypervolume fraction with the reference at P = 0 (graftsearch's own, (1.1, 1.0)), "
                  "mean ± sd:", "",
                  "| budget | " + " | ".join(TOOLS) + " | manual pick |",
                  "|---:|" + "---|" * (len(TOOLS) + 1)]
        for pct in pcts:
            cells = [_ms(sub[(sub.budget_pct == pct) & (sub.tool == t)].hv_fraction) for t in TOOLS]
            lines.append(f"| {pct:g}% | " + " | ".join(cells) + f" | {note['manual_hv']:.4f} |")
        top = max(pcts)
        last = sub[sub.budget_pct == top]
        lines += ["", f"Finding the exhaustive best pick within {note['budgets'][top]:,} calls ({top:g}%):", "",
                  "| tool | found (seeds) | calls to find it (median, min-max) | rank of best found (median, worst) | "
                  + ("size above best (median)" if note["objective"] == "min-size" else "P below best (median)")
                  + " |", "|---|---:|---|---|---:|"]
        for t in TOOLS:
            r = rsub[rsub.tool == t]
            hits = r.calls_to_best.dropna()
            calls = (f"{hits.median():,.0f} ({hits.min():,.0f}-{hits.max():,.0f})" if len(hits) else "not found")
            lt = last[last.tool == t]
            gap = lt.best_gap.median() if len(lt) else math.nan
            gap_text = ((f"{gap:+.1%}" if note["objective"] == "min-size" else f"{gap:.4f}")
                        if not math.isnan(gap) else "nothing feasible" if len(lt)
                        else f"not run to {note['budgets'][top]:,} calls")
            if t == "optuna-tpe" and top_of(t, note["budgets"]) < note["budgets"][top]:
                calls += f" (run to {top_of(t, note['budgets']):,} calls)"
            lines.append(f"| {t} | {len(hits)}/{len(r)} | {calls} | {lt.best_rank.median():.0f}, "
                         f"{lt.best_rank.max():.0f} | {gap_text} |")
        lines += ["", f"Each tool's own cost over {note['budgets'][top]:,} calls (wall minus fitness time per call, "
                  "mean over seeds; peak memory allocated during the run, seed 0; asks per run, mean):", "",
                  "| tool | overhead µs / call | vs graftsearch | peak memory KiB | asks | duplicate asks | "
                  "answered without a call | repeats answered by the cache |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        ours = rsub[rsub.tool == "graftsearch"].overhead_us_per_call.mean()
        for t in TOOLS + ("graftsearch+files",):
            r = rsub[rsub.tool == t]
            o = r.overhead_us_per_call.mean()
            peak = r.peak_kib.dropna()
            lines.append(f"| {t} | {o:,.0f} | {o / ours:.2f}x | {peak.iloc[0]:,.0f} | " if len(peak) else
                         f"| {t} | {o:,.0f} | {o / ours:.2f}x | - | ")
            lines[-1] += (f"{r.asks.mean():,.0f} | {r.duplicate_asks.mean():,.0f} | {r.free_asks.mean():,.0f} | "
                          f"{r.cache_repeats.mean():,.0f} |")
        lines.append("")
    lines += discussion(frame, runs, notes, context)
    lines += ["`graftsearch+files`: the same search writing its run directory (evaluations.csv, pareto.csv, "
              "convergence.csv, checkpoint.pkl after every generation); it makes the same calls (checked). "
              "`random` draws distinct selections and `greedy` and `local` remember their evaluations, so "
              "none of them asks twice; graftsearch's duplicate asks are archive hits (answered from the "
              "archive, no call). " + _greedy_ends(runs), ""]
    return "\n".join(lines)


PROBLEMS = ("plant-seedlings", "deepweeds-size", "resnet-shape")


def _measure_one(problem: Problem, seeds: int, pcts: Sequence[float]):
    import torch

    torch.set_num_threads(1)
    return measure([problem], seeds, pcts, log=lambda m: print(m, flush=True))


def problems_for(quick: bool, log=print, names: Sequence[str] = PROBLEMS) -> List[Problem]:
    if quick:
        return [synthetic_problem(n_taps=9, name="synthetic-9", describe="9 generated taps (quick smoke run)")]
    problems = []
    if "plant-seedlings" in names:
        if DATA.is_dir():
            problems.append(real_problem(14))
        else:
            log(f"{DATA} not found: the real problem is skipped")
    if "deepweeds-size" in names:
        problems.append(deepweeds_problem())
    if "resnet-shape" in names:
        problems.append(resnet_shape_problem())
    return problems


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: a 9-tap synthetic problem, 2 seeds, budgets 5/10/20%%")
    parser.add_argument("--out", default=str(RESULTS), help="where the tables go")
    parser.add_argument("--jobs", type=int, default=1,
                        help="problems measured in this many processes at once (one thread each)")
    parser.add_argument("--problems", default=",".join(PROBLEMS),
                        help=f"comma-separated, of {', '.join(PROBLEMS)} (default: all)")
    parser.add_argument("--render", action="store_true",
                        help="measure nothing: write peers.md again from the CSVs and peers_meta.json "
                             "of an earlier run in --out (after a change to the page's text)")
    args = parser.parse_args(argv)
    if args.render:
        return render_saved(Path(args.out))
    import torch

    torch.set_num_threads(1)
    started = time.perf_counter()
    seeds = 2 if args.quick else args.seeds
    names = [n.strip() for n in args.problems.split(",") if n.strip()]
    unknown = sorted(set(names) - set(PROBLEMS))
    if unknown:
        parser.error(f"unknown problem(s) {unknown}; choose from {', '.join(PROBLEMS)}")
    pcts = QUICK_BUDGET_PCTS if args.quick else BUDGET_PCTS
    problems = problems_for(args.quick, names=names)
    if args.jobs > 1 and len(problems) > 1:
        import pandas as pd
        from joblib import Parallel, delayed

        # one process per problem (each on one thread): a problem's tools still run side by
        # side, seed by seed, in its process
        # the largest space first: it takes longest, and the others share the other processes
        parts = Parallel(n_jobs=min(args.jobs, len(problems)))(
            delayed(_measure_one)(p, seeds, pcts) for p in sorted(problems, key=lambda p: -p.n))
        frame = pd.concat([f for f, _, _ in parts], ignore_index=True)
        runs = pd.concat([r for _, r, _ in parts], ignore_index=True)
        # the page lists the problems in PROBLEMS' order, whatever order they ran in
        notes = sorted((n for _, _, ns in parts for n in ns), key=lambda n: PROBLEMS.index(n["problem"])
                       if n["problem"] in PROBLEMS else len(PROBLEMS))
    else:
        frame, runs, notes = measure(problems, seeds, pcts, log=lambda m: print(m, flush=True))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # full precision: the page's verdicts are computed from these files (a %.6g rounding
    # would merge seeds that differ in the 7th digit into ties)
    frame.to_csv(out / "peers.csv", index=False)
    runs.to_csv(out / "peers_runs.csv", index=False)
    command = " ".join(["python -m benchmarks.peers"] + list(argv if argv is not None else sys.argv[1:]))
    meta = {"command": command, "seeds": seeds, "elapsed": time.perf_counter() - started,
            "jobs": min(args.jobs, len(problems)), "context": run_context(),
            # JSON keys are strings: the budgets travel as (pct, calls) pairs
            "notes": [dict(n, budgets=sorted(n["budgets"].items())) for n in notes]}
    write_text(out / "peers_meta.json", json.dumps(meta, default=_plain, indent=1) + "\n")
    return render_saved(out)


def _plain(value):
    """numpy scalars (the notes' masks and sizes) as Python numbers for JSON."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"a peers note holds a {type(value).__name__}, which JSON cannot keep")


def render_saved(out: Path) -> int:
    """peers.md from what a run left in ``out``: its two CSVs and peers_meta.json (the run's
    per-problem notes, command, seeds, wall time and :func:`run_context`). A run writes its page
    this way too, so a page rendered again equals the page the run wrote, in any process, as
    long as the page's code and constants (POPULATION, the ask caps) are unchanged."""
    import pandas as pd

    meta_path = out / "peers_meta.json"
    missing = [p.name for p in (out / "peers.csv", out / "peers_runs.csv", meta_path) if not p.is_file()]
    if missing:
        print(f"cannot render: {', '.join(missing)} not in {out}; run `python -m benchmarks.peers` "
              "first (the tables committed before peers_meta.json existed cannot be rendered again)",
              file=sys.stderr)
        return 2
    meta = json.loads(meta_path.read_text())
    notes = [dict(n, budgets={float(k) if float(k) != int(k) else int(k): v for k, v in n["budgets"]})
             for n in meta["notes"]]
    frame = pd.read_csv(out / "peers.csv")
    runs = pd.read_csv(out / "peers_runs.csv")
    text = markdown(frame, runs, notes, command=meta["command"], seeds=meta["seeds"],
                    elapsed=meta["elapsed"], jobs=meta["jobs"], context=meta["context"])
    write_text(out / "peers.md", text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
