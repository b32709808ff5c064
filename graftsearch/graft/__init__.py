"""Stage 8, the graft: the grafted model, its final training, export, int8 quantisation and
measurement (latency, memory)."""

from graftsearch.graft._model import GraftedModel
from graftsearch.graft._settings import FinalSettings
from graftsearch.graft._final import FinalModel, train_final, train_final_from_run
from graftsearch.graft._record import FinalMetrics
from graftsearch.graft._export import DeployableModel, ExportResult, export_model, load_model
from graftsearch.graft._quantize import quantize_int8
from graftsearch.graft._measure import Latency, PeakMemory, compare_latency, measure_latency, measure_peak_memory

__all__ = ['GraftedModel', 'FinalModel', 'FinalMetrics', 'FinalSettings', 'train_final', 'train_final_from_run', 'DeployableModel', 'ExportResult', 'export_model', 'load_model', 'quantize_int8', 'Latency', 'PeakMemory', 'compare_latency', 'measure_latency', 'measure_peak_memory']
