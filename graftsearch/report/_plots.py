"""The run's two figures, drawn on a bare matplotlib Figure (Agg, no display, no pyplot state).

``pareto.png``: every evaluated selection (feasible and infeasible), the front, the chosen model,
the constraint line (p_min or size_max) and the donor as a reference. ``convergence.png``: the
hypervolume of the feasible front and the best feasible pick per generation.

Every accuracy drawn is named by its source (``_utils/labels.py``): the evaluated selections at
their proxy val accuracy, the front and the chosen model on one footing (refined val when the run
refined its front, so the chosen model lies on the front drawn), the trained graft and the donor
at their final val / test accuracies.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Optional

import numpy as np

from graftsearch.optimize._runfiles import parse_bool

SIZE_LABELS = {"params": "parameters", "size_mib": "size (MiB, 4 bytes per parameter)",
               "macs": "multiply-accumulates per image",
               "int8_mib": "int8 size (MiB of int8 tensors)"}


def _figure(**kwargs):
    # A bare Figure renders through Agg without pyplot, so a user's own backend and open figures
    # are left alone.
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def _save(fig, path: Path) -> None:
    from graftsearch._utils.atomic import atomic_path

    with atomic_path(path) as tmp:
        # metadata without a timestamp: the same CSVs draw a byte-identical file
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight", metadata={"Software": None})


def _as_bool(series) -> np.ndarray:
    return np.array([parse_bool(v) for v in series], dtype=bool)


class ParetoPoints:
    """What ``pareto.png`` draws, coordinates as (size, accuracy) with each accuracy's source.

    ``evaluated``: every row of evaluations.csv at its proxy val accuracy, ``feasible`` per row;
    ``refined``: the rows of refined.csv (refined val accuracy) when the front comes from them;
    ``front``: the rows of pareto.csv, smallest first, at ``front_source`` (``front_feasible``
    False when they are the least-violating selections); ``chosen``: the chosen model on that
    same footing (``chosen_on_front``: it is one of ``front``'s points); ``final``: the trained
    graft's (source, size, accuracy) from metrics.json; ``donor``: the donor's size and final val
    accuracy (None when it was not measured).
    """

    def __init__(self, *, size_metric: str, evaluated: tuple[np.ndarray, np.ndarray, np.ndarray],
                 front: list[tuple[float, float]], front_source: str, front_feasible: bool = True,
                 refined: Optional[list[tuple[float, float]]] = None,
                 chosen: Optional[tuple[float, float]] = None, chosen_on_front: bool = False,
                 final: Optional[list[tuple[str, float, float]]] = None,
                 donor: Optional[tuple[float, Optional[float]]] = None):
        self.size_metric = size_metric
        self.evaluated = evaluated
        self.front = front
        self.front_source = front_source
        self.front_feasible = front_feasible
        self.refined = refined
        self.chosen = chosen
        self.chosen_on_front = chosen_on_front
        self.final = list(final or ())
        self.donor = donor

    def sources(self) -> list[str]:
        """The accuracy sources drawn, in the order a run measures them."""
        from graftsearch._utils import labels as L

        used = set()
        if len(self.evaluated[0]):
            used.add(L.PROXY_VAL)
        if self.front or self.chosen is not None:
            used.add(self.front_source)
        if self.refined:
            used.add(L.REFINED_VAL)
        used.update(source for source, _, _ in self.final)
        if self.donor is not None and self.donor[1] is not None:
            used.add(L.FINAL_VAL)
        return [s for s in L.SOURCES if s in used]


def _number(v: object) -> Optional[float]:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def pareto_points(evaluations, pareto, *, size_metric: str = "params",
                  front_source: Optional[str] = None, refined=None,
                  chosen_bits: Optional[str] = None,
                  graft: Optional[Mapping[str, object]] = None,
                  donor: Optional[Mapping[str, object]] = None) -> ParetoPoints:
    """The points of ``pareto.png``: ``evaluations`` (proxy val accuracy), ``pareto`` (the front,
    its accuracies from ``front_source``: proxy val, or refined val when the run refined it, then
    ``refined`` holds refined.csv), ``chosen_bits`` (the chosen model's selection; None: no
    star), ``graft`` (``size_metric`` and ``val`` / ``test`` accuracies of the trained graft) and
    ``donor`` (``size_metric`` and ``val_accuracy``).

    The chosen model is placed at its row of the drawn front, so it lies on the front; only when
    its selection is not on the front (the front changed after final training) is it looked up in
    the table the front came from, and ``chosen_on_front`` says so.
    """
    from graftsearch._utils import labels as L

    source = front_source or L.PROXY_VAL
    if len(evaluations):
        evaluated = (evaluations[size_metric].to_numpy(dtype=float),
                     evaluations["val_accuracy"].to_numpy(dtype=float),
                     _as_bool(evaluations["feasible"]))
    else:
        evaluated = (np.zeros(0), np.zeros(0), np.zeros(0, dtype=bool))
    front_rows = pareto.sort_values(size_metric, kind="stable") if len(pareto) else pareto
    front = ([(float(x), float(y)) for x, y in zip(front_rows[size_metric],
                                                   front_rows["val_accuracy"])]
             if len(front_rows) else [])
    front_feasible = bool(len(front_rows)) and bool(_as_bool(front_rows["feasible"]).all())
    refined_points = None
    if refined is not None and source == L.REFINED_VAL and len(refined):
        refined_points = [(float(x), float(y)) for x, y in zip(refined[size_metric],
                                                               refined["val_accuracy"])]
    chosen, on_front = None, False
    if chosen_bits is not None:
        for table, is_front in ((front_rows, True),
                                (refined if source == L.REFINED_VAL else evaluations, False)):
            if table is None or not len(table) or "bits" not in table:
                continue
            match = table[table["bits"].astype(str) == str(chosen_bits)]
            if len(match):
                row = match.iloc[0]
                chosen, on_front = (float(row[size_metric]), float(row["val_accuracy"])), is_front
                break
    final: list[tuple[str, float, float]] = []
    if graft:
        gx = chosen[0] if chosen is not None else _number(graft.get(size_metric))
        for key, label in (("val", L.FINAL_VAL), ("test", L.FINAL_TEST)):
            acc = _number(graft.get(key))
            if gx is not None and acc is not None:
                final.append((label, gx, acc))
    donor_point = None
    if donor and _number(donor.get(size_metric)) is not None:
        donor_point = (float(donor[size_metric]), _number(donor.get("val_accuracy")))
    return ParetoPoints(size_metric=size_metric, evaluated=evaluated, front=front,
                        front_source=source, front_feasible=front_feasible,
                        refined=refined_points, chosen=chosen, chosen_on_front=on_front,
                        final=final, donor=donor_point)


def draw_pareto(points: ParetoPoints, *, objective: str = "", p_min: Optional[float] = None,
                size_max: Optional[float] = None):
    """The Figure of ``pareto.png``; each artist's gid names what it draws ("front", "chosen",
    "final val", ...), and every legend entry names its accuracy's source."""
    from graftsearch._utils import labels as L

    size_metric = points.size_metric
    fig = _figure(figsize=(7.5, 5))
    ax = fig.subplots()
    x, y, feasible = points.evaluated
    proxy = L.accuracy(L.PROXY_VAL)
    if (~feasible).any():
        ax.scatter(x[~feasible], y[~feasible], s=14, c="#bbbbbb", marker="x", gid="infeasible",
                   label=f"evaluated, infeasible ({int((~feasible).sum())}; {proxy})", zorder=1)
    if feasible.any():
        ax.scatter(x[feasible], y[feasible], s=14, c="#6c9bd2", alpha=0.8, gid="feasible",
                   label=f"evaluated, feasible ({int(feasible.sum())}; {proxy})", zorder=2)
    front_acc = L.accuracy(points.front_source)
    if points.refined:
        rx, ry = zip(*points.refined)
        ax.scatter(rx, ry, s=36, facecolors="none", edgecolors="#d1495b", linewidths=0.9,
                   gid="refined", label=f"re-evaluated ({len(rx)}; {front_acc})", zorder=3)
    if points.front:
        fx, fy = (list(v) for v in zip(*points.front))
        if points.front_feasible:
            ax.step(fx, fy, where="post", c="#d1495b", lw=1.5, zorder=3, gid="front")
            what = "Pareto front"
        else:
            what = "least-violating selections"
        ax.scatter(fx, fy, s=30, c="#d1495b", gid="front points",
                   label=f"{what} ({len(fx)}; {front_acc})", zorder=4)
    if p_min is not None:
        ax.axhline(p_min, ls="--", c="#444444", lw=1, label=f"p_min = {p_min:g}")
    if size_max is not None:
        ax.axvline(size_max, ls="--", c="#444444", lw=1, label=f"size_max = {size_max:g}")
    if points.donor is not None:
        dx, dy = points.donor
        if dy is not None:
            ax.scatter([dx], [dy], s=90, marker="s", c="#2e4057", gid="donor",
                       label=f"donor ({L.accuracy(L.FINAL_VAL)})", zorder=5)
        else:
            ax.axvline(dx, ls=":", c="#2e4057", lw=1.2, label="donor size", gid="donor")
    if points.chosen is not None:
        where = "" if points.chosen_on_front else ", not on this front"
        ax.scatter([points.chosen[0]], [points.chosen[1]], s=220, marker="*", c="#f4a259",
                   edgecolors="black", linewidths=0.7, gid="chosen",
                   label=f"chosen model ({front_acc}{where})", zorder=6)
    for source, gx, gy in points.final:
        marker, colour = ("D", "#3d9970") if source == L.FINAL_VAL else ("P", "#7a306c")
        ax.scatter([gx], [gy], s=60, marker=marker, c=colour, edgecolors="black", linewidths=0.5,
                   gid=source, label=f"chosen model, trained ({L.accuracy(source)})", zorder=7)
    xs = [float(v) for v in x]
    if points.donor is not None:
        xs.append(points.donor[0])
    if xs and min(xs) > 0 and max(xs) / min(xs) > 20:
        ax.set_xscale("log")
    ax.set_xlabel(SIZE_LABELS.get(size_metric, size_metric))
    sources = points.sources()
    ax.set_ylabel(f"accuracy ({', '.join(sources)})" if sources else "accuracy")
    ax.set_title(f"Knowledge grafting search{': ' + objective if objective else ''}")
    ax.grid(True, alpha=0.3)
    # beside the axes: with every source named, the legend would cover the points
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, borderaxespad=0.0)
    return fig


