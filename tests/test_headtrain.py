"""train_head: the one trainer of heads on pooled features (mlp proxy and final model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import graftsearch as gs
from graftsearch.training._headtrain import standardisation


def blobs(n_train=120, n_val=60, d=6, k=3, seed=0, spread=1.5, offset=5.0, scale=3.0):
    """Gaussian classes in d dims with a large offset and scale, so standardisation matters."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, spread, (k, d))

    def draw(n):
        y = np.arange(n) % k
        x = centres[y] + rng.normal(0, 1, (n, d))
        return (offset + scale * x).astype(np.float32), y.astype(np.int64)

    return (*draw(n_train), *draw(n_val))


SCHEDULE = gs.training.TrainSchedule(epochs=6, batch_size=16, lr=1e-2)


@pytest.fixture(autouse=True)
def one_thread():
    # tiny models: one thread is fastest, and spared the contention of a busy 2-core machine
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_paper_schedule():
    assert gs.training.PAPER_SCHEDULE == gs.training.TrainSchedule(epochs=18, batch_size=16, lr=1e-3, weight_decay=0.0,
                                                  patience=None, keep_best=True)


@pytest.mark.parametrize("field, value, match", [
    ("epochs", 0, r"'epochs' parameter must be an integer >= 1\. Got 0"),
    ("batch_size", 2.5, r"'batch_size' parameter must be an integer >= 1\. Got 2\.5"),
    ("lr", -1e-3, r"'lr' parameter must be a float > 0\. Got -0\.001"),
    ("weight_decay", float("nan"), r"'weight_decay' parameter must be a float >= 0\. Got nan"),
    ("patience", 0, r"'patience' parameter must be an integer >= 1 or None"),
    ("keep_best", "yes", r"'keep_best' parameter must be a bool\. Got 'yes'"),
])
def test_schedule_rejects_bad_values(field, value, match):
    kwargs = dict(epochs=3, batch_size=8, lr=1e-3)
    kwargs[field] = value
    with pytest.raises(gs.ParameterError, match=match):
        gs.training.TrainSchedule(**kwargs)


def test_folded_head_takes_raw_features_and_has_exact_params():
    xt, yt, xv, yv = blobs()
    head = gs.HeadSpec(num_classes=3, hidden=16, dropout=0.3)
    fit = gs.training.train_head(xt, yt, xv, yv, head=head, schedule=SCHEDULE, seed=1)
    assert not fit.head.training
    assert sum(p.numel() for p in fit.head.parameters()) == head.params(xt.shape[1])
    # the folded head on raw features = the same weights unfolded on standardised features
    mean, scale = standardisation(xt)
    np.testing.assert_array_equal(fit.mean, mean)
    unfolded = head.build(xt.shape[1]).eval()
    unfolded.load_state_dict(fit.head.state_dict())
    first = unfolded[0]
    with torch.no_grad():
        first.weight.mul_(torch.from_numpy(scale).float()[None, :])
        first.bias.add_(first.weight @ torch.from_numpy(mean / scale).float())
        z = torch.from_numpy(((xv - mean) / scale).astype(np.float32))
        raw = fit.head(torch.from_numpy(xv))
        torch.testing.assert_close(raw, unfolded(z), rtol=1e-4, atol=1e-4)
    acc = float((raw.argmax(1).numpy() == yv).mean())
    assert acc == pytest.approx(fit.val_accuracy, abs=1 / len(yv))
    assert fit.val_accuracy > 0.8


