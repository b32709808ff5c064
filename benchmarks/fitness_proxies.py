"""Fitness proxies: speed of ``mlp`` and ``fast``, and how well ``fast`` ranks selections like ``mlp``.

Two problems, timed in a single process, torch on 1 thread (the proxies' default ``threads=1``);
values that are not timed (mlp under a second seed) come from 2 worker processes:

- ``plant-seedlings`` (real): EfficientNet-Lite0 (ImageNet weights) GAP features of the
  plant-seedlings images at 128 px, from graftsearch's own feature cache (``build_cache`` over
  ``load_dataset("folder:../shared/data/plant-seedlings/images")``: stratified 60/20/20 split).
  ``--selections`` (default 200) distinct random selections of the 18 taps, drawn as the search's
  initial population draws them (a number of taps k uniform in 1..18, then k taps uniformly).
  Each selection is evaluated by ``fast`` and by ``mlp`` back to back (so that the machine's load
  hits both alike), then by ``mlp`` once more under another seed (how well mlp agrees with
  itself bounds how well anything can agree with it). Also: the other ``fast`` variants, and the
  ``mlp`` settings table on the first ``--settings-selections`` selections that chose the mlp
  defaults.
- ``deepweeds-size`` (synthetic): 17,509 generated images (the official DeepWeeds count, split
  60/20/20), the 18 vgg16 taps at 128 px (5,696 channels), 9 classes. ``mlp`` on the paper's
  768-d selection (taps 8, 9, 10) under ``--reps`` seeds, and ``fast`` on the same selection and
  on random ones.

Writes ``results/fitness_proxies.csv`` (one row per problem x proxy variant) and
``results/fitness_proxies.md``. ``--quick``: a tiny generated problem, seconds, for the harness.

Run: ``python -m benchmarks.fitness_proxies [--quick] [--selections 200] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._machine import cpu_name  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import graftsearch as gs  # noqa: E402
from graftsearch._utils.seeding import derive_seed  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DATA = ROOT.parent / "shared" / "data" / "plant-seedlings" / "images"
PAPER_SELECTION = (8, 9, 10)
DEEPWEEDS_IMAGES = 17_509
# mlp settings compared for the defaults (the first is the default)
MLP_CANDIDATES: Dict[str, gs.MLPSettings] = {
    "default (batch 128, patience 5, <= 40 epochs)": gs.MLPSettings(),
    "batch 64, patience 3, <= 30 epochs": gs.MLPSettings(batch_size=64, patience=3, epochs=30),
    "batch 256, lr 3e-3, patience 5, <= 40 epochs": gs.MLPSettings(batch_size=256, lr=3e-3, patience=5, epochs=40),
    "paper (batch 16, 18 epochs, no early stop)": gs.MLPSettings(batch_size=16, epochs=18, patience=None),
}
# The fast proxy measured here is the LDA probe (the default until the logistic probe was
# chosen by benchmarks/proxy_truth.py, and still the probe of every search benchmark); its rows
# are labelled by probe, and the page says which probe graftsearch's default is.
REFERENCE = "lda, Ledoit-Wolf shrinkage"
REFERENCE_SETTINGS = gs.FastSettings(probe="lda")
FAST_VARIANTS: Dict[str, gs.FastSettings] = {
    REFERENCE: REFERENCE_SETTINGS,
    "lda, shrinkage 0.05": gs.FastSettings(probe="lda", shrinkage=0.05),
    "lda, shrinkage 0.2": gs.FastSettings(probe="lda", shrinkage=0.2),
    "ridge, alpha by GCV": gs.FastSettings(probe="ridge"),
    "ridge, alpha 0.03": gs.FastSettings(probe="ridge", alpha=0.03),
}


# ---------------------------------------------------------------------------------------------
# problems


def plant_seedlings(log) -> Tuple[gs.features.FeatureSource, str]:
    donor = gs.load_donor("efficientnet_lite0", weights="IMAGENET")
    dataset = gs.load_dataset(f"folder:{DATA}")
    began = time.perf_counter()
    cache = gs.build_cache(donor, dataset, image_size=128)
    log(f"feature cache ready in {time.perf_counter() - began:.1f} s: {cache!r}")
    return cache, (f"EfficientNet-Lite0 (ImageNet) GAP features of plant-seedlings at 128 px, graftsearch's "
                   f"feature cache ({cache.n_images('train')} train / {cache.n_images('val')} val images, "
                   f"{len(cache.classes)} classes, {len(cache.taps)} taps, {sum(cache.taps.channels)} channels)")


def synthetic(taps: gs.taps.TapList, n_images: int, n_classes: int, seed: int, dtype=np.float16) -> gs.ArrayFeatures:
    """Non-negative GAP-like features; each tap sees the class through a random projection, more
    clearly with depth, plus noise (so training curves and early stopping look like real ones)."""
    rng = np.random.default_rng(seed)
    sizes = {"train": int(round(0.6 * n_images)), "val": int(round(0.2 * n_images))}
    sizes["test"] = n_images - sizes["train"] - sizes["val"]
    latent = rng.normal(0, 1, (n_classes, 32))
    projections = [rng.normal(0, (0.05 + 0.25 * t / len(taps)) / np.sqrt(32), (32, tap.channels))
                   for t, tap in enumerate(taps, start=1)]
    feats: Dict[str, List[np.ndarray]] = {}
    labels: Dict[str, np.ndarray] = {}
    for split, n in sizes.items():
        y = rng.integers(0, n_classes, n)
        code = latent[y] + rng.normal(0, 1.5, (n, 32))
        arrays = []
        for proj, tap in zip(projections, taps):
            x = code @ proj + rng.normal(0, 1, (n, tap.channels))
            arrays.append(np.maximum(x, 0).astype(dtype))
        feats[split], labels[split] = arrays, y
    return gs.ArrayFeatures(taps, [f"class{k}" for k in range(n_classes)], feats, labels)


def random_selections(n_taps: int, count: int, seed: int) -> List[Tuple[int, ...]]:
    rng = np.random.default_rng(derive_seed(seed, "benchmark-selections"))
    out: List[Tuple[int, ...]] = []
    seen = set()
    limit = 2 ** n_taps - 1
    while len(out) < min(count, limit):
        k = int(rng.integers(1, n_taps + 1))
        sel = tuple(int(i) for i in sorted(rng.choice(np.arange(1, n_taps + 1), size=k, replace=False)))
        if sel not in seen:
            seen.add(sel)
            out.append(sel)
    return out


# ---------------------------------------------------------------------------------------------
# measuring


def timed(fitness, selection) -> Tuple[gs.Evaluation, float]:
    began = time.perf_counter()
    ev = fitness.evaluate(selection)
    return ev, time.perf_counter() - began


def _accuracies(fitness, selections) -> List[float]:
    return [fitness.evaluate(sel).val_accuracy for sel in selections]


def untimed_accuracies(fitness, selections, n_jobs: int = 2) -> List[float]:
    """P of each selection, computed by ``n_jobs`` worker processes (one torch thread each).

    Only for values that are not timed (the second mlp seed, the settings table's seed 1): the
    proxies are deterministic per seed and selection, so the workers give the values a single
    process would, in half the wall time on 2 cores.
    """
    from joblib import Parallel, delayed

    chunks = [list(selections[i::n_jobs]) for i in range(n_jobs)]
    parts = Parallel(n_jobs=n_jobs)(delayed(_accuracies)(fitness, c) for c in chunks if c)
    out: List[float] = [0.0] * len(selections)
    for i, part in enumerate(parts):
        out[i::n_jobs] = part
    return out


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    import pandas as pd

    return float(pd.Series(list(a)).corr(pd.Series(list(b)), method="spearman"))


def top_overlap(a: Sequence[float], b: Sequence[float], k: int = 10) -> int:
    top = lambda v: set(np.argsort(-np.asarray(v), kind="stable")[:k].tolist())  # noqa: E731
    return len(top(a) & top(b))


def row(problem: str, proxy: str, variant: str, times: Sequence[float], accs: Sequence[float], **extra) -> dict:
    t = np.asarray(times)
    out = {"problem": problem, "proxy": proxy, "variant": variant, "evaluations": len(t),
           "median_s": round(float(np.median(t)), 5), "p95_s": round(float(np.quantile(t, 0.95)), 5),
           "evals_per_s_median": round(1.0 / float(np.median(t)), 3),
           "evals_per_s_p95": round(1.0 / float(np.quantile(t, 0.95)), 3),
           "mean_val_accuracy": round(float(np.mean(accs)), 4)}
    out.update(extra)
    return out


def real_problem_rows(source, selections, settings_count: int, seed: int, log) -> Tuple[List[dict], dict]:
    name = "plant-seedlings"
    began = time.perf_counter()
    fast = gs.make_fitness("fast", source, seed=seed, settings=REFERENCE_SETTINGS)
    setup = time.perf_counter() - began
    log(f"fast setup (Gram blocks over all taps): {setup:.2f} s")
    mlp = gs.make_fitness("mlp", source, seed=seed)
    mlp2 = gs.make_fitness("mlp", source, seed=seed + 1)
    fast_acc, fast_t, mlp_acc, mlp_t, mlp2_acc = [], [], [], [], []
    for i, sel in enumerate(selections, start=1):
        order = (0, 1) if i % 2 else (1, 0)  # alternate who goes first
        for which in order:
            ev, dt = timed(fast if which == 0 else mlp, sel)
            (fast_acc if which == 0 else mlp_acc).append(ev.val_accuracy)
            (fast_t if which == 0 else mlp_t).append(dt)
        if i % 20 == 0:
            log(f"  {i}/{len(selections)}: fast {np.median(fast_t):.3f} s, mlp {np.median(mlp_t):.2f} s "
                f"median; spearman so far {spearman(fast_acc, mlp_acc):.3f}")
    mlp2_acc = untimed_accuracies(mlp2, selections)
    dims = [sum(source.taps.tap(i).channels for i in s) for s in selections]
    ratio = float(np.median(np.asarray(mlp_t) / np.asarray(fast_t)))
    rows = [
        row(name, "mlp", "default, seed 0", mlp_t, mlp_acc, spearman_vs_mlp=round(spearman(mlp_acc, mlp2_acc), 3),
            top10_overlap_vs_mlp=top_overlap(mlp_acc, mlp2_acc), vs="mlp under seed 1",
            median_dims=int(np.median(dims))),
        row(name, "fast", REFERENCE, fast_t, fast_acc,
            spearman_vs_mlp=round(spearman(fast_acc, mlp_acc), 3), top10_overlap_vs_mlp=top_overlap(fast_acc, mlp_acc),
            vs="mlp seed 0", speedup_vs_mlp=round(ratio, 1), setup_s=round(setup, 2), median_dims=int(np.median(dims))),
    ]
    mean_mlp = (np.asarray(mlp_acc) + np.asarray(mlp2_acc)) / 2
    rows[-1]["spearman_vs_mlp_mean_of_2_seeds"] = round(spearman(fast_acc, mean_mlp), 3)
    for label, fs in FAST_VARIANTS.items():
        if fs == REFERENCE_SETTINGS:
            continue
        f = gs.make_fitness("fast", source, seed=seed, settings=fs)
        acc, ts = [], []
        for sel in selections:
            ev, dt = timed(f, sel)
            acc.append(ev.val_accuracy)
            ts.append(dt)
        rows.append(row(name, "fast", label, ts, acc, spearman_vs_mlp=round(spearman(acc, mlp_acc), 3),
                        top10_overlap_vs_mlp=top_overlap(acc, mlp_acc), vs="mlp seed 0",
                        speedup_vs_mlp=round(float(np.median(np.asarray(mlp_t) / np.asarray(ts))), 1),
                        spearman_vs_mlp_mean_of_2_seeds=round(spearman(acc, mean_mlp), 3),
                        median_dims=int(np.median(dims))))
        log(f"  fast variant {label}: spearman {rows[-1]['spearman_vs_mlp']}")
    # the mlp settings that chose the defaults: accuracy against time on the first selections
    subset = selections[:settings_count]
    for label, ms in MLP_CANDIDATES.items():
        f = gs.make_fitness("mlp", source, seed=seed, settings=ms)
        g = gs.make_fitness("mlp", source, seed=seed + 1, settings=ms)
        acc, ts = [], []
        for sel in subset:
            ev, dt = timed(f, sel)
            acc.append(ev.val_accuracy)
            ts.append(dt)
        acc2 = untimed_accuracies(g, subset)
        rows.append(row(name, "mlp", f"settings: {label}", ts, acc, vs="same settings under seed 1",
                        spearman_vs_mlp=round(spearman(acc, acc2), 3), top10_overlap_vs_mlp=top_overlap(acc, acc2),
                        mean_val_accuracy_seed1=round(float(np.mean(acc2)), 4),
                        median_dims=int(np.median([sum(source.taps.tap(i).channels for i in s) for s in subset]))))
        log(f"  mlp settings {label}: mean acc {rows[-1]['mean_val_accuracy']}, median {rows[-1]['median_s']} s")
    summary = {"spearman": rows[1]["spearman_vs_mlp"], "top10": rows[1]["top10_overlap_vs_mlp"],
               "mlp_self": rows[0]["spearman_vs_mlp"], "speedup": rows[1]["speedup_vs_mlp"]}
    return rows, summary


def vgg16_taps(n: int = 18) -> gs.taps.TapList:
    taps = gs.load_donor("vgg16", load_weights=False).taps(128)
    return taps if n == len(taps) else gs.taps.TapList(list(taps)[:n], donor_name="vgg16", image_size=128)


def deepweeds_rows(n_images: int, reps: int, n_random: int, seed: int, log, *, taps: gs.taps.TapList,
                   sel: Tuple[int, ...] = PAPER_SELECTION) -> List[dict]:
    name = "deepweeds-size"
    began = time.perf_counter()
    source = synthetic(taps, n_images, 9, seed)
    log(f"generated {n_images} x {sum(taps.channels)} features in {time.perf_counter() - began:.1f} s")
    began = time.perf_counter()
    fast = gs.make_fitness("fast", source, seed=seed, settings=REFERENCE_SETTINGS)
    setup = time.perf_counter() - began
    log(f"fast setup: {setup:.1f} s")
    d = sum(taps.tap(i).channels for i in sel)
    mlp_t, mlp_acc, fast_t, fast_acc = [], [], [], []
    for r in range(reps):
        mlp = gs.make_fitness("mlp", source, seed=seed + r)
        for which in ((0, 1) if r % 2 == 0 else (1, 0)):
            ev, dt = timed(fast if which == 0 else mlp, sel)
            (fast_acc if which == 0 else mlp_acc).append(ev.val_accuracy)
            (fast_t if which == 0 else mlp_t).append(dt)
        log(f"  rep {r + 1}/{reps}: mlp {mlp_t[-1]:.2f} s (acc {mlp_acc[-1]:.3f}), fast {fast_t[-1]:.3f} s")
    ratio = float(np.median(mlp_t) / np.median(fast_t))
    rows = [row(name, "mlp", f"default, taps {';'.join(map(str, sel))} ({d}-d), {reps} seeds", mlp_t, mlp_acc,
                median_dims=d),
            row(name, "fast", f"lda, taps {';'.join(map(str, sel))} ({d}-d)", fast_t, fast_acc,
                speedup_vs_mlp=round(ratio, 1), setup_s=round(setup, 2), median_dims=d)]
    selections = random_selections(len(taps), n_random, seed)
    acc, ts = [], []
    for s in selections:
        ev, dt = timed(fast, s)
        acc.append(ev.val_accuracy)
        ts.append(dt)
    rows.append(row(name, "fast", f"lda, {len(selections)} random selections", ts, acc, setup_s=round(setup, 2),
                    median_dims=int(np.median([sum(taps.tap(i).channels for i in s) for s in selections]))))
    return rows


# ---------------------------------------------------------------------------------------------
# report

COLUMNS = ["problem", "proxy", "variant", "evaluations", "median_dims", "median_s", "p95_s",
           "evals_per_s_median", "evals_per_s_p95", "mean_val_accuracy", "speedup_vs_mlp", "setup_s",
           "spearman_vs_mlp", "top10_overlap_vs_mlp", "vs", "spearman_vs_mlp_mean_of_2_seeds",
           "mean_val_accuracy_seed1"]


def write(rows: List[dict], md: str, out: Path) -> None:
    import io

    from graftsearch._utils.atomic import write_text

    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: r.get(k, "") for k in COLUMNS})
    write_text(out / "fitness_proxies.csv", buf.getvalue())
    write_text(out / "fitness_proxies.md", md)


def table(rows: List[dict], cols: Sequence[str]) -> str:
    lines = ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    for r in rows:
        lines.append("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
    return "\n".join(lines)


def _acc2(r: dict) -> float:
    return (float(r["mean_val_accuracy"]) + float(r.get("mean_val_accuracy_seed1") or r["mean_val_accuracy"])) / 2


def findings(rows: List[dict]) -> List[str]:
    """The conclusions, worded from the measured numbers (nothing here is typed in by hand)."""
    real = [r for r in rows if r["problem"].endswith("plant-seedlings")]
    mlp = next(r for r in real if r["proxy"] == "mlp" and r["variant"].startswith("default"))
    fast = next(r for r in real if r["proxy"] == "fast" and r["variant"] == REFERENCE)
    variants = [r for r in real if r["proxy"] == "fast"]
    best = max(variants, key=lambda r: float(r["spearman_vs_mlp"]))
    gcv = next((r for r in variants if "GCV" in r["variant"]), None)
    dw = [r for r in rows if r["problem"].endswith("deepweeds-size")]
    dw_fast = next((r for r in dw if r["proxy"] == "fast" and r.get("speedup_vs_mlp") not in (None, "")), None)
    dw_mlp = next((r for r in dw if r["proxy"] == "mlp"), None)
    settings = [r for r in real if r["variant"].startswith("settings:")]
    speedup = float(fast["speedup_vs_mlp"])
    out = [f"- Speed (target: `fast` >= 20x faster than `mlp`): on the real selections `fast` takes "
           f"{fast['median_s']} s median ({fast['p95_s']} s p95) against {mlp['median_s']} s ({mlp['p95_s']} s) "
           f"for `mlp`: {speedup}x (median of per-selection ratios), "
           f"{'meeting' if speedup >= 20 else 'short of'} the target."]
    if dw_fast and dw_mlp:
        out.append(f"- DeepWeeds size, the paper's {dw_mlp['median_dims']}-d selection: `mlp` {dw_mlp['median_s']} s "
                   f"median ({dw_mlp['evals_per_s_median']} evaluations/s), `fast` {dw_fast['median_s']} s "
                   f"({dw_fast['evals_per_s_median']} evaluations/s): {dw_fast['speedup_vs_mlp']}x; `fast`'s "
                   f"one-off setup over all taps took {dw_fast['setup_s']} s.")
    rho, self_rho = float(fast["spearman_vs_mlp"]), float(mlp["spearman_vs_mlp"])
    mean2 = fast.get("spearman_vs_mlp_mean_of_2_seeds")
    # One mlp run is a noisy reference: a proxy free of noise, ranking exactly as mlp's expected
    # P does, would agree with one run at about sqrt(self-agreement) (the reasoning).
    ceiling = math.sqrt(max(self_rho, 0.0))
    text = (f"- Ranking (target: Spearman >= 0.8): `fast` vs `mlp` Spearman {rho:.3f} "
            f"({'meeting' if rho >= 0.8 else 'short of'} the target), top-10 overlap "
            f"{fast['top10_overlap_vs_mlp']}/10. The same `mlp` under another seed agrees with itself at "
            f"Spearman {self_rho:.3f} (top-10 overlap {mlp['top10_overlap_vs_mlp']}/10), so a noise-free "
            f"proxy could agree with one `mlp` run at about sqrt({self_rho:.3f}) = {ceiling:.3f}; `fast` "
            f"reaches {rho / ceiling:.0%} of that" if ceiling > 0 else
            f"- Ranking: `fast` vs `mlp` Spearman {rho:.3f}; `mlp` does not agree with itself "
            f"({self_rho:.3f}), so one `mlp` run is no reference")
    if mean2 not in (None, ""):
        text += (f". Against the mean of two `mlp` seeds (less noisy) `fast` reaches {float(mean2):.3f}, "
                 f"{'higher' if float(mean2) > rho else 'not higher'} than against one run.")
    else:
        text += "."
    out.append(text)
    line = (f"- `fast` variants: the most mlp-like ranking came from `{best['variant']}` (Spearman "
            f"{float(best['spearman_vs_mlp']):.3f})"
            + ("; that is the LDA probe the rows above measure." if best is fast else
               f", against {rho:.3f} for `{fast['variant']}`."))
    if gcv:
        g_rho, g_speed = float(gcv["spearman_vs_mlp"]), float(gcv["speedup_vs_mlp"])
        line += (f" Ridge with alpha by GCV: {gcv['median_s']} s median ({g_speed}x faster than `mlp`) at "
                 f"Spearman {g_rho:.3f}, {'above' if g_rho > rho else 'not above'} the LDA probe's "
                 f"{rho:.3f} and {'faster' if g_speed > speedup else 'slower'} than it ({speedup}x).")
    out.append(line)
    if settings:
        default = next(r for r in settings if "default" in r["variant"])
        top = max(settings, key=_acc2)
        fastest = min(settings, key=lambda r: float(r["median_s"]))
        d = gs.MLPSettings()
        out.append(
            f"- `mlp` defaults (batch {d.batch_size}, Adam {d.lr:g}, <= {d.epochs} epochs, early stop after "
            f"{d.patience} epochs without a lower val loss, best epoch kept): mean val accuracy "
            f"{_acc2(default):.4f} over the two seeds at {default['median_s']} s median per evaluation. Most "
            f"accurate candidate: `{top['variant'][len('settings: '):]}` ({_acc2(top):.4f}, {top['median_s']} s"
            + ("; the default" if top is default else
               f", {_acc2(top) - _acc2(default):+.4f} against the default") + "); fastest: "
            f"`{fastest['variant'][len('settings: '):]}` ({_acc2(fastest):.4f}, {fastest['median_s']} s).")
    return out


def markdown(rows, summary, args, describe, elapsed) -> str:
    speed_cols = ["problem", "proxy", "variant", "evaluations", "median_dims", "median_s", "p95_s",
                  "evals_per_s_median", "evals_per_s_p95", "speedup_vs_mlp", "setup_s"]
    rank_cols = ["variant", "mean_val_accuracy", "spearman_vs_mlp", "top10_overlap_vs_mlp", "vs",
                 "spearman_vs_mlp_mean_of_2_seeds", "median_s", "speedup_vs_mlp"]
    main = [r for r in rows if not r["variant"].startswith("settings:")]
    real = [r for r in rows if r["problem"] == "plant-seedlings" and not r["variant"].startswith("settings:")]
    settings = [r for r in rows if r["variant"].startswith("settings:")]
    cmd = "python -m benchmarks.fitness_proxies" + (" --quick" if args.quick else "")
    parts = [
        "# Fitness proxies: `mlp` and `fast`",
        "",
        f"Command: `{cmd}` ({elapsed / 60:.1f} min). Machine: {os.cpu_count()} cores ({cpu_name()}), "
        f"shared with other jobs; torch {torch.__version__}, 1 torch thread (the proxies' `threads=1`); every "
        "timed evaluation runs in the main process, alone. Values that are not timed (mlp under seed 1, in the "
        "ranking and settings tables) come from 2 worker processes of 1 thread each: the proxies are "
        "deterministic per seed and selection. Times are per evaluation (`evaluate(selection)`), measured with `perf_counter`; `fast` and `mlp` "
        "are timed back to back on each selection (alternating which goes first) so that the machine's load hits "
        "both alike; `speedup_vs_mlp` is the median over selections of mlp time / fast time. `setup_s`: the fast "
        "proxy's one-off precomputation (Gram blocks over all taps), not included in its per-evaluation times.",
        "",
        f"Problems: {describe}",
        "",
        _probe_note(),
        "",
        "## Speed",
        "",
        table(main, speed_cols),
        "",
        f"## Ranking agreement on real features ({args.selections} random selections)",
        "",
        "Spearman correlation of val accuracy (P) across the selections, and the overlap of the top-10 "
        "selections, against `mlp` (default settings, seed 0). The `mlp` row compares mlp with itself under "
        "another seed: the noise in P that no proxy can rank away.",
        "",
        table(real, rank_cols),
        "",
        "## Choosing the mlp defaults",
        "",
        f"The first {args.settings_selections} selections, each trained under seeds 0 and 1 with each candidate "
        "setting; `spearman_vs_mlp` here is the setting's agreement with itself across the two seeds.",
        "",
        table(settings, ["variant", "mean_val_accuracy", "mean_val_accuracy_seed1", "spearman_vs_mlp",
                         "median_s", "p95_s"]),
        "",
    ]
    if summary:
        parts += ["## Findings", ""] + findings(rows) + [""]
    return "\n".join(parts)


def _probe_note() -> str:
    default = gs.FastSettings()
    if default == REFERENCE_SETTINGS:
        return "The `fast` rows measure graftsearch's default fast proxy (the LDA probe)."
    return (f"The `fast` rows measure the LDA probe (`FastSettings(probe=\"lda\")`), the probe of "
            f"every search benchmark; graftsearch's default is `probe=\"{default.probe}\"`, "
            "chosen by how the proxies rank selections against their final trained grafts' test "
            "accuracy (proxy_truth.md).")


def _relabel(row: dict) -> dict:
    """A fast row of a table written while the LDA probe was the default, named by its probe
    ("... (default)" and "default, ..." then)."""
    variant = row["variant"]
    if row["proxy"] == "fast":
        variant = re.sub(r"^default, ", "lda, ", variant.removesuffix(" (default)"))
    return {**row, "variant": variant}


def render_again(out: Path) -> int:
    """Rewrite fitness_proxies.md from the CSV of the last run (its command line, duration and
    problems read back from the page it wrote): new wording, the same measured numbers (the
    fast rows of a table written while LDA was the default relabelled by their probe)."""
    import re
    from argparse import Namespace
    from datetime import datetime, timezone

    with open(out / "fitness_proxies.csv", newline="") as fh:
        rows = [_relabel(r) for r in csv.DictReader(fh)]
    old = (out / "fitness_proxies.md").read_text()
    minutes = re.search(r"\(([0-9.]+) min\)", old)
    problems = re.search(r"^Problems: (.*)$", old, flags=re.M)
    if not rows or minutes is None or problems is None:
        raise SystemExit(f"{out / 'fitness_proxies.md'} is not a page this benchmark wrote; rerun it")
    real = [r for r in rows if r["problem"].endswith("plant-seedlings")]
    mlp = next(r for r in real if r["proxy"] == "mlp" and r["variant"].startswith("default"))
    settings = [r for r in real if r["variant"].startswith("settings:")]
    args = Namespace(quick=rows[0]["problem"].startswith("quick-"),
                     selections=int(mlp["evaluations"]),
                     settings_selections=int(settings[0]["evaluations"]) if settings else 0)
    md = markdown(rows, bool(real), args, problems.group(1), float(minutes.group(1)) * 60)
    # the run's time from the page when it was rendered before: a clone's files are all as
    # new as the clone
    earlier = re.search(r"the table that run wrote \(([0-9-]+ [0-9:]+) UTC", old)
    stamp = (earlier.group(1) if earlier else
             f"{datetime.fromtimestamp((out / 'fitness_proxies.csv').stat().st_mtime, timezone.utc):%Y-%m-%d %H:%M}")
    md = md.replace("\n\nProblems: ", f"\n\nRendered again on {datetime.now(timezone.utc):%Y-%m-%d} from "
                    f"the table that run wrote ({stamp} UTC, "
                    "`python -m benchmarks.fitness_proxies --render-only`).\n\nProblems: ", 1)
    from graftsearch._utils.atomic import write_text

    write_text(out / "fitness_proxies.md", md)  # the CSV stays the one the run wrote
    print(md)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Fitness proxies: speed and ranking agreement.")
    parser.add_argument("--quick", action="store_true", help="tiny generated problem, seconds")
    parser.add_argument("--selections", type=int, default=200)
    parser.add_argument("--settings-selections", type=int, default=30)
    parser.add_argument("--reps", type=int, default=5, help="mlp seeds on the DeepWeeds-size 768-d selection")
    parser.add_argument("--random", type=int, default=50, help="fast on random DeepWeeds-size selections")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="where the tables go (default: benchmarks/results)")
    parser.add_argument("--render-only", action="store_true",
                        help="rewrite the page from the last run's CSV (no measurement)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out) if args.out else RESULTS
    if args.render_only:
        return render_again(out)
    log = lambda m: print(m, flush=True)  # noqa: E731
    began = time.perf_counter()
    if args.quick:
        args.selections, args.settings_selections, args.reps, args.random = 12, 3, 2, 5
        source = synthetic(vgg16_taps(6), 400, 3, args.seed, dtype=np.float32)
        describe = "a tiny generated problem (400 images, the first 6 vgg16 taps): a harness check, not the reported numbers."
        global MLP_CANDIDATES
        MLP_CANDIDATES = {k: gs.MLPSettings(**{**v.as_dict(), "epochs": 2}) for k, v in list(MLP_CANDIDATES.items())[:2]}
    else:
        source, describe = plant_seedlings(log)
        describe = (f"`plant-seedlings`: {describe}; `deepweeds-size`: {DEEPWEEDS_IMAGES:,} generated images "
                    "(60/20/20), the 18 vgg16 taps at 128 px (5,696 channels), 9 classes, float16 features.")
    selections = random_selections(len(source.taps), args.selections, args.seed)
    rows, summary = real_problem_rows(source, selections, args.settings_selections, args.seed, log)
    if args.quick:
        rows += deepweeds_rows(400, args.reps, args.random, args.seed, log, taps=vgg16_taps(6), sel=(4, 5, 6))
    else:
        rows += deepweeds_rows(DEEPWEEDS_IMAGES, args.reps, args.random, args.seed, log, taps=vgg16_taps())
    for r in rows:
        if args.quick:
            r["problem"] = "quick-" + r["problem"]
    elapsed = time.perf_counter() - began
    write(rows, markdown(rows, summary, args, describe, elapsed), out)
    log(f"wrote {out / 'fitness_proxies.csv'} and .md in {elapsed / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
