"""The surrogate screen of offspring (``screen``): its ridge model against direct computations,
its ranking, and the search guarantees with either surrogate on (repeatable, resumable, no
duplicates, within size_max, any n_jobs). The GP's own parts: ``test_search_gp.py``."""

from __future__ import annotations

import itertools
import pickle

import numpy as np
import pytest

import graftsearch as gs
from graftsearch.optimize._surrogate import (MIN_RECORDS, RidgeSurrogate, _ALPHAS, _features,
                                             screen_order)
from search_problems import (InfoFitness, assert_latest_windows, make_taps, objective_limit, spy_on_windows,
                             stop_then_resume, strip_time)

CHANNELS = [8, 8, 16, 16, 32, 32, 64, 64, 96, 128]


def _data(n=6, m=40, seed=0):
    rng = np.random.default_rng(seed)
    combos = ["".join(c) for c in itertools.product("01", repeat=n) if "1" in c]
    bits = [combos[i] for i in rng.choice(len(combos), m, replace=False)]
    w = rng.normal(size=n)
    p = np.array([0.5 + 0.05 * sum(w[i] for i, c in enumerate(b) if c == "1") for b in bits])
    return bits, np.clip(p + rng.normal(scale=0.01, size=m), 0, 1)


def test_the_features_are_bits_then_pairs():
    x = _features(["101", "011"])
    # bits 1..3, then pairs (1,2), (1,3), (2,3)
    assert x.tolist() == [[1, 0, 1, 0, 1, 0], [0, 1, 1, 0, 0, 1]]


