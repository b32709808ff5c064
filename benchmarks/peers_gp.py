"""Peers, continued: Optuna's GPSampler at the smallest budget, against graftsearch's runs.

Optuna's ``GPSampler`` (constrained multi-objective Bayesian optimisation: a Gaussian process
per objective and constraint, log expected hypervolume improvement, one trial at a time) is the
peer a user with an expensive fitness picks at small budgets. Its own cost per trial is large
and grows with the trials (measured below), so it runs apart from ``peers``: at 1% of the space
only, on the two 14-tap problems (resnet-shape's 1% is 655 trials), with ``--seeds`` seeds.

It runs through the same glue code as every peer (``benchmarks.peers``: one categorical
parameter per tap, the constraint through ``constraints_func``, the same evaluation cache and
budget of distinct evaluations, at most ``TPE_ASKS_PER_CALL`` trials per distinct evaluation),
with ``deterministic_objective=True`` (the lookup table answers a selection with the same P).
graftsearch's numbers are read from ``peers.csv`` (the same tables, problems, objectives and
budget, 10 seeds): hypervolume does not depend on the process that measured it. Verdicts:
two-sided Mann-Whitney U test, p < 0.05.

Usage: ``python -m benchmarks.peers_gp [--seeds 5] [--jobs 2] [--quick] [--out DIR]``. Writes
``peers_gp.csv`` (one row per run), ``peers_gp_meta.json`` (the command and its minutes) and
``peers_gp.md``. ``--render`` writes ``peers_gp.md`` again from the saved runs and the current
``peers.csv`` without running GPSampler (whose runs do not depend on graftsearch's code: after
``peers`` has been re-run, the page then compares against the new graftsearch runs).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._machine import cpu_name  # noqa: E402
from benchmarks._problems import RESULTS, Objective, exhaustive_table, hv_of, mask_of  # noqa: E402
from benchmarks import peers  # noqa: E402
from graftsearch._utils.atomic import write_text  # noqa: E402

import numpy as np  # noqa: E402

PCT = 1
QUICK_PCT = min(peers.QUICK_BUDGET_PCTS)  # the quick peers run's smallest budget
PROBLEMS = ("plant-seedlings", "deepweeds-size")


def _problem(name: str, quick: bool):
    found = peers.problems_for(quick, names=[name])
    return found[0] if found else None


def _measure(name: str, objective_kind: str, seeds: int, quick: bool) -> List[dict]:
    import torch

    torch.set_num_threads(1)
    problem = _problem(name, quick)
    if problem is None:  # the real problem without its images
        return []
    table, _ = exhaustive_table(problem, log=lambda m: print(m, flush=True))
    every = list(range(1, 2 ** problem.n))
    manual = mask_of(problem.manual)
    objective = (Objective.min_size(float(table[manual])) if objective_kind == "min-size"
                 else Objective.max_accuracy(problem.size(manual)))
    whole = hv_of(every, problem, table, objective, at_constraint=True)
    whole_0 = hv_of(every, problem, table, objective)
    budget = peers.budget_of(QUICK_PCT if quick else PCT, problem)
    rows = []
    for seed in range(seeds):
        meter, asks, wall, _ = peers.run_tool("optuna-gp", problem, objective, table, budget, seed)
        calls = [int(m) for m in meter.calls]
        rows.append({"problem": problem.name, "objective": objective.kind, "seed": seed,
                     "budget_pct": QUICK_PCT if quick else PCT, "budget": budget,
                     "unique_calls": len(set(calls)), "asks": asks.total,
                     "hv_c_fraction": hv_of(calls, problem, table, objective, at_constraint=True) / whole,
                     "hv_fraction": hv_of(calls, problem, table, objective) / whole_0,
                     "wall_s": wall, "s_per_trial": wall / max(1, asks.total)})
        print(f"  {problem.name} / {objective.kind} / seed {seed}: {rows[-1]['hv_c_fraction']:.4f} "
              f"in {wall:.0f} s", flush=True)
    return rows


def verdicts(gp, ours) -> List[dict]:
    """graftsearch against GPSampler per problem and objective (graftsearch's view)."""
    from scipy.stats import mannwhitneyu

    out = []
    for (problem, objective), part in gp.groupby(["problem", "objective"], sort=False):
        mine = ours[(ours.problem == problem) & (ours.objective == objective)
                    & (ours.budget_pct == part.budget_pct.iloc[0])].hv_c_fraction.to_numpy(float)
        theirs = part.hv_c_fraction.to_numpy(float)
        if not len(mine):
            continue
        if np.ptp(np.r_[mine, theirs]) == 0:
            p_value, u = 1.0, len(mine) * len(theirs) / 2
        else:
            test = mannwhitneyu(mine, theirs, alternative="two-sided")
            p_value, u = float(test.pvalue), float(test.statistic)
        verdict = "tie" if p_value >= peers.ALPHA else (
            "better" if u > len(mine) * len(theirs) / 2 else "worse")
        out.append({"problem": problem, "objective": objective, "ours": mine.mean(),
                    "ours_sd": mine.std(ddof=1) if len(mine) > 1 else 0.0, "ours_seeds": len(mine), "theirs": theirs.mean(),
                    "theirs_sd": theirs.std(ddof=1) if len(theirs) > 1 else 0.0, "seeds": len(theirs), "p": p_value,
                    "verdict": verdict, "s_per_trial": float(part.s_per_trial.median())})
    return out


def markdown(gp, ours, *, command: str, elapsed: float, jobs: int, provenance: str = "",
             machine: Optional[str] = None, versions: Optional[str] = None) -> str:
    tests = verdicts(gp, ours)
    lines = ["# Peers: Optuna's GPSampler at the smallest budget", "",
             f"Command: `{command}`  ",
             f"Machine: {machine or cpu_name()}, 1 torch thread per process, {jobs} process(es); "
             f"{versions or peers._versions()}; total {elapsed / 60:.1f} min.  ",
             f"GPSampler: `GPSampler(seed=seed, deterministic_objective=True, constraints_func=...)`, "
             f"{gp.seed.nunique()} seeds (0..{gp.seed.max()}), "
             f"{gp.budget_pct.iloc[0]:g}% of each space; graftsearch: its runs in `peers.csv` "
             f"(same tables and budget). Hypervolume fraction with the reference at the "
             f"constraint, as in `peers`; verdicts by a two-sided Mann-Whitney U test, p < "
             f"{peers.ALPHA:g}." + (f"  \n{provenance}" if provenance else ""), "",
             "| problem | objective | budget | graftsearch | GPSampler | verdict (p) | GPSampler s per trial |",
             "|---|---|---:|---|---|---|---:|"]
    for x in tests:
        budget = int(gp[(gp.problem == x["problem"]) & (gp.objective == x["objective"])].budget.iloc[0])
        lines.append(f"| {x['problem']} | {x['objective']} | {budget:,} | {x['ours']:.4f} ± "
                     f"{x['ours_sd']:.4f} ({x['ours_seeds']}) | {x['theirs']:.4f} ± "
                     f"{x['theirs_sd']:.4f} ({x['seeds']}) | {x['verdict']} ({x['p']:.2g}) | "
                     f"{x['s_per_trial']:.2f} |")
    lines.append("")
    if tests:
        worse = [x for x in tests if x["verdict"] == "worse"]
        better = [x for x in tests if x["verdict"] == "better"]
        lines.append(
            f"graftsearch is significantly better than GPSampler in {len(better)} of {len(tests)} "
            f"cases, tied in {len(tests) - len(better) - len(worse)} and worse in {len(worse)}"
            + (": " + "; ".join(f"{x['problem']} / {x['objective']} ({x['ours']:.4f} vs "
                                f"{x['theirs']:.4f})" for x in worse) if worse else "") + ". "
            f"GPSampler spent {min(x['s_per_trial'] for x in tests):.2f}-"
            f"{max(x['s_per_trial'] for x in tests):.2f} s of its own time per trial (median per "
            "case), one trial at a time; graftsearch's own time per call is in `peers` (a "
            "generation's evaluations run as one batch, in parallel under `n_jobs`).")
    return "\n".join(lines) + "\n"


def _utc(seconds: float) -> str:
    from datetime import datetime, timezone

    return f"{datetime.fromtimestamp(seconds, timezone.utc):%Y-%m-%d %H:%M} UTC"


def _page(out: Path, gp, meta: dict, *, rendered: bool = False) -> str:
    import pandas as pd

    ours = pd.read_csv(out / "peers.csv")
    ours = ours[ours.tool == "graftsearch"]
    provenance = ""
    if rendered:
        provenance = (f"Written again by `python -m benchmarks.peers_gp --render`: GPSampler's runs "
                      f"are those of the command above (finished {_utc(meta['finished'])}; they do "
                      f"not depend on graftsearch's code), graftsearch's are `peers.csv` of "
                      f"{_utc((out / 'peers.csv').stat().st_mtime)}.")
    text = markdown(gp, ours, command=meta["command"], elapsed=meta["seconds"], jobs=meta["jobs"],
                    provenance=provenance, machine=meta.get("machine"), versions=meta.get("versions"))
    write_text(out / "peers_gp.md", text)
    return text


def main(argv: Optional[Sequence[str]] = None) -> int:
    import pandas as pd
    from joblib import Parallel, delayed

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=2, help="problem x objective cases at once")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: the quick peers problem, 2 seeds, its smallest budget")
    parser.add_argument("--out", default=str(RESULTS), help="where the tables go (and peers.csv is read)")
    parser.add_argument("--render", action="store_true",
                        help="write the page again from the saved runs and the current peers.csv")
    args = parser.parse_args(argv)
    out = Path(args.out)
    ours_path = out / "peers.csv"
    if not ours_path.is_file():
        print(f"{ours_path} not found: run `python -m benchmarks.peers` first")
        return 1
    if args.render:
        saved, meta_path = out / "peers_gp.csv", out / "peers_gp_meta.json"
        if not (saved.is_file() and meta_path.is_file()):
            print(f"{saved} or {meta_path} not found: run `python -m benchmarks.peers_gp` first")
            return 1
        print(_page(out, pd.read_csv(saved), json.loads(meta_path.read_text()), rendered=True))
        return 0
    started = time.perf_counter()
    seeds = 2 if args.quick else args.seeds
    names = (peers.problems_for(True)[0].name,) if args.quick else PROBLEMS
    cases = [(n, o) for n in names for o in ("min-size", "max-accuracy")]
    parts = Parallel(n_jobs=min(args.jobs, len(cases)))(
        delayed(_measure)(n, o, seeds, args.quick) for n, o in cases)
    gp = pd.DataFrame([r for part in parts for r in part])
    gp.to_csv(out / "peers_gp.csv", index=False)
    command = " ".join(["python -m benchmarks.peers_gp"] + list(argv if argv is not None else sys.argv[1:]))
    meta = {"command": command, "seconds": time.perf_counter() - started,
            "jobs": min(args.jobs, len(cases)), "finished": time.time(), "machine": cpu_name(),
            "versions": peers._versions()}
    write_text(out / "peers_gp_meta.json", json.dumps(meta, indent=1) + "\n")
    print(_page(out, gp, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
