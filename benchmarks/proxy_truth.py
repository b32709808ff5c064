"""Fitness proxies judged by the final model they pick: a ground-truth table and the proxies.

Plant seedlings, EfficientNet-Lite0 (ImageNet) GAP features at 128 px, taps 1-14 (the subspace
of ``benchmarks/peers.py``). The **ground truth**: ``--selections`` selections (the paper-style
manual pick, half of the rest drawn at random, half on or one tap away from the exhaustive
front of the ``fast`` proxy, the table ``peers`` uses), each selection's head trained with the
final schedule (``FinalSettings().schedule``: the paper's Adam, batch 16, 18 epochs, best val
epoch kept) under 2 seeds, then scored on val and on the test split. Each training is kept under
``benchmarks/cache/proxy_truth/`` as it finishes, so the table is computed once and an
interrupted run resumes.

**The proxies**, all on the train (and, where they use it, val) features of a selection:
``mlp`` (seed 0, and the mean of seeds 0 and 1), ``fast`` (graftsearch's LDA probe,
``FastSettings(probe="lda")``, the same scored by 5-fold cross-validation over train and val,
``folds=5``, and the logistic probe, ``FastSettings(probe="logistic")``), and the
transferability scores of ``graftsearch.fitness._scores``: LogME, H-score and an SFDA-style
score (on standardised train features; they need no val images). Time per evaluation is
measured in this process, one torch thread, proxies back to back on the same selections.

**Measures**, against the mean final test accuracy over the two seeds: Spearman and Kendall's
tau, top-10 overlap, and regret: the final test accuracy lost by taking each proxy's own best
selection instead of the table's best, under the two constraints of the peers benchmark, made
from the manual pick: ``max-accuracy`` (size at most the manual pick's: the proxy's highest
score among those) and ``min-size`` (the smallest selection scoring at least what the proxy
gives the manual pick; the table's own is the smallest whose final val accuracy reaches the
manual pick's). A pick that tests better than the table's loses nothing: regrets count as 0
below it (the CSV keeps the signed difference), and the min-size pick's size against the
table's is shown beside, since there size is the objective.

Usage: ``python -m benchmarks.proxy_truth [--selections 150] [--jobs 2] [--quick]``. Writes
``benchmarks/results/proxy_truth.csv`` (one row per proxy), ``proxy_truth_table.csv`` (the
ground truth, one row per selection), ``proxy_truth_logistic_grid.csv`` (the logistic probe
over a grid of its penalty and iterations) and ``proxy_truth.md``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from benchmarks._machine import cpu_name, results_dir  # noqa: E402

import numpy as np  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
WORK = ROOT / "benchmarks" / "cache" / "proxy_truth"
SEEDS = (0, 1)
TIMED = 20  # selections each proxy is timed on, back to back
KFOLD = 5
LOGISTIC = "fast (logistic)"
LDA = "fast (lda)"
PROXIES = ("mlp", "mlp (mean of 2 seeds)", LDA, f"fast (lda, {KFOLD}-fold)", LOGISTIC, "LogME",
           "H-score", "SFDA-style")
# the logistic probe's two settings around their defaults: how much the choice depends on them
GRID_PENALTIES = (3e-4, 1e-3, 3e-3)
GRID_ITERATIONS = (10, 20, 40)


def grid_name(penalty: float, iterations: int) -> str:
    return f"logistic penalty={penalty:g} iterations={iterations}"
TARGET_SPEED = 20  # the default proxy: at least 20x mlp's speed


# ---------------------------------------------------------------------------------------------
# the problem

class Features:
    """Per-tap features of train, val and test, with labels and the taps' costs."""

    def __init__(self, taps, classes, x: Dict[str, List[np.ndarray]], y: Dict[str, np.ndarray],
                 manual: Tuple[int, ...], table: Optional[np.ndarray], describe: str):
        self.taps, self.classes, self.x, self.y = taps, classes, x, y
        self.manual, self.table, self.describe = manual, table, describe
        self.n = len(taps)

    def of(self, split: str, sel: Sequence[int]) -> np.ndarray:
        return np.concatenate([self.x[split][i - 1] for i in sel], axis=1).astype(np.float32)

    def size(self, sel: Sequence[int]) -> int:
        import graftsearch as gs

        return self.taps.cost(list(sel), gs.HeadSpec(num_classes=len(self.classes))).params


