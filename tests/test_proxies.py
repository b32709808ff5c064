"""The mlp and fast fitness proxies: determinism, honesty, agreement with references."""

from __future__ import annotations

import itertools
import pickle

import numpy as np
import pytest
import torch

import graftsearch as gs
from graftsearch.fitness._fast import FastProxy
from graftsearch.fitness._mlp import MLPProxy

CHANNELS = (4, 6, 5, 3, 4)
SIGNAL_TAP = 3


def make_taps(channels=CHANNELS) -> gs.taps.TapList:
    taps, params = [], 0
    for i, c in enumerate(channels, start=1):
        params += 10 * c
        taps.append(gs.taps.Tap(index=i, name=f"layer{i}", channels=c, height=4, width=4,
                                params_upto=params, macs_upto=16 * params))
    return gs.taps.TapList(taps, donor_name="generated", image_size=16)


def make_source(*, signal_tap=SIGNAL_TAP, sizes=(150, 90, 30), k=3, seed=0, strength=2.5,
                channels=CHANNELS, dtype=np.float32) -> gs.ArrayFeatures:
    """Tap ``signal_tap`` separates the classes; every other tap is noise of a similar scale."""
    rng = np.random.default_rng(seed)
    taps = make_taps(channels)
    centres = rng.normal(0, strength, (k, channels[signal_tap - 1]))
    feats, labels = {}, {}
    for split, n in zip(("train", "val", "test"), sizes):
        y = np.arange(n) % k
        arrays = []
        for t, c in enumerate(channels, start=1):
            x = rng.normal(0, 1, (n, c)) * rng.uniform(0.5, 3.0, c) + rng.uniform(-2, 2, c)
            if t == signal_tap:
                x = x + centres[y]
            arrays.append(x.astype(dtype))
        feats[split], labels[split] = arrays, y
    return gs.ArrayFeatures(taps, [f"c{i}" for i in range(k)], feats, labels)


def all_selections(n):
    return [tuple(s) for r in range(1, n + 1) for s in itertools.combinations(range(1, n + 1), r)]


TINY_MLP = dict(epochs=12, batch_size=32, lr=3e-3, patience=3, hidden=16)


@pytest.fixture(scope="module")
def source():
    return make_source()


# -- settings and construction -----------------------------------------------------------------

@pytest.mark.parametrize("cls, kwargs, match", [
    (gs.MLPSettings, {"epochs": 0}, r"'epochs' parameter must be an integer >= 1\. Got 0"),
    (gs.MLPSettings, {"hidden": -1}, r"'hidden' parameter must be an integer >= 0"),
    (gs.MLPSettings, {"threads": 0}, r"'threads' parameter must be an integer >= 1, or None"),
    (gs.FastSettings, {"probe": "lad"}, r"'probe' parameter must be one of 'lda', 'ridge', 'logistic'\. Got 'lad' "
                                        r"instead\. Did you mean 'lda'\?"),
    (gs.FastSettings, {"shrinkage": 1.5}, r"'shrinkage' parameter must be a float in \[0, 1\] or 'auto'"),
    (gs.FastSettings, {"alpha": "loo"}, r"'alpha' parameter must be a float > 0 or 'gcv'\. Got 'loo'"),
    (gs.FastSettings, {"alphas": ()}, r"'alphas' parameter must be a non-empty tuple of floats > 0"),
    (gs.FastSettings, {"penalty": 0.0}, r"'penalty' parameter must be a finite float > 0\. Got 0\.0"),
    (gs.FastSettings, {"iterations": 0}, r"'iterations' parameter must be an integer >= 1\. Got 0"),
])
def test_settings_reject_bad_values(cls, kwargs, match):
    with pytest.raises(gs.ParameterError, match=match):
        cls(**kwargs)


def test_settings_are_frozen_and_keyword_only():
    with pytest.raises(TypeError):
        gs.MLPSettings(10)  # type: ignore[misc]
    s = gs.FastSettings()
    with pytest.raises(AttributeError):
        s.probe = "ridge"  # type: ignore[misc]


