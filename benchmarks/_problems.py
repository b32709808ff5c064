"""Problems and baselines shared by the search benchmarks (``search_quality`` and ``peers``).

A :class:`Problem` is a tap subspace (renumbered 1..n, exact costs of the full donor), a head,
a fitness over it, and the paper-style manual pick. :func:`exhaustive_table` evaluates every one
of its 2^n - 1 selections once (cached under ``$GRAFTSEARCH_CACHE/bench``), so that every method
can then read the same numbers through :class:`TableFitness`.

Selections are handled as integer masks here (bit i-1 = tap i) and as graftsearch's bit strings
(tap 1 first) where the library's order of preference matters.

Fitness: :func:`make_probe`: graftsearch's own ``fast`` proxy with the LDA probe
(``make_fitness("fast", ..., probe="lda")``, its other defaults, seed 0) over the problem's
features; exhaustive tables are cached under the proxy's ``key()``. The probe is pinned, not
the default (logistic): these benchmarks compare searches on fixed tables, whichever probe
filled them, and an LDA table of 2^14 selections takes minutes where a logistic one takes
several times longer.

Problems:

- :func:`real_problem`: EfficientNet-Lite0 (ImageNet) features of the plant-seedlings images at
  128 px (graftsearch's own feature cache), restricted to taps 1-14 (2^14 - 1 = 16,383
  selections): the last four taps (192-1,280 channels) make one exhaustive table hours long on
  two cores.
- :func:`synthetic_problem`: generated features whose class signal grows with depth and whose
  taps overlap in what they see (combining taps has diminishing returns); its default is the
  small problem of ``search_quality``; :func:`deepweeds_problem` is the DeepWeeds-size one.

Baselines: :func:`random_search` and :func:`greedy_forward` (see their docstrings).
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one BLAS thread: threads fight over 2 shared cores

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import graftsearch as gs  # noqa: E402
from graftsearch.fitness._evaluation import Evaluation  # noqa: E402
from graftsearch.optimize._hypervolume import (REFERENCE, front_hypervolume, front_points,  # noqa: E402
                                               hypervolume_2d)

RESULTS = ROOT / "benchmarks" / "results"
TABLES = Path(os.environ.get("GRAFTSEARCH_CACHE", Path.home() / ".cache" / "graftsearch")) / "bench"
DATA = ROOT.parent / "shared" / "data" / "plant-seedlings" / "images"
# the paper's pick transposed to EfficientNet-Lite0: the last three taps before the
# 8x8 -> 4x4 stage boundary (at 128 px)
LITE0_MANUAL = ("features.5.0", "features.5.1", "features.5.2")
# DeepWeeds: official subset 0 sizes and the nine classes' shares of labels.csv
DEEPWEEDS_SPLIT = (10501, 3501)
DEEPWEEDS_COUNTS = (1125, 1064, 1031, 1022, 1062, 1009, 1074, 1016, 9106)


# ---------------------------------------------------------------------------------------------
# selections

def selection_of(mask: int, n: int) -> Tuple[int, ...]:
    return tuple(i + 1 for i in range(n) if mask >> i & 1)


def mask_of(selection: Iterable[int]) -> int:
    return sum(1 << (i - 1) for i in selection)


def bits_of(mask: int, n: int) -> str:
    """graftsearch's bit string of ``mask`` (tap 1 first)."""
    return "".join("1" if mask >> i & 1 else "0" for i in range(n))


def mask_of_bits(bits: str) -> int:
    return int(bits[::-1], 2)


# ---------------------------------------------------------------------------------------------
# problems

class Problem:
    """Taps (a renumbered subspace), head, a fitness over it, and the manual pick."""

    def __init__(self, name: str, taps: gs.taps.TapList, head: gs.HeadSpec, fitness, manual: Tuple[int, ...],
                 describe: str):
        self.name, self.taps, self.head, self.fitness = name, taps, head, fitness
        self.manual, self.describe = manual, describe
        self.n = len(taps)
        self.size_ref = float(taps.cost(tuple(range(1, self.n + 1)), head).params)
        masks = np.arange(1, 2**self.n)
        # sizes[m - 1] is the exact parameter count of selection m
        self.sizes = np.array([taps.cost(selection_of(m, self.n), head).params for m in masks], dtype=float)

    def size(self, mask: int) -> float:
        return float(self.sizes[mask - 1])