def real_features(log) -> Features:
    from benchmarks._problems import LITE0_MANUAL, exhaustive_table, real_problem

    problem = real_problem(14)
    table, seconds = exhaustive_table(problem, log)
    import graftsearch as gs
    from graftsearch.data._sources import load_dataset
    from graftsearch.features._cache import build_cache

    from benchmarks._problems import DATA

    cache = build_cache(gs.load_donor("efficientnet_lite0", weights="IMAGENET"),
                        load_dataset(f"folder:{DATA}"), image_size=128)
    x = {s: [np.asarray(cache.features(s, i), dtype=np.float32) for i in range(1, 15)]
         for s in ("train", "val", "test")}
    y = {s: np.asarray(cache.labels(s), dtype=np.int64) for s in ("train", "val", "test")}
    manual = tuple(problem.taps.index_of(n) for n in LITE0_MANUAL)
    describe = (f"{problem.describe}; {cache.n_images('test')} test images; the fast table took "
                f"{seconds * 1000:.0f} ms per selection")
    return Features(problem.taps, cache.classes, x, y, manual, table, describe)


def quick_features(seed: int = 0) -> Features:
    """A tiny generated problem (6 taps, 3 classes) for the harness test."""
    import graftsearch as gs

    rng = np.random.default_rng(seed)
    channels = (4, 6, 5, 8, 6, 7)
    taps, params = [], 0
    for i, c in enumerate(channels, start=1):
        params += 40 * c
        taps.append(gs.taps.Tap(index=i, name=f"t{i}", channels=c, height=4, width=4,
                                params_upto=params, macs_upto=16 * params))
    taps = gs.taps.TapList(taps, donor_name="generated", image_size=16)
    centres = [rng.normal(0, 0.4 * t, (3, c)) for t, c in enumerate(channels, start=1)]
    x, y = {}, {}
    for split, n in (("train", 90), ("val", 45), ("test", 45)):
        labels = np.arange(n) % 3
        x[split] = [(rng.normal(size=(n, c)) + centres[t][labels]).astype(np.float32)
                    for t, c in enumerate(channels)]
        y[split] = labels
    return Features(taps, [f"c{k}" for k in range(3)], x, y, (4, 5), None,
                    "a tiny generated problem (6 taps, 3 classes): a harness check")


def choose_selections(f: Features, count: int, seed: int) -> List[Tuple[int, ...]]:
    """The manual pick, then half random and half on or one tap away from the fast front."""
    from benchmarks._problems import mask_of, selection_of
    from graftsearch.optimize._hypervolume import nondominated_indices

    rng = np.random.default_rng(seed)
    chosen = [mask_of(f.manual)]
    near: List[int] = []
    if f.table is not None:
        masks = list(range(1, 2 ** f.n))
        sizes = [f.size(selection_of(m, f.n)) for m in masks]
        front = [masks[i] for i in nondominated_indices(sizes, [f.table[m] for m in masks])]
        near = sorted({m ^ (1 << b) for m in front for b in range(f.n)} | set(front))
        near = [m for m in near if m != 0]
        rng.shuffle(near)
    want_near = (count - 1) // 2 if near else 0
    for m in near:
        if len(chosen) >= 1 + want_near:
            break
        if m not in chosen:
            chosen.append(m)
    while len(chosen) < min(count, 2 ** f.n - 1):
        m = int(rng.integers(1, 2 ** f.n))
        if m not in chosen:
            chosen.append(m)
    return [selection_of(m, f.n) for m in chosen]


# ---------------------------------------------------------------------------------------------
# the ground truth

