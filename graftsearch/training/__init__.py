"""The training loops and metrics the later stages share: a head on pooled features, a network on
images, classification metrics."""

from graftsearch.training._headtrain import PAPER_SCHEDULE, HeadFit, TrainSchedule, train_head
from graftsearch.training._metrics import ClassificationMetrics, compute_metrics

__all__ = ['PAPER_SCHEDULE', 'HeadFit', 'TrainSchedule', 'train_head', 'ClassificationMetrics', 'compute_metrics']
