"""Stage 5, features: one forward pass per image stores the pooled output of every tap (the feature
cache); a :class:`FeatureSource` serves them to the fitness."""

from graftsearch.features._cache import FeatureCache, build_cache, default_cache_dir
from graftsearch.features._source import ArrayFeatures, FeatureSource, selection_features

__all__ = ['FeatureCache', 'build_cache', 'default_cache_dir', 'ArrayFeatures', 'FeatureSource', 'selection_features']