def test_make_fitness_kinds_and_errors(source):
    mlp = gs.make_fitness("mlp", source, seed=3, epochs=5, batch_size=8)
    assert isinstance(mlp, MLPProxy) and mlp.name == "mlp" and mlp.seed == 3
    assert mlp.settings == gs.MLPSettings(epochs=5, batch_size=8)
    fast = gs.make_fitness("fast", source, seed=3, settings=gs.FastSettings(probe="lda", shrinkage=0.2))
    assert isinstance(fast, FastProxy) and fast.settings.shrinkage == 0.2
    with pytest.raises(gs.ParameterError, match=r"'kind' parameter must be 'mlp', 'fast', or a callable "
                                                r"taking a SelectionContext\. Got 'fsat' instead\. Did you "
                                                r"mean 'fast'\?"):
        gs.make_fitness("fsat", source, seed=0)
    with pytest.raises(gs.ParameterError, match=r"'settings' parameter must be fields of MLPSettings for "
                                                r"the 'mlp' fitness \(.*\)\. Got 'epoch' instead\. Did you "
                                                r"mean 'epochs'\?"):
        gs.make_fitness("mlp", source, seed=0, epoch=3)


def test_source_must_have_train_and_val(source):
    with pytest.raises(gs.ParameterError, match=r"'source' parameter must be a FeatureSource .* Got 'dict'"):
        gs.fitness.FastProxy({"train": 1})
    only_train = gs.ArrayFeatures(source.taps, source.classes,
                                  {"train": [source.features("train", i) for i in range(1, 6)]},
                                  {"train": source.labels("train")})
    with pytest.raises(gs.DataError, match=r"'source' parameter must be features with a 'train' and a "
                                           r"'val' split\. Got \"splits \['train'\]\""):
        gs.fitness.MLPProxy(only_train)


def test_selection_is_validated(source):
    fast = gs.fitness.FastProxy(source)
    with pytest.raises(gs.errors.SelectionError, match=r"'selection' parameter must be tap indices in 1\.\.5\. Got 6"):
        fast.evaluate((2, 6))
    assert fast.evaluate("00100") == fast.evaluate((3,))


# -- acceptance 1: determinism -------------------------------------------------------------------

SELECTIONS = [(3,), (1, 2), (2, 3, 5), (1, 2, 3, 4, 5), (4,)]


def _evaluate_all(fitness, selections):
    return [fitness.evaluate(s) for s in selections]


@pytest.mark.parametrize("kind, settings", [("mlp", TINY_MLP), ("fast", {}), ("fast", {"probe": "lda"})])
def test_same_seed_same_numbers_in_any_order_and_instance(source, kind, settings):
    a = gs.make_fitness(kind, source, seed=11, **settings)
    forward = _evaluate_all(a, SELECTIONS)
    b = gs.make_fitness(kind, source, seed=11, **settings)
    backward = _evaluate_all(b, SELECTIONS[::-1])[::-1]
    again = _evaluate_all(a, SELECTIONS)
    assert forward == backward == again
    assert all(e.fidelity == kind and not e.failed for e in forward)
    assert all(0.0 <= e.val_accuracy <= 1.0 and np.isfinite(e.val_loss) for e in forward)
    if kind == "mlp":  # the seed matters to the trained head
        other = _evaluate_all(gs.make_fitness(kind, source, seed=12, **settings), SELECTIONS)
        assert [e.val_loss for e in other] != [e.val_loss for e in forward]


@pytest.mark.slow
def test_same_numbers_in_joblib_worker_processes(source):
    from joblib import Parallel, delayed

    fits = [gs.make_fitness("mlp", source, seed=5, **TINY_MLP), gs.make_fitness("fast", source, seed=5),
            gs.make_fitness("fast", source, seed=5, probe="lda")]
    here = [_evaluate_all(f, SELECTIONS) for f in fits]
    jobs = [delayed(_evaluate_all)(f, [s]) for f in fits for s in SELECTIONS[::-1]]
    there = Parallel(n_jobs=2, backend="loky")(jobs)
    there = [ev for chunk in there for ev in chunk]
    n = len(SELECTIONS)
    for i, numbers in enumerate(here):
        assert there[i * n:(i + 1) * n][::-1] == numbers


