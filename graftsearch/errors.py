"""Every error type graftsearch raises for bad input or an impossible request.

All of them are :class:`GraftSearchError` subclasses; the most common ones (``GraftSearchError``,
``ParameterError``, ``DataError``, ``DonorError``, ``SearchError``, ``FitnessError``) are also at
the package's top level::

    from graftsearch.errors import CacheError, CheckpointError
"""

from graftsearch._utils import errors as _errors
from graftsearch._utils.errors import *  # noqa: F401,F403 - the error types, listed once there

__all__ = list(_errors.__all__)
