"""Peers at mlp cost: wall-clock time to reach 0.95 and 0.99 of the exhaustive hypervolume.

``peers`` isolates each tool's own overhead with a fitness that costs microseconds. A user with
graftsearch's ``mlp`` proxy pays about a second per evaluation instead, and what matters is the
time until the search has found (nearly) the whole front. Here:

- the problem is a 10-tap subspace of the real plant-seedlings problem (EfficientNet-Lite0 at
  128 px, taps 3-12, which hold the manual pick 10;11;12), and its table is the **mlp** proxy's P
  of all 1,023 selections, each evaluation timed (``mlp`` at its defaults, 1 torch thread,
  seed 0; computed once by ``--jobs`` processes and cached under ``$GRAFTSEARCH_CACHE/bench``);
- every tool of ``peers`` (same glue code, same evaluation cache, budget counted in distinct
  evaluations) runs up to ``CAP_PCT`` % of the space per seed; the harness notes the tool's own
  time (wall minus fitness) before each distinct evaluation;
- the wall-clock of the k-th distinct evaluation is that tool time plus the table's measured
  mlp seconds of the first k evaluations; the time to reach a fraction f is that of the first k
  whose prefix reaches f of the exhaustive hypervolume (reference at the constraint, as the
  headline of ``peers``); a seed that does not reach it within the cap counts as never (inf);
- exhaustive search is the reference row: its front is known when all selections are
  evaluated, one after the other.

Verdicts: graftsearch against each tool by a two-sided Mann-Whitney U test on the times over
the seeds (a seed that never reached counts as the longest time).

Usage: ``python -m benchmarks.peers_cost [--seeds 10] [--jobs 2] [--quick] [--out DIR]``.
Writes ``peers_cost.csv`` (per tool, objective, seed and fraction) and ``peers_cost.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._problems import (DATA, RESULTS, TABLES, Objective, Problem, hv_of, mask_of,  # noqa: E402
                                  real_problem, selection_of, synthetic_problem)
from benchmarks.peers import ALPHA, TOOLS, _machine, _versions, comparisons, run_tool  # noqa: E402

import numpy as np  # noqa: E402

FRACTIONS = (0.95, 0.99)
CAP_PCT = 50  # each tool runs to at most this share of the space (exhaustive costs 100%)
MLP_TAPS = tuple(range(3, 13))  # Lite0 taps 3-12: 10 taps, holding the manual pick 10;11;12


def _evaluate_chunk(fitness, n: int, masks: Sequence[int]) -> List[Tuple[int, float, float]]:
    import torch

    torch.set_num_threads(1)
    if masks:  # untimed: the process's first training pays for imports and allocations
        fitness.evaluate(selection_of(masks[0], n))
    out = []
    for m in masks:
        start = time.perf_counter()
        p = fitness.evaluate(selection_of(m, n)).val_accuracy
        out.append((m, float(p), time.perf_counter() - start))
    return out


def timed_table(problem: Problem, jobs: int, log=print) -> Tuple[np.ndarray, np.ndarray, float, int]:
    """P and seconds of every selection (cached on disk), the wall seconds the table took and
    the number of processes it took them on.

    ``jobs`` processes share the selections (interleaved, so each holds small and large ones);
    each evaluation is timed inside its process on one torch thread.
    """
    from joblib import Parallel, delayed

    TABLES.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(problem.fitness.key().encode()).hexdigest()[:16]
    path = TABLES / f"peers_cost-{problem.name}-{digest}.npz"
    if path.exists():
        with np.load(path) as saved:
            return saved["table"], saved["seconds"], float(saved["wall"]), int(saved["jobs"])
    total = 2**problem.n - 1
    log(f"{problem.name}: timed table of {total:,} selections on {jobs} process(es) ...")
    start = time.perf_counter()
    masks = list(range(1, 2**problem.n))
    chunks = [masks[i::jobs] for i in range(jobs)]
    parts = Parallel(n_jobs=jobs)(delayed(_evaluate_chunk)(problem.fitness, problem.n, c) for c in chunks)
    table, seconds = np.full(2**problem.n, np.nan), np.full(2**problem.n, np.nan)
    for part in parts:
        for m, p, s in part:
            table[m], seconds[m] = p, s
    wall = time.perf_counter() - start
    tmp = path.with_name(path.stem + f".{os.getpid()}.tmp.npz")
    np.savez(tmp, table=table, seconds=seconds, wall=wall, jobs=jobs)
    tmp.replace(path)
    return table, seconds, wall, jobs


def first_reaching(calls: Sequence[int], problem: Problem, table: np.ndarray, objective: Objective,
                   target: float) -> Optional[int]:
    """The least k whose first k calls reach ``target`` (hypervolume at the constraint, absolute);
    None when all of them do not. A prefix's hypervolume never falls as k grows, so a binary
    search over k finds it."""
    def hv(k: int) -> float:
        return hv_of(calls[:k], problem, table, objective, at_constraint=True)

    if not calls or hv(len(calls)) < target:
        return None
    lo, hi = 1, len(calls)
    while lo < hi:
        mid = (lo + hi) // 2
        if hv(mid) >= target:
            hi = mid
        else:
            lo = mid + 1
    return lo


def measure(problem: Problem, table: np.ndarray, seconds: np.ndarray, seeds: int, tools: Sequence[str],
            log=print):
    """Per (objective, tool, seed, fraction): distinct evaluations and wall seconds to reach it."""
    import pandas as pd

    manual = mask_of(problem.manual)
    every = list(range(1, 2**problem.n))
    cap = max(1, round(CAP_PCT / 100 * len(every)))
    rows = []
    for objective in (Objective.min_size(float(table[manual])), Objective.max_accuracy(problem.size(manual))):
        hv_all = hv_of(every, problem, table, objective, at_constraint=True)
        for tool in tools:  # warm-up: imports and first-call caches are not the tool's time
            run_tool(tool, problem, objective, table, min(cap, 64), 0)
        for seed in range(seeds):
            for tool in tools:
                meter, _, wall, _ = run_tool(tool, problem, objective, table, cap, seed)
                calls = [int(m) for m in meter.calls]
                fit_s = np.cumsum([seconds[m] for m in calls])
                for f in FRACTIONS:
                    k = first_reaching(calls, problem, table, objective, f * hv_all)
                    rows.append({"objective": objective.kind, "limit": objective.limit, "tool": tool,
                                 "seed": seed, "fraction": f, "cap": cap, "calls": len(calls),
                                 "evaluations": k if k is not None else math.nan,
                                 "tool_s": float(meter.stamps[k - 1]) if k else math.nan,
                                 "fitness_s": float(fit_s[k - 1]) if k else math.nan,
                                 "wall_s": float(meter.stamps[k - 1] + fit_s[k - 1]) if k else math.inf,
                                 "tool_wall_s": wall})
            log(f"  {objective.kind} / seed {seed} done")
        # exhaustive search: its front is known only when every selection has been evaluated
        # (under max-accuracy those over size_max are answered free, as for every tool)
        needed = [m for m in every if objective.size_ok(problem.size(m))]
        total = float(np.sum(seconds[needed]))
        for f in FRACTIONS:
            rows.append({"objective": objective.kind, "limit": objective.limit, "tool": "exhaustive",
                         "seed": 0, "fraction": f, "cap": len(needed), "calls": len(needed),
                         "evaluations": len(needed), "tool_s": 0.0, "fitness_s": total, "wall_s": total,
                         "tool_wall_s": 0.0})
    return pd.DataFrame(rows)


def _minutes(values) -> str:
    """Median over seeds in minutes (``never`` when most seeds never reached), and how many did."""
    values = np.asarray(values, dtype=float)
    reached = int(np.isfinite(values).sum())
    med = float(np.median(values))
    text = "never" if not np.isfinite(med) else f"{med / 60:.1f}"
    return text if reached == len(values) else f"{text} ({reached}/{len(values)})"


def _verdicts(frame, objective: str, f: float, tools: Sequence[str]) -> Dict[str, Tuple[str, float]]:
    """graftsearch against each tool at fraction ``f``: ``peers.comparisons`` on the negated
    times (sooner is higher; a seed that never reached it is later than any that did)."""
    sub = frame[(frame.objective == objective) & (frame.fraction == f)]
    sub = sub.assign(problem="-", budget_pct=f,
                     sooner=-np.where(np.isfinite(sub.wall_s), sub.wall_s, 1e12))
    return {x["tool"]: (x["verdict"], x["p"]) for x in comparisons(sub, column="sooner")
            if x["tool"] in tools}


def markdown(frame, problem: Problem, table: np.ndarray, seconds: np.ndarray, table_wall: float, *, jobs: int,
             command: str, seeds: int, elapsed: float, tools: Sequence[str]) -> str:
    n_sel = 2**problem.n - 1
    secs = seconds[1:]
    lines = [
        "# Peers at mlp cost: wall-clock time to reach 0.95 and 0.99 of the exhaustive hypervolume", "",
        f"Command: `{command}`  ",
        f"Machine: {_machine()}; {_versions()}; total {elapsed / 60:.1f} min.  ",
        f"Problem: {problem.describe}; {n_sel:,} selections. Fitness: graftsearch's `mlp` proxy (its defaults, "
        f"seed 0, 1 torch thread) of every selection, each timed: median {np.median(secs):.2f} s, mean "
        f"{secs.mean():.2f} s, {secs.min():.2f}-{secs.max():.2f} s per evaluation ({secs.sum() / 60:.1f} min "
        f"for all of them one after the other; the table took {table_wall / 60:.1f} min on {jobs} "
        "process(es)).  ",
        f"Each tool of `peers` (same glue code, one evaluation cache, budget in distinct evaluations) runs "
        f"{seeds} seeds up to {CAP_PCT}% of the space; the wall-clock of its k-th distinct evaluation is its "
        "own measured time before that evaluation plus the table's mlp seconds of the first k. Time to reach "
        "f = that of the first k whose calls reach f of the exhaustive hypervolume (reference at the "
        "constraint). Cells: median over seeds in minutes (n/N: seeds that reached it within the cap; "
        "`never`: at least half did not; a seed that never reached it counts as longer than any); graftsearch against each tool by a two-sided Mann-Whitney U test "
        f"on the times (p < {ALPHA}).", ""]
    findings = []
    for objective in ("min-size", "max-accuracy"):
        sub = frame[frame.objective == objective]
        limit = float(sub.limit.iloc[0])
        limit_text = f"p_min {limit:.4f}" if objective == "min-size" else f"size_max {limit:,.0f} params"
        lines += [f"## {objective} ({limit_text})", "",
                  "| tool | " + " | ".join(f"min to {f:g}" for f in FRACTIONS) + " | "
                  + " | ".join(f"evaluations to {f:g} (median)" for f in FRACTIONS) + " | "
                  + " | ".join(f"vs graftsearch at {f:g}" for f in FRACTIONS) + " |",
                  "|---|" + "---:|" * (2 * len(FRACTIONS)) + "---|" * len(FRACTIONS)]
        verdicts = {f: _verdicts(frame, objective, f, tools) for f in FRACTIONS}
        for tool in list(tools) + ["exhaustive"]:
            cells_t, cells_e, cells_v = [], [], []
            for f in FRACTIONS:
                r = sub[(sub.tool == tool) & (sub.fraction == f)]
                cells_t.append(_minutes(r.wall_s))
                e = r.evaluations.to_numpy(dtype=float)
                e = np.where(np.isnan(e), np.inf, e)  # never reached: more than any
                med_e = float(np.median(e))
                cells_e.append(f"{med_e:,.0f}" if np.isfinite(med_e) else "-")
                v = verdicts[f].get(tool)
                cells_v.append("-" if v is None else f"graftsearch {v[0]} ({v[1]:.2g})")
            lines.append(f"| {tool} | " + " | ".join(cells_t + cells_e + cells_v) + " |")
        lines.append("")
        for f in FRACTIONS:
            v = verdicts[f]
            peers = [t for t in v if not t.startswith("graftsearch")]
            worse = [t for t in peers if v[t][0] == "worse"]
            better = [t for t in peers if v[t][0] == "better"]
            ours = sub[(sub.tool == "graftsearch") & (sub.fraction == f)].wall_s
            ex = sub[(sub.tool == "exhaustive") & (sub.fraction == f)].wall_s.iloc[0]
            med = float(np.median(ours))
            reached = int(np.isfinite(ours).sum())
            if np.isfinite(med):
                ratio = ex / med if med > 0 else math.inf
                versus = (f"{ratio:.1f}x sooner than exhaustive search" if ratio >= 1 else
                          f"{1 / ratio:.1f}x later than exhaustive search")
                when = (f"graftsearch's median {med / 60:.1f} min ({versus}; {reached} of {len(ours)} "
                        "seeds reached it)")
            else:
                when = (f"graftsearch did not reach it within {CAP_PCT}% of the space in at least half the seeds "
                        f"({reached} of {len(ours)} did)")
            findings.append(
                f"- {objective}, {f:g} of the hypervolume: {when}; significantly sooner than {len(better)} "
                f"of {len(peers)} other tools" + (f" ({', '.join(better)})" if better else "")
                + f", later than {len(worse)}" + (f" ({', '.join(worse)})" if worse else "") + ".")
    lines += ["## Findings", ""] + findings + [""]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=2, help="processes that compute the mlp table")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: a 7-tap synthetic problem with the mlp proxy, 2 seeds")
    parser.add_argument("--out", default=str(RESULTS), help="where the tables go")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    started = time.perf_counter()
    if args.quick:
        problem = synthetic_problem(n_taps=7, name="synthetic-7-mlp", sizes=(300, 100),
                                    describe="7 generated taps, mlp proxy (quick smoke run)")
        problem.fitness = _as_mlp(problem)
    elif DATA.is_dir():
        problem = real_problem(indices=MLP_TAPS, fitness="mlp", name="plant-seedlings-mlp10")
    else:
        print(f"{DATA} not found: nothing to measure")
        return 0
    seeds = 2 if args.quick else args.seeds
    table, seconds, table_wall, table_jobs = timed_table(problem, args.jobs, log=lambda m: print(m, flush=True))
    frame = measure(problem, table, seconds, seeds, TOOLS, log=lambda m: print(m, flush=True))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "peers_cost.csv", index=False, float_format="%.6g")
    command = " ".join(["python -m benchmarks.peers_cost"] + list(argv if argv is not None else sys.argv[1:]))
    text = markdown(frame, problem, table, seconds, table_wall, jobs=table_jobs, command=command, seeds=seeds,
                    elapsed=time.perf_counter() - started, tools=TOOLS)
    (out / "peers_cost.md").write_text(text + "\n")
    print(text)
    return 0


def _as_mlp(problem: Problem):
    """The quick problem's features under the mlp proxy (a short schedule: a smoke run)."""
    import graftsearch as gs

    return gs.make_fitness("mlp", problem.fitness.source, seed=0, epochs=3)


if __name__ == "__main__":
    sys.exit(main())
