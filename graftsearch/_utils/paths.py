"""Where graftsearch keeps what it computes once: feature caches, image stores, donor-name lists."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """``$GRAFTSEARCH_CACHE`` or ``~/.cache/graftsearch``."""
    env = os.environ.get("GRAFTSEARCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "graftsearch"
