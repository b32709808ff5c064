"""Stage 7, the search: a constraint-handling NSGA-II (on DEAP) over one bit per tap, its archive,
parallel evaluation, checkpoints and result."""

from graftsearch.optimize._settings import SearchSettings
from graftsearch.optimize._search import run_search
from graftsearch.optimize._result import Pick, SearchResult

__all__ = ['SearchSettings', 'run_search', 'Pick', 'SearchResult']
