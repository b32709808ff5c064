"""Where an accuracy a user is shown comes from, said the same way everywhere.

A run measures a selection's accuracy up to four times, on different footings:

- ``proxy val``: the search's fitness on the val split (``evaluations.csv``, the ``P`` of every
  generation, ``convergence.csv``, and ``pareto.csv`` while the search runs or when nothing
  refined it);
- ``refined val``: the refining fitness on the val split (``refined.csv``; the final
  ``pareto.csv`` and the pick come from it when the run refined its front);
- ``final val`` / ``final test``: the trained graft (and the donor beside it) on the val and test
  splits (``best/metrics.json``).

``cultivation val`` is the donor's val accuracy while it is fine-tuned (progress only). Plots,
tables and messages name a number with :func:`accuracy` (``"refined val accuracy"``), so one
point carries one label wherever it is shown. This module imports nothing: the search's
messages, the report and the CLI all use it.
"""

from __future__ import annotations

PROXY_VAL = "proxy val"
REFINED_VAL = "refined val"
FINAL_VAL = "final val"
FINAL_TEST = "final test"
CULTIVATION_VAL = "cultivation val"

#: every source, in the order a run measures them
SOURCES = (PROXY_VAL, REFINED_VAL, FINAL_VAL, FINAL_TEST, CULTIVATION_VAL)


def accuracy(source: str) -> str:
    """The label of an accuracy from ``source``: ``"proxy val accuracy"``."""
    if source not in SOURCES:
        raise ValueError(f"unknown accuracy source {source!r}; one of {SOURCES}")
    return f"{source} accuracy"


def loss(source: str) -> str:
    """The label of a loss from ``source``: ``"proxy val loss"``."""
    if source not in SOURCES:
        raise ValueError(f"unknown accuracy source {source!r}; one of {SOURCES}")
    return f"{source} loss"


def search_source(refined: bool) -> str:
    """The source of a search's front and pick: refined when the run refined its front."""
    return REFINED_VAL if refined else PROXY_VAL
