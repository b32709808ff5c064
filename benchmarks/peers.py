"""Peers: graftsearch's NSGA-II against what a user would pick instead, side by side in one run.

Every tool searches the same problem with the same fitness and the same evaluation budget:

- ``graftsearch``: :func:`graftsearch.run_search` with its defaults (constrained domination,
  archive, uniform crossover 0.9, bit-flip 1/n, population 32, no refinement), in process;
- ``optuna``: ``NSGAIISampler(population_size=32)`` with the constraint set on each trial
  (``trial.set_constraint``; Optuna < 5: ``constraints_func``, deprecated since 5.0, same
  constrained domination), one boolean categorical parameter per tap, directions (maximise P,
  minimise params), in-memory storage;
- ``pymoo``: ``NSGA2(pop_size=32, BinaryRandomSampling, TwoPointCrossover, BitflipMutation,
  eliminate_duplicates=True)`` on a binary problem with one inequality constraint (pymoo's
  feasibility-first survival and tournament), through ``pymoo.optimize.minimize``;
- ``random``: distinct random selections; ``greedy``: greedy forward selection under size
  penalties (both in ``benchmarks/_problems.py``);
- the paper's manual rule (three consecutive taps before a stage boundary) as a point, and the
  exhaustive front (every selection; by definition hypervolume fraction 1).

How the peers are glued to the problem, as a careful user would: the objective function reads
the selection, looks up its exact size (free: graftsearch's cost model), and calls the fitness
only when it has to. An empty selection is never trained: it gets P = 0, size 0 and a
constraint value of 1 (infeasible). For ``max-accuracy`` a selection over ``size_max`` is never
trained either (P = 0, constraint (size - size_max) / size_max), as graftsearch rejects it on size
alone. Neither peer remembers what it evaluated: a selection asked for again is evaluated again
(a wasted fitness call), as plain Optuna and pymoo do.

Fitness: a lookup table of the exhaustive P values (``_problems.exhaustive_table`` of the fitness
``_problems.make_probe`` chooses: graftsearch's ``fast`` proxy) behind a meter that counts and times every call. So every tool
sees identical numbers, a fitness call costs microseconds, and each tool's own overhead (wall
time minus the time spent inside the fitness) is isolated.

Budget: B fitness calls (duplicates included; free asks not counted) at 1%, 2%, 5%, 10% of the
2^n - 1 selections. Each tool runs once per seed at the largest budget; the smaller budgets are
prefixes of its call sequence (none of these tools looks at the budget before it is spent, so a
run with budget b makes exactly the first b of those calls; tests check it).

Measured per problem, objective and seed:

- hypervolume of the feasible front found / hypervolume of the exhaustive feasible front
  (graftsearch's (size / full size, 1 - P) space, reference (1.1, 1.0));
- fitness calls until the exhaustive best pick was first evaluated, and otherwise how close the
  best pick found came (its rank among all feasible selections in graftsearch's order of
  preference, and its gap in size or P);
- each tool's overhead per fitness call (wall time minus fitness time, same process, tools
  interleaved seed by seed) and the peak of memory it allocated (``tracemalloc``, a separate run
  of seed 0 after a warm-up, so that imports are not counted);
- asks: selections the tool asked for, those asked before (duplicates), those answered without
  training (empty or over ``size_max``), and fitness calls spent on a selection already
  evaluated (wasted).

Usage: ``python -m benchmarks.peers [--seeds 5] [--quick] [--out DIR]``. Writes
``peers.csv`` (per budget), ``peers_runs.csv`` (per run) and ``peers.md``.
"""

from __future__ import annotations

import argparse
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
                                  hv_of, mask_of, preference, random_search, real_problem,
                                  selection_of, synthetic_problem)

import numpy as np  # noqa: E402

import graftsearch as gs  # noqa: E402
from graftsearch.fitness._evaluation import Evaluation  # noqa: E402

