"""What every benchmark page shares: the CPU's name for its machine line, and where its tables go."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path
from typing import Optional, Tuple


def cpu_name() -> str:
    """The model name from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def results_dir(results: Path, quick: bool, scratch: Path) -> Path:
    """Where a benchmark writes its tables: ``results``, except that a ``--quick`` smoke test
    aimed at the reported ``benchmarks/results`` writes to ``scratch`` instead (smoke-test numbers
    never replace the reported ones; `python -m benchmarks --quick` points ``results`` elsewhere)."""
    reported = Path(__file__).resolve().parent / "results"
    return scratch if quick and Path(results).resolve() == reported else Path(results)


def last_commit(root: Path, path: str) -> Optional[Tuple[str, int]]:
    """(full hash, commit time in seconds) of the last commit that changed ``path`` under the
    git checkout ``root``, or None outside git."""
    try:
        out = subprocess.run(["git", "log", "-1", "--format=%H %ct", "--", path], cwd=root,
                             capture_output=True, text=True, check=True, timeout=30).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    return (out[0], int(out[1])) if len(out) == 2 else None