def _final_training(f: Features, sel: Tuple[int, ...], seed: int) -> Dict[str, float]:
    import torch

    import graftsearch as gs
    from graftsearch._utils.seeding import derive_seed
    from graftsearch.training._headtrain import train_head

    torch.set_num_threads(1)
    bits = f.taps.bits(list(sel))
    fit = train_head(f.of("train", sel), f.y["train"], f.of("val", sel), f.y["val"],
                     head=gs.HeadSpec(num_classes=len(f.classes)),
                     schedule=gs.FinalSettings().schedule, seed=derive_seed(seed, "truth", bits))
    with torch.no_grad():
        pred = fit.head.eval()(torch.from_numpy(f.of("test", sel))).argmax(1).numpy()
    return {"val": float(fit.val_accuracy), "test": float(np.mean(pred == f.y["test"]))}


def ground_truth(f: Features, selections, work: Path, jobs: int, log) -> Dict[str, Dict[str, float]]:
    """``{bits: {val_s, test_s per seed}}``, each training kept as it finishes."""
    from joblib import Parallel, delayed

    work.mkdir(parents=True, exist_ok=True)
    todo = []
    for sel in selections:
        bits = f.taps.bits(list(sel))
        for seed in SEEDS:
            if not (work / f"{bits}-{seed}.json").is_file():
                todo.append((sel, seed))
    log(f"ground truth: {len(selections) * len(SEEDS) - len(todo)} trainings kept, {len(todo)} to run")
    began = time.perf_counter()
    for start in range(0, len(todo), 4 * jobs):  # small batches: progress is kept as it goes
        batch = todo[start:start + 4 * jobs]
        done = Parallel(n_jobs=jobs)(delayed(_final_training)(f, sel, seed) for sel, seed in batch)
        for (sel, seed), result in zip(batch, done):
            path = work / f"{f.taps.bits(list(sel))}-{seed}.json"
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(result))
            tmp.replace(path)
        log(f"  {start + len(batch)}/{len(todo)} trainings, {time.perf_counter() - began:.0f} s")
    out = {}
    for sel in selections:
        bits = f.taps.bits(list(sel))
        runs = [json.loads((work / f"{bits}-{seed}.json").read_text()) for seed in SEEDS]
        out[bits] = {"val": float(np.mean([r["val"] for r in runs])),
                     "test": float(np.mean([r["test"] for r in runs])),
                     **{f"val_{s}": r["val"] for s, r in zip(SEEDS, runs)},
                     **{f"test_{s}": r["test"] for s, r in zip(SEEDS, runs)}}
    return out


# ---------------------------------------------------------------------------------------------
# the proxies

def proxy_functions(f: Features) -> Tuple[Dict[str, Callable[[Tuple[int, ...]], float]],
                                           Dict[str, str]]:
    """Each proxy's function of a selection, and what it is (its fitness key) by name."""
    import graftsearch as gs
    from graftsearch.features._source import ArrayFeatures
    from graftsearch.fitness import _scores

    source = ArrayFeatures(f.taps, f.classes, {"train": f.x["train"], "val": f.x["val"]},
                           {"train": f.y["train"], "val": f.y["val"]})
    mlp = [gs.make_fitness("mlp", source, seed=s) for s in SEEDS]
    fast = gs.make_fitness("fast", source, seed=0, probe="lda")
    kfold = gs.make_fitness("fast", source, seed=0, probe="lda", folds=KFOLD)
    logistic = gs.make_fitness("fast", source, seed=0, probe="logistic")
    grid = {grid_name(p, i): gs.make_fitness("fast", source, seed=0, probe="logistic", penalty=p,
                                             iterations=i)
            for p in GRID_PENALTIES for i in GRID_ITERATIONS}

    def standardised(sel):
        x = f.of("train", sel).astype(np.float64)
        scale = x.std(axis=0)
        scale[scale == 0] = 1.0
        return (x - x.mean(axis=0)) / scale

    fits = {"mlp": mlp[0], "mlp seed 1": mlp[1], LDA: fast, f"fast (lda, {KFOLD}-fold)": kfold,
            LOGISTIC: logistic, **grid}
    funcs = {name: (lambda sel, fit=fit: fit.evaluate(sel).val_accuracy)
             for name, fit in fits.items()}
    funcs.update({"LogME": lambda sel: _scores.logme(standardised(sel), f.y["train"]),
                  "H-score": lambda sel: _scores.h_score(standardised(sel), f.y["train"]),
                  "SFDA-style": lambda sel: _scores.sfda_score(standardised(sel), f.y["train"])})
    # what each kept value was computed by: a proxy whose settings changed is computed again
    keys = {name: fit.key() for name, fit in fits.items()}
    keys.update({name: f"{name}|standardised train features|{source.fingerprint}"
                 for name in ("LogME", "H-score", "SFDA-style")})
    return funcs, keys


