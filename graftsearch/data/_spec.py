"""What names a dataset and its split: :class:`DataSpec`, the source syntax, the default data dirs.

``--data`` (or :class:`DataSpec`'s ``source``) takes ``PATH`` (kind detected), ``deepweeds:PATH``,
``folder:PATH``, ``csv:PATH`` or ``deepweeds`` alone (the default data directory,
``$GRAFTSEARCH_DATA/deepweeds`` or ``~/.cache/graftsearch/data/deepweeds``, downloaded on first
use). Splits: ``paper`` (stratified 60/20/20 drawn with the seed, any source), ``official:K``
(DeepWeeds' five official folds, K = 0..4) and ``column`` (a split column of a CSV listing).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

from graftsearch._utils.checks import is_int
from graftsearch._utils.errors import ParameterError, param_message

SPLITS = ("train", "val", "test")
KINDS = ("deepweeds", "folder", "csv")
#: DeepWeeds' species in label order 0..8, as its labels.csv names them.
DEEPWEEDS_CLASSES = ("Chinee apple", "Lantana", "Parkinsonia", "Parthenium", "Prickly acacia",
                     "Rubber vine", "Siam weed", "Snake weed", "Negative")
DEEPWEEDS_FOLDS = 5
PAPER_FRACTIONS = (0.6, 0.2, 0.2)
#: A stratified split puts at least one image of every class in each of train, val and test.
MIN_PER_CLASS = 3
SHOW = 5  # how many offending items an error message lists


def default_data_dir() -> Path:
    """Where downloaded datasets live: ``$GRAFTSEARCH_DATA`` or ``~/.cache/graftsearch/data``."""
    env = os.environ.get("GRAFTSEARCH_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "graftsearch" / "data"


def default_deepweeds_dir() -> Path:
    return default_data_dir() / "deepweeds"


def listing(items: Sequence[Any], n: int = SHOW) -> str:
    """``'a', 'b', 'c' and 4 more`` for error messages."""
    shown = ", ".join(f"'{i}'" for i in items[:n])
    return shown + (f" and {len(items) - n} more" if len(items) > n else "")


@dataclass(frozen=True, kw_only=True)
class DataSpec:
    """Which images, and how they are split into train, val and test.

    ``source`` is what ``--data`` takes (see the module docstring); ``split`` is ``"paper"``,
    ``"official:K"`` or ``"column"``; ``seed`` draws the ``paper`` split; ``split_column`` names
    the column of a CSV listing holding ``train``/``val``/``test`` (default ``"split"`` with
    ``split="column"``).
    """

    source: str
    split: str = "paper"
    seed: int = 0
    split_column: Optional[str] = None

    def __post_init__(self) -> None:
        source = self.source
        if isinstance(source, os.PathLike):
            source = os.fspath(source)
        if not isinstance(source, str) or not source.strip():
            raise ParameterError(param_message(
                "data", "a path, 'deepweeds:PATH', 'folder:PATH', 'csv:PATH' or 'deepweeds'",
                self.source, "Use `--data path/to/images` (one folder per class)."))
        object.__setattr__(self, "source", source.strip())
        kind, path = parse_source(self.source)
        if kind is not None and path is not None and not str(path).strip():
            raise ParameterError(param_message("data", f"a path after '{kind}:'", self.source))
        split = self.split
        valid = isinstance(split, str) and (split in ("paper", "column")
                                            or _fold_of(split) is not None)
        if not valid:
            raise ParameterError(param_message(
                "split", "'paper', 'official:K' with K in 0..4 (DeepWeeds) or 'column'", split,
                "Use `--split paper` for the stratified 60/20/20 split drawn with the seed."))
        if not is_int(self.seed) or self.seed < 0:
            raise ParameterError(param_message("seed", "a non-negative integer", self.seed))
        object.__setattr__(self, "seed", int(self.seed))
        column = self.split_column
        if column is not None and (not isinstance(column, str) or not column.strip()):
            raise ParameterError(param_message("split_column", "a column name of the CSV listing",
                                               column))
        if split == "column" and column is None:
            object.__setattr__(self, "split_column", "split")
        elif split != "column" and column is not None:
            raise ParameterError(param_message(
                "split_column", "unset unless split='column'", column,
                "Use `--split column --split-column NAME` to take the split from a CSV column."))

    @property
    def fold(self) -> Optional[int]:
        """K of ``official:K``, else None."""
        return _fold_of(self.split)

    def settings(self) -> Dict[str, Any]:
        """What decides the split (part of every fingerprint); the seed only where it is used."""
        out: Dict[str, Any] = {"split": self.split}
        if self.split == "paper":
            out["seed"] = self.seed
        if self.split == "column":
            out["split_column"] = self.split_column
        return out


def _fold_of(split: str) -> Optional[int]:
    if isinstance(split, str) and split.startswith("official:"):
        k = split.split(":", 1)[1]
        if k.isdigit() and 0 <= int(k) < DEEPWEEDS_FOLDS:
            return int(k)
    return None


def parse_source(source: str) -> Tuple[Optional[str], Optional[Path]]:
    """(kind or None when it is to be detected, path or None for the default DeepWeeds dir)."""
    if source == "deepweeds":
        return "deepweeds", None
    for kind in KINDS:
        if source.startswith(kind + ":"):
            return kind, Path(source[len(kind) + 1:]).expanduser()
    return None, Path(source).expanduser()
