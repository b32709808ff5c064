"""Progress reporting: the library calls a callback; only the CLI draws bars."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

logger = logging.getLogger("graftsearch")


@dataclass(frozen=True)
class Progress:
    """One progress report of a long stage.

    ``stage`` names the work ("cache", "search", "train", ...), ``done`` and ``total`` count its
    units (images, evaluations, epochs; ``total`` is None when unknown) and ``info`` carries
    stage-specific figures such as images/s or the best feasible pick.
    """

    stage: str
    done: int
    total: Optional[int] = None
    info: Mapping[str, Any] = field(default_factory=dict)
    message: str = ""


ProgressCallback = Callable[[Progress], None]


def report(callback: Optional[ProgressCallback], stage: str, done: int, total: Optional[int] = None,
           message: str = "", **info: Any) -> None:
    """Send one progress report to ``callback`` when there is one."""
    if callback is not None:
        callback(Progress(stage=stage, done=done, total=total, info=info, message=message))