def proxy_values(f: Features, selections, work: Path, log) -> Tuple[Dict[str, Dict[str, float]], Dict[str, float]]:
    """Every proxy's value of every selection (kept), and each proxy's median seconds."""
    import torch

    torch.set_num_threads(1)
    path = work / "proxies.json"
    funcs, keys = proxy_functions(f)
    saved = json.loads(path.read_text()) if path.is_file() else {}
    # values kept by a proxy of other settings (or in the layout before keys were kept) go
    saved_keys = saved.get("keys", {}) if "values" in saved else {}
    kept = {bits: {name: v for name, v in row.items() if saved_keys.get(name) == keys.get(name)}
            for bits, row in saved.get("values", {}).items()}
    seconds: Dict[str, List[float]] = {name: [] for name in funcs}
    for i, sel in enumerate(selections):
        bits = f.taps.bits(list(sel))
        row = kept.get(bits, {})
        timed = i < TIMED
        for name, fn in funcs.items():
            if name in row and not timed:
                continue
            began = time.perf_counter()
            row[name] = float(fn(sel))
            seconds[name].append(time.perf_counter() - began)
        kept[bits] = row
        if i % 10 == 9 or i == len(selections) - 1:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"keys": keys, "values": kept}))
            tmp.replace(path)
            log(f"  proxies: {i + 1}/{len(selections)} selections")
    for bits, row in kept.items():
        row["mlp (mean of 2 seeds)"] = (row["mlp"] + row["mlp seed 1"]) / 2
    seconds["mlp (mean of 2 seeds)"] = [a + b for a, b in zip(seconds["mlp"], seconds["mlp seed 1"])]
    return kept, {k: float(np.median(v)) for k, v in seconds.items() if v}


# ---------------------------------------------------------------------------------------------
# measures

def _ranks(v: np.ndarray) -> np.ndarray:
    order = np.argsort(v, kind="mergesort")
    ranks = np.empty(len(v))
    ranks[order] = np.arange(len(v))
    for value in np.unique(v):  # ties share their mean rank
        tie = v == value
        ranks[tie] = ranks[tie].mean()
    return ranks


def spearman(a, b) -> float:
    return float(np.corrcoef(_ranks(np.asarray(a, float)), _ranks(np.asarray(b, float)))[0, 1])


def kendall(a, b) -> float:
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic)


