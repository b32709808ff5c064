"""The whole path as one call: :func:`run` (what ``graftsearch run`` does) with its
:class:`RunSettings`, and :func:`search` (donor + data or features -> search result)."""

from graftsearch._utils.lazy import lazy_exports as _lazy_exports

# Each name is imported from its module on first use (graftsearch._utils.lazy).
__all__, __getattr__, __dir__ = _lazy_exports(__name__, {
    "graftsearch.pipeline._settings": ("RunSettings",),
    "graftsearch.pipeline._pipeline": ("RunOutcome", "run"),
    "graftsearch.pipeline._api": ("search",),
})