@pytest.mark.parametrize("n, m", [(6, 40), (8, 12)])  # (8, 12): more features (36) than points
def test_ridge_equals_a_direct_solve_and_its_leave_one_out_error_equals_refitting(n, m):
    bits, p = _data(n=n, m=m)
    model = RidgeSurrogate(bits, p)
    x = _features(bits)
    mean, scale = x.mean(0), x.std(0)
    scale[scale == 0] = 1
    z = (x - mean) / scale
    eye = np.eye(z.shape[1])
    errors = {}
    for a in _ALPHAS:
        alpha = a * z.shape[1]
        # leave-one-out by refitting without each point: ridge with an unpenalised intercept on
        # the other points (the features' standardisation kept, as the model's)
        res = []
        for i in range(m):
            keep = np.arange(m) != i
            zk, pk = z[keep], p[keep]
            zc = zk - zk.mean(0)
            coef = np.linalg.solve(zc.T @ zc + alpha * eye, zc.T @ (pk - pk.mean()))
            res.append(p[i] - (pk.mean() + (z[i] - zk.mean(0)) @ coef))
        full = np.linalg.solve(z.T @ z + alpha * eye, z.T @ (p - p.mean()))
        errors[a] = (np.mean(np.square(res)), full)
    best = min(errors, key=lambda a: errors[a][0])
    assert model.loo_mse == pytest.approx(errors[best][0], rel=1e-6)
    new = ["1" * n, "1" + "0" * (n - 1), "01" * (n // 2)]
    direct = np.clip(p.mean() + ((_features(new) - mean) / scale) @ errors[best][1], 0, 1)
    np.testing.assert_allclose(model.predict(new), direct, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(model.optimistic(new),
                               np.clip(direct + np.sqrt(errors[best][0]), 0, 1), rtol=1e-6)


def test_the_model_is_fitted_on_one_blas_thread_and_leaves_the_setting_as_it_was(monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    blas = [lib for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"]
    if not blas:
        pytest.skip("numpy here reports no BLAS library to threadpoolctl")
    from graftsearch.optimize import _surrogate

    # a controller built before scipy's own BLAS was loaded would not limit it; build it here
    monkeypatch.setattr(_surrogate, "_BLAS", None)
    seen = []
    eigh = np.linalg.eigh

    def spy(a):
        seen.append([lib["num_threads"] for lib in threadpoolctl.threadpool_info()
                     if lib["user_api"] == "blas"])
        return eigh(a)

    monkeypatch.setattr(np.linalg, "eigh", spy)
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):  # as on a 2-core machine
        RidgeSurrogate(*_data())
        after = [lib["num_threads"] for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"]
    assert seen and all(n == 1 for n in seen[0])
    assert after == [2] * len(blas)


def test_the_model_needs_a_few_evaluations():
    bits, p = _data(m=MIN_RECORDS - 1)
    with pytest.raises(ValueError, match="at least"):
        RidgeSurrogate(bits, p)


def test_candidates_are_ranked_as_survival_would():
    known = [("1100", 0.8, 100.0, 0.0), ("0011", 0.6, 40.0, 0.0)]
    predicted = [("1000", 0.5, 50.0, 0.0),    # dominated by 0011 (less P, more size)
                 ("0001", 0.7, 20.0, 0.0),    # dominates 0011: the first front
                 ("1111", 0.9, 200.0, 0.0),   # beyond the front: first front too
                 ("0100", 0.3, 10.0, 0.2)]    # infeasible: last
    order = screen_order(predicted, known)
    assert set(order[:2]) == {1, 2} and order[2:] == [0, 3]


SURROGATES = ("gp", "ridge")


@pytest.mark.parametrize("surrogate", SURROGATES)
def test_the_screen_breeds_no_more_than_the_space_holds(surrogate):
    """5 taps hold 31 selections: a pool of 4 x 16 offspring cannot be bred beside a population
    of 16 (breeding would never end); the pool shrinks to what is left."""
    taps, head = make_taps([8, 8, 16, 16, 32]), gs.HeadSpec(num_classes=5, hidden=16)
    result = gs.run_search(taps, head, InfoFitness(len(taps)),
                           _settings(population=16, generations=3, surrogate=surrogate))
    bits = [r.bits for r in result.records]
    assert len(bits) == len(set(bits)) == 31 and result.stopped_by == "exhausted"


def _settings(**kw):
    return gs.SearchSettings(**(dict(p_min=0.5, population=12, generations=6, seed=4,
                                     screen=4) | kw))


@pytest.mark.parametrize("surrogate", SURROGATES)
@pytest.mark.parametrize("objective", ["min-size", "max-accuracy"])
def test_with_the_screen_a_run_repeats_and_resumes_exactly(tmp_path, objective, surrogate):
    taps, head = make_taps(CHANNELS), gs.HeadSpec(num_classes=5, hidden=16)
    limit = objective_limit(taps, head, objective)
    settings = _settings(surrogate=surrogate, **limit)
    full = gs.run_search(taps, head, InfoFitness(len(taps)), settings, run_dir=tmp_path / "a")
    gs.run_search(taps, head, InfoFitness(len(taps)), settings, run_dir=tmp_path / "c")
    assert strip_time(tmp_path / "a" / "evaluations.csv") == strip_time(tmp_path / "c" / "evaluations.csv")
    def stopped_at_3(run_dir):
        assert pickle.loads((run_dir / "checkpoint.pkl").read_bytes())["generation"] == 3

    stop_then_resume(taps, head, lambda: InfoFitness(len(taps)), settings, tmp_path / "b", 3,
                     between=stopped_at_3)
    for name in ("evaluations.csv", "pareto.csv"):
        assert strip_time(tmp_path / "a" / name) == strip_time(tmp_path / "b" / name)
    bits = [r.bits for r in full.records]
    assert len(bits) == len(set(bits))
    if objective == "max-accuracy":
        assert all(r.params <= settings.size_max for r in full.records if r.trained)
    # the screen changes what is searched (else this test would not test it)
    plain = gs.run_search(taps, head, InfoFitness(len(taps)), _settings(screen=0, **limit))
    assert [r.bits for r in plain.records] != bits
    other = gs.run_search(taps, head, InfoFitness(len(taps)),
                          _settings(surrogate=({"gp", "ridge"} - {surrogate}).pop(), **limit))
    assert [r.bits for r in other.records] != bits  # and so does the choice of surrogate


def test_the_ridge_sees_the_latest_evaluations_only_and_a_resume_still_equals_the_run(tmp_path, monkeypatch):
    taps, head = make_taps(CHANNELS), gs.HeadSpec(num_classes=5, hidden=16)
    settings = _settings(surrogate="ridge")
    wide = gs.run_search(taps, head, InfoFitness(len(taps)), settings)
    seen = spy_on_windows(monkeypatch, "FIT_WINDOW", "RidgeSurrogate", 20)
    narrow = gs.run_search(taps, head, InfoFitness(len(taps)), settings, run_dir=tmp_path / "a")
    order = [r.bits for r in narrow.records]
    # the 20 latest records before each generation's screen, in order
    assert_latest_windows(seen, narrow.records, 20)
    assert [r.bits for r in wide.records] != order  # the window changes what is searched
    stop_then_resume(taps, head, lambda: InfoFitness(len(taps)), settings, tmp_path / "b", 3)
    for name in ("evaluations.csv", "pareto.csv"):
        assert strip_time(tmp_path / "a" / name) == strip_time(tmp_path / "b" / name)


@pytest.mark.parametrize("surrogate", SURROGATES)
def test_with_the_screen_parallel_evaluation_searches_the_same(tmp_path, surrogate):
    taps, head = make_taps(CHANNELS), gs.HeadSpec(num_classes=5, hidden=16)
    one = gs.run_search(taps, head, InfoFitness(len(taps)),
                        _settings(generations=3, surrogate=surrogate))
    two = gs.run_search(taps, head, InfoFitness(len(taps)),
                        _settings(generations=3, n_jobs=2, surrogate=surrogate))
    assert [(r.bits, r.val_accuracy) for r in one.records] == \
        [(r.bits, r.val_accuracy) for r in two.records]


@pytest.mark.parametrize("surrogate", SURROGATES)
def test_the_screen_spends_calls_where_the_model_expects_the_front_to_move(surrogate):
    """On a problem whose P grows smoothly with the taps held (a noisy OR of per-tap
    information), with the same budget the screened search reaches a larger hypervolume than
    the plain one (mean over 4 seeds)."""
    taps, head = make_taps(CHANNELS), gs.HeadSpec(num_classes=5, hidden=16)
    kw = dict(p_min=0.8, generations=100, max_evaluations=48, surrogate=surrogate)
    hv = {}
    for screen in (0, 4):
        got = []
        for seed in range(4):
            result = gs.run_search(taps, head, InfoFitness(len(taps)),
                                   _settings(screen=screen, seed=seed, **kw))
            got.append(result.history_records[-1]["hypervolume"])
        hv[screen] = np.mean(got)
    assert hv[4] > hv[0]


@pytest.mark.parametrize("setting, match", [
    ({"screen": -1}, r"'screen' parameter must be an integer >= 0"),
    ({"screen": 1.5}, r"'screen' parameter must be an integer >= 0"),
    ({"surrogate": "gaussian"}, r"'surrogate' parameter must be one of 'gp', 'ridge'"),
])
def test_bad_screen_settings(setting, match):
    with pytest.raises(gs.ParameterError, match=match):
        _settings(**setting)


def test_a_search_saved_before_the_screen_existed_resumes_without_it(tmp_path):
    """Whatever the default becomes, a checkpoint or run directory written before a setting
    existed reads it as the value that search ran with."""
    import json

    from graftsearch.optimize._settings import BEFORE_ADDED
    from graftsearch.pipeline._settings import read_config, settings_from

    saved = {k: v for k, v in _settings().as_dict().items() if k not in BEFORE_ADDED}
    restored = gs.SearchSettings.from_dict(saved)
    assert (restored.screen, restored.local_search, restored.initial,
            restored.surrogate) == (0, 0, "singles", "ridge")
    added = ("screen", "local_search", "initial", "surrogate", "proxy_folds", "proxy_probe")
    stored = {k: v for k, v in gs.RunSettings(data="x", donor="efficientnet_lite0",
                                              p_min=0.5, screen=4).as_dict().items()
              if k not in added}
    (tmp_path / "config.json").write_text(json.dumps({"settings": stored}))
    again = settings_from(read_config(tmp_path))
    assert tuple(getattr(again, k) for k in added) == (0, 0, "singles", "ridge", 1, "lda")
    # a search saved with the screen but before the GP (the ridge was its model) resumes so
    with_screen = gs.SearchSettings.from_dict({**saved, "screen": 8})
    assert (with_screen.screen, with_screen.surrogate) == (8, "ridge")