def measures(f: Features, selections, truth, values, seconds,
             names: Sequence[str] = PROXIES) -> List[Dict[str, object]]:
    bits = [f.taps.bits(list(s)) for s in selections]
    size = {b: f.size(s) for b, s in zip(bits, selections)}
    test = np.array([truth[b]["test"] for b in bits])
    manual = f.taps.bits(list(f.manual))
    limit = size[manual]
    feasible = [b for b in bits if size[b] <= limit]
    best_max = max(truth[b]["test"] for b in feasible)
    reach = [b for b in bits if truth[b]["val"] >= truth[manual]["val"]]
    truth_min = min(reach, key=lambda b: (size[b], -truth[b]["val"], b))
    top_truth = set(sorted(bits, key=lambda b: -truth[b]["test"])[:10])
    rows = []
    for name in names:
        score = np.array([values[b][name] for b in bits])
        by = {b: values[b][name] for b in bits}
        pick_max = max(feasible, key=lambda b: (by[b], -size[b]))
        reaching = [b for b in bits if by[b] >= by[manual]]
        pick_min = min(reaching, key=lambda b: (size[b], -by[b], b))
        top = set(sorted(bits, key=lambda b: -by[b])[:10])
        rows.append({
            "proxy": name, "selections": len(bits), "median_s": seconds.get(name, math.nan),
            "speedup_vs_mlp": seconds["mlp"] / seconds[name] if seconds.get(name) else math.nan,
            "spearman_vs_test": spearman(score, test), "kendall_vs_test": kendall(score, test),
            "top10_overlap": len(top & top_truth),
            "regret_max_accuracy": best_max - truth[pick_max]["test"],
            "regret_min_size": truth[truth_min]["test"] - truth[pick_min]["test"],
            "pick_max_accuracy": pick_max, "pick_min_size": pick_min,
            "pick_min_size_params": size[pick_min], "pick_max_accuracy_params": size[pick_max],
            "min_size_vs_table": size[pick_min] / size[truth_min],
            **_one_se(name, feasible, by, size, truth, best_max, len(f.y["val"]))})
    return rows


# proxies whose value is a val accuracy on the val images: their binomial SE is the search's
SE_PROXIES = (LDA, LOGISTIC, "mlp")


def _one_se(name, feasible, by, size, truth, best_max, n_val) -> Dict[str, object]:
    """The ``--pick one-se`` pick of the proxy under the max-accuracy constraint, by the
    search's own rule (graftsearch.optimize._result.one_se_first), and its test regret."""
    if name not in SE_PROXIES:
        return {"one_se_pick": "", "one_se_params": math.nan, "one_se_regret_max_accuracy": math.nan}
    from graftsearch.fitness._evaluation import binomial_se
    from graftsearch.optimize._result import one_se_first

    order = sorted(range(len(feasible)), key=lambda i: (-by[feasible[i]], size[feasible[i]]))
    values = [by[b] for b in feasible]
    chosen = feasible[one_se_first(order, [size[b] for b in feasible], values,
                                   [binomial_se(v, n_val) for v in values], feasible)[0]]
    return {"one_se_pick": chosen, "one_se_params": size[chosen],
            "one_se_regret_max_accuracy": best_max - truth[chosen]["test"]}


# ---------------------------------------------------------------------------------------------
# the page

COLUMNS = ["proxy", "selections", "median_s", "speedup_vs_mlp", "spearman_vs_test",
           "kendall_vs_test", "top10_overlap", "regret_max_accuracy", "regret_min_size",
           "pick_max_accuracy", "pick_min_size", "pick_min_size_params",
           "pick_max_accuracy_params", "min_size_vs_table", "one_se_pick", "one_se_params",
           "one_se_regret_max_accuracy"]


