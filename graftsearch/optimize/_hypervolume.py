"""The feasible front in (size, 1 - P) space and its hypervolume.

Both coordinates are minimised: x = size / size of the full selection (every tap; the largest
grafted model, since size grows with the deepest tap and with the pooled channels), y = 1 - P.
The reference point is fixed per run at (1.1, 1.0), i.e. 1.1 x the full selection's size and
P = 0, so every selection lies inside the reference box, hypervolumes of one run are comparable
across generations, and a single point (x, y) contributes (1.1 - x) * (1 - y). A selection with
P = 0 adds nothing.
"""

from __future__ import annotations

from typing import Iterable, List, Sequence, Tuple

REFERENCE = (1.1, 1.0)


def hypervolume_2d(points: Iterable[Tuple[float, float]], reference: Tuple[float, float] = REFERENCE) -> float:
    """Area dominated by ``points`` (both coordinates minimised) inside the box up to ``reference``."""
    rx, ry = reference
    inside = sorted((float(x), float(y)) for x, y in points if x < rx and y < ry)
    area, best_y = 0.0, ry
    for x, y in inside:
        if y < best_y:
            area += (rx - x) * (best_y - y)
            best_y = y
    return area


def front_points(sizes: Sequence[float], accuracies: Sequence[float], size_ref: float) -> List[Tuple[float, float]]:
    return [(s / size_ref, 1.0 - p) for s, p in zip(sizes, accuracies)]


def front_hypervolume(sizes: Sequence[float], accuracies: Sequence[float], size_ref: float) -> float:
    """Hypervolume of feasible selections given by their sizes and P (reference point above)."""
    return hypervolume_2d(front_points(sizes, accuracies, size_ref))


def nondominated_indices(sizes: Sequence[float], accuracies: Sequence[float]) -> List[int]:
    """Positions of the points not dominated in (size minimised, P maximised).

    Points with equal size and P are kept together: neither dominates the other.
    """
    order = sorted(range(len(sizes)), key=lambda i: (sizes[i], -accuracies[i]))
    kept: List[int] = []
    best_p = float("-inf")
    i = 0
    while i < len(order):
        size = sizes[order[i]]
        group = []
        while i < len(order) and sizes[order[i]] == size:
            group.append(order[i])
            i += 1
        top = accuracies[group[0]]
        if top > best_p:
            kept.extend(j for j in group if accuracies[j] == top)
            best_p = top
    return kept
