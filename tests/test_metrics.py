"""Test metrics: against a hand-made confusion matrix (acceptance 3) and against scikit-learn."""

import math

import numpy as np
import pytest

from graftsearch import ParameterError
from graftsearch.training import compute_metrics
from graftsearch.training._metrics import binary_roc_auc, confusion_matrix

# rows: true class, columns: predicted class
HAND = np.array([[5, 1, 0],
                 [2, 3, 1],
                 [0, 0, 4]])


def _labels_from_confusion(conf):
    y_true, y_pred = [], []
    for i in range(conf.shape[0]):
        for j in range(conf.shape[1]):
            y_true += [i] * int(conf[i, j])
            y_pred += [j] * int(conf[i, j])
    return np.array(y_true), np.array(y_pred)


def _logits_predicting(y_pred, k, margin=2.0):
    logits = np.zeros((len(y_pred), k))
    logits[np.arange(len(y_pred)), y_pred] = margin
    return logits


def test_metrics_equal_direct_computation_on_hand_made_confusion_matrix():
    y_true, y_pred = _labels_from_confusion(HAND)
    m = compute_metrics(y_true, _logits_predicting(y_pred, 3), classes=["a", "b", "c"])
    np.testing.assert_array_equal(m.confusion, HAND)
    # by hand: column sums 7, 4, 5; row sums 6, 6, 4; diagonal 5, 3, 4; 16 samples
    precision = [5 / 7, 3 / 4, 4 / 5]
    recall = [5 / 6, 3 / 6, 4 / 4]
    f1 = [2 * p * r / (p + r) for p, r in zip(precision, recall)]
    support = [6, 6, 4]
    assert m.n == 16
    assert m.accuracy == pytest.approx(12 / 16)
    assert m.precision_macro == pytest.approx(sum(precision) / 3)
    assert m.recall_macro == pytest.approx(sum(recall) / 3)
    assert m.f1_macro == pytest.approx(sum(f1) / 3)
    assert m.precision_weighted == pytest.approx(sum(p * s for p, s in zip(precision, support)) / 16)
    assert m.recall_weighted == pytest.approx(12 / 16)  # weighted recall is accuracy
    assert m.f1_weighted == pytest.approx(sum(f * s for f, s in zip(f1, support)) / 16)
    # every sample gets probability e^2 / (e^2 + 2) on its predicted class, 1 / (e^2 + 2) elsewhere
    p_hit = math.exp(2) / (math.exp(2) + 2)
    p_miss = 1 / (math.exp(2) + 2)
    assert m.loss == pytest.approx(-(12 * math.log(p_hit) + 4 * math.log(p_miss)) / 16)
    row = m.per_class[1]
    assert row == {"class": "b", "precision": pytest.approx(3 / 4), "recall": pytest.approx(0.5),
                   "f1": pytest.approx(f1[1]), "roc_auc": pytest.approx(row["roc_auc"]),
                   "support": 6}
    # class c: 4 positives all scored high; of 12 negatives 1 scored high (tie with positives)
    # -> AUC = (4 * 11 + 4 * 1 * 0.5) / (4 * 12)
    assert m.per_class[2]["roc_auc"] == pytest.approx((4 * 11 + 2) / 48)
    assert m.confusion_csv().splitlines() == ["true \\ predicted,a,b,c", "a,5,1,0", "b,2,3,1",
                                              "c,0,0,4"]


def test_metrics_match_scikit_learn_on_random_logits():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    k, n = 5, 200
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y]
    m = compute_metrics(y, logits)
    pred = logits.argmax(1)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    assert m.accuracy == pytest.approx(sk.accuracy_score(y, pred))
    assert m.loss == pytest.approx(sk.log_loss(y, probs, labels=range(k)))
    for avg in ("macro", "weighted"):
        assert getattr(m, f"precision_{avg}") == pytest.approx(
            sk.precision_score(y, pred, average=avg, zero_division=0))
        assert getattr(m, f"recall_{avg}") == pytest.approx(sk.recall_score(y, pred, average=avg))
        assert getattr(m, f"f1_{avg}") == pytest.approx(sk.f1_score(y, pred, average=avg))
    assert m.roc_auc_macro == pytest.approx(
        sk.roc_auc_score(y, probs, multi_class="ovr", average="macro"))
    np.testing.assert_array_equal(m.confusion, sk.confusion_matrix(y, pred, labels=range(k)))


def test_binary_auc_with_ties_matches_scikit_learn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300).astype(bool)
    scores = rng.integers(0, 6, 300).astype(float) + y  # many ties
    assert binary_roc_auc(y, scores) == pytest.approx(sk.roc_auc_score(y, scores))


def test_class_never_predicted_and_class_absent():
    # class 2 never occurs in y_true: its AUC is undefined and left out of the macro mean
    y = np.array([0, 0, 1, 1])
    logits = np.array([[2.0, 0, 0], [0, 2.0, 0], [0, 2.0, 0], [0, 2.0, 0]])
    m = compute_metrics(y, logits)
    assert m.per_class[0]["precision"] == 1.0 and m.per_class[0]["recall"] == 0.5
    assert m.per_class[2]["precision"] == 0.0  # never predicted: 0 as scikit-learn
    assert math.isnan(m.per_class[2]["roc_auc"])
    assert m.roc_auc_macro == pytest.approx(np.mean([m.per_class[0]["roc_auc"],
                                                     m.per_class[1]["roc_auc"]]))
    assert m.as_dict()["per_class"][2]["roc_auc"] is None  # JSON-ready


def test_confusion_matrix_counts():
    np.testing.assert_array_equal(confusion_matrix([0, 1, 1, 2], [0, 2, 1, 2], 3),
                                  [[1, 0, 0], [0, 1, 1], [0, 0, 1]])


def test_bad_logits_shape():
    with pytest.raises(ParameterError, match="The 'logits' parameter must be an array of shape"):
        compute_metrics([0, 1], np.zeros(2))


def test_labels_out_of_range():
    with pytest.raises(ParameterError, match=r"The 'y_true' parameter must be class indices in 0\.\.1"):
        compute_metrics([0, 2], np.zeros((2, 2)))


def test_labels_length_mismatch():
    with pytest.raises(ParameterError, match="The 'y_true' parameter must be 3 class indices"):
        compute_metrics([0, 1], np.zeros((3, 2)))


def test_class_names_count():
    with pytest.raises(ParameterError, match="The 'classes' parameter must be 2 names"):
        compute_metrics([0, 1], np.zeros((2, 2)), classes=["a"])


def test_non_finite_logits():
    with pytest.raises(ParameterError, match="must be finite numbers.*lower the learning rate"):
        compute_metrics([0, 1], np.array([[np.nan, 0.0], [0.0, 1.0]]))