def render(rows, truth, f: Features, args, minutes: float, grid_rows=()) -> str:
    import torch

    by = {r["proxy"]: r for r in rows}
    mlp = by["mlp"]
    seeds_rho = spearman([truth[b]["test_0"] for b in truth], [truth[b]["test_1"] for b in truth])
    lines = ["# Fitness proxies judged by the final model", "",
             f"Command: `python -m benchmarks.proxy_truth --selections {args.selections} --jobs "
             f"{args.jobs}{' --quick' if args.quick else ''}` ({minutes:.1f} min, the kept "
             f"trainings reused). Machine: {os.cpu_count()} cores ({cpu_name()}), shared with "
             f"other jobs; torch {torch.__version__}, 1 torch thread per process. Problem: "
             f"{f.describe}. Ground truth: {len(truth)} selections x {len(SEEDS)} seeds of the "
             "final schedule; test accuracy is their mean. Proxies are timed back to back on the "
             f"first {TIMED} selections (median).", "",
             "| proxy | median s | x mlp speed | Spearman vs test | Kendall vs test | top-10 "
             "overlap | regret max-accuracy (pp) | regret min-size (pp) | min-size pick / table's "
             "size |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['proxy']} | {r['median_s']:.4f} | {r['speedup_vs_mlp']:.1f} | "
                     f"{r['spearman_vs_test']:.3f} | {r['kendall_vs_test']:.3f} | "
                     f"{r['top10_overlap']}/10 | {_pp(r['regret_max_accuracy'])} | "
                     f"{_pp(r['regret_min_size'])} | {r['min_size_vs_table']:.2f}x |")
    fast_ok = [r for r in rows if r["speedup_vs_mlp"] >= TARGET_SPEED]
    text = [f"The final model agrees with itself across its two seeds at Spearman {seeds_rho:.3f} "
            f"(test accuracy). One `mlp` run ranks at {mlp['spearman_vs_test']:.3f} with regrets "
            f"{_pp(mlp['regret_max_accuracy'])} / {_pp(mlp['regret_min_size'])} pp "
            "(max-accuracy / min-size; a pick that tests better than the table's loses nothing, "
            "its signed difference in brackets)."]
    if fast_ok:
        least = min(fast_ok, key=lambda r: (regret_sum(r), -r["spearman_vs_test"]))
        # one pick's test accuracy is a count over the test images: two regrets are each a
        # difference against the same table's best, so two proxies' picks differ by about
        # sqrt(2) binomial standard errors before either is better
        from graftsearch.fitness._evaluation import binomial_se

        n_test = len(f.y["test"])
        best = max(truth[b]["test"] for b in truth)
        se = math.sqrt(2) * binomial_se(best, n_test)
        close = [r for r in fast_ok if regret_sum(r) <= regret_sum(least) + se]
        winner = max(close, key=lambda r: (r["spearman_vs_test"], -regret_sum(r)))
        text.append(
            f"Of the proxies at >= {TARGET_SPEED}x `mlp`'s speed "
            f"({', '.join(r['proxy'] for r in fast_ok)}), `{least['proxy']}` has the least regret "
            f"(max-accuracy plus min-size: "
            f"{100 * regret_sum(least):.2f} pp). Two picks' test accuracies differ by a binomial "
            f"standard error of about {100 * se:.2f} pp on the {n_test} test images, so regrets "
            f"within that of the least do not tell proxies apart ({_names(close)}); of "
            f"{'those' if len(close) > 1 else 'that one'}, `{winner['proxy']}` agrees best with "
            f"final test accuracy: Spearman {winner['spearman_vs_test']:.3f}, regrets "
            f"{_pp(winner['regret_max_accuracy'])} / {_pp(winner['regret_min_size'])} "
            f"pp, {winner['speedup_vs_mlp']:.0f}x faster than `mlp`.")
        text.append(_target_sentence(winner, mlp))
        import graftsearch as gs

        settings = gs.FastSettings()
        default = default_proxy_name(settings)
        text.append(f"graftsearch's default proxy is `fast` with probe={settings.probe}, "
                    f"folds={settings.folds} (`{default}` here)"
                    + ("; this table's choice is the same." if winner["proxy"] == default else
                       f"; this table's choice would be `{winner['proxy']}`, and the default "
                       "was not changed in this run."))
    else:
        text.append(f"No proxy here reaches {TARGET_SPEED}x `mlp`'s speed.")
    lines += ["", " ".join(text), ""]
    lines += _one_se_section(rows)
    lines += _grid_section(grid_rows, args.quick)
    return "\n".join(lines)


def lost(regret: float) -> float:
    """Test accuracy lost: a pick that tests better than the table's loses nothing."""
    return max(regret, 0.0)


def regret_sum(r) -> float:
    return lost(r["regret_max_accuracy"]) + lost(r["regret_min_size"])