def test_threads_setting_is_used_and_restored(source, monkeypatch):
    seen = []
    real = gs.training.train_head

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr("graftsearch.fitness._mlp.train_head", spy)
    before = torch.get_num_threads()
    gs.make_fitness("mlp", source, seed=0, **{**TINY_MLP, "epochs": 1}).evaluate((3,))
    assert seen == [1] and torch.get_num_threads() == before


def test_fast_pickles_light_and_rebuilds_the_same(source):
    fast = gs.fitness.FastProxy(source, seed=1)
    blob = pickle.dumps(fast)
    copy = pickle.loads(blob)
    assert copy._stats is None
    assert copy.evaluate((2, 3)) == fast.evaluate((2, 3))
    # the D x D statistics are not shipped: only the features (and settings) travel
    nbytes = sum(source.features(s, i).nbytes for s in source.splits for i in range(1, 6))
    assert len(blob) < nbytes + 20_000


def test_key_names_settings_features_and_seed(source):
    key = gs.fitness.FastProxy(source, seed=1).key()
    assert key == gs.fitness.FastProxy(source, seed=1).key()
    assert source.fingerprint in key and '"seed":1' in key and '"fitness":"fast"' in key
    assert key != gs.fitness.FastProxy(source, seed=2).key()
    assert key != gs.fitness.FastProxy(source, seed=1, settings=gs.FastSettings(penalty=0.3)).key()
    lda = gs.FastSettings(probe="lda")
    assert (gs.fitness.FastProxy(source, seed=1, settings=lda).key()
            != gs.fitness.FastProxy(source, seed=1, settings=gs.FastSettings(probe="lda", shrinkage=0.3)).key())
    assert key != gs.fitness.FastProxy(make_source(seed=1), seed=1).key()
    assert gs.fitness.MLPProxy(source).key() != gs.fitness.MLPProxy(source, settings=gs.MLPSettings(epochs=3)).key()


# -- honesty: the test split is never read -------------------------------------------------------

class NoTestSplit:
    """Wraps a source and fails on any access to the test split."""

    def __init__(self, inner):
        self.inner, self.taps, self.classes = inner, inner.taps, inner.classes
        self.splits, self.fingerprint = inner.splits, inner.fingerprint

    def features(self, split, tap_index):
        assert split != "test", "a proxy read test features"
        return self.inner.features(split, tap_index)

    def labels(self, split):
        assert split != "test", "a proxy read test labels"
        return self.inner.labels(split)


@pytest.mark.parametrize("kind, settings", [("mlp", {**TINY_MLP, "epochs": 2}), ("fast", {}),
                                             ("fast", {"probe": "lda"}), ("fast", {"probe": "ridge"})])
def test_never_reads_the_test_split(source, kind, settings):
    fitness = gs.make_fitness(kind, NoTestSplit(source), seed=0, **settings)
    assert not fitness.evaluate((1, 3)).failed


# -- acceptance 2: the tap that carries the signal ------------------------------------------------

@pytest.mark.parametrize("kind, settings", [
    ("fast", {"probe": "lda"}),
    ("fast", {"probe": "ridge"}),
    ("fast", {"probe": "logistic"}),
    ("mlp", TINY_MLP),
])
def test_selections_with_the_signal_tap_rank_above_all_others(kind, settings):
    source = make_source(seed=4)
    fitness = gs.make_fitness(kind, source, seed=0, **settings)
    scores = {s: fitness.evaluate(s).val_accuracy for s in all_selections(len(CHANNELS))}
    with_signal = [p for s, p in scores.items() if SIGNAL_TAP in s]
    without = [p for s, p in scores.items() if SIGNAL_TAP not in s]
    assert min(with_signal) > max(without), (min(with_signal), max(without))


# -- acceptance 3: agreement with brute-force references -----------------------------------------

def _standardised(source, split, sel):
    xt = gs.features.selection_features(source, "train", sel).astype(np.float64)
    x = gs.features.selection_features(source, split, sel).astype(np.float64)
    return (x - xt.mean(0)) / xt.std(0)


