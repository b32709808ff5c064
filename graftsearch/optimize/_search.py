"""The NSGA-II loop: evaluate, select, breed, record, checkpoint, and stop.

Generation 0 is the initial population; each later generation breeds as many offspring as the
population holds (fewer when the search space is nearly used up), evaluates those not yet in the
archive, and keeps the best ``population`` of parents and offspring by constrained rank and
crowding distance (NSGA-II's elitist selection). After every generation the run directory gets
the new rows of ``evaluations.csv``, a fresh ``pareto.csv`` and ``convergence.csv``, and (every
``checkpoint_every`` generations) ``checkpoint.pkl``, which holds everything the loop needs to
go on: a run killed at any point and resumed gives the same files as one never interrupted.

Randomness: the only random choices are the search's own (initial population, tournaments,
crossover, mutation, repairs, the subsample of the front's neighbours the GP screen considers
beyond ``GP_NEAR_MAX``), drawn from Python's ``random`` seeded with
``derive_seed(seed, "nsga2")`` (see :mod:`graftsearch._variation`). The fitness derives its own
generators per selection, so evaluation order and process do not matter.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from graftsearch.optimize._archive import Archive, Record
from graftsearch.optimize._domination import bits_of, make_individual, select_survivors
from graftsearch._utils import labels as L
from graftsearch._utils.errors import Described, ParameterError, SearchError, param_message
from graftsearch.fitness._base import Fitness
from graftsearch.taps._head import HeadSpec
from graftsearch.optimize._hypervolume import front_hypervolume
from graftsearch.optimize._parallel import Evaluator
from graftsearch._utils.progress import ProgressCallback, report
from graftsearch.optimize._result import (Pick, SearchResult, feasible_front, front_or_closest, least_violating,
                      summary_message)
from graftsearch.optimize._runfiles import RunFiles
from graftsearch._utils.seeding import derive_seed
from graftsearch.optimize._settings import SearchSettings
from graftsearch.optimize._surrogate import (FIT_WINDOW, GP_BETAS, GP_FLIPS, GP_NEAR_MAX, GP_RAMP, GP_WINDOW,
                                             MIN_RECORDS, SCREENED_SHARE, GPSurrogate, RidgeSurrogate,
                                             gain_order, model_places, screen_order)
from graftsearch.taps._records import INT8_HINT, TapList
from graftsearch.optimize._variation import (SearchRandom, flip_neighbours, flips, initial_population,
                                            make_offspring, space_size)

logger = logging.getLogger("graftsearch")

_GAIN = 1e-12  # smaller changes of hypervolume or violation are rounding, not progress
# initial='greedy': the forward-selection path may ask for this many times the population
GREEDY_SHARE = 2
#: max-accuracy: places per generation for a tap that no trained selection holds yet, tried
#: alone (see :meth:`_Run._probes`); 0 turns the probes off.
PROBE_PLACES = 1
#: max-accuracy with the GP screen: places per generation for the best-predicted unevaluated
#: one-flip neighbour of the most accurate feasible selection (see :meth:`_Run._gp_offspring`);
#: 0 turns the climb off.
CLIMB_PLACES = 1


def fitness_key(fitness: Fitness) -> str:
    """What identifies a fitness in a checkpoint: its :meth:`Fitness.key`."""
    return str(fitness.key())


def _check_inputs(taps, head, fitness, settings, refine_fitness) -> None:
    if not isinstance(taps, TapList):
        raise ParameterError(param_message("taps", "a TapList (e.g. donor.taps())", type(taps).__name__))
    if not isinstance(head, HeadSpec):
        raise ParameterError(param_message("head", "a HeadSpec", type(head).__name__))
    if not isinstance(settings, SearchSettings):
        raise ParameterError(param_message("settings", "a SearchSettings", type(settings).__name__))
    if settings.size_metric == "int8_mib" and taps.int8_bytes_upto is None:
        raise ParameterError("size_metric='int8_mib' needs the int8 sizes of the taps, and the "
                             f"given tap list has none. {INT8_HINT}")
    for name, fit in (("fitness", fitness), ("refine_fitness", refine_fitness)):
        if isinstance(fit, Fitness) or fit is None and name == "refine_fitness":
            continue
        cls = fit if isinstance(fit, type) else type(fit)
        got = Described(f"the class {fit.__name__}") if isinstance(fit, type) else cls.__name__
        see = "(see `help(graftsearch.Fitness)`)"
        if isinstance(fit, type) and issubclass(fit, Fitness):
            hint = f"Pass an instance, {fit.__name__}(...), not the class {see}."
        elif callable(getattr(fit, "evaluate", None)):
            # a duck-typed fitness (what the search took before the base class) lacks only the base
            hint = f"Add graftsearch.Fitness to the bases of {cls.__name__} {see}."
        else:
            hint = f"Subclass graftsearch.Fitness and implement evaluate(selection) -> Evaluation {see}."
            if callable(fit) and not isinstance(fit, type):
                hint += " A function fn(ctx) becomes one with graftsearch.make_fitness(fn, features)."
        raise ParameterError(param_message(
            name, "an object with evaluate(selection) -> Evaluation that subclasses graftsearch.Fitness",
            None if fit is None else got, hint))
    if settings.refine != "none" and refine_fitness is None:
        raise ParameterError(param_message(
            "refine_fitness", f"a fitness when settings.refine={settings.refine!r}", None,
            "Pass the fitness to re-evaluate the front with, or use refine='none'."))
    if settings.refine == "none" and refine_fitness is not None:
        raise ParameterError(param_message(
            "refine", "'front' or 'front+neighbours' when a refine_fitness is given", "none",
            "Set refine='front' to use the refining fitness, or leave refine_fitness out."))
    if settings.objective == "max-accuracy":
        singles = [(taps.cost((t.index,), head).metric(settings.size_metric), t.index) for t in taps]
        smallest, index = min(singles)
        if smallest > settings.size_max:
            raise ParameterError(param_message(
                "size_max", f"at least {settings.format_size(smallest)}, the size of the smallest "
                f"possible graft (tap {index} alone with this head)",
                Described(settings.format_size(settings.size_max)),
                "Raise size_max, use a smaller head (fewer hidden units), or another donor."))


class _Run:
    """One search in progress (state that a checkpoint saves and restores)."""

    def __init__(self, taps: TapList, head: HeadSpec, fitness, settings: SearchSettings,
                 refine_fitness, files: Optional[RunFiles], progress: Optional[ProgressCallback]):
        self.taps, self.head, self.fitness, self.settings = taps, head, fitness, settings
        self.refine_fitness = refine_fitness
        self.files = files
        self.progress = progress
        n = len(taps)
        self.space = space_size(n)
        self.pop_size = min(settings.population, self.space)
        self.indpb = settings.indpb if settings.indpb is not None else 1.0 / n
        self.size_ref = float(taps.cost(tuple(range(1, n + 1)), head).metric(settings.size_metric))
        self.identity = {"donor": taps.donor_name, "image_size": taps.image_size,
                         "taps": taps.to_records(), "head": head.as_dict(),
                         "fitness_key": fitness_key(fitness),
                         "refine_key": None if refine_fitness is None else fitness_key(refine_fitness)}
        if taps.int8_bytes_upto is not None:  # int8 sizes depend on the engine's weight scheme
            self.identity["int8"] = {"bytes_upto": list(taps.int8_bytes_upto),
                                     "per_channel": taps.int8_per_channel}
        self.archive = Archive(taps, head, settings)
        self.rng = SearchRandom(derive_seed(settings.seed, "nsga2"))
        self.generation = -1
        self.population: List[Tuple[str, int, float]] = []  # bits, rank, crowding distance
        self.history: List[Dict[str, Any]] = []
        self.elapsed_before = 0.0
        self.best_hv = 0.0
        self.best_violation = math.inf
        self.stale = 0
        self.stopped_by: Optional[str] = None
        self.refined: Optional[List[Record]] = None
        # The feasible front so far and running summaries of the archive, so that a generation
        # costs what its new records cost, not the whole archive (rebuilt after a restore).
        self._front: Optional[List[Record]] = None
        self._survivors: Dict[str, Any] = {}
        self._n_feasible = 0
        self._min_violation = math.inf
        self._covered: Optional[set] = None  # taps some trained record holds (rebuilt likewise)
        self._t0 = time.monotonic()

    # -- time ------------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self._t0

    def out_of_time(self) -> bool:
        return self.settings.max_seconds is not None and self.elapsed() >= self.settings.max_seconds

    # -- checkpoint ------------------------------------------------------------------------------
    def state(self) -> Dict[str, Any]:
        import numpy as np
        import torch

        return {"settings": self.settings.as_dict(), "identity": self.identity,
                "generation": self.generation, "population": list(self.population),
                "archive": self.archive.records(), "archive_hits": self.archive.hits,
                "history": list(self.history), "python_random": self.rng.state,
                "numpy_random": np.random.get_state(), "torch_random": torch.get_rng_state(),
                "elapsed_s": self.elapsed(), "best_hv": self.best_hv,
                "best_violation": self.best_violation, "stale": self.stale,
                "stopped_by": self.stopped_by, "refined": self.refined}

    def restore(self, state: Dict[str, Any]) -> None:
        import numpy as np
        import torch

        saved = SearchSettings.from_dict(state["settings"])
        diff = self.settings.differences(saved)
        if diff:
            listed = "; ".join(f"{k}: {old!r} in the checkpoint, {new!r} now" for k, (old, new) in diff.items())
            raise SearchError(
                f"The run directory {str(self.files.root)!r} holds a search with other settings "
                f"({listed}). Use the same settings to resume it, or choose a new run directory.")
        for key, what in (("fitness_key", "fitness"), ("refine_key", "refining fitness"),
                          ("taps", "taps"), ("image_size", "image size"), ("head", "head"),
                          ("donor", "donor"), ("int8", "int8 sizes")):
            if state["identity"].get(key) != self.identity.get(key):
                raise SearchError(
                    f"The run directory {str(self.files.root)!r} holds a search with another "
                    f"{what} ({state['identity'].get(key)!r} in the checkpoint, "
                    f"{self.identity.get(key)!r} now). Resume with the same donor, features, "
                    "fitness settings and seed, or choose a new run directory.")
        self.generation = state["generation"]
        self.population = list(state["population"])
        self.archive.restore(state["archive"], state["archive_hits"])
        self.history = list(state["history"])
        self.rng = SearchRandom(state=state["python_random"])
        np.random.set_state(state["numpy_random"])
        torch.set_rng_state(state["torch_random"])
        self.elapsed_before = float(state["elapsed_s"])
        self._t0 = time.monotonic()
        self.best_hv = state["best_hv"]
        self.best_violation = state["best_violation"]
        self.stale = state["stale"]
        self.stopped_by = state["stopped_by"]
        self.refined = state["refined"]

    def checkpoint(self) -> None:
        if self.files is not None:
            self.files.save_checkpoint(self.state())

    # -- population ------------------------------------------------------------------------------
    def _individual(self, bits: str):
        # Survivors are reused from the last generation: building DEAP individuals is a large
        # part of the search's own cost. Their fitness values never change; rank and crowding
        # are reassigned wherever they are read.
        ind = self._survivors.get(bits)
        if ind is None:
            r = self.archive[bits]
            ind = make_individual(bits, r.val_accuracy, r.size(self.settings.size_metric), r.violation)
        return ind

    def _select(self, candidates: Sequence[str]) -> None:
        individuals = [self._individual(b) for b in candidates]
        chosen = select_survivors(individuals, self.pop_size)
        self.population = [(bits_of(ind), ind.fitness.rank, ind.fitness.crowding_dist)
                           for ind in chosen]
        self._survivors = {bits: ind for (bits, _, _), ind in zip(self.population, chosen)}

    def _parents(self) -> list:
        parents = []
        for bits, rank, crowding in self.population:
            ind = self._individual(bits)
            ind.fitness.rank, ind.fitness.crowding_dist = rank, crowding
            parents.append(ind)
        return parents

    def _budget(self) -> Optional[int]:
        if self.settings.max_evaluations is None:
            return None
        return max(0, self.settings.max_evaluations - self.archive.trained)

    # -- termination -----------------------------------------------------------------------------
    def stop_reason(self) -> Optional[str]:
        s = self.settings
        if len(self.archive) >= self.space or len(self.population) >= self.space:
            return "exhausted"
        if self.generation >= s.generations:
            return "generations"
        if s.max_evaluations is not None and self.archive.trained >= s.max_evaluations:
            return "max_evaluations"
        if s.stagnation is not None and self.stale >= s.stagnation:
            return "stagnation"
        if self.out_of_time():
            return "max_seconds"
        return None

    # -- one generation --------------------------------------------------------------------------
    def run(self, evaluator: Evaluator) -> None:
        if self.generation < 0:
            if self.settings.initial == "greedy":
                start, new = self._greedy_start(evaluator)
            else:
                with self.rng.active() as rng:
                    start = initial_population(len(self.taps), self.pop_size, rng,
                                               singles=self.settings.initial == "singles")
                new = self.archive.evaluate(start, evaluator, generation=0, budget=self._budget())
            self._select([b for b in start if b in self.archive])
            self._finish_generation(0, new)
        while True:
            reason = self.stop_reason()
            if reason is not None:
                self.stopped_by = reason
                return
            g = self.generation + 1
            k = min(self.pop_size, self.space - len(self.population))
            with self.rng.active() as rng:
                local = self._local_step(min(self.settings.local_places, k), rng)
                local += self._probes(min(PROBE_PLACES, k - len(local)), taken=set(local))
                children = local + self._offspring(k - len(local), rng, taken=set(local))
            new = self.archive.evaluate(children, evaluator, generation=g, budget=self._budget())
            members = [b for b, _, _ in self.population] + [b for b in children if b in self.archive]
            self._select(members)
            self._finish_generation(g, new)

    def _greedy_start(self, evaluator: Evaluator) -> Tuple[List[str], List[Record]]:
        """Generation 0 by greedy forward selection: from the empty selection, evaluate every
        one-tap extension of the current selection (within size_max) and move to the one with
        the highest P, while P rises and at most ``GREEDY_SHARE`` x population selections have
        been asked for; then random selections while the population is not full. NSGA-II's
        survival keeps the best ``population`` of them. Each step's extensions are one batch
        (evaluated in parallel under ``n_jobs``); no random draw is made until the fill. When
        ``max_seconds`` has run out after a step, the path and the fill stop there (the first
        step always runs, so that there is a population)."""
        n = len(self.taps)
        cap = min(self.space, GREEDY_SHARE * self.pop_size)
        asked: List[str] = []
        new: List[Record] = []
        current, best = ["0"] * n, -math.inf
        while len(asked) < cap and (self._budget() is None or self._budget() > 0):
            steps = []
            for i in range(n):
                if current[i] == "0":
                    bits = "".join(current[:i] + ["1"] + current[i + 1:])
                    if bits not in self.archive and self.archive.size_feasible(bits):
                        steps.append(bits)
            steps = steps[:cap - len(asked)]
            if not steps:
                break
            new += self.archive.evaluate(steps, evaluator, generation=0, budget=self._budget())
            done = [self.archive[b] for b in steps if b in self.archive]
            asked += [r.bits for r in done]
            scored = [r for r in done if r.trained and not r.failed]
            if not scored:
                break
            top = max(scored, key=lambda r: (r.val_accuracy, -r.size(self.settings.size_metric), r.bits))
            logger.info("greedy start: step %d, %d selections asked, best P %.4f (taps %s)",
                        len(top.taps), len(asked), top.val_accuracy,
                        top.taps_text)
            if top.val_accuracy <= best:
                break
            current, best = list(top.bits), top.val_accuracy
            if self.out_of_time():
                break
        want = min(self.pop_size, self.space) - len(asked)
        if want > 0 and not self.out_of_time():
            with self.rng.active() as rng:
                fill = initial_population(n, want, rng, singles=False, exclude=self.archive.keys())
            new += self.archive.evaluate(fill, evaluator, generation=0, budget=self._budget())
            asked += [b for b in fill if b in self.archive]
        return asked, new

    def _offspring(self, k: int, rng, *, taken: set) -> List[str]:
        """``k`` offspring; with ``screen`` >= 2, ``screen`` x ``k`` are bred (fewer where the
        space runs out) and the surrogate fills some of the places from them (``gp``: with the
        front's near neighbours too, :func:`model_places` of them; ``ridge``: half; see
        :mod:`._surrogate`), the rest go to the others in the order bred; ``screen`` 0 or 1
        breeds ``k`` as usual."""
        s = self.settings

        def breed(m: int) -> List[str]:
            return make_offspring(self._parents(), m, crossover=s.crossover, cx_prob=s.cx_prob,
                                  mut_prob=s.mut_prob, indpb=self.indpb, rng=rng,
                                  evaluated=self.archive.keys(), taken=taken)

        if s.screen <= 1 or k <= 0:
            return breed(k)
        known = [r for r in self.archive.records() if r.trained and not r.failed]
        if len(known) < MIN_RECORDS:
            return breed(k)
        # the pool must fit beside the population and the local step's picks: breeding stops
        # only when it has that many distinct children
        pool = breed(min(k * s.screen, self.space - len(self.population) - len(taken)))
        fresh = [b for b in pool if b not in self.archive]
        if len(fresh) <= k:  # nothing to choose between: the rest in the order bred
            return fresh + [b for b in pool if b in self.archive][:k - len(fresh)]
        if s.surrogate == "gp":
            return self._gp_offspring(k, pool, known, rng, taken=taken)
        known = known[-FIT_WINDOW:]  # records keep evaluation order: the latest
        model = RidgeSurrogate([r.bits for r in known], [r.val_accuracy for r in known])
        predicted = []
        for bits, p in zip(fresh, model.optimistic(fresh)):
            size = self.archive.size_of(bits)
            predicted.append((bits, float(p), size, float(s.violation(float(p), size))))
        members = self._scored_population()
        # half the places by the model, half as bred: screening every place converged early
        # (peers benchmark problems, measured), as a model fitted on its own picks narrows
        k_s = max(1, int(round(k * SCREENED_SHARE)))
        chosen = screen_order(predicted, members)[:k_s]
        picked = set(chosen)
        rest = [i for i in range(len(fresh)) if i not in picked][:k - k_s]
        return [fresh[i] for i in chosen] + [fresh[i] for i in rest]

    def _scored_population(self) -> List[tuple]:
        """The population as ``(bits, P, size, violation)``, what the screens rank among."""
        out = []
        for bits, _, _ in self.population:
            r = self.archive[bits]
            out.append((bits, r.val_accuracy, r.size(self.settings.size_metric), r.violation))
        return out

    def _gp_offspring(self, k: int, pool: List[str], known: List[Record], rng, *,
                      taken: set) -> List[str]:
        """``surrogate="gp"``: places go to the candidates whose optimistic P would add the most
        hypervolume to the front (:func:`._surrogate.gain_order`), the rest to the bred pool in
        the order bred (:func:`._surrogate.model_places` says how many of each). Candidates are
        the bred ``pool`` and the front's unevaluated neighbours within ``GP_FLIPS`` bit flips.
        When no candidate is predicted to add any (nothing feasible within reach yet), NSGA-II's
        constrained rank of the optimistic P fills the model's places."""
        import numpy as np

        s = self.settings
        front = self._front
        if front is None:  # just restored: the front is rebuilt after this generation
            front = feasible_front(self.archive.records(), s)
        fresh = [b for b in pool if b not in self.archive]
        seen = set(pool) | {b for b, _, _ in self.population} | set(taken)
        window = known[-GP_WINDOW:]  # records keep evaluation order: the latest
        model = GPSurrogate([r.bits for r in window], [r.val_accuracy for r in window])
        climb = self._climb(model, front, {b for b, _, _ in self.population} | set(taken),
                            min(CLIMB_PLACES, k))
        if climb:
            fresh = [b for b in fresh if b not in climb]
            seen.update(climb)
            k -= len(climb)
            if k <= 0:
                return climb
        near: List[str] = []
        sources = front or least_violating(self.archive.records(), s)
        for r in sources:
            for bits in flips(r.bits, GP_FLIPS):
                if bits not in seen and bits not in self.archive and self.archive.size_feasible(bits):
                    seen.add(bits)
                    near.append(bits)
        if len(near) > GP_NEAR_MAX:
            near = rng.sample(near, GP_NEAR_MAX)
        candidates = fresh + near
        mean, sd = model.predict(candidates)
        uppers = [np.clip(mean + beta * sd, 0.0, 1.0) for beta in GP_BETAS]
        sizes = [self.archive.size_of(b) for b in candidates]
        if s.objective == "min-size":
            reference = (1.1 * self.size_ref, float(s.p_min))
        else:
            reference = (float(s.size_max), 0.0)
        places = model_places(k, s.objective, len(known), GP_RAMP)
        chosen = gain_order([(r.size(s.size_metric), r.val_accuracy) for r in front],
                            sizes, mean, uppers, reference, places)
        if len(chosen) < places:
            predicted = [(b, float(u), z, float(s.violation(float(u), z)))
                         for b, u, z in zip(candidates, uppers[-1], sizes)]
            picked = set(chosen)
            chosen += [i for i in screen_order(predicted, self._scored_population())
                       if i not in picked][:places - len(chosen)]
        picked_bits = {candidates[i] for i in chosen}
        rest = [b for b in fresh if b not in picked_bits][:k - len(chosen)]
        return climb + [candidates[i] for i in chosen] + rest

    def _climb(self, model: GPSurrogate, front: List[Record], taken: set, k: int) -> List[str]:
        """max-accuracy: up to ``k`` of the one-flip neighbours of the most accurate feasible
        selection (the pick), unevaluated, not in ``taken`` and within size_max, those with the
        highest predicted P first (ties in bit order).

        Why: a candidate earns a place by the hypervolume its optimistic P adds, and near the
        cap a neighbour of the pick that adds a tap must be predicted above the pick's P to add
        any; the GP predicts an unevaluated selection toward the evaluations' mean, so when the
        pick stands far above the rest (a large tap that a probe found), its neighbours are
        never chosen. Measured on the grafting benchmark's seed 0 search: after the probe of
        tap 13 alone (fast P 0.865 against 0.829 for the best selection without it), two
        selections holding tap 13 were evaluated in 1,261; with the climb, 106. Ties of the
        predicted P go to the earlier in bit order; no random draw."""
        if k <= 0 or self.settings.objective != "max-accuracy" or not front:
            return []
        top = front[0]  # the most preferred feasible record: the most accurate
        steps = [b for b in flips(top.bits, 1)
                 if b not in taken and b not in self.archive and self.archive.size_feasible(b)]
        if not steps:
            return []
        mean, _ = model.predict(steps)
        order = sorted(range(len(steps)), key=lambda i: (-float(mean[i]), i))
        return [steps[i] for i in order[:k]]

    def _probes(self, k: int, *, taken: set) -> List[str]:
        """max-accuracy: up to ``k`` single-tap selections, each of a tap that no trained
        selection holds yet and that fits within size_max alone, the largest first.

        Why: a tap that alone nearly fills size_max fits with few others, so bred offspring
        that hold it are nearly all over the cap (rejected on size, never trained), and for the
        GP a selection that holds an untried tap is as far from what it knows as its Hamming
        distance says: it predicts such a selection near the evaluations' mean and never
        chooses it. Measured on the grafting benchmark's searches (Lite0, plant seedlings, a
        cap of 30%): on two of three seeds no selection with tap 13 (alone, 26% of the donor)
        was ever evaluated, and the graft picked on the third, which held it, was the one ahead
        of the donor. One evaluation of the tap alone tells the GP what the tap is worth;
        when it is worth much, the tap alone joins the front as its most accurate selection
        and the climb (:meth:`_climb`) tries it with one more tap, then the next. At most one
        probe per tap over the search; no random draw. Not for min-size: there a large tap alone is the opposite of what is
        sought, and the front's small selections already hold the small taps."""
        s = self.settings
        if k <= 0 or s.objective != "max-accuracy":
            return []
        if self._covered is None:
            self._covered = set()
            for r in self.archive.records():
                if r.trained:
                    self._covered.update(r.taps)
        n = len(self.taps)
        members = {b for b, _, _ in self.population}
        singles = []
        for index in range(1, n + 1):
            if index in self._covered:
                continue
            bits = "".join("1" if i == index - 1 else "0" for i in range(n))
            if bits in self.archive or bits in members or bits in taken:
                continue
            if self.archive.size_feasible(bits):
                singles.append((-self.archive.size_of(bits), index, bits))
        return [bits for *_, bits in sorted(singles)[:k]]

    def _local_step(self, k: int, rng) -> List[str]:
        """Up to ``k`` unevaluated one-bit-flip neighbours of the front (best pick first; the
        least violating records while nothing is feasible) that are within size_max."""
        if k <= 0:
            return []
        front = self._front
        if front is None:  # just restored: the front is rebuilt after this generation
            front = feasible_front(self.archive.records(), self.settings)
        sources = front or least_violating(self.archive.records(), self.settings)
        members = {b for b, _, _ in self.population}
        return flip_neighbours([r.bits for r in sources], k, rng,
                               lambda b: b in self.archive or b in members
                               or not self.archive.size_feasible(b))

    def _finish_generation(self, g: int, new: List[Record]) -> None:
        s = self.settings
        self.generation = g
        # The archive only grows and its records never change: the new front is the non-dominated
        # part of the old front and the records added since. A fresh or restored run starts
        # from the whole archive.
        added = list(new)
        if self._front is None:
            self._front, self._n_feasible, self._min_violation = [], 0, math.inf
            added = self.archive.records()
        self._n_feasible += sum(1 for r in added if r.feasible)
        if self._covered is not None:
            for r in added:
                if r.trained:
                    self._covered.update(r.taps)
        self._min_violation = min([self._min_violation] + [r.violation for r in added])
        front = self._front = feasible_front(self._front + added, s)
        hv = front_hypervolume([r.size(s.size_metric) for r in front], [r.val_accuracy for r in front],
                               self.size_ref)
        best = front[0] if front else None  # the most preferred feasible record is never dominated
        min_violation = self._min_violation
        if g > 0:
            gained = hv > self.best_hv + _GAIN or (best is None and min_violation < self.best_violation - _GAIN)
            self.stale = 0 if gained else self.stale + 1
        self.best_hv = max(self.best_hv, hv)
        self.best_violation = min(self.best_violation, min_violation)
        entry = {"generation": g, "evaluations": self.archive.trained, "hypervolume": hv,
                 "best_bits": best.bits if best else None,
                 "best_size": best.size(s.size_metric) if best else None,
                 "best_val_accuracy": best.val_accuracy if best else None,
                 "n_feasible": self._n_feasible,
                 "elapsed_s": round(self.elapsed(), 3)}
        self.history.append(entry)
        if self.files is not None:
            records = self.archive.records()
            self.files.append_evaluations(new, records)
            shown = front if front else least_violating(records, s)
            self.files.write_pareto(shown, list(range(1, len(shown) + 1)))
            self.files.write_convergence(self.history)
            if g % s.checkpoint_every == 0:
                self.checkpoint()
        if best is not None:
            best_text = (f"best taps {best.taps_text} ({s.format_size(best.size(s.size_metric))}, "
                         f"{L.accuracy(L.PROXY_VAL)} {best.val_accuracy:.4f})")
        else:
            best_text = f"nothing feasible yet (smallest violation {min_violation:.4g})"
        logger.info("generation %d: %d evaluations (%d new), %d archive hits, hypervolume %.5f, %s",
                    g, self.archive.trained, len(new), self.archive.hits, hv, best_text)
        report(self.progress, "search", g, s.generations, message=f"generation {g}: {best_text}",
               generation=g, evaluations=self.archive.trained, new=len(new),
               archive_hits=self.archive.hits, hypervolume=hv,
               best=Pick.from_record(best) if best else None, n_feasible=entry["n_feasible"],
               elapsed_s=entry["elapsed_s"])

    # -- refinement ------------------------------------------------------------------------------
    def refine(self) -> None:
        s = self.settings
        if s.refine == "none" or self.refined is not None:
            return
        shown, _ = front_or_closest(self.archive.records(), s)
        targets = [r.bits for r in shown]
        if s.refine == "front+neighbours":
            seen = set(targets)
            for bits in list(targets):
                for i in range(len(bits)):
                    flipped = bits[:i] + ("0" if bits[i] == "1" else "1") + bits[i + 1:]
                    if "1" in flipped and flipped not in seen:
                        seen.add(flipped)
                        targets.append(flipped)
        report(self.progress, "refine", 0, len(targets), message=f"re-evaluating {len(targets)} selections")
        logger.info("refining: re-evaluating %d selections with %s", len(targets),
                    getattr(self.refine_fitness, "name", type(self.refine_fitness).__name__))
        archive = Archive(self.taps, self.head, s)
        with Evaluator(self.refine_fitness, n_jobs=s.n_jobs, dask_scheduler=s.dask_scheduler) as ev:
            self.refined = archive.evaluate(targets, ev, generation=self.generation + 1)
        report(self.progress, "refine", len(targets), len(targets), message="refined")

    # -- result ----------------------------------------------------------------------------------
    def result(self) -> SearchResult:
        s = self.settings
        pool = self.refined if self.refined is not None else self.archive.records()
        front, feasible = front_or_closest(pool, s)
        message = summary_message(s, front, feasible, evaluations=self.archive.trained,
                                  generations=self.generation, stopped_by=self.stopped_by or "",
                                  refined=self.refined is not None)
        return SearchResult(settings=s, records=self.archive.records(), front=front,
                            feasible=feasible, message=message, stopped_by=self.stopped_by or "",
                            generations=self.generation, evaluations=self.archive.trained,
                            archive_hits=self.archive.hits, history_records=list(self.history),
                            run_dir=None if self.files is None else self.files.root,
                            refined_records=self.refined)

    def write_final(self, front: Sequence[Record]) -> None:
        if self.files is None:
            return
        if self.refined is not None:
            self.files.write_refined(self.refined)
        self.files.write_pareto(front, list(range(1, len(front) + 1)))
        self.checkpoint()