BUDGET_PCTS = (1, 2, 5, 10)
QUICK_BUDGET_PCTS = (5, 10, 20)
TOOLS = ("graftsearch", "optuna", "pymoo", "random", "greedy")
PEERS = ("optuna", "pymoo")
POPULATION = 32
EMPTY_VIOLATION = 1.0


# ---------------------------------------------------------------------------------------------
# the metered fitness

class BudgetSpent(Exception):
    """Raised when a tool asks for one fitness call more than its budget."""


class Meter(gs.Fitness):
    """The fitness every tool calls: a table lookup that logs and times each call.

    The log is preallocated, so that it allocates nothing while a tool runs (``tracemalloc``
    then sees only the tool's own memory).
    """

    name = "table"

    def __init__(self, table: np.ndarray, key: str, budget: int):
        self.table, self._key, self.budget = table, key, budget
        self.log = np.zeros(budget, dtype=np.int64)
        self.n = 0
        self.seconds = 0.0

    def key(self) -> str:
        return self._key

    def evaluate(self, selection) -> Evaluation:
        start = time.perf_counter()
        if self.n >= self.budget:
            raise BudgetSpent()
        mask = 0
        for i in selection:
            mask |= 1 << (i - 1)
        self.log[self.n] = mask
        self.n += 1
        result = Evaluation(val_accuracy=float(self.table[mask]), fidelity="table")
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
                    population: int = POPULATION, run_dir: Optional[Path] = None) -> Asks:
    settings = objective.settings(population=population, generations=10**6,
                                  max_evaluations=meter.budget, seed=seed)
    result = gs.run_search(problem.taps, problem.head, meter, settings, run_dir=run_dir)
    asks = Asks()
    trained = sum(1 for r in result.records if r.trained)
    asks.total = len(result.records) + result.archive_hits
    asks.duplicate = result.archive_hits
    asks.free = len(result.records) - trained
    asks.generations = result.generations
    return asks


def run_optuna(problem: Problem, objective: Objective, meter: Meter, seed: int,
               population: int = POPULATION) -> Asks:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    asks = Asks()
    names = [f"tap{i}" for i in range(1, problem.n + 1)]

    def objective_fn(trial):
        mask = 0
        for i, name in enumerate(names):
            if trial.suggest_categorical(name, [False, True]):
                mask |= 1 << i
        p, size, constraint = _answer(problem, objective, meter, mask, asks)
        if modern:
            trial.set_constraint("limit", constraint)
        else:
            trial.set_user_attr("constraint", (constraint,))
        return p, size

    def stop(study, trial):
        if meter.n >= meter.budget:
            study.stop()

    # Optuna >= 5 reads constraints set on the trial (constraints_func is deprecated there);
    # both feed the same constrained domination
    modern = hasattr(optuna.trial.Trial, "set_constraint")
    extra = {} if modern else {"constraints_func": lambda t: t.user_attrs["constraint"]}
    sampler = optuna.samplers.NSGAIISampler(population_size=population, seed=seed, **extra)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    # the cap only guards against a sampler that never asks for a new selection
    study.optimize(objective_fn, n_trials=50 * meter.budget + 1000, callbacks=[stop])
    return asks