@pytest.mark.parametrize("sel", [(3,), (1, 3, 4), (1, 2, 3, 4, 5)])
def test_fast_lda_matches_sklearn(source, sel):
    from sklearn.covariance import ShrunkCovariance, ledoit_wolf_shrinkage
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    zt, zv = _standardised(source, "train", sel), _standardised(source, "val", sel)
    yt, yv = source.labels("train"), source.labels("val")
    centred = zt - np.stack([zt[yt == k].mean(0) for k in range(3)])[yt]
    gamma = ledoit_wolf_shrinkage(centred, assume_centered=True)
    ref = LinearDiscriminantAnalysis(solver="lsqr", covariance_estimator=ShrunkCovariance(shrinkage=gamma))
    ref.fit(zt, yt)
    fit = gs.fitness.FastProxy(source, settings=gs.FastSettings(probe="lda")).fit(sel)
    assert fit.regularization == pytest.approx(gamma, rel=1e-9)
    np.testing.assert_allclose(fit.val_scores, ref.decision_function(zv), rtol=1e-8, atol=1e-8)
    assert fit.val_accuracy == ref.score(zv, yv)
    # val loss: cross-entropy of the LDA posteriors
    assert fit.val_loss == pytest.approx(-np.log(ref.predict_proba(zv)[np.arange(len(yv)), yv]).mean(), rel=1e-8)
    fixed = gs.fitness.FastProxy(source, settings=gs.FastSettings(probe="lda", shrinkage=0.3)).fit(sel)
    ref = LinearDiscriminantAnalysis(solver="lsqr", covariance_estimator=ShrunkCovariance(shrinkage=0.3)).fit(zt, yt)
    np.testing.assert_allclose(fixed.val_scores, ref.decision_function(zv), rtol=1e-8, atol=1e-8)


def test_fast_ridge_matches_direct_solve_and_brute_force_gcv(source):
    from sklearn.linear_model import Ridge

    sel = (1, 3, 4)
    zt, zv = _standardised(source, "train", sel), _standardised(source, "val", sel)
    yt, yv = source.labels("train"), source.labels("val")
    onehot = np.eye(3)[yt]
    n = len(yt)
    alphas = (1e-3, 1e-2, 0.1, 1.0, 10.0)
    # brute force GCV: hat matrix of the centred design, n x n
    gcv = []
    for a in alphas:
        hat = zt @ np.linalg.solve(zt.T @ zt + a * n * np.eye(zt.shape[1]), zt.T) + 1.0 / n
        resid = onehot - hat @ onehot
        gcv.append((resid ** 2).sum() / n / (1 - np.trace(hat) / n) ** 2)
    best = alphas[int(np.argmin(gcv))]
    fit = gs.fitness.FastProxy(source, settings=gs.FastSettings(probe="ridge", alphas=alphas)).fit(sel)
    assert fit.regularization == best
    ref = Ridge(alpha=best * n).fit(zt, onehot)
    np.testing.assert_allclose(fit.val_scores, ref.predict(zv), rtol=1e-8, atol=1e-8)
    assert fit.val_accuracy == np.mean(ref.predict(zv).argmax(1) == yv)
    assert fit.val_loss == pytest.approx(((ref.predict(zv) - np.eye(3)[yv]) ** 2).sum(1).mean(), rel=1e-8)
    fixed = gs.fitness.FastProxy(source, settings=gs.FastSettings(probe="ridge", alpha=0.5)).fit(sel)
    np.testing.assert_allclose(fixed.val_scores, Ridge(alpha=0.5 * n).fit(zt, onehot).predict(zv), rtol=1e-8)


