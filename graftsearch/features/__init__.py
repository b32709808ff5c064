"""Stage 5, features: one forward pass per image stores the pooled output of every tap (the feature
cache); a :class:`FeatureSource` serves them to the fitness."""

from graftsearch._utils.lazy import lazy_exports as _lazy_exports

# Each name is imported from its module on first use (graftsearch._utils.lazy).
__all__, __getattr__, __dir__ = _lazy_exports(__name__, {
    "graftsearch.features._cache": ("FeatureCache", "build_cache"),
    "graftsearch._utils.paths": ("default_cache_dir",),
    "graftsearch.features._source": ("ArrayFeatures", "FeatureSource", "selection_features"),
})