def run_search(taps: TapList, head: HeadSpec, fitness, settings: SearchSettings, *,
               run_dir=None, refine_fitness=None, progress: Optional[ProgressCallback] = None,
               resume: bool = True) -> SearchResult:
    """Search the selection of taps with a constraint-handling NSGA-II.

    ``taps`` and ``head`` give every selection's exact size; ``fitness`` is an object with
    ``evaluate(selection) -> Evaluation`` (``selection``: sorted 1-based tap indices) and
    ideally ``key()`` naming its settings, features and seed, e.g. a graftsearch proxy.
    ``run_dir`` (optional) receives ``evaluations.csv``, ``pareto.csv``, ``convergence.csv``,
    ``taps.csv`` and ``checkpoint.pkl``; when it already holds a checkpoint the search resumes
    from it (``resume=False`` refuses to touch it instead). ``refine_fitness`` re-evaluates the
    final front when ``settings.refine`` asks for it. ``progress`` receives one
    :class:`~graftsearch.Progress` per generation (stage "search").
    """
    _check_inputs(taps, head, fitness, settings, refine_fitness)
    files = RunFiles(run_dir) if run_dir is not None else None
    run = _Run(taps, head, fitness, settings, refine_fitness, files, progress)
    if files is not None:
        files.prepare()
        if files.checkpoint.exists():
            if not resume:
                raise SearchError(
                    f"The run directory {str(files.root)!r} already holds a search "
                    "(checkpoint.pkl). Resume it (resume=True, `--resume`), or choose a new run "
                    "directory.")
            run.restore(files.load_checkpoint())
            files.rewrite_evaluations(run.archive.records())
            files.write_convergence(run.history)
            logger.info("resuming the search in %s after generation %d", files.root, run.generation)
            if run.stopped_by is not None and run.stop_reason() is None:
                run.stopped_by = None  # the limits were raised: go on
                run.refined = None  # and refine the front the longer search finds
        files.write_taps(taps)
        files.write_search_config(settings)
    logger.info("search: %s, %d taps (%d selections), population %d, seed %d",
                settings.objective, len(taps), run.space, run.pop_size, settings.seed)
    if run.stopped_by is None:
        with Evaluator(fitness, n_jobs=settings.n_jobs, dask_scheduler=settings.dask_scheduler) as ev:
            run.run(ev)
    run.refine()
    result = run.result()
    run.write_final(result.front)
    logger.info("%s", result.message)
    return result