def _pp(regret: float) -> str:
    """A regret in pp as the page shows it: what is lost, and the signed difference when the
    pick tests better than the table's."""
    return f"{100 * lost(regret):.2f}" + (f" ({100 * regret:+.2f})" if regret < 0 else "")


def _names(rows) -> str:
    return ", ".join(f"`{r['proxy']}`" for r in rows)


def default_proxy_name(settings) -> str:
    """The row of this table that graftsearch's default fast proxy is."""
    if settings.folds == 1:
        return f"fast ({settings.probe})"
    return f"fast ({settings.probe}, {settings.folds}-fold)"


def _target_sentence(r, mlp) -> str:
    checks = [("Spearman", r["spearman_vs_test"], mlp["spearman_vs_test"], True, "{:.3f}"),
              ("max-accuracy regret", 100 * lost(r["regret_max_accuracy"]),
               100 * lost(mlp["regret_max_accuracy"]), False, "{:.2f} pp"),
              ("min-size regret", 100 * lost(r["regret_min_size"]),
               100 * lost(mlp["regret_min_size"]), False, "{:.2f} pp")]
    failed = [f"its {name} {fmt.format(v)} against `mlp`'s {fmt.format(ref)}"
              for name, v, ref, higher, fmt in checks if (v < ref if higher else v > ref)]
    size = (f" Its min-size pick is {r['min_size_vs_table']:.2f}x the size of the table's "
            f"smallest, `mlp`'s {mlp['min_size_vs_table']:.2f}x"
            + (": it gives up size, not test accuracy, there."
               if r["min_size_vs_table"] > mlp["min_size_vs_table"]
               and lost(r["regret_min_size"]) <= lost(mlp["regret_min_size"]) else "."))
    if not failed:
        return (f"`{r['proxy']}` meets the target: Spearman and both regrets (test accuracy "
                "lost) no worse than one `mlp` run." + size)
    return (f"The target (Spearman and both regrets no worse than one `mlp` run) is not met by "
            f"`{r['proxy']}`: " + "; ".join(failed) + "." + size)


def _grid_section(grid_rows, quick: bool = False) -> List[str]:
    """The logistic probe over its penalty and iterations: how much the choice hangs on them."""
    if not grid_rows:
        return []
    out = ["### The logistic probe's settings", "",
           "`FastSettings(probe='logistic', penalty=..., iterations=...)` on the same selections "
           "(median time over the timed selections).", "",
           "| penalty | iterations | median s | Spearman vs test | regret max-accuracy (pp) | "
           "regret min-size (pp) |", "|---:|---:|---:|---:|---:|---:|"]
    for r in grid_rows:
        out.append(f"| {r['penalty']:g} | {r['iterations']} | {r['median_s']:.4f} | "
                   f"{r['spearman_vs_test']:.3f} | {_pp(r['regret_max_accuracy'])} | "
                   f"{_pp(r['regret_min_size'])} |")
    import graftsearch as gs

    d = gs.FastSettings()
    rho = [r["spearman_vs_test"] for r in grid_rows]
    top = max(grid_rows, key=lambda r: r["spearman_vs_test"])
    mine = [r for r in grid_rows if r["penalty"] == d.penalty and r["iterations"] == d.iterations]
    text = (f"Across these {len(grid_rows)} settings Spearman runs from {min(rho):.3f} to "
            f"{max(rho):.3f} (highest at penalty {top['penalty']:g}, {top['iterations']} "
            f"iterations), the max-accuracy regret from "
            f"{100 * min(lost(r['regret_max_accuracy']) for r in grid_rows):.2f} to "
            f"{100 * max(lost(r['regret_max_accuracy']) for r in grid_rows):.2f} pp and the "
            f"min-size regret from {100 * min(lost(r['regret_min_size']) for r in grid_rows):.2f} "
            f"to {100 * max(lost(r['regret_min_size']) for r in grid_rows):.2f} pp.")
    if mine:
        rank = 1 + sum(v > mine[0]["spearman_vs_test"] for v in rho)
        text += (f" The defaults (penalty {d.penalty:g}, {d.iterations} iterations) rank {rank} "
                 f"of {len(grid_rows)} by Spearman here"
                 + ("." if quick else "; they were chosen on this plant-seedlings table, so "
                    "their row is an optimistic estimate of how they rank elsewhere."))
    return out + ["", text, ""]