@pytest.mark.parametrize("sel", [(3,), (1, 3, 4)])
def test_fast_logistic_converges_to_sklearns_penalised_softmax_regression(source, sel):
    # sklearn minimises C * sum CE + ||W||^2 / 2, ours mean CE + penalty ||W||^2: the same
    # minimiser at C = 1 / (2 penalty n); given iterations enough, ours reaches it
    from sklearn.linear_model import LogisticRegression

    penalty, n = 0.01, len(source.labels("train"))
    settings = gs.FastSettings(probe="logistic", penalty=penalty, iterations=500)
    fit = FastProxy(source, settings=settings).fit(sel)
    zt, zv = _standardised(source, "train", sel), _standardised(source, "val", sel)
    ref = LogisticRegression(C=1.0 / (2 * penalty * n), tol=1e-12, max_iter=10_000)
    ref.fit(zt, source.labels("train"))
    # 1e-3: the probe runs in float32, where the loss stops changing visibly near the minimum
    np.testing.assert_allclose(fit.coef, ref.coef_.T, atol=1e-3)
    # softmax intercepts are defined up to a constant: compare them centred
    np.testing.assert_allclose(fit.intercept - fit.intercept.mean(), ref.intercept_ - ref.intercept_.mean(), atol=1e-3)
    yv = source.labels("val")
    assert fit.val_accuracy == ref.score(zv, yv)
    assert fit.regularization == penalty
    ref_loss = -np.log(ref.predict_proba(zv)[np.arange(len(yv)), yv]).mean()
    assert fit.val_loss == pytest.approx(ref_loss, rel=1e-4)