def subspace(taps: gs.taps.TapList, indices: Sequence[int]) -> gs.taps.TapList:
    """The taps ``indices`` renumbered 1..k; exact costs stay those of the full donor."""
    chosen = [taps.tap(i) for i in indices]
    renumbered = [gs.taps.Tap(index=k, name=t.name, channels=t.channels, height=t.height, width=t.width,
                              params_upto=t.params_upto, macs_upto=t.macs_upto)
                  for k, t in enumerate(chosen, start=1)]
    return gs.taps.TapList(renumbered, donor_name=taps.donor_name, image_size=taps.image_size)


FITNESS = "fast"
#: the fast proxy's probe in every search benchmark (pinned: see the module's docstring)
PROBE = "lda"
FITNESS_TEXT = (f"graftsearch's `fast` proxy (`make_fitness(\"fast\", features, seed=0, probe=\"{PROBE}\")`: "
                "Ledoit-Wolf shrinkage LDA on standardised GAP features, val accuracy)")


def make_probe(taps: gs.taps.TapList, classes: Sequence[str], train: List[np.ndarray], ytr: np.ndarray,
               val: List[np.ndarray], yva: np.ndarray, kind: str = FITNESS):
    """The fitness every search benchmark uses: graftsearch's ``fast`` proxy over the features
    with the probe :data:`PROBE` (``kind="mlp"``: its ``mlp`` proxy), its other defaults, seed 0."""
    from graftsearch.features._source import ArrayFeatures

    source = ArrayFeatures(taps, classes, {"train": train, "val": val}, {"train": ytr, "val": yva})
    if kind == "fast":
        return gs.make_fitness(kind, source, seed=0, probe=PROBE)
    return gs.make_fitness(kind, source, seed=0)


class TableFitness(gs.Fitness):
    """Looks P up in an exhaustive table (so every method sees the same numbers)."""

    name = "table"

    def __init__(self, table: np.ndarray, key: str):
        self.table, self._key = table, key

    def evaluate(self, selection):
        return Evaluation(val_accuracy=float(self.table[mask_of(selection)]), fidelity="table")

    def key(self) -> str:
        return self._key


def real_problem(n_taps: int = 14, *, indices: Optional[Sequence[int]] = None, fitness: str = FITNESS,
                 name: str = "plant-seedlings") -> Problem:
    """Plant seedlings through EfficientNet-Lite0 (ImageNet) at 128 px, taps 1..``n_taps`` (or
    the taps ``indices``); ``fitness`` ``"mlp"``: graftsearch's ``mlp`` proxy (its defaults,
    seed 0) instead of :func:`make_probe`'s ``fast``."""
    from graftsearch.features._cache import build_cache
    from graftsearch.data._sources import load_dataset

    donor = gs.load_donor("efficientnet_lite0", weights="IMAGENET")
    dataset = load_dataset(f"folder:{DATA}")
    cache = build_cache(donor, dataset, image_size=128)
    full = cache.taps
    indices = list(indices) if indices is not None else list(range(1, n_taps + 1))
    taps = subspace(full, indices)
    train = [np.asarray(cache.features("train", i)) for i in indices]
    val = [np.asarray(cache.features("val", i)) for i in indices]
    probe = make_probe(taps, cache.classes, train, cache.labels("train"), val, cache.labels("val"),
                       kind=fitness)
    manual = tuple(taps.index_of(n) for n in LITE0_MANUAL)
    head = gs.HeadSpec(num_classes=len(cache.classes))
    span = (f"taps 1-{len(indices)}" if indices == list(range(1, len(indices) + 1))
            else f"taps {indices[0]}-{indices[-1]}" if indices == list(range(indices[0], indices[-1] + 1))
            else "taps " + ",".join(map(str, indices)))
    return Problem(name, taps, head, probe, manual,
                   f"EfficientNet-Lite0 (ImageNet) at 128 px on plant-seedlings ({cache.n_images('train')} "
                   f"train / {cache.n_images('val')} val images), {span} of {len(full)}")


