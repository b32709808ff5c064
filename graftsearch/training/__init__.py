"""The training loops and metrics the later stages share: a head on pooled features, a network on
images, classification metrics."""

from graftsearch._utils.lazy import lazy_exports as _lazy_exports

# Each name is imported from its module on first use (graftsearch._utils.lazy).
__all__, __getattr__, __dir__ = _lazy_exports(__name__, {
    "graftsearch.training._schedule": ("PAPER_SCHEDULE", "TrainSchedule"),
    "graftsearch.training._headtrain": ("HeadFit", "train_head"),
    "graftsearch.training._metrics": ("ClassificationMetrics", "compute_metrics"),
})
