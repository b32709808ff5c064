"""Rich progress bars for the library's progress callback: one bar per stage."""

from __future__ import annotations

from typing import Dict

from rich.console import Console
from rich.markup import escape
from rich.table import Column
from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, SpinnerColumn,
                           TextColumn, TimeElapsedColumn, TimeRemainingColumn)

from graftsearch._utils.progress import Progress


def _describe(event: Progress) -> str:
    # every accuracy names its source: the search's generations are scored by the proxy, the
    # final training's epochs are the graft's val accuracy, cultivation's the donor's
    from graftsearch._utils import labels as L

    info = event.info
    stage = event.stage
    parts = []
    if stage == "cache" and "images_per_s" in info:
        parts.append(f"{info['images_per_s']:.1f} img/s")
    if stage == "search":
        for key, label in (("generation", "gen"), ("evaluations", "evals"), ("archive_hits", "hits"),
                           ("hypervolume", "HV")):
            if key in info and info[key] is not None:
                value = info[key]
                parts.append(f"{label} {value:.4f}" if isinstance(value, float) else f"{label} {value}")
        best = info.get("best")
        if best is not None:
            parts.append(f"best taps {';'.join(str(t) for t in best.taps)} "
                         f"({best.params:,} params, {L.accuracy(L.PROXY_VAL)} "
                         f"{best.val_accuracy:.4f})")
        elif "generation" in info:
            parts.append("nothing feasible yet")
    if stage in ("train", "fine-tune", "distill", "cultivate") and "val_accuracy" in info:
        source = L.CULTIVATION_VAL if stage == "cultivate" else L.FINAL_VAL
        parts.append(f"{L.accuracy(source)} {info['val_accuracy']:.4f}")
    if event.message and not parts:
        parts.append(event.message)
    return escape(" | ".join(str(p) for p in parts))


class LiveProgress:
    """Callable progress callback that draws a rich bar per stage (or nothing when disabled)."""

    def __init__(self, console: Console, *, enabled: bool = True):
        self.enabled = enabled
        self.console = console
        self._bars = RichProgress(SpinnerColumn(),
                                  TextColumn("[bold]{task.fields[stage]}", table_column=Column(min_width=9, no_wrap=True)),
                                  BarColumn(bar_width=24), MofNCompleteColumn(), TimeElapsedColumn(),
                                  TimeRemainingColumn(),
                                  TextColumn("{task.fields[info]}", table_column=Column(no_wrap=True, overflow="ellipsis")),
                                  console=console, transient=False)
        self._tasks: Dict[str, int] = {}

    def __enter__(self) -> "LiveProgress":
        if self.enabled:
            self._bars.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self._bars.stop()

    def __call__(self, event: Progress) -> None:
        if not self.enabled:
            return
        if event.stage == "stage":
            self.console.print(f"[cyan]>[/] {escape(str(event.message))}", highlight=False)
            return
        task = self._tasks.get(event.stage)
        if task is None:
            task = self._bars.add_task(event.stage, total=event.total, stage=event.stage, info="")
            self._tasks[event.stage] = task
        self._bars.update(task, completed=event.done, total=event.total, info=_describe(event))