SYNTHETIC_CHANNELS = (16, 16, 24, 24, 40, 40, 64, 64, 80, 80, 112, 112, 160, 160)


def _stage_taps(channels: Sequence[int]) -> gs.taps.TapList:
    """A made-up donor: four taps per stage, 64 px halved per stage, plain 3x3 convolutions."""
    taps, params, prev = [], 0, 3
    for i, c in enumerate(channels, start=1):
        side = 64 >> ((i - 1) // 4)
        params += prev * c * 9 + c
        taps.append(gs.taps.Tap(index=i, name=f"stage{(i - 1) // 4 + 1}.conv{(i - 1) % 4 + 1}", channels=c,
                                height=side, width=side, params_upto=params, macs_upto=params * side * side))
        prev = c
    return gs.taps.TapList(taps, donor_name="synthetic", image_size=64)


def synthetic_problem(seed: int = 0, *, n_taps: int = 14, name: str = "synthetic",
                      taps: Optional[gs.taps.TapList] = None, n_classes: int = 10,
                      sizes: Tuple[int, int] = (1500, 500), class_counts: Optional[Sequence[int]] = None,
                      manual: Optional[Tuple[int, ...]] = None, describe: Optional[str] = None) -> Problem:
    """Generated features: tap i sees a window of a latent class code, more clearly with depth.

    The defaults are ``search_quality``'s problem (14 made-up taps, 10 balanced classes, 1,500
    train / 500 val); ``n_taps`` keeps the first taps only (quick runs). ``taps`` replaces the
    made-up donor (its channels are used), ``class_counts`` draws labels with those shares.
    """
    tap_list = taps if taps is not None else _stage_taps(SYNTHETIC_CHANNELS[:n_taps])
    channels = [t.channels for t in tap_list]
    latent = 24
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, latent))
    shares = None if class_counts is None else np.asarray(class_counts, float) / sum(class_counts)
    sets = {}
    for split, count in zip(("train", "val"), sizes):
        y = rng.integers(0, n_classes, size=count) if shares is None else rng.choice(n_classes, size=count, p=shares)
        arrays = []
        for i, c in enumerate(channels):
            # tap i sees a window of the latent class code; deeper taps see it more clearly
            window = (np.arange(8) + 2 * i) % latent
            mix = np.random.default_rng(1000 + i).normal(size=(8, c)) / math.sqrt(8)
            strength = (0.1 + 0.02 * i) * math.sqrt(64 / c)
            arrays.append((strength * centres[y][:, window] @ mix + rng.normal(size=(count, c))).astype(np.float32))
        sets[split] = (arrays, y)
    probe = make_probe(tap_list, [str(k) for k in range(n_classes)], sets["train"][0], sets["train"][1],
                       sets["val"][0], sets["val"][1])
    if manual is None:
        manual = (6, 7, 8) if len(channels) >= 8 else tuple(range(max(1, len(channels) - 2), len(channels) + 1))
    describe = describe or (f"{len(channels)} generated taps, {n_classes} classes, {sizes[0]:,} train / "
                            f"{sizes[1]:,} val samples")
    return Problem(name, tap_list, gs.HeadSpec(num_classes=n_classes), probe, manual, describe)


