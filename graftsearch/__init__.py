"""graftsearch: knowledge grafting with a constraint-handling genetic search.

Pick which layers of a large pretrained donor to tap, pool and graft onto a small head, found by
NSGA-II over cached features. See the README for the command line and the Python API.

This namespace holds what a user needs: the entry points, their settings and results, the
:class:`Fitness` base and the common errors. Everything else is public in its stage's package
(``graftsearch.taps``, ``graftsearch.donors``, ``graftsearch.data``, ``graftsearch.training``,
``graftsearch.cultivate``, ``graftsearch.features``, ``graftsearch.fitness``,
``graftsearch.optimize``, ``graftsearch.graft``, ``graftsearch.report``, ``graftsearch.pipeline``)
and every error type in :mod:`graftsearch.errors`; ARCHITECTURE.md says where each stage lives.
"""

from graftsearch._version import __version__
from graftsearch import errors  # noqa: F401  (the module of every error type)
from graftsearch._utils.errors import (DataError, DonorError, FitnessError, GraftSearchError,
                                       ParameterError, SearchError)
from graftsearch._utils.lazy import lazy_exports as _lazy_exports
from graftsearch._utils.progress import Progress, ProgressCallback

__all__ = ["__version__", "GraftSearchError", "ParameterError", "DataError",
           "DonorError", "SearchError", "FitnessError", "Progress", "ProgressCallback"]

# The stages' names load on first use (graftsearch._utils.lazy): `import graftsearch` and the
# command line's --help stay free of torch.
_LAZY, __getattr__, __dir__ = _lazy_exports(__name__, {
    # entry points, with their settings and results
    "graftsearch.pipeline._pipeline": ("run", "RunOutcome"),
    "graftsearch.pipeline._api": ("search",),
    "graftsearch.pipeline._settings": ("RunSettings",),
    "graftsearch.optimize._search": ("run_search",),
    "graftsearch.optimize._settings": ("SearchSettings",),
    "graftsearch.optimize._result": ("SearchResult",),
    "graftsearch.donors._zoo": ("load_donor",),
    "graftsearch.donors._donor": ("Donor",),
    "graftsearch.data._sources": ("load_dataset",),
    "graftsearch.features._cache": ("build_cache", "FeatureCache"),
    "graftsearch.features._source": ("ArrayFeatures",),
    "graftsearch.cultivate._cultivate": ("cultivate_donor",),
    "graftsearch.cultivate._settings": ("CultivateSettings",),
    "graftsearch.graft._final": ("train_final", "train_final_from_run", "FinalModel"),
    "graftsearch.graft._settings": ("FinalSettings",),
    "graftsearch.graft._export": ("export_model", "load_model"),
    "graftsearch.graft._model": ("GraftedModel",),
    "graftsearch.report._report": ("write_report",),
    "graftsearch.taps._head": ("HeadSpec",),
    # fitness: the built-in proxies' settings and your own
    "graftsearch.fitness._factory": ("make_fitness",),
    "graftsearch.fitness._settings": ("FastSettings", "MLPSettings"),
    "graftsearch.fitness._evaluation": ("Evaluation",),
    "graftsearch.fitness._base": ("Fitness",),
    "graftsearch.fitness._custom": ("FitnessFunction", "SelectionContext"),
}, subpackages=("taps", "donors", "data", "training", "cultivate", "features", "fitness",
                "optimize", "graft", "report", "pipeline"))
__all__ += _LAZY