def plot_pareto(points: ParetoPoints, path, *, objective: str = "", p_min: Optional[float] = None,
                size_max: Optional[float] = None) -> Path:
    """Draw :func:`draw_pareto` into ``path`` (PNG)."""
    _save(draw_pareto(points, objective=objective, p_min=p_min, size_max=size_max), Path(path))
    return Path(path)


def plot_convergence(convergence, path, *, size_metric: str = "params") -> Path:
    """Draw :func:`draw_convergence` into ``path`` (PNG)."""
    _save(draw_convergence(convergence, size_metric=size_metric), Path(path))
    return Path(path)


def draw_convergence(convergence, *, size_metric: str = "params"):
    """Hypervolume (top) and the best feasible pick's proxy val accuracy and size (bottom) per
    generation."""
    from matplotlib.ticker import MaxNLocator

    from graftsearch._utils import labels as L

    fig = _figure(figsize=(7.5, 6))
    top, bottom = fig.subplots(2, 1, sharex=True)
    # convergence.csv follows the search's generations: its accuracies are the proxy's
    proxy = L.accuracy(L.PROXY_VAL)
    bottom.set_ylabel(proxy, color="#6c9bd2")
    if len(convergence):
        g = convergence["generation"].to_numpy(dtype=float)
        top.plot(g, convergence["hypervolume"].to_numpy(dtype=float), marker="o", ms=3,
                 c="#d1495b")
        acc = convergence["best_val_accuracy"].to_numpy(dtype=float)
        bottom.plot(g, acc, marker="o", ms=3, c="#6c9bd2", label=f"best feasible: {proxy}")
        handles = bottom.get_lines()
        if "best_size" in convergence:
            right = bottom.twinx()
            right.plot(g, convergence["best_size"].to_numpy(dtype=float), marker="s", ms=3,
                       c="#2e4057", ls="--", label=f"best feasible: {size_metric}")
            right.set_ylabel(f"size ({size_metric})", color="#2e4057")
            handles = handles + right.get_lines()
        bottom.legend(handles, [h.get_label() for h in handles], loc="best", fontsize=8)
    top.set_ylabel("hypervolume of feasible front")
    top.set_title("Search convergence")
    top.grid(True, alpha=0.3)
    bottom.grid(True, alpha=0.3)
    bottom.set_xlabel("generation")
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig
