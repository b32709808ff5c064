"""Test metrics of a classifier from its logits: accuracy, loss, precision / recall / F1 (macro
and weighted), one-vs-rest ROC AUC (macro), a per-class table and the confusion matrix.

Written with numpy so that scikit-learn stays a dev dependency; the tests check every number
against scikit-learn and against a hand-made confusion matrix. Conventions follow scikit-learn:
a precision or recall with a zero denominator counts as 0, and ROC AUC averages over the classes
that have both positives and negatives in ``y_true`` (scikit-learn refuses otherwise).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from graftsearch._utils.errors import ParameterError, param_message


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> np.ndarray:
    """``C[i, j]`` = number of samples of true class ``i`` predicted as ``j``."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    flat = np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den > 0)
    return out


def scores_from_confusion(confusion: np.ndarray) -> Dict[str, object]:
    """Accuracy, per-class precision / recall / F1 / support, and their macro and weighted means."""
    c = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(c)
    support = c.sum(axis=1)
    predicted = c.sum(axis=0)
    total = c.sum()
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    weights = support / total if total else np.zeros_like(support)
    return {
        "accuracy": float(tp.sum() / total) if total else math.nan,
        "precision": precision, "recall": recall, "f1": f1, "support": support.astype(np.int64),
        "precision_macro": float(precision.mean()), "recall_macro": float(recall.mean()),
        "f1_macro": float(f1.mean()),
        "precision_weighted": float((precision * weights).sum()),
        "recall_weighted": float((recall * weights).sum()),
        "f1_weighted": float((f1 * weights).sum()),
    }


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks with ties sharing their mean rank (what the Mann-Whitney U statistic needs)."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    ranks = np.empty(len(values), dtype=np.float64)
    # boundaries of runs of equal values
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + 1 + e) / 2.0
    return ranks


def binary_roc_auc(is_positive: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve = P(score of a random positive > a random negative), ties 1/2."""
    is_positive = np.asarray(is_positive, dtype=bool)
    n_pos = int(is_positive.sum())
    n_neg = len(is_positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = _average_ranks(np.asarray(scores, dtype=np.float64))
    u = ranks[is_positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def roc_auc_ovr(y_true: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """One-vs-rest ROC AUC of every class (NaN for a class absent from, or alone in, ``y_true``)."""
    y_true = np.asarray(y_true)
    return np.array([binary_roc_auc(y_true == k, probabilities[:, k])
                     for k in range(probabilities.shape[1])])


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def cross_entropy(logits: np.ndarray, y_true: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes under softmax(logits)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(y_true)), y_true].mean())


@dataclass(frozen=True)
class ClassificationMetrics:
    """Metrics of one model on one split. ``confusion[i, j]``: true class i predicted as j."""

    classes: List[str]
    n: int
    accuracy: float
    loss: float
    precision_macro: float
    recall_macro: float
    f1_macro: float
    precision_weighted: float
    recall_weighted: float
    f1_weighted: float
    roc_auc_macro: float
    confusion: np.ndarray = field(repr=False)
    per_class: List[Dict[str, object]] = field(repr=False)

    SUMMARY = ("n", "accuracy", "loss", "precision_macro", "recall_macro", "f1_macro",
               "precision_weighted", "recall_weighted", "f1_weighted", "roc_auc_macro")

    def summary(self) -> Dict[str, float]:
        """The scalar metrics (JSON-ready; NaN becomes None)."""
        out: Dict[str, float] = {}
        for key in self.SUMMARY:
            value = getattr(self, key)
            out[key] = None if isinstance(value, float) and math.isnan(value) else value
        return out

    def as_dict(self) -> Dict[str, object]:
        d: Dict[str, object] = dict(self.summary())
        d["classes"] = list(self.classes)
        d["per_class"] = [{k: (None if isinstance(v, float) and math.isnan(v) else v)
                           for k, v in row.items()} for row in self.per_class]
        d["confusion"] = self.confusion.tolist()
        return d

    def confusion_csv(self) -> str:
        """The confusion matrix as CSV: rows are true classes, columns predicted classes."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["true \\ predicted"] + list(self.classes))
        for name, row in zip(self.classes, self.confusion.tolist()):
            writer.writerow([name] + row)
        return buf.getvalue()


def compute_metrics(y_true: Sequence[int], logits: np.ndarray, *,
                    classes: Optional[Sequence[str]] = None) -> ClassificationMetrics:
    """All test metrics from the true labels and the model's logits, shape (n, classes).

    Predictions are the arg-max of the logits; the loss is the mean cross-entropy; ROC AUC is
    computed on the softmax probabilities, one class against the rest, then averaged.
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y_true, dtype=np.int64)
    if z.ndim != 2 or z.shape[1] < 2:
        raise ParameterError(param_message("logits", "an array of shape (samples, classes >= 2)",
                                           tuple(z.shape)))
    if y.ndim != 1 or len(y) != len(z) or len(y) == 0:
        raise ParameterError(param_message("y_true", f"{len(z)} class indices (one per row of logits)",
                                           tuple(y.shape)))
    k = z.shape[1]
    if y.min() < 0 or y.max() >= k:
        raise ParameterError(param_message("y_true", f"class indices in 0..{k - 1}",
                                           f"{int(y.min())}..{int(y.max())}"))
    names = [str(c) for c in classes] if classes is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise ParameterError(param_message("classes", f"{k} names (one per logit column)", len(names)))
    if not np.isfinite(z).all():
        raise ParameterError(param_message("logits", "finite numbers", "an array with NaN or inf",
                                           "The model diverged; lower the learning rate."))
    pred = z.argmax(axis=1)
    conf = confusion_matrix(y, pred, k)
    s = scores_from_confusion(conf)
    auc = roc_auc_ovr(y, softmax(z))
    defined = auc[~np.isnan(auc)]
    per_class = [{"class": names[i], "precision": float(s["precision"][i]),
                  "recall": float(s["recall"][i]), "f1": float(s["f1"][i]),
                  "roc_auc": float(auc[i]), "support": int(s["support"][i])} for i in range(k)]
    return ClassificationMetrics(
        classes=names, n=int(len(y)), accuracy=s["accuracy"], loss=cross_entropy(z, y),
        precision_macro=s["precision_macro"], recall_macro=s["recall_macro"],
        f1_macro=s["f1_macro"], precision_weighted=s["precision_weighted"],
        recall_weighted=s["recall_weighted"], f1_weighted=s["f1_weighted"],
        roc_auc_macro=float(defined.mean()) if len(defined) else math.nan,
        confusion=conf, per_class=per_class)
