"""Resuming from checkpoint.pkl gives the files of the run that was never interrupted."""

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import graftsearch as gs
from search_problems import InfoFitness, SleepyFitness, make_taps, strip_time

CHANNELS = [8, 8, 16, 16, 32, 32, 64, 64, 96, 128]
FILES = ("evaluations.csv", "pareto.csv")


class Stop(Exception):
    pass


def _problem():
    taps = make_taps(CHANNELS)
    return taps, gs.HeadSpec(num_classes=5, hidden=16), InfoFitness(len(taps))


def _settings(**kw):
    base = dict(p_min=0.5, population=12, generations=8, seed=4)
    return gs.SearchSettings(**(base | kw))


def _stop_at(generation):
    def progress(p):
        if p.stage == "search" and p.info["generation"] == generation:
            raise Stop
    return progress


def _same_files(a: Path, b: Path) -> None:
    for name in FILES:
        assert strip_time(a / name) == strip_time(b / name), name
    conv = [open(d / "convergence.csv").read().splitlines() for d in (a, b)]
    strip = [[line.rsplit(",", 1)[0] for line in c] for c in conv]  # elapsed_s aside
    assert strip[0] == strip[1]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    taps, head, fit = _problem()
    root = tmp_path_factory.mktemp("full")
    result = gs.run_search(taps, head, fit, _settings(), run_dir=root)
    assert result.generations == 8
    return root, result


@pytest.mark.parametrize("stop_after, every", [(0, 1), (3, 1), (3, 2), (7, 1)])
def test_resume_after_an_interruption_is_byte_identical(uninterrupted, tmp_path, stop_after, every):
    full, expected = uninterrupted
    taps, head, fit = _problem()
    with pytest.raises(Stop):
        gs.run_search(taps, head, fit, _settings(checkpoint_every=every), run_dir=tmp_path,
                      progress=_stop_at(stop_after))
    saved = pickle.loads((tmp_path / "checkpoint.pkl").read_bytes())
    assert saved["generation"] == stop_after - stop_after % every
    result = gs.run_search(taps, head, fit, _settings(checkpoint_every=every), run_dir=tmp_path)
    _same_files(full, tmp_path)
    assert result.best == expected.best and result.evaluations == expected.evaluations


@pytest.mark.slow
def test_a_killed_process_resumes_to_the_same_files(uninterrupted, tmp_path):
    """SIGKILL a real search process after generation 3 is checkpointed, then resume it."""
    full, _ = uninterrupted
    tests = Path(__file__).parent
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from search_problems import run_killable; "
            "run_killable(sys.argv[2], 8, 0.01)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tests.parent), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-c", code, str(tests), str(tmp_path)], env=env)
    checkpoint = tmp_path / "checkpoint.pkl"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if checkpoint.exists():
                try:
                    if pickle.loads(checkpoint.read_bytes())["generation"] >= 3:
                        break
                except Exception:  # replaced while reading
                    pass
            time.sleep(0.005)
        assert proc.poll() is None, "the search finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    killed_at = pickle.loads(checkpoint.read_bytes())["generation"]
    assert 3 <= killed_at < 8
    taps, head, _ = _problem()
    gs.run_search(taps, head, SleepyFitness(len(taps), delay=0.0), _settings(), run_dir=tmp_path)
    _same_files(full, tmp_path)


def test_raising_the_generation_limit_continues_a_finished_run(tmp_path):
    taps, head, fit = _problem()
    gs.run_search(taps, head, fit, _settings(generations=12), run_dir=tmp_path / "long")
    gs.run_search(taps, head, fit, _settings(generations=5), run_dir=tmp_path / "ext")
    again = gs.run_search(taps, head, fit, _settings(generations=5), run_dir=tmp_path / "ext")
    assert again.generations == 5  # finished: nothing more to do
    extended = gs.run_search(taps, head, fit, _settings(generations=12), run_dir=tmp_path / "ext")
    assert extended.generations == 12
    _same_files(tmp_path / "long", tmp_path / "ext")


def test_resume_refused_with_another_fitness(tmp_path):
    taps, head, fit = _problem()
    gs.run_search(taps, head, fit, _settings(generations=1), run_dir=tmp_path)
    other = InfoFitness(len(taps), seed=1)
    with pytest.raises(gs.SearchError, match="holds a search with another fitness"):
        gs.run_search(taps, head, other, _settings(generations=1), run_dir=tmp_path)


def test_resume_refused_with_other_settings(tmp_path):
    taps, head, fit = _problem()
    gs.run_search(taps, head, fit, _settings(generations=1), run_dir=tmp_path)
    with pytest.raises(gs.SearchError, match=r"other settings \(population: 12 in the checkpoint, 16 now"):
        gs.run_search(taps, head, fit, _settings(generations=1, population=16), run_dir=tmp_path)


def test_resume_refused_with_another_head(tmp_path):
    taps, head, fit = _problem()
    gs.run_search(taps, head, fit, _settings(generations=1), run_dir=tmp_path)
    with pytest.raises(gs.SearchError, match="holds a search with another head"):
        gs.run_search(taps, gs.HeadSpec(num_classes=5, hidden=32), fit, _settings(generations=1),
                      run_dir=tmp_path)


def test_unreadable_checkpoint(tmp_path):
    taps, head, fit = _problem()
    (tmp_path / "checkpoint.pkl").write_bytes(b"not a pickle")
    with pytest.raises(gs.SearchError, match="cannot be read .* delete the checkpoint"):
        gs.run_search(taps, head, fit, _settings(generations=1), run_dir=tmp_path)


def test_extending_a_refined_run_refines_the_new_front(tmp_path):
    taps, head, fit = _problem()
    refine = dict(refine_fitness=InfoFitness(len(taps)))
    long = gs.run_search(taps, head, fit, _settings(generations=12, refine="front"),
                         run_dir=tmp_path / "long", **refine)
    short = gs.run_search(taps, head, fit, _settings(generations=2, refine="front"),
                          run_dir=tmp_path / "ext", **refine)
    extended = gs.run_search(taps, head, fit, _settings(generations=12, refine="front"),
                             run_dir=tmp_path / "ext", **refine)
    assert len(short.pareto) < len(long.pareto)  # the longer search found more of the front
    assert extended.pareto["bits"].tolist() == long.pareto["bits"].tolist()
    _same_files(tmp_path / "long", tmp_path / "ext")
    assert strip_time(tmp_path / "long" / "refined.csv") == strip_time(tmp_path / "ext" / "refined.csv")