def test_history_and_kept_epoch():
    xt, yt, xv, yv = blobs()
    head = gs.HeadSpec(num_classes=3, hidden=8)
    fit = gs.training.train_head(xt, yt, xv, yv, head=head, schedule=SCHEDULE, seed=0)
    assert [h["epoch"] for h in fit.history] == list(range(1, 7))
    assert set(fit.history[0]) == {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy"}
    best = min(fit.history, key=lambda h: h["val_loss"])
    assert fit.best_epoch == best["epoch"]
    assert (fit.val_loss, fit.val_accuracy) == (best["val_loss"], best["val_accuracy"])
    last = gs.training.train_head(xt, yt, xv, yv, head=head, seed=0,
                         schedule=gs.training.TrainSchedule(epochs=6, batch_size=16, lr=1e-2, keep_best=False))
    assert (last.val_loss, last.val_accuracy) == (last.history[-1]["val_loss"], last.history[-1]["val_accuracy"])
    assert last.history == fit.history  # keep_best only changes what is kept


def test_early_stop_on_val_loss():
    rng = np.random.default_rng(0)
    xt, xv = rng.normal(size=(80, 20)).astype(np.float32), rng.normal(size=(40, 20)).astype(np.float32)
    yt, yv = rng.integers(0, 2, 80), rng.integers(0, 2, 40)  # pure noise: val loss rises fast
    sched = gs.training.TrainSchedule(epochs=50, batch_size=8, lr=1e-2, patience=2)
    fit = gs.training.train_head(xt, yt, xv, yv, head=gs.HeadSpec(num_classes=2, hidden=32), schedule=sched, seed=0)
    assert len(fit.history) < 50
    assert len(fit.history) == fit.best_epoch + 2
    assert all(h["val_loss"] >= fit.val_loss for h in fit.history)


def test_deterministic_and_leaves_global_rng_alone():
    xt, yt, xv, yv = blobs()
    head = gs.HeadSpec(num_classes=3, hidden=8)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = gs.training.train_head(xt, yt, xv, yv, head=head, schedule=SCHEDULE, seed=7)
    assert torch.equal(torch.rand(3), expected_next)
    b = gs.training.train_head(xt, yt, xv, yv, head=head, schedule=SCHEDULE, seed=7)
    c = gs.training.train_head(xt, yt, xv, yv, head=head, schedule=SCHEDULE, seed=8)
    assert a.history == b.history
    for (ka, va), (kb, vb) in zip(a.head.state_dict().items(), b.head.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    assert a.history != c.history


def test_accepts_float16_memmaps(tmp_path):
    xt, yt, xv, yv = blobs()
    path = tmp_path / "x.npy"
    np.save(path, xt.astype(np.float16))
    mm = np.load(path, mmap_mode="r")
    fit = gs.training.train_head(mm, yt, xv.astype(np.float16), yv, head=gs.HeadSpec(num_classes=3, hidden=8),
                                 schedule=SCHEDULE, seed=0)
    assert fit.val_accuracy > 0.8


def test_progress_reports_each_epoch():
    xt, yt, xv, yv = blobs()
    seen = []
    gs.training.train_head(xt, yt, xv, yv, head=gs.HeadSpec(num_classes=3, hidden=4), schedule=SCHEDULE, seed=0,
                           progress=seen.append)
    assert [(p.stage, p.done, p.total) for p in seen] == [("train", e, 6) for e in range(1, 7)]
    assert set(seen[0].info) == {"train_loss", "val_loss", "val_accuracy"}


def test_linear_head_matches_logistic_regression():
    # hidden=0 makes the head a multinomial logistic regression: a long full-batch run reaches
    # the unpenalised maximum-likelihood fit, which scikit-learn computes directly
    from sklearn.linear_model import LogisticRegression

    xt, yt, xv, yv = blobs(n_train=150, n_val=60, d=4, k=3, spread=0.8)
    sched = gs.training.TrainSchedule(epochs=800, batch_size=150, lr=0.05, keep_best=False)
    fit = gs.training.train_head(xt, yt, xv, yv, head=gs.HeadSpec(num_classes=3, hidden=0), schedule=sched, seed=0)
    ref = LogisticRegression(C=np.inf, tol=1e-10, max_iter=10_000).fit(xt.astype(np.float64), yt)
    with torch.no_grad():
        ours = torch.softmax(fit.head(torch.from_numpy(xv)), dim=1).numpy()
    np.testing.assert_allclose(ours, ref.predict_proba(xv.astype(np.float64)), atol=2e-3)
    assert fit.val_accuracy == pytest.approx(ref.score(xv.astype(np.float64), yv))


@pytest.mark.parametrize("case, match", [
    ("x_1d", r"'x_train' parameter must be a 2-D numeric array"),
    ("cols", r"'x_val' parameter must be 6 feature columns like x_train\. Got 5 columns"),
    ("labels", r"'y_train' parameter must be class indices in 0\.\.2 \(head\.num_classes=3\)\. Got 0\.\.3"),
    ("length", r"'y_val' parameter must be a 1-D integer array of 60 labels"),
    ("empty_val", r"The val split is empty"),
    ("nan", r"NaN or infinite values"),
])
def test_bad_inputs(case, match):
    xt, yt, xv, yv = blobs()
    if case == "x_1d":
        xt = xt[:, 0]
    elif case == "cols":
        xv = xv[:, :5]
    elif case == "labels":
        yt = yt.copy()
        yt[0] = 3
    elif case == "length":
        yv = yv[:-1]
    elif case == "empty_val":
        xv, yv = xv[:0], yv[:0]
    elif case == "nan":
        xt = xt.copy()
        xt[3, 2] = np.nan
    with pytest.raises(gs.DataError, match=match):
        gs.training.train_head(xt, yt, xv, yv, head=gs.HeadSpec(num_classes=3), schedule=SCHEDULE, seed=0)


def test_bad_head_or_schedule_type():
    xt, yt, xv, yv = blobs()
    with pytest.raises(gs.ParameterError, match=r"'schedule' parameter must be a TrainSchedule\. Got 'dict'"):
        gs.training.train_head(xt, yt, xv, yv, head=gs.HeadSpec(num_classes=3), schedule={"epochs": 2}, seed=0)
