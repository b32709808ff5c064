"""The whole path as one call: :func:`run` (what ``graftsearch run`` does) with its
:class:`RunSettings`, and :func:`search` (donor + data or features -> search result)."""

from graftsearch.pipeline._settings import RunSettings
from graftsearch.pipeline._pipeline import RunOutcome, run
from graftsearch.pipeline._api import search

__all__ = ['RunSettings', 'RunOutcome', 'run', 'search']