def _one_se_section(rows) -> List[str]:
    """What `--pick one-se` does to the test accuracy of the max-accuracy pick, per proxy."""
    rows = [r for r in rows if r["proxy"] in SE_PROXIES]
    if not rows:
        return []
    out = ["### The one-standard-error pick (`--pick one-se`, max-accuracy)", "",
           "Each proxy's best feasible selection against its one-SE pick (the smallest feasible "
           "selection whose value is within one binomial standard error of the best's, on the val "
           "images), both judged by the ground truth's test accuracy.", "",
           "| proxy | best pick: params | regret (pp) | one-SE pick: params | regret (pp) |",
           "|---|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['proxy']} | {int(r['pick_max_accuracy_params']):,} | "
                   f"{_pp(r['regret_max_accuracy'])} | {int(r['one_se_params']):,} | "
                   f"{_pp(r['one_se_regret_max_accuracy'])} |")
    text = []
    for r in rows:
        change = lost(r["one_se_regret_max_accuracy"]) - lost(r["regret_max_accuracy"])
        smaller = 1 - r["one_se_params"] / r["pick_max_accuracy_params"]
        effect = (f"loses {100 * change:.2f} pp more test accuracy than" if change > 0 else
                  f"loses {100 * -change:.2f} pp less test accuracy than" if change < 0
                  else "loses as much test accuracy as")
        text.append(f"with `{r['proxy']}` the one-SE pick is {100 * smaller:.0f}% smaller and "
                    f"{effect} the best pick")
    out += ["", "Under the max-accuracy constraint, " + "; ".join(text) + ".", ""]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--selections", type=int, default=150)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    log = lambda m: print(m, flush=True)  # noqa: E731
    began = time.perf_counter()
    if args.quick:
        args.selections = min(args.selections, 16)
        f, work = quick_features(), WORK / "quick"
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    else:
        from benchmarks._problems import DATA

        if not DATA.is_dir():
            print(f"skipped: {DATA} is not there")
            return 0
        f, work = real_features(log), WORK / "full"
    selections = choose_selections(f, args.selections, args.seed)
    truth = ground_truth(f, selections, work / "truth", args.jobs, log)
    values, seconds = proxy_values(f, selections, work, log)
    rows = measures(f, selections, truth, values, seconds)
    grid_rows = [{**r, "penalty": p, "iterations": i}
                 for (p, i), r in zip([(p, i) for p in GRID_PENALTIES for i in GRID_ITERATIONS],
                                      measures(f, selections, truth, values, seconds,
                                               [grid_name(p, i) for p in GRID_PENALTIES
                                                for i in GRID_ITERATIONS]))]
    out = results_dir(RESULTS, args.quick, work / "results")
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "proxy_truth.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    with open(out / "proxy_truth_table.csv", "w", newline="") as fh:
        fields = ["bits", "params"] + sorted(next(iter(truth.values())))
        w = csv.DictWriter(fh, fieldnames=fields + list(PROXIES))
        w.writeheader()
        for sel in selections:
            b = f.taps.bits(list(sel))
            w.writerow({"bits": b, "params": f.size(sel), **truth[b],
                        **{p: values[b][p] for p in PROXIES}})
    with open(out / "proxy_truth_logistic_grid.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["penalty", "iterations"] + COLUMNS)
        w.writeheader()
        w.writerows(grid_rows)
    (out / "proxy_truth.md").write_text(render(rows, truth, f, args, grid_rows=grid_rows,
                                               minutes=(time.perf_counter() - began) / 60))
    print((out / "proxy_truth.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
