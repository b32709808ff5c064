"""The run's two figures, drawn on a bare matplotlib Figure (Agg, no display, no pyplot state).

``pareto.png``: every evaluated selection (feasible and infeasible), the front, the chosen model,
the constraint line (p_min or size_max) and the donor as a reference. ``convergence.png``: the
hypervolume of the feasible front and the best feasible pick per generation.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Optional

import numpy as np

from graftsearch.optimize._runfiles import parse_bool

SIZE_LABELS = {"params": "parameters", "size_mib": "size (MiB, 4 bytes per parameter)",
               "macs": "multiply-accumulates per image"}


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


def plot_pareto(evaluations, pareto, path, *, size_metric: str = "params", objective: str = "",
                p_min: Optional[float] = None, size_max: Optional[float] = None,
                chosen: Optional[Mapping[str, float]] = None,
                donor: Optional[Mapping[str, float]] = None) -> Path:
    """Accuracy vs size of every evaluation; ``chosen`` and ``donor`` hold the size metric and
    ``val_accuracy`` (the donor's accuracy may be None: then it is drawn as a vertical line)."""
    fig = _figure(figsize=(7.5, 5))
    ax = fig.subplots()
    if len(evaluations):
        feasible = _as_bool(evaluations["feasible"])
        x = evaluations[size_metric].to_numpy(dtype=float)
        y = evaluations["val_accuracy"].to_numpy(dtype=float)
        ax.scatter(x[~feasible], y[~feasible], s=14, c="#bbbbbb", marker="x",
                   label=f"infeasible ({int((~feasible).sum())})", zorder=1)
        ax.scatter(x[feasible], y[feasible], s=14, c="#6c9bd2", alpha=0.8,
                   label=f"feasible ({int(feasible.sum())})", zorder=2)
    if len(pareto):
        front = pareto.sort_values(size_metric)
        ax.step(front[size_metric].to_numpy(dtype=float),
                front["val_accuracy"].to_numpy(dtype=float), where="post", c="#d1495b",
                lw=1.5, zorder=3)
        ax.scatter(front[size_metric], front["val_accuracy"], s=30, c="#d1495b",
                   label=f"Pareto front ({len(front)})", zorder=4)
    if p_min is not None:
        ax.axhline(p_min, ls="--", c="#444444", lw=1, label=f"p_min = {p_min:g}")
    if size_max is not None:
        ax.axvline(size_max, ls="--", c="#444444", lw=1, label=f"size_max = {size_max:g}")
    if donor and donor.get(size_metric) is not None:
        dx = float(donor[size_metric])
        dy = donor.get("val_accuracy")
        if dy is not None and not (isinstance(dy, float) and math.isnan(dy)):
            ax.scatter([dx], [float(dy)], s=90, marker="s", c="#2e4057", label="donor", zorder=5)
        else:
            ax.axvline(dx, ls=":", c="#2e4057", lw=1.2, label="donor size")
    if chosen and chosen.get(size_metric) is not None:
        ax.scatter([float(chosen[size_metric])], [float(chosen["val_accuracy"])], s=220,
                   marker="*", c="#f4a259", edgecolors="black", linewidths=0.7,
                   label="chosen model", zorder=6)
    xs = [float(v) for v in (evaluations[size_metric] if len(evaluations) else [])]
    if donor and donor.get(size_metric) is not None:
        xs.append(float(donor[size_metric]))
    if xs and min(xs) > 0 and max(xs) / min(xs) > 20:
        ax.set_xscale("log")
    ax.set_xlabel(SIZE_LABELS.get(size_metric, size_metric))
    ax.set_ylabel("validation accuracy (P)")
    ax.set_title(f"Knowledge grafting search{': ' + objective if objective else ''}")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    _save(fig, Path(path))
    return Path(path)


def plot_convergence(convergence, path, *, size_metric: str = "params") -> Path:
    """Hypervolume (top) and the best feasible pick's accuracy and size (bottom) per generation."""
    from matplotlib.ticker import MaxNLocator

    fig = _figure(figsize=(7.5, 6))
    top, bottom = fig.subplots(2, 1, sharex=True)
    if len(convergence):
        g = convergence["generation"].to_numpy(dtype=float)
        top.plot(g, convergence["hypervolume"].to_numpy(dtype=float), marker="o", ms=3,
                 c="#d1495b")
        acc = convergence["best_val_accuracy"].to_numpy(dtype=float)
        bottom.plot(g, acc, marker="o", ms=3, c="#6c9bd2", label="best feasible: val accuracy")
        bottom.set_ylabel("val accuracy", color="#6c9bd2")
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
    _save(fig, Path(path))
    return Path(path)
