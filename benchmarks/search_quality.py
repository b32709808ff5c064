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

Fitness: graftsearch's ``fast`` proxy when ``graftsearch._proxies`` exists; until then (it is
written concurrently) the closed-form ridge probe below (standardised features, one-hot targets,
fixed ridge, accuracy on the val split), which is what the ``fast`` proxy is specified to be.

Baselines (kept here, not in the library):

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
import hashlib
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one BLAS thread: threads fight over 2 shared cores

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import graftsearch as gs  # noqa: E402
from graftsearch._evaluation import Evaluation  # noqa: E402
from graftsearch._hypervolume import front_hypervolume, nondominated_indices  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
TABLES = Path(os.environ.get("GRAFTSEARCH_CACHE", Path.home() / ".cache" / "graftsearch")) / "bench"
DATA = ROOT.parent / "shared" / "data" / "plant-seedlings" / "images"
RIDGE = 10.0
BUDGETS = (2, 5, 10)


# ---------------------------------------------------------------------------------------------
# problems

class Problem:
    """Taps (a renumbered subspace), head, a fitness over it, and the manual pick."""

    def __init__(self, name: str, taps: gs.TapList, head: gs.HeadSpec, fitness, manual: Tuple[int, ...],
                 describe: str):
        self.name, self.taps, self.head, self.fitness = name, taps, head, fitness
        self.manual, self.describe = manual, describe
        self.n = len(taps)
        self.size_ref = float(taps.cost(tuple(range(1, self.n + 1)), head).params)
        masks = np.arange(1, 2**self.n)
        self.sizes = np.array([taps.cost(_selection(m, self.n), head).params for m in masks], dtype=float)


def _selection(mask: int, n: int) -> Tuple[int, ...]:
    return tuple(i + 1 for i in range(n) if mask >> i & 1)


def _mask(selection: Sequence[int]) -> int:
    return sum(1 << (i - 1) for i in selection)


def subspace(taps: gs.TapList, indices: Sequence[int]) -> gs.TapList:
    """The taps ``indices`` renumbered 1..k; exact costs stay those of the full donor."""
    chosen = [taps.tap(i) for i in indices]
    renumbered = [gs.Tap(index=k, name=t.name, channels=t.channels, height=t.height, width=t.width,
                         params_upto=t.params_upto, macs_upto=t.macs_upto)
                  for k, t in enumerate(chosen, start=1)]
    return gs.TapList(renumbered, donor_name=taps.donor_name, image_size=taps.image_size)


class RidgeProbe:
    """Closed-form ridge on one-hot targets over standardised features; P = val accuracy.

    Gram blocks are computed once over all taps of the subspace; one selection then costs one
    Cholesky solve in its dimensions. :meth:`table` evaluates every selection depth-first,
    growing the Cholesky factor of the parent selection by one block per tap.
    """

    name = "ridge"

    def __init__(self, train: List[np.ndarray], ytr: np.ndarray, val: List[np.ndarray], yva: np.ndarray,
                 n_classes: int, ridge: float = RIDGE, key: str = ""):
        xtr = np.concatenate(train, 1).astype(np.float64)
        xva = np.concatenate(val, 1).astype(np.float64)
        mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
        xtr, xva = (xtr - mu) / sd, (xva - mu) / sd
        y = np.eye(n_classes)[ytr]
        y -= y.mean(0)
        self.gram = (xtr.T @ xtr).astype(np.float32)
        self.cross = (xtr.T @ y).astype(np.float32)
        self.xva = xva.astype(np.float32)
        self.yva = yva
        bounds = np.cumsum([0] + [a.shape[1] for a in train])
        self.cols = [np.arange(bounds[i], bounds[i + 1]) for i in range(len(train))]
        self.ridge = ridge
        self._key = key

    def key(self) -> str:
        return self._key

    def _accuracy(self, idx: np.ndarray, w: np.ndarray) -> float:
        return float(((self.xva[:, idx] @ w).argmax(1) == self.yva).mean())

    def evaluate(self, selection: Tuple[int, ...]) -> Evaluation:
        import scipy.linalg as sl

        idx = np.concatenate([self.cols[i - 1] for i in selection])
        a = self.gram[np.ix_(idx, idx)] + self.ridge * np.eye(len(idx), dtype=np.float32)
        w = sl.cho_solve(sl.cho_factor(a, lower=True, check_finite=False), self.cross[idx], check_finite=False)
        return Evaluation(val_accuracy=self._accuracy(idx, w), fidelity="ridge")

    def table(self, progress: Callable[[int], None] | None = None) -> np.ndarray:
        """P of every selection, indexed by mask (bit i-1 = tap i); entry 0 unused."""
        import scipy.linalg as sl

        n = len(self.cols)
        out = np.full(2**n, np.nan)
        done = [0]

        def grow(start: int, mask: int, idx: np.ndarray, low: np.ndarray | None, z: np.ndarray | None):
            for t in range(start, n):
                cols = self.cols[t]
                block = self.gram[np.ix_(cols, cols)] + self.ridge * np.eye(len(cols), dtype=np.float32)
                if low is None:
                    l22 = np.linalg.cholesky(block)
                    new_low = l22
                    new_z = sl.solve_triangular(l22, self.cross[cols], lower=True, check_finite=False)
                else:
                    l21 = sl.solve_triangular(low, self.gram[np.ix_(idx, cols)], lower=True,
                                              check_finite=False).T
                    l22 = np.linalg.cholesky(block - l21 @ l21.T)
                    d, c = low.shape[0], len(cols)
                    new_low = np.zeros((d + c, d + c), dtype=np.float32)
                    new_low[:d, :d], new_low[d:, :d], new_low[d:, d:] = low, l21, l22
                    new_z = np.vstack([z, sl.solve_triangular(l22, self.cross[cols] - l21 @ z, lower=True,
                                                              check_finite=False)])
                new_idx = np.concatenate([idx, cols])
                w = sl.solve_triangular(new_low, new_z, lower=True, trans="T", check_finite=False)
                new_mask = mask | 1 << t
                out[new_mask] = self._accuracy(new_idx, w)
                done[0] += 1
                if progress and done[0] % 1024 == 0:
                    progress(done[0])
                grow(t + 1, new_mask, new_idx, new_low, new_z)

        grow(0, 0, np.zeros(0, dtype=np.int64), None, None)
        return out


class TableFitness:
    """Looks P up in an exhaustive table (so every method sees the same numbers)."""

    name = "table"

    def __init__(self, table: np.ndarray, key: str):
        self.table, self._key = table, key

    def evaluate(self, selection):
        return Evaluation(val_accuracy=float(self.table[_mask(selection)]), fidelity="table")

    def key(self) -> str:
        return self._key


def real_problem(n_taps: int = 14) -> Problem:
    from graftsearch._cache import build_cache
    from graftsearch._datasets import load_dataset

    donor = gs.load_donor("efficientnet_lite0", weights="IMAGENET")
    dataset = load_dataset(f"folder:{DATA}")
    cache = build_cache(donor, dataset, image_size=128)
    full = cache.taps
    indices = list(range(1, n_taps + 1))
    taps = subspace(full, indices)
    train = [np.asarray(cache.features("train", i)) for i in indices]
    val = [np.asarray(cache.features("val", i)) for i in indices]
    key = f"real:{cache.fingerprint}:{indices}:{RIDGE}"
    probe = RidgeProbe(train, cache.labels("train"), val, cache.labels("val"), len(cache.classes), key=key)
    # the paper's pick, transposed: the last three taps before the 8x8 -> 4x4 stage boundary
    names = ("features.5.0", "features.5.1", "features.5.2")
    manual = tuple(taps.index_of(n) for n in names)
    head = gs.HeadSpec(num_classes=len(cache.classes))
    return Problem("plant-seedlings", taps, head, probe, manual,
                   f"EfficientNet-Lite0 (ImageNet) at 128 px on plant-seedlings ({cache.n_images('train')} "
                   f"train / {cache.n_images('val')} val images), taps 1-{n_taps} of {len(full)}")


def synthetic_problem(seed: int = 0) -> Problem:
    channels = [16, 16, 24, 24, 40, 40, 64, 64, 80, 80, 112, 112, 160, 160]
    n, n_classes, latent = len(channels), 10, 24
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, latent))
    taps, params, prev = [], 0, 3
    for i, c in enumerate(channels, start=1):
        side = 64 >> ((i - 1) // 4)
        params += prev * c * 9 + c
        taps.append(gs.Tap(index=i, name=f"stage{(i - 1) // 4 + 1}.conv{(i - 1) % 4 + 1}", channels=c,
                           height=side, width=side, params_upto=params, macs_upto=params * side * side))
        prev = c
    tap_list = gs.TapList(taps, donor_name="synthetic", image_size=64)
    sets = {}
    for split, count in (("train", 1500), ("val", 500)):
        y = rng.integers(0, n_classes, size=count)
        arrays = []
        for i, c in enumerate(channels):
            # tap i sees a window of the latent class code; deeper taps see it more clearly
            window = (np.arange(8) + 2 * i) % latent
            mix = np.random.default_rng(1000 + i).normal(size=(8, c)) / math.sqrt(8)
            strength = (0.1 + 0.02 * i) * math.sqrt(64 / c)
            arrays.append((strength * centres[y][:, window] @ mix + rng.normal(size=(count, c))).astype(np.float32))
        sets[split] = (arrays, y)
    key = f"synthetic:{seed}:{RIDGE}"
    probe = RidgeProbe(sets["train"][0], sets["train"][1], sets["val"][0], sets["val"][1], n_classes, key=key)
    return Problem("synthetic", tap_list, gs.HeadSpec(num_classes=n_classes), probe, (6, 7, 8),
                   "14 generated taps, 10 classes, 1,500 train / 500 val samples")


def exhaustive_table(problem: Problem) -> Tuple[np.ndarray, float]:
    """The P of every selection (cached on disk) and seconds per evaluation."""
    TABLES.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(problem.fitness.key().encode()).hexdigest()[:16]
    path = TABLES / f"search_quality-{problem.name}-{digest}.npz"
    if path.exists():
        saved = np.load(path)
        return saved["table"], float(saved["seconds_per_eval"])
    start = time.perf_counter()
    total = 2**problem.n - 1
    table = problem.fitness.table(lambda k: print(f"  {problem.name}: {k}/{total}", end="\r", flush=True))
    seconds = (time.perf_counter() - start) / total
    print()
    # the depth-first table must agree with the one-selection solve
    rng = np.random.default_rng(0)
    for m in rng.integers(1, 2**problem.n, size=20):
        direct = problem.fitness.evaluate(_selection(int(m), problem.n)).val_accuracy
        assert abs(direct - table[m]) <= 2.0 / len(problem.fitness.yva), (m, direct, table[m])
    np.savez(path, table=table, seconds_per_eval=seconds)
    return table, seconds


# ---------------------------------------------------------------------------------------------
# fronts and baselines

def hv_of(masks: Sequence[int], problem: Problem, table: np.ndarray, p_min: float) -> float:
    masks = [m for m in set(masks) if table[m] >= p_min]
    sizes = [problem.sizes[m - 1] for m in masks]
    accs = [float(table[m]) for m in masks]
    keep = nondominated_indices(sizes, accs)
    return front_hypervolume([sizes[i] for i in keep], [accs[i] for i in keep], problem.size_ref)


def best_mask(masks: Sequence[int], problem: Problem, table: np.ndarray, p_min: float):
    feasible = [m for m in set(masks) if table[m] >= p_min]
    if not feasible:
        return None
    return min(feasible, key=lambda m: (problem.sizes[m - 1], -table[m], m))


def random_search(problem: Problem, budget: int, seed: int) -> List[int]:
    rng = np.random.default_rng(seed)
    seen: List[int] = []
    chosen = set()
    while len(seen) < budget:
        k = int(rng.integers(1, problem.n + 1))
        m = _mask(tuple(int(i) + 1 for i in rng.choice(problem.n, size=k, replace=False)))
        if m not in chosen:
            chosen.add(m)
            seen.append(m)
    return seen


def greedy_forward(problem: Problem, table: np.ndarray, budget: int, seed: int) -> List[int]:
    rng = np.random.default_rng(seed)
    evaluated: Dict[int, float] = {}
    lambdas = [0.0] + list(10 ** rng.uniform(-3, 1, size=200))
    for lam in lambdas:
        current, score = 0, -math.inf
        while True:
            options = []
            for t in range(problem.n):
                m = current | 1 << t
                if m == current:
                    continue
                if m not in evaluated:
                    if len(evaluated) >= budget:
                        return list(evaluated)
                    evaluated[m] = float(table[m])
                options.append((evaluated[m] - lam * problem.sizes[m - 1] / problem.size_ref, -m, m))
            if not options:
                break
            top, _, m = max(options)
            if top <= score:
                break
            current, score = m, top
    return list(evaluated)


def nsga2(problem: Problem, table: np.ndarray, budget: int, seed: int, p_min: float,
          population: int) -> List[int]:
    fitness = TableFitness(table, problem.fitness.key())
    settings = gs.SearchSettings(p_min=p_min, population=population, generations=10**6,
                                 max_evaluations=budget, seed=seed)
    result = gs.run_search(problem.taps, problem.head, fitness, settings)
    return [int(b[::-1], 2) for b in result.archive.bits]


# ---------------------------------------------------------------------------------------------

def run(problems: List[Problem], seeds: int, budgets: Sequence[int], population: int):
    import pandas as pd

    rows, notes = [], []
    for problem in problems:
        print(f"{problem.name}: exhaustive table of {2**problem.n - 1} selections ...", flush=True)
        table, spe = exhaustive_table(problem)
        every = list(range(1, 2**problem.n))
        manual_mask = _mask(problem.manual)
        p_manual = float(table[manual_mask])
        notes.append({"problem": problem.name, "describe": problem.describe, "n": problem.n,
                      "ms_per_eval": spe * 1000, "manual": problem.manual, "p_manual": p_manual,
                      "size_manual": problem.sizes[manual_mask - 1], "max_p": float(np.nanmax(table[1:])),
                      "size_ref": problem.size_ref})
        for setting, p_min in (("full front", 0.01), ("p_min = manual pick", p_manual)):
            hv_all = hv_of(every, problem, table, p_min)
            best_all = best_mask(every, problem, table, p_min)
            notes[-1][setting] = {"hv": hv_all, "best": best_all, "best_p": float(table[best_all]),
                                  "best_size": problem.sizes[best_all - 1],
                                  "manual_hv": hv_of([manual_mask], problem, table, p_min) / hv_all}
            for pct in budgets:
                budget = max(1, round(pct / 100 * len(every)))
                for seed in range(seeds):
                    for method in ("nsga2", "random", "greedy"):
                        start = time.perf_counter()
                        if method == "nsga2":
                            masks = nsga2(problem, table, budget, seed, p_min, population)
                        elif method == "random":
                            masks = random_search(problem, budget, seed)
                        else:
                            masks = greedy_forward(problem, table, budget, seed)
                        rows.append({"problem": problem.name, "setting": setting, "p_min": p_min,
                                     "method": method, "budget_pct": pct, "budget": budget, "seed": seed,
                                     "evaluations": len(set(masks)),
                                     "hv_fraction": hv_of(masks, problem, table, p_min) / hv_all,
                                     "found_best": best_mask(masks, problem, table, p_min) == best_all,
                                     "seconds": time.perf_counter() - start})
                    print(f"  {problem.name} / {setting} / {pct}%: seed {seed} done", flush=True)
    return pd.DataFrame(rows), notes


def write(frame, notes, args, elapsed: float) -> None:
    import torch

    RESULTS.mkdir(parents=True, exist_ok=True)
    frame.to_csv(RESULTS / "search_quality.csv", index=False, float_format="%.6f")
    summary = (frame.groupby(["problem", "setting", "budget_pct", "method"], sort=False)
               .agg(budget=("budget", "first"), hv_mean=("hv_fraction", "mean"),
                    hv_std=("hv_fraction", "std"), hv_min=("hv_fraction", "min"),
                    found_best=("found_best", "mean"), seconds=("seconds", "mean")).reset_index())
    lines = ["# Search quality: NSGA-II vs random search vs greedy forward selection", "",
             f"Command: `{' '.join(['python -m benchmarks.search_quality'] + list(args))}`  ",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared), "
             f"torch threads {torch.get_num_threads()}, BLAS threads 1; total {elapsed / 60:.1f} min.  ",
             f"Seeds: {frame.seed.nunique()}; NSGA-II population {frame.attrs.get('population')}, "
             "graftsearch defaults otherwise (uniform crossover 0.9, bit-flip 1/n).  ",
             "Fitness: the closed-form ridge probe of this benchmark (standardised features, one-hot "
             f"targets, ridge {RIDGE:g}, val accuracy); graftsearch's `fast` proxy did not exist yet "
             "when this ran. Exhaustive tables are cached under ~/.cache/graftsearch/bench.", "",
             "Metric: hypervolume of the feasible front found / hypervolume of the exhaustive feasible "
             "front, in graftsearch's (size / full size, 1 - P) space with reference (1.1, 1.0). "
             "`found best` = share of seeds whose smallest feasible selection is the exhaustive one.", ""]
    for note in notes:
        lines += [f"## {note['problem']}", "", note["describe"] + ".  ",
                  f"Exhaustive: {2**note['n'] - 1:,} selections, {note['ms_per_eval']:.2f} ms per evaluation "
                  f"(ridge probe, depth-first); best P {note['max_p']:.4f}.  ",
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
    (RESULTS / "search_quality.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--population", type=int, default=gs.SearchSettings(p_min=0.5).population)
    parser.add_argument("--real-taps", type=int, default=14, help="size of the real tap subspace")
    parser.add_argument("--quick", action="store_true", help="synthetic problem only, 2 seeds")
    parser.add_argument("--skip-real", action="store_true")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    start = time.perf_counter()
    problems = [synthetic_problem()]
    if not (args.quick or args.skip_real):
        if DATA.is_dir():
            problems.insert(0, real_problem(args.real_taps))
        else:
            print(f"{DATA} not found: real problem skipped")
    frame, notes = run(problems, 2 if args.quick else args.seeds, BUDGETS, args.population)
    frame.attrs["population"] = args.population
    write(frame, notes, list(argv if argv is not None else sys.argv[1:]), time.perf_counter() - start)


if __name__ == "__main__":
    main()