def run_pymoo(problem: Problem, objective: Objective, meter: Meter, seed: int,
              population: int = POPULATION) -> Asks:
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.core.problem import Problem as PymooProblem
    from pymoo.operators.crossover.pntx import TwoPointCrossover
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

    algorithm = NSGA2(pop_size=population, sampling=BinaryRandomSampling(), crossover=TwoPointCrossover(),
                      mutation=BitflipMutation(), eliminate_duplicates=True)
    try:
        # the generation cap only guards against a run that stops finding new selections
        minimize(Taps(), algorithm, ("n_gen", 50 * meter.budget // population + 100), seed=seed, verbose=False)
    except BudgetSpent:
        pass
    return asks


def run_random(problem: Problem, objective: Objective, meter: Meter, seed: int, **_) -> Asks:
    asks = Asks()
    random_search(problem, meter.p, meter.budget, seed, objective)
    asks.total = asks.duplicate = 0  # it draws distinct selections; asks are its calls
    return asks


def run_greedy(problem: Problem, objective: Objective, meter: Meter, seed: int, **_) -> Asks:
    greedy_forward(problem, meter.p, meter.budget, seed, objective)
    return Asks()


RUNNERS: Dict[str, Callable[..., Asks]] = {"graftsearch": run_graftsearch, "optuna": run_optuna,
                                           "pymoo": run_pymoo, "random": run_random, "greedy": run_greedy}


def run_tool(tool: str, problem: Problem, objective: Objective, table: np.ndarray, budget: int, seed: int,
             *, memory: bool = False, run_dir: Optional[Path] = None):
    """One run of ``tool``: (meter, asks, wall seconds, peak KiB or None)."""
    meter = Meter(table, problem.fitness.key(), budget)
    kwargs = {"run_dir": run_dir} if run_dir is not None else {}
    if memory:
        tracemalloc.start()
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
    start = time.perf_counter()
    asks = RUNNERS[tool](problem, objective, meter, seed, **kwargs)
    wall = time.perf_counter() - start
    peak = None
    if memory:
        peak = (tracemalloc.get_traced_memory()[1] - base) / 1024
        tracemalloc.stop()
    return meter, asks, wall, peak


# ---------------------------------------------------------------------------------------------
# measuring

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
        budgets = {pct: budget_of(pct, problem) for pct in pcts}
        top = max(budgets.values())
        for objective in objectives:
            hv_all = hv_of(every, problem, table, objective)
            ranked = sorted(feasible_masks(every, problem, table, objective),
                            key=lambda m: preference(m, problem, table, objective))
            order = {m: i + 1 for i, m in enumerate(ranked)}
            best = ranked[0]
            note = {"problem": problem.name, "describe": problem.describe, "n": problem.n,
                    "objective": objective.kind, "limit": objective.limit, "ms_per_eval": spe * 1000,
                    "manual": problem.manual, "manual_p": float(table[manual]), "manual_size": problem.size(manual),
                    "manual_hv": hv_of([manual], problem, table, objective) / hv_all,
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
                    meter, asks, wall, _ = run_tool(name, problem, objective, table, top, seed, run_dir=run_dir)
                    calls = [int(m) for m in meter.calls]
                    if run_dir is not None:
                        shutil.rmtree(run_dir, ignore_errors=True)
                        # writing the run directory must not change what the search does
                        assert calls == reference_calls, "graftsearch with a run directory searched differently"
                    elif tool == "graftsearch":
                        reference_calls = calls
                    hit = next((i + 1 for i, m in enumerate(calls) if m == best), None)
                    runs.append({"problem": problem.name, "objective": objective.kind, "limit": objective.limit,
                                 "tool": tool, "seed": seed, "budget": top, "fitness_calls": len(calls),
                                 "unique_calls": len(set(calls)), "wasted_calls": len(calls) - len(set(calls)),
                                 "asks": asks.total if asks.total else len(calls),
                                 "duplicate_asks": asks.duplicate, "free_asks": asks.free,
                                 "generations": asks.generations or math.nan,
                                 "calls_to_best": hit, "wall_s": wall, "fitness_s": meter.seconds,
                                 "overhead_us_per_call": (wall - meter.seconds) / max(1, len(calls)) * 1e6,
                                 "peak_kib": math.nan})
                    if run_dir is not None:
                        continue
                    for pct, b in budgets.items():
                        prefix = calls[:b]
                        found = best_mask(prefix, problem, table, objective)
                        rank, gap = _closeness(found, best, problem, table, objective, order)
                        rows.append({"problem": problem.name, "objective": objective.kind,
                                     "limit": objective.limit, "tool": tool, "seed": seed, "budget_pct": pct,
                                     "budget": b, "fitness_calls": len(prefix),
                                     "unique_calls": len(set(prefix)),
                                     "hv_fraction": hv_of(prefix, problem, table, objective) / hv_all,
                                     "found_best": found == best, "best_rank": rank, "best_gap": gap})
                log(f"  {problem.name} / {objective.kind} / seed {seed} done")
            for tool in TOOLS:  # peak memory: one more run of seed 0 under tracemalloc
                _, _, _, peak = run_tool(tool, problem, objective, table, top, 0, memory=True)
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


def _ms(values) -> str:
    values = np.asarray(values, dtype=float)
    return f"{values.mean():.4f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.4f}"


def _losses(frame) -> List[dict]:
    """Every (problem, objective, budget, tool) whose mean hypervolume fraction beats graftsearch's."""
    stats = frame.groupby(["problem", "objective", "budget_pct", "tool"]).hv_fraction.agg(["mean", "std"])
    out = []
    for (problem, objective, pct), part in stats.groupby(level=[0, 1, 2]):
        ours = part.xs("graftsearch", level=3).iloc[0]
        for tool in TOOLS[1:]:
            theirs = part.xs(tool, level=3).iloc[0]
            if theirs["mean"] > ours["mean"] + 1e-12:
                spread = max(ours["std"], theirs["std"])
                out.append({"tool": tool, "problem": problem, "objective": objective, "pct": pct,
                            "theirs": theirs["mean"], "ours": ours["mean"],
                            "noise": theirs["mean"] - ours["mean"] < spread})
    return out


def verdicts(frame, runs) -> List[str]:
    """Lines on the targets: hypervolume >= each peer's at every budget, overhead <= each peer's."""
    lines = []
    losses = _losses(frame)

    def text(x):
        return (f"{x['tool']} on {x['problem']} / {x['objective']} at {x['pct']:g}%: {x['theirs']:.4f} vs "
                f"graftsearch {x['ours']:.4f}" + (" (less than one sd of the seeds apart)" if x["noise"] else ""))

    cases = len(frame.groupby(["problem", "objective", "budget_pct"]))
    beaten = [x for x in losses if x["tool"] in PEERS]
    lines.append("- Hypervolume fraction >= Optuna's and pymoo's at every budget (means over seeds): "
                 + ("**met**." if not beaten else f"**not met** in {len(beaten)} of {2 * cases} comparisons:"))
    lines += [f"  - {text(x)}" for x in beaten]
    others = [x for x in losses if x["tool"] not in PEERS]
    if others:
        lines.append(f"- Random search or greedy above graftsearch's mean in {len(others)} of {2 * cases} "
                     "comparisons:")
        lines += [f"  - {text(x)}" for x in others]
    over = runs[runs.tool.isin(("graftsearch",) + PEERS)].groupby(["problem", "objective", "tool"]) \
        .overhead_us_per_call.mean().unstack()
    worse = [(p, o, peer, row["graftsearch"], row[peer]) for (p, o), row in over.iterrows() for peer in PEERS
             if row["graftsearch"] > row[peer]]
    lines.append("- Overhead per fitness call <= Optuna's and pymoo's (means over seeds): "
                 + ("**met**." if not worse else f"**not met** in {len(worse)} of {2 * len(over)} comparisons:"))
    lines += [f"  - {p} / {o}: graftsearch {g:,.0f} µs vs {peer} {v:,.0f} µs ({g / v:.1f}x)"
              for p, o, peer, g, v in worse]
    return lines


def discussion(frame, runs, notes) -> List[str]:
    """Why a peer wins where it does, with the numbers of this run behind each reason."""
    ours = runs[runs.tool == "graftsearch"]
    n = notes[0]["n"] if notes else 0
    losses = _losses(frame)
    lines = ["## Where a peer wins, and why", ""]
    small = [x for x in losses if x["pct"] <= 2]
    if small:
        budgets = frame[frame.budget_pct <= 2].budget
        per_gen = ours.fitness_calls / ours.generations
        gens = (budgets.min() / per_gen.max(), budgets.max() / per_gen.min())
        lines.append(
            f"- **Small budgets (<= 2%).** {len(small)} of the {len(losses)} cases where a peer's or a "
            f"baseline's mean is above graftsearch's are at <= 2% of the space ({budgets.min():,}-"
            f"{budgets.max():,} calls, about {gens[0]:.0f}-{gens[1]:.0f} generations of graftsearch), "
            f"{sum(x['noise'] for x in small)} of them less than one seed-sd apart. graftsearch's "
            f"initial population holds every single-tap selection ({n} of its first {POPULATION} calls, the "
            "search issue's rule): these smallest models sit at the low-accuracy end of the front, which "
            "helps `min-size` with a low p_min but is far from the best pick of `max-accuracy` or of a high "
            "p_min, while pymoo's random bits (half the taps on) and random search start among larger "
            "selections. Greedy forward selection is strong early on these problems because P grows "
            "smoothly as taps are added: its first descent already lies near the front.")
    large = [x for x in losses if x["pct"] > 2 and x["tool"] in PEERS]
    if large:
        spread = []
        for key in sorted({(x["problem"], x["objective"], x["pct"]) for x in large}):
            sub = frame[(frame.problem == key[0]) & (frame.objective == key[1]) & (frame.tool == "graftsearch")
                        & (frame.budget_pct == key[2])]
            spread.append(f"{key[0]} / {key[1]} at {key[2]:g}%: graftsearch's seeds range "
                          f"{sub.hv_fraction.min():.4f}-{sub.hv_fraction.max():.4f} and "
                          f"{int(sub.found_best.sum())} of {len(sub)} found the exhaustive best pick")
        lines.append(
            f"- **Larger budgets (> 2%).** A peer's mean is above graftsearch's in {len(large)} case(s): "
            + "; ".join(f"{x['tool']} on {x['problem']} / {x['objective']} at {x['pct']:g}% "
                        f"(+{x['theirs'] - x['ours']:.4f})" for x in large)
            + " (differences below 0.001 are ties in practice). graftsearch's spread over seeds there: "
            + "; ".join(spread) + ".")
    per_gen = ours.assign(new=ours.fitness_calls / ours.generations, hits=ours.duplicate_asks / ours.asks)
    stalls = per_gen.groupby(["problem", "objective"], as_index=False)[["hits", "new"]].mean()
    over = runs[runs.tool.isin(("graftsearch",) + PEERS)].groupby(["problem", "objective", "tool"]) \
        .overhead_us_per_call.mean().unstack()
    behind = [f"{p} / {o} ({peer} {row[peer]:,.0f} µs vs graftsearch {row['graftsearch']:,.0f} µs)"
              for (p, o), row in over.iterrows() for peer in PEERS if row["graftsearch"] > row[peer]]
    free = ours.assign(share=ours.free_asks / ours.asks).groupby(["problem", "objective"]).share.mean()
    lines.append(
        "- **Overhead.** "
        + (("A peer's own cost per call is below graftsearch's in: " + "; ".join(behind) + ". ")
           if behind else "graftsearch's own cost per call is at or below both peers' everywhere here. ")
        + "Per generation graftsearch computes each new selection's exact size, builds DEAP "
        "individuals for the offspring (survivors are reused), updates the feasible front "
        "incrementally with the new records and takes its hypervolume (for the convergence log and "
        "the stagnation test); pymoo keeps its population in numpy arrays. Under `max-accuracy` "
        "graftsearch also breeds selections over size_max, which are answered without a call but "
        "cost the same bookkeeping, so its cost is spread over fewer calls: "
        + "; ".join(f"{p} / {o}: {v:.0%} of asks answered on size alone" for (p, o), v in free.items()
                    if o == "max-accuracy")
        + ". Its fixed cost per generation is spread over the new calls of that generation: "
        + "; ".join(f"{r.problem} / {r.objective}: {r.new:.1f} new calls per generation, {r.hits:.0%} "
                    "of asks answered from the archive" for r in stalls.itertuples())
        + f". With a real fitness this overhead is small next to one evaluation (the `{FITNESS}` fitness "
        f"behind these tables: {_spent(notes)} ms per call{_mlp_seconds()}).")
    waste = runs[runs.tool.isin(PEERS)].assign(share=lambda d: d.wasted_calls / d.fitness_calls) \
        .groupby("tool").share.agg(["min", "max"])
    top = frame[(frame.budget_pct == max(frame.budget_pct)) & frame.tool.isin(("graftsearch",) + PEERS)] \
        .groupby("tool").hv_fraction.mean()
    lines.append(
        "- **Duplicates.** graftsearch never evaluates a selection twice; plain Optuna and pymoo do: "
        + ", ".join(f"{t} {r['min']:.0%}-{r['max']:.0%} of its calls" for t, r in waste.iterrows())
        + f". That is budget they lose; at {max(frame.budget_pct):g}% their mean fractions over all "
        "problems and objectives are " + ", ".join(f"{t} {v:.4f}" for t, v in top.items()) + ".")
    files = runs[runs.tool == "graftsearch+files"].overhead_us_per_call
    lines.append(
        f"- **Run directory.** Writing evaluations.csv, pareto.csv, convergence.csv and checkpoint.pkl "
        f"after every generation (the default, `checkpoint_every=1`) raises graftsearch's overhead to "
        f"{files.min() / 1000:.1f}-{files.max() / 1000:.1f} ms per call here: the checkpoint pickles the whole "
        "archive every generation.")
    lines.append("")
    return lines


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


def markdown(frame, runs, notes, *, command: str, seeds: int, elapsed: float) -> str:
    pcts = sorted(frame.budget_pct.unique())
    lines = ["# Peers: graftsearch vs Optuna vs pymoo vs random vs greedy vs the manual pick", "",
             f"Command: `{command}`  ",
             f"Machine: {_machine()}; {_versions()}; total {elapsed / 60:.1f} min.  ",
             f"Seeds: {seeds} (0..{seeds - 1}); population {POPULATION} for the three NSGA-IIs.  ",
             f"Fitness: a lookup table of the exhaustive P values of each problem ({FITNESS_TEXT}), "
             "so every tool sees identical numbers and a fitness call costs microseconds: what is timed "
             "is each tool's own overhead. Budget = fitness calls, duplicates included; empty selections "
             "and (max-accuracy) selections over size_max are answered without a call. Smaller budgets "
             "are prefixes of each run's call sequence. See `benchmarks/peers.py` for the glue code.", "",
             "Objectives (both from the paper's manual pick: three consecutive taps before a stage "
             "boundary): `min-size` with p_min = P of the manual pick, `max-accuracy` with "
             "size_max = size of the manual pick.", ""]
    lines += ["## Targets", ""] + verdicts(frame, runs) + [""]
    for note in notes:
        if note["objective"] == "min-size":
            lines += [f"## {note['problem']}", "", note["describe"] + ".  ",
                      f"Exhaustive: {2**note['n'] - 1:,} selections ({note['ms_per_eval']:.2f} ms each with the "
                      f"{FITNESS} fitness). Manual pick: taps {';'.join(map(str, note['manual']))}, "
                      f"P {note['manual_p']:.4f}, {note['manual_size']:,.0f} params.", ""]
        sub = frame[(frame.problem == note["problem"]) & (frame.objective == note["objective"])]
        rsub = runs[(runs.problem == note["problem"]) & (runs.objective == note["objective"])]
        limit = (f"p_min {note['limit']:.4f}" if note["objective"] == "min-size"
                 else f"size_max {note['limit']:,.0f} params")
        lines += [f"### {note['problem']}, {note['objective']} ({limit})", "",
                  f"Exhaustive best pick: taps {';'.join(map(str, note['best_taps']))}, "
                  f"{note['best_size']:,.0f} params, P {note['best_p']:.4f} "
                  f"({note['n_feasible']:,} feasible selections). Manual pick: rank {note['manual_rank']} of them.",
                  "", "Hypervolume fraction (mean ± sd over seeds):", "",
                  "| budget | calls | " + " | ".join(TOOLS) + " | manual pick | exhaustive |",
                  "|---:|---:|" + "---|" * (len(TOOLS) + 2)]
        for pct in pcts:
            cells = [_ms(sub[(sub.budget_pct == pct) & (sub.tool == t)].hv_fraction) for t in TOOLS]
            lines.append(f"| {pct:g}% | {note['budgets'][pct]:,} | " + " | ".join(cells)
                         + f" | {note['manual_hv']:.4f} | 1 ({2**note['n'] - 1:,} calls) |")
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
            gap = lt.best_gap.median()
            gap_text = (f"{gap:+.1%}" if note["objective"] == "min-size" else f"{gap:.4f}") if not math.isnan(gap) \
                else "nothing feasible"
            lines.append(f"| {t} | {len(hits)}/{len(r)} | {calls} | {lt.best_rank.median():.0f}, "
                         f"{lt.best_rank.max():.0f} | {gap_text} |")
        lines += ["", f"Each tool's own cost over {note['budgets'][top]:,} calls (wall minus fitness time per call, "
                  "mean over seeds; peak memory allocated during the run, seed 0; asks per run, mean):", "",
                  "| tool | overhead µs / call | vs graftsearch | peak memory KiB | asks | duplicate asks | "
                  "answered without a call | wasted calls (duplicates evaluated) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        ours = rsub[rsub.tool == "graftsearch"].overhead_us_per_call.mean()
        for t in TOOLS + ("graftsearch+files",):
            r = rsub[rsub.tool == t]
            o = r.overhead_us_per_call.mean()
            peak = r.peak_kib.dropna()
            lines.append(f"| {t} | {o:,.0f} | {o / ours:.2f}x | {peak.iloc[0]:,.0f} | " if len(peak) else
                         f"| {t} | {o:,.0f} | {o / ours:.2f}x | - | ")
            lines[-1] += (f"{r.asks.mean():,.0f} | {r.duplicate_asks.mean():,.0f} | {r.free_asks.mean():,.0f} | "
                          f"{r.wasted_calls.mean():,.0f} |")
        lines.append("")
    lines += discussion(frame, runs, notes)
    lines += ["`graftsearch+files`: the same search writing its run directory (evaluations.csv, pareto.csv, "
              "convergence.csv, checkpoint.pkl after every generation); it makes the same calls (checked). "
              "`random` draws distinct selections and `greedy` remembers its evaluations, so neither asks "
              "twice; graftsearch's duplicate asks are archive hits (answered from the archive, no call). "
              "`greedy` ends when its 201 restarts do, often before the budget.", ""]
    return "\n".join(lines)


def problems_for(quick: bool, log=print) -> List[Problem]:
    if quick:
        return [synthetic_problem(n_taps=9, name="synthetic-9", describe="9 generated taps (quick smoke run)")]
    problems = []
    if DATA.is_dir():
        problems.append(real_problem(14))
    else:
        log(f"{DATA} not found: the real problem is skipped")
    problems.append(deepweeds_problem())
    return problems


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: a 9-tap synthetic problem, 2 seeds, budgets 5/10/20%%")
    parser.add_argument("--out", default=str(RESULTS), help="where the tables go")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    started = time.perf_counter()
    seeds = 2 if args.quick else args.seeds
    frame, runs, notes = measure(problems_for(args.quick), seeds, QUICK_BUDGET_PCTS if args.quick else BUDGET_PCTS,
                                 log=lambda m: print(m, flush=True))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "peers.csv", index=False, float_format="%.6g")
    runs.to_csv(out / "peers_runs.csv", index=False, float_format="%.6g")
    command = " ".join(["python -m benchmarks.peers"] + list(argv if argv is not None else sys.argv[1:]))
    text = markdown(frame, runs, notes, command=command, seeds=seeds, elapsed=time.perf_counter() - started)
    (out / "peers.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
