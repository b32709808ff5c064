"""graftsearch: knowledge grafting with a constraint-handling genetic search.

Pick which layers of a large pretrained donor to tap, pool and graft onto a small head, found by
NSGA-II over cached features. See the README for the command line and the Python API.
"""

from graftsearch.donors._spec import Donor, DonorSpec
from graftsearch.donors._zoo import PaperDonor, donor_names, load_donor
from graftsearch.donors._checkpoints import save_donor_checkpoint
from graftsearch.features._cache import FeatureCache, build_cache, default_cache_dir
from graftsearch.data._spec import DataSpec
from graftsearch.data._sources import ImageDataset, load_dataset
from graftsearch.data._loading import make_loader
from graftsearch.data._download import download_deepweeds
from graftsearch._utils.errors import (CacheError, CheckpointError, DataError, DonorError, ExportError,
                      FitnessError, GraftSearchError, ParameterError, SearchError, SelectionError,
                      TapError)
from graftsearch.graft._model import GraftedModel
from graftsearch.taps._head import HeadSpec
from graftsearch.training._headtrain import PAPER_SCHEDULE, HeadFit, TrainSchedule, train_head
from graftsearch.fitness._base import Fitness
from graftsearch.fitness._mlp import MLPProxy, MLPSettings
from graftsearch.fitness._fast import FastProxy, FastSettings
from graftsearch.fitness._factory import make_fitness
from graftsearch.fitness._custom import CustomFitness, FitnessFunction, SelectionContext
from graftsearch.fitness._evaluation import Evaluation
from graftsearch.features._source import ArrayFeatures, FeatureSource, selection_features
from graftsearch.graft._export import DeployableModel, ExportResult, export_model, load_model
from graftsearch.cultivate._cultivate import Cultivation, CultivateSettings, cultivate_donor
from graftsearch.graft._settings import FinalSettings
from graftsearch.graft._final import FinalModel, train_final, train_final_from_run
from graftsearch.graft._measure import Latency, PeakMemory, compare_latency, measure_latency, measure_peak_memory
from graftsearch.training._metrics import ClassificationMetrics, compute_metrics
from graftsearch.report._report import write_report
from graftsearch.donors._preprocessing import Normalize, Preprocessing
from graftsearch.graft._quantize import quantize_int8
from graftsearch._utils.progress import Progress, ProgressCallback
from graftsearch.optimize._result import Pick, SearchResult
from graftsearch.optimize._search import run_search
from graftsearch.optimize._settings import SearchSettings
from graftsearch.taps._records import Cost, Tap, TapList
from graftsearch.taps._discovery import discover_taps
from graftsearch._version import __version__
from graftsearch.pipeline._api import search
from graftsearch.pipeline._settings import RunSettings
from graftsearch.pipeline._pipeline import RunOutcome, run

__all__ = [
    "__version__",
    # donors and taps
    "Donor", "DonorSpec", "PaperDonor", "donor_names", "load_donor", "save_donor_checkpoint",
    "Tap", "TapList", "Cost", "discover_taps", "HeadSpec", "GraftedModel",
    "Preprocessing", "Normalize",
    # the best model: metrics
    "ClassificationMetrics", "compute_metrics",
    "DeployableModel", "ExportResult", "export_model", "load_model", "write_report",
    "FinalSettings", "FinalModel", "train_final", "train_final_from_run",
    "Latency", "PeakMemory", "measure_latency", "compare_latency", "measure_peak_memory",
    "quantize_int8", "CultivateSettings", "Cultivation", "cultivate_donor",
    # fitness
    "Fitness", "MLPProxy", "MLPSettings", "FastProxy", "FastSettings", "make_fitness", "Evaluation",
    "TrainSchedule", "PAPER_SCHEDULE", "train_head", "HeadFit",
    "FitnessFunction", "SelectionContext", "CustomFitness",
    "ArrayFeatures", "FeatureSource", "selection_features",
    # search, and the whole path
    "search", "SearchSettings", "run_search", "SearchResult", "Pick",
    "RunSettings", "run", "RunOutcome",
    # data and the feature cache
    "DataSpec", "load_dataset", "ImageDataset", "make_loader", "download_deepweeds",
    "FeatureCache", "build_cache", "default_cache_dir",
    # progress
    "Progress", "ProgressCallback",
    # errors
    "GraftSearchError", "ParameterError", "DonorError", "CheckpointError", "TapError",
    "SelectionError", "DataError", "CacheError", "FitnessError", "SearchError", "ExportError",
]
