"""graftsearch: knowledge grafting with a constraint-handling genetic search.

Pick which layers of a large pretrained donor to tap, pool and graft onto a small head, found by
NSGA-II over cached features. See the README for the command line and the Python API.
"""

from ._donors import Donor, DonorSpec, PaperDonor, donor_names, load_donor, save_donor_checkpoint
from ._cache import FeatureCache, build_cache, default_cache_dir
from ._datasets import DataSpec, ImageDataset, load_dataset, make_loader
from ._download import download_deepweeds
from ._errors import (CacheError, CheckpointError, DataError, DonorError, ExportError,
                      FitnessError, GraftSearchError, ParameterError, SearchError, SelectionError,
                      TapError)
from ._graft import GraftedModel
from ._head import HeadSpec
from ._headtrain import PAPER_SCHEDULE, HeadFit, TrainSchedule, train_head
from ._proxies import FastProxy, FastSettings, MLPProxy, MLPSettings, make_fitness
from ._custom import CustomFitness, FitnessFunction, SelectionContext
from ._evaluation import Evaluation
from ._features import ArrayFeatures, FeatureSource, selection_features
from ._export import DeployableModel, ExportResult, export_model, load_model
from ._cultivate import Cultivation, CultivateSettings, cultivate_donor
from ._final import FinalModel, FinalSettings, train_final, train_final_from_run
from ._measure import Latency, PeakMemory, compare_latency, measure_latency, measure_peak_memory
from ._metrics import ClassificationMetrics, compute_metrics
from ._report import write_report
from ._preprocessing import Normalize, Preprocessing
from ._quantize import quantize_int8
from ._progress import Progress, ProgressCallback
from ._result import Pick, SearchResult
from ._search import run_search
from ._settings import SearchSettings
from ._taps import Cost, Tap, TapList, discover_taps
from ._version import __version__
from ._api import search
from ._runconfig import RunSettings
from ._pipeline import RunOutcome, run

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
    "MLPProxy", "MLPSettings", "FastProxy", "FastSettings", "make_fitness", "Evaluation",
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
