"""Every error type graftsearch raises for bad input or an impossible request.

All of them are :class:`GraftSearchError` subclasses; the most common ones (``GraftSearchError``,
``ParameterError``, ``DataError``, ``DonorError``, ``SearchError``, ``FitnessError``) are also at
the package's top level::

    from graftsearch.errors import CacheError, CheckpointError
"""

from graftsearch._utils.errors import (CacheError, CheckpointError, DataError, DonorError, ExportError,
                                       FitnessError, GraftSearchError, ParameterError, SearchError,
                                       SelectionError, TapError)

__all__ = [
    "GraftSearchError",
    "ParameterError",
    "DonorError",
    "CheckpointError",
    "TapError",
    "SelectionError",
    "DataError",
    "CacheError",
    "FitnessError",
    "SearchError",
    "ExportError",
]
