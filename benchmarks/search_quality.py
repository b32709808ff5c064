"""Search quality: NSGA-II against random search and greedy forward selection.

For each problem the exhaustive table (the fitness of every selection of a subspace of taps) is
computed once; the searches then read it, so that every method sees exactly the same fitness
and runs at equal evaluation budgets (2%, 5%, 10% of the exhaustive count). Metric: hypervolume
of the feasible front a method found / hypervolume of the exhaustive feasible front (graftsearch's
normalised (size / full size, 1 - P) space, reference (1.1, 1.0)); mean, spread and minimum over
seeds. Two constraints per problem: ``p_min`` = 0.01 (the whole accuracy/size trade-off) and
``p_min`` = P of the paper-style manual pick (three consecutive taps ending at a stage boundary).

Problems:

- ``plant-seedlings``: the real feature cache (EfficientNet-Lite0 with ImageNet weights, 128 px,
  plant-seedlings images, train/val split of the cache) restricted to its first 14 taps
  (features.0 ... features.6.1, 2^14 = 16,384 selections). The last four taps (192, 192, 320 and
  1,280 channels) are left out: with them one exhaustive table needs solves in up to 3,120
  dimensions for 262,144 selections, hours on this 2-core machine.
- ``synthetic``: generated features of 14 taps whose class signal grows with depth and whose taps
  overlap in what they see (so combining taps has diminishing returns).

Fitness: ``_problems.make_probe``: graftsearch's ``fast`` proxy over the problem's features.

Baselines (in ``benchmarks/_problems.py``, shared with ``peers``; not in the library):

- random search: distinct selections drawn as the search's initial population draws them
  (a number of taps k uniform in 1..n, then k taps uniformly);
- greedy forward selection: from the empty selection add the tap that most improves
  P - lambda * size / full size, until no tap improves it; lambda = 0 first, then values drawn
  log-uniformly in [1e-3, 10] per seed, until the budget is spent (all candidates evaluated on
  the way count and join the front).

Run: ``python -m benchmarks.search_quality`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import List, Sequence

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._machine import cpu_name  # noqa: E402

from benchmarks._problems import (DATA, FITNESS, FITNESS_TEXT, RESULTS, Objective, Problem,  # noqa: E402
                                  TableFitness, best_mask, exhaustive_table, greedy_forward, hv_of,
                                  mask_of, mask_of_bits, random_search, real_problem, synthetic_problem)

import numpy as np  # noqa: E402

import graftsearch as gs  # noqa: E402

BUDGETS = (2, 5, 10)


def nsga2(problem: Problem, table: np.ndarray, budget: int, seed: int, p_min: float,
          population: int) -> List[int]:
    fitness = TableFitness(table, problem.fitness.key())
    settings = gs.SearchSettings(p_min=p_min, population=population, generations=10**6,
                                 max_evaluations=budget, seed=seed)
    result = gs.run_search(problem.taps, problem.head, fitness, settings)
    return [mask_of_bits(b) for b in result.archive.bits]


# ---------------------------------------------------------------------------------------------

def run(problems: List[Problem], seeds: int, budgets: Sequence[int], population: int):
    import pandas as pd

    rows, notes = [], []
    for problem in problems:
        table, spe = exhaustive_table(problem)
        every = list(range(1, 2**problem.n))
        manual_mask = mask_of(problem.manual)
        p_manual = float(table[manual_mask])
        notes.append({"problem": problem.name, "describe": problem.describe, "n": problem.n,
                      "ms_per_eval": spe * 1000, "manual": problem.manual, "p_manual": p_manual,
                      "size_manual": problem.sizes[manual_mask - 1], "max_p": float(np.nanmax(table[1:])),
                      "size_ref": problem.size_ref})
        for setting, p_min in (("full front", 0.01), ("p_min = manual pick", p_manual)):
            objective = Objective.min_size(p_min)
            hv_all = hv_of(every, problem, table, objective)
            best_all = best_mask(every, problem, table, objective)
            notes[-1][setting] = {"hv": hv_all, "best": best_all, "best_p": float(table[best_all]),
                                  "best_size": problem.sizes[best_all - 1],
                                  "manual_hv": hv_of([manual_mask], problem, table, objective) / hv_all}
            for pct in budgets:
                budget = max(1, round(pct / 100 * len(every)))
                for seed in range(seeds):
                    for method in ("nsga2", "random", "greedy"):
                        start = time.perf_counter()
                        if method == "nsga2":
                            masks = nsga2(problem, table, budget, seed, p_min, population)
                        elif method == "random":
                            masks = random_search(problem, lambda m: table[m], budget, seed)
                        else:
                            masks = greedy_forward(problem, lambda m: table[m], budget, seed)
                        rows.append({"problem": problem.name, "setting": setting, "p_min": p_min,
                                     "method": method, "budget_pct": pct, "budget": budget, "seed": seed,
                                     "evaluations": len(set(masks)),
                                     "hv_fraction": hv_of(masks, problem, table, objective) / hv_all,
                                     "found_best": best_mask(masks, problem, table, objective) == best_all,
                                     "seconds": time.perf_counter() - start})
                    print(f"  {problem.name} / {setting} / {pct}%: seed {seed} done", flush=True)
    return pd.DataFrame(rows), notes


def write(frame, notes, args, elapsed: float, out: Path = RESULTS) -> None:
    import torch

    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "search_quality.csv", index=False, float_format="%.6f")
    summary = (frame.groupby(["problem", "setting", "budget_pct", "method"], sort=False)
               .agg(budget=("budget", "first"), hv_mean=("hv_fraction", "mean"),
                    hv_std=("hv_fraction", "std"), hv_min=("hv_fraction", "min"),
                    found_best=("found_best", "mean"), seconds=("seconds", "mean")).reset_index())
    lines = ["# Search quality: NSGA-II vs random search vs greedy forward selection", "",
             f"Command: `{' '.join(['python -m benchmarks.search_quality'] + list(args))}`  ",
             f"Machine: {cpu_name()}, {os.cpu_count()} cores (shared), "
             f"torch threads {torch.get_num_threads()}, BLAS threads 1; total {elapsed / 60:.1f} min.  ",
             f"Seeds: {frame.seed.nunique()}; NSGA-II population {frame.attrs.get('population')}, "
             "graftsearch defaults otherwise (uniform crossover 0.9, bit-flip 1/n).  ",
             f"Fitness: {FITNESS_TEXT}. Exhaustive tables are cached under $GRAFTSEARCH_CACHE/bench "
             "(~/.cache/graftsearch/bench).", "",
             "Metric: hypervolume of the feasible front found / hypervolume of the exhaustive feasible "
             "front, in graftsearch's (size / full size, 1 - P) space with reference (1.1, 1.0). "
             "`found best` = share of seeds whose smallest feasible selection is the exhaustive one.", ""]
    for note in notes:
        lines += [f"## {note['problem']}", "", note["describe"] + ".  ",
                  f"Exhaustive: {2**note['n'] - 1:,} selections, {note['ms_per_eval']:.2f} ms per evaluation "
                  f"({FITNESS}); best P {note['max_p']:.4f}.  ",
                  f"Manual pick (paper-style, taps {';'.join(map(str, note['manual']))}): P "
                  f"{note['p_manual']:.4f}, {note['size_manual']:,.0f} params; its single-point hypervolume "
                  f"fraction: {note['full front']['manual_hv']:.3f} of the full front.", ""]
        part = summary[summary.problem == note["problem"]]
        for setting in part.setting.unique():
            best = note[setting]["best"]
            lines += [f"**{setting}** (exhaustive best pick, the smallest feasible selection: taps "
                      f"{';'.join(str(i + 1) for i in range(note['n']) if best >> i & 1)}, "
                      f"{note[setting]['best_size']:,.0f} params, P {note[setting]['best_p']:.4f})", "",
                      "| budget | evals | NSGA-II | random | greedy | found best (N / R / G) |",
                      "|---:|---:|---|---|---|---|"]
            sub = part[part.setting == setting]
            for pct in sub.budget_pct.unique():
                cells, found = {}, []
                for method in ("nsga2", "random", "greedy"):
                    r = sub[(sub.budget_pct == pct) & (sub.method == method)].iloc[0]
                    cells[method] = f"{r.hv_mean:.4f} ± {r.hv_std:.4f} (min {r.hv_min:.4f})"
                    found.append(f"{r.found_best:.0%}")
                lines.append(f"| {pct}% | {sub[sub.budget_pct == pct].budget.iloc[0]:,} | {cells['nsga2']} | "
                             f"{cells['random']} | {cells['greedy']} | {' / '.join(found)} |")
            lines.append("")
        nsga = part[part.method == "nsga2"].set_index(["setting", "budget_pct"])
        rnd = part[part.method == "random"].set_index(["setting", "budget_pct"])
        at5 = nsga[nsga.index.get_level_values(1) <= 5]
        target = (at5.groupby(level=0).hv_mean.max() >= 0.99).all()
        above = (nsga.hv_mean > rnd.hv_mean).all()
        lines += [f"Targets: NSGA-II >= 0.99 with <= 5% of the evaluations (mean): "
                  f"{'met' if target else 'NOT met'}; above random search at every budget (mean): "
                  f"{'yes' if above else 'NO'}.", ""]
    (out / "search_quality.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--population", type=int, default=gs.SearchSettings(p_min=0.5).population)
    parser.add_argument("--real-taps", type=int, default=14, help="size of the real tap subspace")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: the synthetic problem cut to 10 taps, 2 seeds")
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--out", default=str(RESULTS), help="where the table goes")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    start = time.perf_counter()
    problems = [synthetic_problem(n_taps=10 if args.quick else 14)]
    if not (args.quick or args.skip_real):
        if DATA.is_dir():
            problems.insert(0, real_problem(args.real_taps))
        else:
            print(f"{DATA} not found: real problem skipped")
    frame, notes = run(problems, 2 if args.quick else args.seeds, BUDGETS, args.population)
    frame.attrs["population"] = args.population
    write(frame, notes, list(argv if argv is not None else sys.argv[1:]), time.perf_counter() - start,
          Path(args.out))


if __name__ == "__main__":
    main()