def deepweeds_problem(seed: int = 0) -> Problem:
    """Synthetic features of DeepWeeds' size on EfficientNet-Lite0's taps at 256 px.

    9 classes with DeepWeeds' label shares (half the images are 'Negative'), 10,501 train /
    3,501 val samples (the official subset 0), the exact costs of EfficientNet-Lite0's taps 1-14
    at DeepWeeds' 256 px; the manual pick is the same rule as on the real problem.
    """
    lite0 = gs.load_donor("efficientnet_lite0", weights="IMAGENET", load_weights=False)
    taps = subspace(lite0.taps(256), range(1, 15))
    manual = tuple(taps.index_of(n) for n in LITE0_MANUAL)
    return synthetic_problem(
        seed, name="deepweeds-size", taps=taps, n_classes=len(DEEPWEEDS_COUNTS), sizes=DEEPWEEDS_SPLIT,
        class_counts=DEEPWEEDS_COUNTS, manual=manual,
        describe=("synthetic features of DeepWeeds' size (9 classes in DeepWeeds' shares, "
                  f"{DEEPWEEDS_SPLIT[0]:,} train / {DEEPWEEDS_SPLIT[1]:,} val samples) on the exact tap costs "
                  "of EfficientNet-Lite0 at 256 px, taps 1-14 of 18"))


RESNET_WIDTH = 16  # resnet-shape: channels divided by this (see resnet_shape_problem)


def resnet_shape_problem(seed: int = 0) -> Problem:
    """A problem of another shape: torchvision ResNet-50's 16 bottleneck blocks at 224 px.

    The prefix costs are ResNet-50's exact parameter and MAC counts (four stages, each prefix
    far larger than the last: 85 k to 23.5 M parameters); the features are generated as in
    :func:`synthetic_problem`, with each block's channels divided by ``RESNET_WIDTH`` (16 to
    128) so that 2^16 - 1 selections can be evaluated exhaustively with the fast proxy; the
    head is sized on those channels. 10 classes, 1,500 train / 500 val samples; the manual pick
    is the paper's rule (the last three blocks before the layer3 -> layer4 boundary).
    """
    resnet = gs.load_donor("resnet50", weights="none")
    full = resnet.taps(224)
    blocks = [t for t in full if t.name.startswith("layer")]
    taps = gs.taps.TapList([gs.taps.Tap(index=k, name=t.name, channels=t.channels // RESNET_WIDTH,
                                        height=t.height, width=t.width, params_upto=t.params_upto,
                                        macs_upto=t.macs_upto)
                            for k, t in enumerate(blocks, start=1)],
                           donor_name="resnet50", image_size=224)
    manual = tuple(taps.index_of(n) for n in ("layer3.3", "layer3.4", "layer3.5"))
    return synthetic_problem(
        seed, name="resnet-shape", taps=taps, manual=manual,
        describe=(f"generated features on ResNet-50's 16 bottleneck blocks at 224 px (their exact "
                  f"prefix costs; channels / {RESNET_WIDTH}), 10 classes, 1,500 train / 500 val"))


def exhaustive_table(problem: Problem, log: Callable[[str], None] = print) -> Tuple[np.ndarray, float]:
    """The P of every selection (cached on disk) and seconds per evaluation."""
    TABLES.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(problem.fitness.key().encode()).hexdigest()[:16]
    path = TABLES / f"search_quality-{problem.name}-{digest}.npz"
    if path.exists():
        with np.load(path) as saved:
            return saved["table"], float(saved["seconds_per_eval"])
    start = time.perf_counter()
    total = 2**problem.n - 1
    log(f"{problem.name}: exhaustive table of {total:,} selections ...")
    table = np.full(2**problem.n, np.nan)
    for m in range(1, 2**problem.n):
        table[m] = problem.fitness.evaluate(selection_of(m, problem.n)).val_accuracy
    seconds = (time.perf_counter() - start) / total
    tmp = path.with_name(path.stem + f".{os.getpid()}.tmp.npz")
    np.savez(tmp, table=table, seconds_per_eval=seconds)
    tmp.replace(path)
    return table, seconds


# ---------------------------------------------------------------------------------------------
# objectives and fronts

