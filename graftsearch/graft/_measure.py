"""What a model costs to run on a CPU: latency per image and peak memory.

Latency is measured in this process with models interleaved run by run, so that a busy shared
machine slows every model alike and their ratio stays meaningful. Peak memory is measured in a
fresh child process that imports only torch and runs a TorchScript copy of the model (what a
robot would deploy): the growth of its resident set from just before loading the model to the
peak after two forward passes, i.e. weights plus activations plus the runtime's scratch space.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Iterator, Mapping, Optional

import torch
from torch import nn

from graftsearch._utils.errors import ParameterError, param_message
from graftsearch.taps._records import MIB
from graftsearch._utils.threads import torch_threads as shared_torch_threads



@dataclass(frozen=True)
class Latency:
    """Milliseconds per forward pass of ``batch_size`` images (after ``warmup`` untimed passes)."""

    median_ms: float
    p90_ms: float
    min_ms: float
    runs: int
    warmup: int
    batch_size: int
    threads: int
    device: str = "cpu"

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PeakMemory:
    """Resident memory a model adds to a process: after loading it, and at the peak of inference."""

    params: int
    loaded_mib: Optional[float]
    peak_mib: Optional[float]
    method: str

    def as_dict(self) -> dict:
        return asdict(self)


@contextmanager
def torch_threads(threads: Optional[int]) -> Iterator[int]:
    """``_threads.torch_threads`` after checking ``threads`` (None: leave as is)."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ParameterError(param_message("threads", "a positive integer or None", threads))
    with shared_torch_threads(threads) as n:
        yield n


def _check_counts(runs: int, warmup: int, batch_size: int) -> None:
    for name, value, low in (("runs", runs, 1), ("warmup", warmup, 0), ("batch_size", batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ParameterError(param_message(name, f"an integer >= {low}", value))


def compare_latency(models: Mapping[str, nn.Module], image_size: int, *, runs: int = 50,
                    warmup: int = 5, batch_size: int = 1, threads: Optional[int] = None,
                    seed: int = 0) -> Dict[str, Latency]:
    """CPU latency of several models on the same input, interleaved pass by pass."""
    _check_counts(runs, warmup, batch_size)
    x = torch.rand(batch_size, 3, image_size, image_size,
                   generator=torch.Generator().manual_seed(seed))
    modes = {name: m.training for name, m in models.items()}
    times: Dict[str, list] = {name: [] for name in models}
    try:
        for m in models.values():
            m.eval()
        with torch_threads(threads) as n_threads, torch.inference_mode():
            for _ in range(warmup):
                for m in models.values():
                    m(x)
            for _ in range(runs):
                for name, m in models.items():
                    start = time.perf_counter()
                    m(x)
                    times[name].append((time.perf_counter() - start) * 1000.0)
    finally:
        for name, m in models.items():
            m.train(modes[name])
    out = {}
    for name, t in times.items():
        ordered = sorted(t)
        out[name] = Latency(median_ms=statistics.median(t),
                            p90_ms=ordered[min(len(t) - 1, int(round(0.9 * (len(t) - 1))))],
                            min_ms=ordered[0], runs=runs, warmup=warmup, batch_size=batch_size,
                            threads=n_threads)
    return out


def measure_latency(model: nn.Module, image_size: int, *, runs: int = 50, warmup: int = 5,
                    batch_size: int = 1, threads: Optional[int] = None) -> Latency:
    """Median CPU latency of ``model`` on random (batch_size, 3, S, S) input."""
    return compare_latency({"model": model}, image_size, runs=runs, warmup=warmup,
                           batch_size=batch_size, threads=threads)["model"]


_CHILD = textwrap.dedent("""
    import json, sys
    import torch

    path, size, batch, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(threads)
    if len(sys.argv) > 5:  # an int8 model: its weights are packed for this engine when loaded
        torch.backends.quantized.engine = sys.argv[5]

    def status(key):
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
        raise KeyError(key)

    x = torch.rand(batch, 3, size, size)
    with torch.inference_mode():
        torch.relu(x)  # let torch allocate its own first-use buffers before the baseline
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset the peak resident set size (VmHWM) to the current one
        method = "VmHWM"
    except OSError:
        method = "VmHWM-not-reset"
    base = status("VmRSS")
    model = torch.jit.load(path, map_location="cpu").eval()
    loaded = status("VmRSS")
    with torch.inference_mode():
        model(x)
        model(x)
    peak = status("VmHWM")
    print(json.dumps({"base": base, "loaded": loaded, "peak": peak, "method": method}))
""")


def measure_peak_memory(model: nn.Module, image_size: int, *, batch_size: int = 1,
                        threads: int = 1, timeout: float = 600.0,
                        engine: Optional[str] = None) -> PeakMemory:
    """Peak resident memory of ``model`` at inference, measured in a fresh process (Linux);
    ``engine`` is the int8 engine an int8 model runs with.

    On systems without ``/proc/self/status`` the figures are None and ``method`` says why.
    """
    _check_counts(1, 0, batch_size)
    params = sum(p.numel() for p in model.parameters())
    if not Path("/proc/self/status").exists():
        return PeakMemory(params=params, loaded_mib=None, peak_mib=None,
                          method="unavailable (needs Linux /proc)")
    was_training = model.training
    model.eval()
    with tempfile.TemporaryDirectory(prefix="graftsearch-mem-") as tmp:
        path = Path(tmp) / "model.pt"
        try:
            if isinstance(model, torch.jit.ScriptModule):
                torch.jit.save(model, str(path))
            else:
                x = torch.rand(batch_size, 3, image_size, image_size)
                with torch.no_grad(), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    torch.jit.save(torch.jit.trace(model, x, check_trace=False), str(path))
        except Exception as exc:  # a donor torch.jit cannot trace: report, don't fail the run
            return PeakMemory(params=params, loaded_mib=None, peak_mib=None,
                              method=f"unavailable (TorchScript trace failed: {type(exc).__name__})")
        finally:
            model.train(was_training)
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        proc = subprocess.run([sys.executable, "-c", _CHILD, str(path), str(image_size),
                               str(batch_size), str(threads)] + ([engine] if engine else []),
                              capture_output=True, text=True,
                              env=env, timeout=timeout)
    if proc.returncode != 0:
        return PeakMemory(params=params, loaded_mib=None, peak_mib=None,
                          method=f"unavailable (child failed: {proc.stderr.strip()[-200:]})")
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    return PeakMemory(params=params, loaded_mib=(r["loaded"] - r["base"]) / MIB,
                      peak_mib=(r["peak"] - r["base"]) / MIB, method=r["method"])
