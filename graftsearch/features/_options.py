"""Where and how a feature cache is built (:class:`CacheOptions`), apart from the building, so
that the settings load without torch or numpy (the command line's --help)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple, Union

from graftsearch._utils.device import check_device
from graftsearch._utils.errors import ParameterError, param_message
from graftsearch.donors._preprocessing import check_image_size

DTYPES = ("float32", "float16")
DEFAULT_CHUNK = 1024


def default_workers() -> int:
    """Image-decoding worker processes when none are asked for: one core is left to the main
    process, at most 4."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def parse_shard(value: Union[str, Tuple[int, int], None]) -> Optional[Tuple[int, int]]:
    """``"i/n"`` or ``(i, n)`` with 0 <= i < n, or None."""
    if value is None:
        return None
    expected = "'i/n' with integers 0 <= i < n (shard 0/4 ... 3/4)"
    try:
        if isinstance(value, str):
            i_text, n_text = value.split("/")
            i, n = int(i_text), int(n_text)
        else:
            i, n = (int(v) for v in value)
    except (ValueError, TypeError):
        raise ParameterError(param_message("shard", expected, value)) from None
    if not (n >= 1 and 0 <= i < n):
        raise ParameterError(param_message("shard", expected, value))
    return (i, n)


@dataclass(frozen=True, kw_only=True)
class CacheOptions:
    """How to build a cache (only ``dtype`` and the image size change its contents)."""

    image_size: Optional[int] = None
    cache_dir: Optional[Path] = None
    dtype: str = "float32"
    device: str = "auto"
    batch_size: int = 64
    num_workers: Optional[int] = None
    shard: Optional[Tuple[int, int]] = None
    merge: bool = False
    skip_bad_images: bool = False
    chunk_size: int = DEFAULT_CHUNK

    def __post_init__(self) -> None:
        if self.image_size is not None:
            check_image_size(self.image_size)
        if self.cache_dir is not None:
            object.__setattr__(self, "cache_dir", Path(self.cache_dir).expanduser())
        if self.dtype not in DTYPES:
            raise ParameterError(param_message("dtype", f"one of {list(DTYPES)}", self.dtype))
        check_device(self.device)
        for name, low in (("batch_size", 1), ("chunk_size", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ParameterError(param_message(name, "a positive integer", v))
        w = self.num_workers
        if w is not None and (isinstance(w, bool) or not isinstance(w, int) or w < 0):
            raise ParameterError(param_message("num_workers", "a non-negative integer or None", w))
        object.__setattr__(self, "shard", parse_shard(self.shard))
        if self.merge and self.shard is not None:
            raise ParameterError(param_message("merge", "False together with a shard", self.merge,
                                               "Merge in a separate call without --shard."))