def test_fast_logistic_stops_after_its_iterations_where_lbfgs_is(source):
    # the few iterations are the probe: the fit is torch's L-BFGS (strong Wolfe) on the same
    # objective after exactly that many iterations, not a converged one
    sel = (1, 3, 4)
    fits = {it: FastProxy(source, settings=gs.FastSettings(probe="logistic", iterations=it)).fit(sel)
            for it in (2, 20)}
    zt = torch.from_numpy(_standardised(source, "train", sel).astype(np.float32))
    y = torch.from_numpy(source.labels("train"))
    for it, fit in fits.items():
        w = torch.zeros((zt.shape[1], 3), requires_grad=True)
        b = torch.zeros(3, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=it, history_size=10, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(zt @ w + b, y) + 1e-3 * (w * w).sum()
            loss.backward()
            return loss

        opt.step(closure)
        # float32 rounding of the hand gradient and autograd's differ, and 20 quasi-Newton
        # steps carry it on: the tolerance grows with the steps (seen: 1.3e-4 at 20 on one CPU)
        np.testing.assert_allclose(fit.coef, w.detach().numpy(), rtol=1e-3,
                                   atol=1e-4 if it <= 2 else 1e-3)
    assert not np.allclose(fits[2].coef, fits[20].coef, atol=1e-2)


def test_fast_logistic_same_numbers_in_a_worker_and_in_folds(source, monkeypatch):
    from graftsearch.fitness import _fast

    sel = (1, 3, 4)
    proxy = FastProxy(source, settings=gs.FastSettings(probe="logistic"))
    ev = proxy.evaluate(sel)
    blob = pickle.dumps(proxy)
    # a fresh worker process: no statistics of this source yet, so the copy builds its own
    monkeypatch.setattr(_fast, "_STATS", type(_fast._STATS)())
    monkeypatch.setattr(_fast, "_FOLDS", type(_fast._FOLDS)())
    assert pickle.loads(blob).evaluate(sel) == ev
    assert '"probe":"logistic"' in proxy.key() and '"iterations":20' in proxy.key()
    settings = gs.FastSettings(probe="logistic", folds=3)
    folded = FastProxy(source, seed=1, settings=settings)
    # each fold scores as a proxy made from scratch on that fold's train and held-out rows
    alone = [FastProxy(f, settings=gs.FastSettings(probe="logistic")).fit(sel)
             for f in _fast.fold_sources(source, 3, 1)]
    for f, fit in enumerate(alone):
        np.testing.assert_array_equal(folded.fit(sel, fold=f).val_scores, fit.val_scores)
    assert folded.evaluate(sel).val_accuracy == pytest.approx(
        np.mean([fit.val_accuracy for fit in alone]), abs=1e-12)


def test_each_probe_makes_only_the_statistics_it_uses_and_none_keeps_the_source(source, monkeypatch):
    from graftsearch.fitness import _fast

    monkeypatch.setattr(_fast, "_STATS", type(_fast._STATS)())
    monkeypatch.setattr(_fast, "_FOLDS", type(_fast._FOLDS)())
    logistic = FastProxy(source, settings=gs.FastSettings(probe="logistic"))
    stats = logistic._get_stats()
    assert stats.gram is None and stats.fourth is None  # the logistic probe needs no D x D blocks
    assert not any(v is source for v in vars(stats).values())
    expected = np.concatenate([_standardised(source, "train", (t,)) for t in range(1, 6)], axis=1)
    np.testing.assert_allclose(stats.rows, expected.T.astype(np.float32), rtol=1e-6, atol=1e-6)
    ev = logistic.evaluate((1, 3))
    lda = FastProxy(source, settings=gs.FastSettings(probe="lda"))
    assert lda._get_stats() is stats and stats.gram is not None  # one set per source and threads
    np.testing.assert_allclose(stats.gram, expected.T @ expected, rtol=1e-9, atol=1e-6)
    assert logistic.evaluate((1, 3)) == ev  # adding the Gram blocks changes nothing of the rows
    # the other order: an LDA proxy's statistics have no rows until a logistic proxy asks
    monkeypatch.setattr(_fast, "_STATS", type(_fast._STATS)())
    assert FastProxy(source, settings=gs.FastSettings(probe="lda"))._get_stats().rows is None
    assert FastProxy(source, settings=gs.FastSettings(probe="logistic")).evaluate((1, 3)) == ev
    folded = FastProxy(source, seed=2, settings=gs.FastSettings(probe="lda", folds=3))
    assert all(f.rows is None and f.gram is not None for f in folded._get_folds())
    again = FastProxy(source, seed=2, settings=gs.FastSettings(probe="logistic", folds=3))
    assert all(f.rows is not None for f in again._get_folds())


def test_logistic_rows_larger_than_half_the_memory_are_a_clear_error(source, monkeypatch):
    from graftsearch.fitness import _fast

    monkeypatch.setattr(_fast, "_STATS", type(_fast._STATS)())
    monkeypatch.setattr(_fast, "_FOLDS", type(_fast._FOLDS)())
    rows = 150 * sum(CHANNELS) * 4  # the fixture: 150 train images x 22 channels, float32
    monkeypatch.setattr(_fast, "_memory_bytes", lambda: 2 * rows)  # exactly room for them
    FastProxy(source, settings=gs.FastSettings(probe="logistic"))
    monkeypatch.setattr(_fast, "_STATS", type(_fast._STATS)())
    monkeypatch.setattr(_fast, "_memory_bytes", lambda: 2 * rows - 2)
    FastProxy(source, settings=gs.FastSettings(probe="lda"))  # LDA's statistics do not grow
    with pytest.raises(gs.errors.DataError, match=r"logistic probe keeps the standardised train "
                                                  r"rows .* Use `--proxy-probe lda`"):
        FastProxy(source, settings=gs.FastSettings(probe="logistic"))
    # 3 folds hold 2 copies of train and val (240 images) together: checked as one, before
    # any is made; each fold alone (160 images) would fit
    monkeypatch.setattr(_fast, "_memory_bytes", lambda: 2 * 2 * 240 * sum(CHANNELS) * 4 - 2)
    with pytest.raises(gs.errors.DataError, match=r"logistic probe keeps"):
        FastProxy(source, settings=gs.FastSettings(probe="logistic", folds=3))


def test_default_probe_is_logistic_and_lda_keys_stay_those_of_earlier_runs():
    assert gs.FastSettings().probe == "logistic"
    # exhaustive tables and run directories written under the LDA default are found by this key
    assert gs.FastSettings(probe="lda").as_dict() == {"probe": "lda", "threads": 1, "shrinkage": "auto"}
    assert gs.FastSettings().as_dict() == {"probe": "logistic", "threads": 1, "penalty": 1e-3,
                                           "iterations": 20}


def test_mlp_with_a_linear_head_matches_logistic_regression():
    # the mlp proxy's whole path (selection features, standardisation, train_head, accuracy)
    # with hidden=0 and a long full-batch run is multinomial logistic regression
    from sklearn.linear_model import LogisticRegression

    source = make_source(seed=2, strength=0.8)
    sel = (2, 3)
    settings = gs.MLPSettings(hidden=0, epochs=800, batch_size=150, lr=0.05, patience=None, keep_best=False)
    ev = gs.fitness.MLPProxy(source, settings=settings).evaluate(sel)
    zt, zv = _standardised(source, "train", sel), _standardised(source, "val", sel)
    ref = LogisticRegression(C=np.inf, tol=1e-10, max_iter=10_000).fit(zt, source.labels("train"))
    yv = source.labels("val")
    assert ev.val_accuracy == ref.score(zv, yv)
    ref_loss = -np.log(ref.predict_proba(zv)[np.arange(len(yv)), yv]).mean()
    assert ev.val_loss == pytest.approx(ref_loss, rel=1e-3)


# -- feature sources of other dtypes -------------------------------------------------------------

def test_float16_features_give_the_numbers_of_their_float32_values():
    source16 = make_source(dtype=np.float16)
    source32 = gs.ArrayFeatures(source16.taps, source16.classes,
                                {s: [source16.features(s, i).astype(np.float32) for i in range(1, 6)]
                                 for s in source16.splits},
                                {s: source16.labels(s) for s in source16.splits})
    for kind, settings in (("fast", {}), ("fast", {"probe": "lda"}), ("mlp", {**TINY_MLP, "epochs": 2})):
        a = gs.make_fitness(kind, source16, seed=0, **settings).evaluate((3, 4))
        b = gs.make_fitness(kind, source32, seed=0, **settings).evaluate((3, 4))
        assert a == b and not a.failed


# -- a real on-disk feature cache ----------------------------------------------------------------

def test_a_feature_cache_or_its_path_works_as_the_source(tmp_path):
    from datagen import make_folder
    from tiny import tiny_donor

    data = gs.load_dataset(str(make_folder(tmp_path / "imgs", {"a": 10, "b": 10, "c": 10})))
    cache = gs.build_cache(tiny_donor(), data, cache_dir=tmp_path / "c", num_workers=0, dtype="float16")
    for kind, settings in (("fast", {}), ("fast", {"probe": "lda"}), ("mlp", {**TINY_MLP, "epochs": 2})):
        by_object = gs.make_fitness(kind, cache, seed=0, **settings)
        by_path = gs.make_fitness(kind, str(cache.path), seed=0, **settings)
        assert by_object.key() == by_path.key()
        ev = by_path.evaluate((2, 5))
        assert ev == by_object.evaluate((2, 5)) and not ev.failed
        assert pickle.loads(pickle.dumps(by_path)).evaluate((2, 5)) == ev
    with pytest.raises(gs.errors.CacheError, match=r"'path' parameter must be a feature cache directory"):
        gs.make_fitness("fast", str(tmp_path / "not-a-cache"), seed=0)


def test_mlp_divergence_fails_that_selection_not_the_search(source):
    fitness = gs.make_fitness("mlp", source, seed=0, epochs=2, batch_size=32, lr=1e20, hidden=16)
    ev = fitness.evaluate((1, 3))
    assert ev.failed and np.isnan(ev.val_accuracy)
    assert "diverged" in ev.error and "Lower the 'lr' parameter" in ev.error
    result = gs.run_search(source.taps, gs.HeadSpec(num_classes=3, hidden=16), fitness,
                           gs.SearchSettings(p_min=0.5, population=4, generations=1, seed=0))
    assert not result.feasible and len(result.failures) == len(result.records) > 0
    assert "diverged" in result.message


def test_search_passes_weights_and_head_settings_through(source, monkeypatch):
    import graftsearch.donors._zoo as donors

    seen = {}

    def fake_load(name, weights=None, **kwargs):
        seen["call"] = (name, weights)
        raise gs.DonorError("stop here")

    monkeypatch.setattr(donors, "load_donor", fake_load)
    for kwargs, expected in (({}, "DEFAULT"), ({"weights": None}, None),
                             ({"weights": "IMAGENET1K_V1"}, "IMAGENET1K_V1")):
        with pytest.raises(gs.DonorError, match="stop here"):
            gs.search(donor="resnet18", data="unused", p_min=0.9, **kwargs)
        assert seen["call"] == ("resnet18", expected)
    from graftsearch.pipeline._api import _fitness

    head = gs.HeadSpec(num_classes=3, hidden=7, dropout=0.25)
    mlp = _fitness("mlp", source, head, 0)
    assert (mlp.settings.hidden, mlp.settings.dropout) == (7, 0.25)


@pytest.mark.parametrize("kind", ["fast", "mlp"])
def test_val_accuracy_se_is_the_binomial_standard_error_on_the_val_split(source, kind):
    settings = {"settings": gs.MLPSettings(**TINY_MLP)} if kind == "mlp" else {}
    fit = gs.make_fitness(kind, source, seed=0, **settings)
    ev = fit.evaluate((SIGNAL_TAP,))
    n_val = len(source.labels("val"))  # 90 images
    assert ev.val_accuracy_se == pytest.approx(
        (ev.val_accuracy * (1 - ev.val_accuracy) / n_val) ** 0.5, abs=1e-15)
    assert 0 < ev.val_accuracy_se < 0.06


def test_binomial_se_by_hand():
    from graftsearch.fitness._evaluation import binomial_se

    assert binomial_se(0.9, 100) == pytest.approx(0.03)  # sqrt(0.9 * 0.1 / 100)
    assert binomial_se(1.0, 700) == 0.0
    assert np.isnan(binomial_se(0.5, 0))


# -- k-fold fast proxy ---------------------------------------------------------------------------

@pytest.mark.parametrize("sel", [(3,), (1, 3, 4)])
def test_k_fold_fast_equals_refitting_each_fold_from_scratch(source, sel):
    """Each fold's probe equals sklearn's shrinkage LDA fitted from scratch on that fold's
    training rows (train and val pooled, the fold held out), within 1e-8; P is their mean."""
    from sklearn.covariance import ShrunkCovariance, ledoit_wolf_shrinkage
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    from graftsearch.fitness._fast import fold_assignment

    k = 4
    proxy = FastProxy(source, seed=3, settings=gs.FastSettings(probe="lda", folds=k))
    x = np.concatenate([gs.features.selection_features(source, s, sel) for s in ("train", "val")])
    y = np.concatenate([source.labels("train"), source.labels("val")])
    fold = fold_assignment(y, k, 3)
    assert sorted(np.bincount(fold)) == [60, 60, 60, 60]  # 240 rows, 3 classes of 80
    accuracies = []
    for f in range(k):
        xt, yt = x[fold != f].astype(np.float64), y[fold != f]
        xv, yv = x[fold == f].astype(np.float64), y[fold == f]
        mean, std = xt.mean(0), xt.std(0)
        zt, zv = (xt - mean) / std, (xv - mean) / std
        centred = zt - np.stack([zt[yt == c].mean(0) for c in range(3)])[yt]
        gamma = ledoit_wolf_shrinkage(centred, assume_centered=True)
        ref = LinearDiscriminantAnalysis(solver="lsqr",
                                         covariance_estimator=ShrunkCovariance(shrinkage=gamma))
        ref.fit(zt, yt)
        fit = proxy.fit(sel, fold=f)
        assert fit.regularization == pytest.approx(gamma, rel=1e-8)
        np.testing.assert_allclose(fit.val_scores, ref.decision_function(zv), rtol=1e-8, atol=1e-8)
        accuracies.append(ref.score(zv, yv))
    ev = proxy.evaluate(sel)
    assert ev.val_accuracy == pytest.approx(np.mean(accuracies), abs=1e-12)
    assert ev.val_accuracy_se == pytest.approx(np.std(accuracies, ddof=1) / np.sqrt(k), abs=1e-12)
    # a pickled copy (a worker process) rebuilds its folds and scores the same
    assert pickle.loads(pickle.dumps(proxy)).evaluate(sel) == ev


def test_k_fold_settings_and_keys(source):
    with pytest.raises(gs.ParameterError, match=r"'folds' parameter must be an integer >= 1"):
        gs.FastSettings(folds=0)
    plain = FastProxy(source).key()
    assert "folds" not in plain  # runs made before k-fold keep their fitness key
    assert '"folds":5' in FastProxy(source, settings=gs.FastSettings(folds=5)).key()
    with pytest.raises(gs.ParameterError, match=r"'fold' parameter must be a fold in 0\.\.4"):
        FastProxy(source, settings=gs.FastSettings(folds=5)).fit((1,), fold=5)
    with pytest.raises(gs.DataError, match=r"needs at least 600 train and val images; got 240"):
        FastProxy(source, settings=gs.FastSettings(folds=300))
