"""Derived seeds: every component gets its own generator from the run's one seed.

Derivation uses SHA-256 rather than ``hash()`` so that a seed is the same in every process and on
every platform (Python salts ``hash`` of strings per process).
"""

from __future__ import annotations

import hashlib


def derive_seed(seed: int, *keys: object) -> int:
    """A 63-bit seed derived from ``seed`` and any number of keys (names, selections, ...)."""
    text = "\x1f".join([str(int(seed))] + [str(k) for k in keys])
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") >> 1
