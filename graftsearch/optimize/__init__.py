"""Stage 7, the search: a constraint-handling NSGA-II (on DEAP) over one bit per tap, its archive,
parallel evaluation, checkpoints and result."""

from graftsearch._utils.lazy import lazy_exports as _lazy_exports

# Each name is imported from its module on first use (graftsearch._utils.lazy).
__all__, __getattr__, __dir__ = _lazy_exports(__name__, {
    "graftsearch.optimize._settings": ("SearchSettings",),
    "graftsearch.optimize._search": ("run_search",),
    "graftsearch.optimize._result": ("Pick", "SearchResult"),
})
