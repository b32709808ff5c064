"""Stage 8, the graft: the grafted model, its final training, export, int8 quantisation and
measurement (latency, memory)."""

from graftsearch._utils.lazy import lazy_exports as _lazy_exports

# Each name is imported from its module on first use (graftsearch._utils.lazy).
__all__, __getattr__, __dir__ = _lazy_exports(__name__, {
    "graftsearch.graft._model": ("GraftedModel",),
    "graftsearch.graft._settings": ("FinalSettings",),
    "graftsearch.graft._final": ("FinalModel", "train_final", "train_final_from_run"),
    "graftsearch.graft._record": ("FinalMetrics",),
    "graftsearch.graft._export": ("DeployableModel", "ExportResult", "export_model", "load_model"),
    "graftsearch.graft._quantize": ("quantize_int8",),
    "graftsearch.graft._measure": (
        "Latency", "PeakMemory", "compare_latency", "measure_latency", "measure_peak_memory"),
})