@dataclass(frozen=True)
class Objective:
    """One of the paper's two problems with its constraint (``p_min`` or ``size_max`` in params)."""

    kind: str  # "min-size" or "max-accuracy"
    limit: float

    @classmethod
    def min_size(cls, p_min: float) -> "Objective":
        return cls("min-size", float(p_min))

    @classmethod
    def max_accuracy(cls, size_max: float) -> "Objective":
        return cls("max-accuracy", float(size_max))

    def settings(self, **kwargs) -> gs.SearchSettings:
        if self.kind == "min-size":
            return gs.SearchSettings(objective="min-size", p_min=self.limit, **kwargs)
        return gs.SearchSettings(objective="max-accuracy", size_max=self.limit, **kwargs)

    def size_ok(self, size: float) -> bool:
        """False when the selection is infeasible on size alone (it is never trained)."""
        return self.kind == "min-size" or size <= self.limit

    def violation(self, p: float, size: float) -> float:
        if self.kind == "min-size":
            return max(0.0, self.limit - p)
        return max(0.0, size - self.limit) / self.limit

    def feasible(self, p: float, size: float) -> bool:
        return self.violation(p, size) == 0.0

    def text(self) -> str:
        if self.kind == "min-size":
            return f"min-size, p_min {self.limit:.4f}"
        return f"max-accuracy, size_max {self.limit:,.0f} params"


def feasible_masks(masks: Iterable[int], problem: Problem, table: np.ndarray, objective: Objective) -> List[int]:
    return [m for m in set(masks) if m and objective.feasible(float(table[m]), problem.size(m))]


def hv_of(masks: Iterable[int], problem: Problem, table: np.ndarray, objective: Objective,
          at_constraint: bool = False) -> float:
    """Hypervolume of the feasible selections among ``masks`` in graftsearch's space, with its
    reference point (1.1, P = 0), or with ``at_constraint`` the reference moved to the
    constraint (P = p_min for min-size, size = size_max for max-accuracy), where only what a
    feasible selection adds beyond the constraint counts and tools are easier to tell apart."""
    masks = feasible_masks(masks, problem, table, objective)  # dominated points add no area
    if not at_constraint:
        return front_hypervolume([problem.size(m) for m in masks], [float(table[m]) for m in masks],
                                 problem.size_ref)
    rx, ry = REFERENCE
    if objective.kind == "min-size":
        ry = 1.0 - objective.limit
    else:
        rx = objective.limit / problem.size_ref
    points = front_points([problem.size(m) for m in masks], [float(table[m]) for m in masks],
                          problem.size_ref)
    # a selection exactly at the constraint still counts: the box closes just past it
    return hypervolume_2d(points, (rx + 1e-12, ry + 1e-12))


def preference(mask: int, problem: Problem, table: np.ndarray, objective: Objective) -> tuple:
    """graftsearch's order of preference of feasible selections (its best pick sorts first)."""
    size, p = problem.size(mask), float(table[mask])
    if objective.kind == "min-size":
        return (size, -p, bits_of(mask, problem.n))
    return (-p, size, bits_of(mask, problem.n))


def best_mask(masks: Iterable[int], problem: Problem, table: np.ndarray, objective: Objective) -> Optional[int]:
    """The best feasible pick among ``masks`` (None when none is feasible)."""
    feasible = feasible_masks(masks, problem, table, objective)
    if not feasible:
        return None
    return min(feasible, key=lambda m: preference(m, problem, table, objective))


# ---------------------------------------------------------------------------------------------
# baselines

def random_search(problem: Problem, evaluate: Callable[[int], float], budget: int, seed: int,
                  objective: Optional[Objective] = None) -> List[int]:
    """Distinct random selections drawn as graftsearch's initial population draws them.

    A number of taps k uniform in 1..n, then k taps uniformly; a selection already drawn is
    drawn again; one over ``size_max`` is skipped without training. Stops after ``budget``
    calls of ``evaluate`` (or when the space is used up); returns the masks evaluated.
    """
    rng = np.random.default_rng(seed)
    evaluated: List[int] = []
    drawn = set()
    space = 2**problem.n - 1
    while len(evaluated) < budget and len(drawn) < space:
        k = int(rng.integers(1, problem.n + 1))
        m = mask_of(int(i) + 1 for i in rng.choice(problem.n, size=k, replace=False))
        if m in drawn:
            continue
        drawn.add(m)
        if objective is None or objective.size_ok(problem.size(m)):
            evaluate(m)
            evaluated.append(m)
    return evaluated


