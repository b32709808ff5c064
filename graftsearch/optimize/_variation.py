"""Making selections: the initial population and offspring (DEAP's crossover and mutation).

DEAP's operators draw from Python's global ``random`` module. The search keeps its own state of
that generator, seeded from ``derive_seed(seed, "nsga2")``, and swaps it in only while its
operators run (:class:`SearchRandom`), so code around the search that uses ``random`` neither
disturbs the search nor is disturbed by it, and the state can be saved in a checkpoint.

Rules that keep a population valid:

- **Initial population.** Random selections by default (``initial="random"``): a number of
  taps k drawn uniformly from 1..n, then k distinct taps uniformly. With ``initial="singles"``
  and ``population >= number of taps`` it starts with every single-tap selection (tap 1
  alone, ..., tap n alone) and the other places are random. (``initial="greedy"`` is made by
  the search loop, which evaluates forward selection's path step by step.)
- **Empty selections** never occur: an offspring with no tap gets one tap, chosen uniformly,
  switched on.
- **Duplicates** never occur: an offspring equal to a member of the population or to an earlier
  offspring of the same generation gets one more random bit flipped, repeatedly; after
  10 x n tries it is replaced by a new random selection.
- **Already evaluated selections** are avoided the same way (one more bit flipped, up to
  10 x n tries), so that each generation brings new selections instead of archive hits; when
  the flips find nothing new (a nearly exhausted space), the offspring may repeat an evaluated
  selection, whose result then comes from the archive.
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from typing import AbstractSet, Iterator, List, Optional, Sequence, Set

from deap import tools

from graftsearch.optimize._domination import bits_of, tournament


class SearchRandom:
    """The search's own state of Python's ``random``, swapped in only while it is used."""

    def __init__(self, seed: Optional[int] = None, state: Optional[tuple] = None):
        if state is None:
            state = random.Random(seed).getstate()
        self.state = state

    @contextmanager
    def active(self) -> Iterator:
        saved = random.getstate()
        random.setstate(self.state)
        try:
            yield random  # the module's functions are what DEAP's operators call
        finally:
            self.state = random.getstate()
            random.setstate(saved)


def space_size(n_taps: int) -> int:
    """Number of non-empty selections of ``n_taps`` taps."""
    return 2**n_taps - 1


def random_bits(n: int, rng: random.Random) -> str:
    k = rng.randint(1, n)
    chosen = set(rng.sample(range(n), k))
    return "".join("1" if i in chosen else "0" for i in range(n))


def initial_population(n: int, size: int, rng: random.Random, *, singles: bool = True,
                       exclude: AbstractSet[str] = frozenset()) -> List[str]:
    """``size`` distinct non-empty bit strings (see the module docstring for the rule;
    ``singles=False``: all random), none of them in ``exclude`` (random ones only; fewer when
    the space holds fewer)."""
    space = space_size(n)
    if size >= space and not exclude:
        return [format(v, f"0{n}b") for v in range(1, space + 1)]
    population: List[str] = []
    seen: Set[str] = set()
    if singles and size >= n:
        for i in range(n):
            bits = "".join("1" if j == i else "0" for j in range(n))
            population.append(bits)
            seen.add(bits)
    while len(population) < size and len(exclude) + len(population) < space:
        bits = random_bits(n, rng)
        if bits not in seen and bits not in exclude:
            population.append(bits)
            seen.add(bits)
    return population


def repair(child: list, taken: Set[str], rng, evaluated: AbstractSet[str] = frozenset()) -> str:
    """Make ``child`` non-empty and different from every bit string in ``taken``, and, for up to
    10 x n bit flips, from every already ``evaluated`` one."""
    n = len(child)
    if not any(child):
        child[rng.randrange(n)] = 1
    bits = bits_of(child)
    tries = 0
    while bits in taken or (bits in evaluated and tries < 10 * n):
        if tries < 10 * n:
            tries += 1
            i = rng.randrange(n)
            child[i] = 1 - child[i]
            if not any(child):
                child[i] = 1
                continue
            bits = bits_of(child)
        else:
            bits = random_bits(n, rng)
    return bits


def make_offspring(population: Sequence, k: int, *, crossover: str, cx_prob: float,
                   mut_prob: float, indpb: float, rng,
                   evaluated: AbstractSet[str] = frozenset(),
                   taken: AbstractSet[str] = frozenset()) -> List[str]:
    """``k`` new distinct bit strings bred from ``population`` (individuals with rank/crowding),
    different from ``taken`` ones and steered away from the ``evaluated`` ones (see
    :func:`repair`)."""
    taken = set(taken) | {bits_of(ind) for ind in population}
    n = len(population[0])
    children: List[str] = []
    while len(children) < k:
        p1, p2 = tournament(population, 2, rng)
        c1, c2 = list(p1), list(p2)
        if n > 1 and rng.random() < cx_prob:
            if crossover == "uniform":
                tools.cxUniform(c1, c2, 0.5)
            else:
                tools.cxTwoPoint(c1, c2)
        for child in (c1, c2):
            if len(children) >= k:
                break
            if rng.random() < mut_prob:
                tools.mutFlipBit(child, indpb)
            bits = repair(child, taken, rng, evaluated)
            taken.add(bits)
            children.append(bits)
    return children


def flip_neighbours(sources: Sequence[str], k: int, rng, skip) -> List[str]:
    """Up to ``k`` distinct one-bit-flip neighbours of ``sources``, in their order (each
    source's bits in a random order), leaving out the empty selection and every bit string for
    which ``skip(bits)`` is true."""
    out: List[str] = []
    chosen: Set[str] = set()
    for bits in sources:
        for i in rng.sample(range(len(bits)), len(bits)):
            if len(out) >= k:
                return out
            nb = bits[:i] + ("0" if bits[i] == "1" else "1") + bits[i + 1:]
            if "1" not in nb or nb in chosen or skip(nb):
                continue
            chosen.add(nb)
            out.append(nb)
    return out


def flips(bits: str, most: int) -> List[str]:
    """Every non-empty bit string one to ``most`` (at most 2) bit flips away from ``bits``: the
    one-flip neighbours in bit order, then the two-flip ones; none when ``most`` is 0."""
    n = len(bits)
    flip = {"0": "1", "1": "0"}
    one = [bits[:i] + flip[bits[i]] + bits[i + 1:] for i in range(n)] if most >= 1 else []
    two = [b[:j] + flip[b[j]] + b[j + 1:] for i, b in enumerate(one) for j in range(i + 1, n)] \
        if most >= 2 else []
    return [b for b in one + two if "1" in b]
