"""Search taps with your own fitness: macro-F1 instead of accuracy, and a per-class recall floor.

The fitness is a :class:`graftsearch.FitnessFunction` subclass. For each selection it fits a
ridge classifier on the selection's cached train features (standardised, one-hot targets), scores
the val split, and returns macro-F1 as P, plus two extra metrics that become columns of
``evaluations.csv``: the lowest per-class recall and the plain accuracy. With ``recall_floor``
set, a selection whose worst class falls below the floor gets P = 0, so the search avoids models
that ignore a class.

Runs without any download on generated features (8 taps, 4 classes, class signal growing with
depth); pass ``--cache PATH`` to use a real feature cache built by ``graftsearch cache`` (or
``graftsearch.build_cache``) instead::

    python examples/custom_fitness.py
    python examples/custom_fitness.py --cache ~/.cache/graftsearch/features/<cache> --recall-floor 0.5
    python examples/custom_fitness.py --run-dir runs/custom-fitness --generations 10
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script from a checkout: use the checkout's package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import graftsearch as gs  # noqa: E402
from graftsearch.taps import Tap, TapList  # noqa: E402
from graftsearch.training import compute_metrics  # noqa: E402


class MacroF1(gs.FitnessFunction):
    """P = macro-F1 of a ridge classifier on the selection's features (val split)."""

    name = "macro_f1"

    def __init__(self, alpha: float = 1.0, recall_floor: float = 0.0):
        self.alpha = alpha
        self.recall_floor = recall_floor

    def __call__(self, ctx: gs.SelectionContext):
        x, y = ctx.features("train").astype(np.float64), ctx.labels("train")
        mean, std = x.mean(0), x.std(0) + 1e-12
        z = (x - mean) / std
        onehot = np.eye(len(ctx.classes))[y]
        coef = np.linalg.solve(z.T @ z + self.alpha * len(z) * np.eye(z.shape[1]), z.T @ (onehot - onehot.mean(0)))
        zv = (ctx.features("val").astype(np.float64) - mean) / std
        scores = zv @ coef + onehot.mean(0)
        m = compute_metrics(ctx.labels("val"), scores)
        worst = min(row["recall"] for row in m.per_class)
        p = m.f1_macro if worst >= self.recall_floor else 0.0
        return {"val_accuracy": p, "min_class_recall": worst, "plain_accuracy": m.accuracy}


def generated_features(seed: int = 0) -> gs.ArrayFeatures:
    """8 taps of growing width whose class signal grows with depth; no download needed."""
    rng = np.random.default_rng(seed)
    channels, k = (8, 8, 16, 16, 24, 24, 32, 32), 4
    taps, params = [], 0
    for i, c in enumerate(channels, start=1):
        params += 9 * c * (channels[i - 2] if i > 1 else 3) + c
        side = 32 >> ((i - 1) // 2)
        taps.append(Tap(index=i, name=f"block{(i + 1) // 2}.conv{2 - i % 2}", channels=c,
                        height=side, width=side, params_upto=params, macs_upto=params * side * side))
    taplist = TapList(taps, donor_name="generated", image_size=32)
    centres = [rng.normal(0, 1, (k, c)) for c in channels]
    feats, labels = {}, {}
    for split, n in (("train", 600), ("val", 200), ("test", 200)):
        y = rng.integers(0, k, n)
        feats[split] = [(0.05 * i * centres[i - 1][y] + rng.normal(0, 1, (n, c))).astype(np.float32)
                        for i, c in enumerate(channels, start=1)]
        labels[split] = y
    return gs.ArrayFeatures(taplist, [f"class{j}" for j in range(k)], feats, labels)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", help="a feature cache directory (default: generated features)")
    parser.add_argument("--recall-floor", type=float, default=0.0)
    parser.add_argument("--run-dir", help="write the run's CSV files here")
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    source = gs.FeatureCache.open(args.cache) if args.cache else generated_features(args.seed)
    taps = source.taps
    head = gs.HeadSpec(num_classes=len(source.classes))
    fitness = gs.make_fitness(MacroF1(recall_floor=args.recall_floor), source, seed=args.seed)

    print(f"{len(taps)} taps of {taps.donor_name}, {len(source.classes)} classes")
    for sel in ((1,), (len(taps),), tuple(range(1, len(taps) + 1))):
        ev = fitness.evaluate(sel)
        print(f"  taps {';'.join(map(str, sel)):>20}: macro-F1 {ev.val_accuracy:.3f}, "
              f"worst recall {ev.extras['min_class_recall']:.3f}, accuracy {ev.extras['plain_accuracy']:.3f}")

    full = taps.cost(tuple(range(1, len(taps) + 1)), head).params
    settings = gs.SearchSettings(objective="max-accuracy", size_max=full // 2, population=args.population,
                                 generations=args.generations, seed=args.seed)
    result = gs.run_search(taps, head, fitness, settings, run_dir=args.run_dir)
    best = result.best
    print(f"best under {full // 2:,} params: {best}")
    print(result.message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