def greedy_forward(problem: Problem, evaluate: Callable[[int], float], budget: int, seed: int,
                   objective: Optional[Objective] = None) -> List[int]:
    """Greedy forward selection under a size penalty, restarted with new penalties.

    From the empty selection add the tap that most improves P - lambda * size / full size,
    until no tap improves it; lambda = 0 first, then values drawn log-uniformly in [1e-3, 10]
    per seed, until ``budget`` calls of ``evaluate`` are spent. Every candidate evaluated on the
    way counts and joins the front; a candidate over ``size_max`` is never evaluated nor taken.
    """
    rng = np.random.default_rng(seed)
    evaluated: Dict[int, float] = {}
    lambdas = [0.0] + list(10 ** rng.uniform(-3, 1, size=200))
    for lam in lambdas:
        current, score = 0, -math.inf
        while True:
            options = []
            for t in range(problem.n):
                m = current | 1 << t
                if m == current or (objective is not None and not objective.size_ok(problem.size(m))):
                    continue
                if m not in evaluated:
                    if len(evaluated) >= budget:
                        return list(evaluated)
                    evaluated[m] = float(evaluate(m))
                options.append((evaluated[m] - lam * problem.size(m) / problem.size_ref, -m, m))
            if not options:
                break
            top, _, m = max(options)
            if top <= score:
                break
            current, score = m, top
    return list(evaluated)


def local_search(problem: Problem, evaluate: Callable[[int], float], budget: int, seed: int,
                 objective: Objective) -> List[int]:
    """First-improvement bit-flip local search from the best single taps.

    Every single-tap selection is evaluated first; from the best of them (in graftsearch's
    order: least violation, then its preference) the one-bit flips are tried in a random order
    and the first better one is taken, until none is better (a local optimum); then the same
    from the next-best single tap, and when the singles are spent from a random selection.
    A selection over ``size_max`` is never evaluated; ``evaluate`` answers repeats itself.
    """
    rng = np.random.default_rng(seed)
    evaluated: Dict[int, float] = {}

    def key(m: int) -> tuple:
        p, size = evaluated[m], problem.size(m)
        return (objective.violation(p, size),) + preference_of(p, size, m)

    def preference_of(p: float, size: float, m: int) -> tuple:
        if objective.kind == "min-size":
            return (size, -p, bits_of(m, problem.n))
        return (-p, size, bits_of(m, problem.n))

    def spend(m: int) -> bool:
        if m not in evaluated:
            if len(evaluated) >= budget:
                return False
            evaluated[m] = float(evaluate(m))
        return True

    # every selection within the size limit evaluated: nothing left to find (or the loop below
    # would restart for ever)
    reachable = sum(1 for m in range(1, 2**problem.n) if objective.size_ok(problem.size(m)))
    budget = min(budget, reachable)
    singles = [1 << t for t in range(problem.n) if objective.size_ok(problem.size(1 << t))]
    for m in singles:
        if not spend(m):
            return list(evaluated)
    starts = sorted(singles, key=key)
    while len(evaluated) < budget:
        if starts:
            current = starts.pop(0)
        else:  # singles spent: restart from a random selection within the size limit
            current = mask_of(int(i) + 1 for i in rng.choice(
                problem.n, size=int(rng.integers(1, problem.n + 1)), replace=False))
            if not objective.size_ok(problem.size(current)):
                continue
            if not spend(current):
                break
        improved = True
        while improved:
            improved = False
            for t in rng.permutation(problem.n):
                m = current ^ (1 << int(t))
                if m == 0 or not objective.size_ok(problem.size(m)):
                    continue
                if not spend(m):
                    return list(evaluated)
                if key(m) < key(current):
                    current, improved = m, True
                    break
    return list(evaluated)
