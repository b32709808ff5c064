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
from graftsearch._utils.errors import (DataError, DonorError, FitnessError, GraftSearchError,
                                       ParameterError, SearchError)
from graftsearch._utils.progress import Progress, ProgressCallback
from graftsearch.taps._head import HeadSpec
from graftsearch.donors._spec import Donor
from graftsearch.donors._zoo import load_donor
from graftsearch.data._sources import load_dataset
from graftsearch.cultivate._cultivate import CultivateSettings, cultivate_donor
from graftsearch.features._cache import FeatureCache, build_cache
from graftsearch.features._source import ArrayFeatures
from graftsearch.fitness._base import Fitness
from graftsearch.fitness._custom import FitnessFunction, SelectionContext
from graftsearch.fitness._evaluation import Evaluation
from graftsearch.fitness._factory import make_fitness
from graftsearch.fitness._fast import FastSettings
from graftsearch.fitness._mlp import MLPSettings
from graftsearch.optimize._result import SearchResult
from graftsearch.optimize._search import run_search
from graftsearch.optimize._settings import SearchSettings
from graftsearch.graft._model import GraftedModel
from graftsearch.graft._settings import FinalSettings
from graftsearch.graft._final import FinalModel, train_final, train_final_from_run
from graftsearch.graft._export import export_model, load_model
from graftsearch.report._report import write_report
from graftsearch.pipeline._settings import RunSettings
from graftsearch.pipeline._pipeline import RunOutcome, run
from graftsearch.pipeline._api import search
from graftsearch import errors

__all__ = [
    "__version__",
    # entry points
    "run", "search", "run_search", "load_donor", "load_dataset", "build_cache", "make_fitness",
    "cultivate_donor", "train_final", "train_final_from_run", "export_model", "load_model",
    "write_report",
    # settings
    "RunSettings", "SearchSettings", "FinalSettings", "CultivateSettings", "HeadSpec",
    "FastSettings", "MLPSettings",
    # results and the objects they hold
    "SearchResult", "RunOutcome", "FinalModel", "Donor", "GraftedModel", "FeatureCache",
    "ArrayFeatures", "Evaluation",
    # your own fitness
    "Fitness", "FitnessFunction", "SelectionContext",
    # progress
    "Progress", "ProgressCallback",
    # errors (every one of them: graftsearch.errors)
    "GraftSearchError", "ParameterError", "DataError", "DonorError", "SearchError", "FitnessError",
]
