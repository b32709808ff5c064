"""Parallel and distributed evaluation give the same files as one process."""

import os

import joblib
import pytest

import graftsearch as gs
from search_problems import InfoFitness, ThreadsFitness, make_taps, strip_time

CHANNELS = [8, 8, 16, 16, 32, 32, 64, 64, 96, 128]
FILES = ("evaluations.csv", "pareto.csv")


def _run(run_dir, **kw):
    taps = make_taps(CHANNELS)
    settings = gs.SearchSettings(**(dict(p_min=0.5, population=12, generations=4, seed=2) | kw))
    return gs.run_search(taps, gs.HeadSpec(num_classes=5, hidden=16), InfoFitness(len(taps)),
                         settings, run_dir=run_dir)


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    root = tmp_path_factory.mktemp("serial")
    _run(root)
    return root


@pytest.mark.slow
def test_n_jobs_2_gives_the_same_files(serial, tmp_path):
    _run(tmp_path, n_jobs=2)
    for name in FILES:
        assert strip_time(serial / name) == strip_time(tmp_path / name)


def test_workers_share_the_cores():
    taps = make_taps(CHANNELS)
    settings = gs.SearchSettings(p_min=0.5, population=8, generations=0, n_jobs=2)
    result = gs.run_search(taps, gs.HeadSpec(num_classes=5, hidden=16), ThreadsFitness(len(taps)), settings)
    assert set(result.archive.threads) == {max(1, joblib.cpu_count() // 2)}
    assert os.getpid() not in set(result.archive.pid.astype(int))


@pytest.mark.slow
def test_a_dask_local_cluster_gives_the_same_files(serial, tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        result = _run(tmp_path, dask_scheduler=cluster.scheduler_address)
        taps = make_taps(CHANNELS)
        threads = gs.run_search(taps, gs.HeadSpec(num_classes=5, hidden=16), ThreadsFitness(len(taps)),
                                gs.SearchSettings(p_min=0.5, population=8, generations=0,
                                                  dask_scheduler=cluster.scheduler_address))
    for name in FILES:
        assert strip_time(serial / name) == strip_time(tmp_path / name)
    assert result.evaluations > 0
    # one thread per dask worker: each may use every core of its machine
    assert set(threads.archive.threads) == {max(1, os.cpu_count() or 1)}
    assert os.getpid() not in set(threads.archive.pid.astype(int))


@pytest.mark.slow
def test_an_unreachable_scheduler_is_a_clear_error(tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    monkeypatch.setattr("graftsearch.optimize._parallel.CONNECT_TIMEOUT", "1s")
    with pytest.raises(gs.SearchError, match="Cannot connect to the Dask scheduler at 'tcp://127.0.0.1:9'"):
        _run(tmp_path, dask_scheduler="tcp://127.0.0.1:9")
