"""Running a generation's fitness evaluations: in process, on local cores, or on a Dask cluster.

Each generation's new selections go out as one batch. With ``n_jobs == 1`` they run in this
process; otherwise through joblib (loky processes), in contiguous chunks so that the fitness
(and the features it holds) is pickled once per chunk, not once per selection. Each worker
process sets torch to ``max(1, cores // workers)`` threads so that workers do not oversubscribe
the cores. With a Dask scheduler address the same batch goes through joblib's dask backend; the
fitness is scattered to the workers once per batch. Results come back in input order and depend
only on the fitness and the selection, never on where they ran.
"""

from __future__ import annotations

import logging
import math
import os
from typing import List, Optional, Sequence, Tuple

from graftsearch._utils.errors import GraftSearchError, ParameterError, SearchError, param_message
from graftsearch.fitness._evaluation import Evaluation

logger = logging.getLogger("graftsearch")

CONNECT_TIMEOUT = "10s"


def safe_evaluate(fitness, selection: Tuple[int, ...]) -> Evaluation:
    """``fitness.evaluate(selection)``; anything but a user error becomes a failed Evaluation.

    A :class:`GraftSearchError` is passed on: a fitness raises one only when asked to fail fast.
    """
    try:
        result = fitness.evaluate(tuple(selection))
    except GraftSearchError:
        raise
    except Exception as exc:  # one bad selection must not end the run
        return Evaluation(val_accuracy=math.nan, failed=True,
                          error=f"{type(exc).__name__}: {exc}".strip())
    if not isinstance(result, Evaluation):
        return Evaluation(val_accuracy=math.nan, failed=True,
                          error=f"the fitness returned {type(result).__name__}, not an Evaluation")
    return result


def _worker_threads(threads: Optional[int]) -> int:
    if threads is not None:
        return threads
    # On a dask worker: share the machine's cores among the worker's threads.
    try:
        from distributed import get_worker

        worker = get_worker()
        nthreads = getattr(getattr(worker, "state", None), "nthreads", None) or worker.nthreads
        return max(1, (os.cpu_count() or 1) // max(1, int(nthreads)))
    except Exception:
        return 1


def evaluate_chunk(fitness, selections: Sequence[Tuple[int, ...]],
                   threads: Optional[int]) -> List[Evaluation]:
    """Evaluate ``selections`` in a worker, with torch limited to ``threads`` threads."""
    import torch

    torch.set_num_threads(_worker_threads(threads))
    return [safe_evaluate(fitness, s) for s in selections]


def _chunks(items: Sequence, n: int) -> List[Sequence]:
    n = max(1, min(n, len(items)))
    size, extra = divmod(len(items), n)
    out, start = [], 0
    for i in range(n):
        stop = start + size + (1 if i < extra else 0)
        out.append(items[start:stop])
        start = stop
    return out


class Evaluator:
    """Maps a batch of selections to evaluations; use as a context manager."""

    def __init__(self, fitness, *, n_jobs: int = 1, dask_scheduler: Optional[str] = None):
        self.fitness = fitness
        self.n_jobs = n_jobs
        self.dask_scheduler = dask_scheduler
        self._client = None
        self._parallel = None

    def __enter__(self) -> "Evaluator":
        import joblib

        if self.dask_scheduler:
            self._client = _connect(self.dask_scheduler)
            workers = sum(self._client.nthreads().values()) or 1
            self._n_chunks = 2 * workers
            self._threads: Optional[int] = None
            # Building the backend scatters the fitness (and the features it holds) to every
            # worker once; the backend is then reused for every generation.
            config = joblib.parallel_config(backend="dask", client=self._client, scatter=[self.fitness])
            config.unregister()
            self._parallel = joblib.Parallel(n_jobs=-1, backend=config.parallel_config["backend"])
        elif self.n_jobs != 1:
            cores = joblib.cpu_count()
            workers = cores if self.n_jobs == -1 else self.n_jobs
            self._n_chunks = 2 * workers
            self._threads = max(1, cores // workers)
            self._parallel = joblib.Parallel(n_jobs=workers, backend="loky")
            self._parallel.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._parallel is not None and self._client is None:
            self._parallel.__exit__(*exc)
        self._parallel = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def __call__(self, selections: Sequence[Tuple[int, ...]]) -> List[Evaluation]:
        if not selections:
            return []
        if self._parallel is None:
            return [safe_evaluate(self.fitness, s) for s in selections]
        import joblib

        chunks = _chunks(list(selections), self._n_chunks)
        tasks = (joblib.delayed(evaluate_chunk)(self.fitness, chunk, self._threads) for chunk in chunks)
        return [ev for chunk in self._parallel(tasks) for ev in chunk]


def _connect(address: str):
    try:
        from distributed import Client
    except ImportError:
        raise ParameterError(param_message(
            "dask_scheduler", "used with dask.distributed installed", address,
            "Install it with `pip install 'graftsearch[dask]'`.")) from None
    try:
        client = Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)
    except Exception as exc:
        raise SearchError(
            f"Cannot connect to the Dask scheduler at {address!r} ({type(exc).__name__}: {exc}). "
            "Check the address (e.g. tcp://HOST:8786) and that `dask scheduler` is running and "
            "reachable from this machine.") from None
    logger.info("evaluating on the Dask cluster at %s (%d worker threads)", address,
                sum(client.nthreads().values()))
    return client
