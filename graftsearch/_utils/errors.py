"""The error types a user can meet.

Every error caused by the user's input is a :class:`GraftSearchError`; the CLI prints it on one
line and exits 2. Messages name the parameter, what was expected, what was given, and what to do.
"""

from __future__ import annotations

import difflib
from typing import Any, Iterable

__all__ = [
    "GraftSearchError",
    "ParameterError",
    "DonorError",
    "CheckpointError",
    "TapError",
    "SelectionError",
    "DataError",
    "CacheError",
    "FitnessError",
    "SearchError",
    "ExportError",
]


class GraftSearchError(Exception):
    """Base class of every error graftsearch raises for bad input or an impossible request."""

    exit_code = 2


class ParameterError(GraftSearchError, ValueError):
    """A setting has a value outside what it accepts."""


class DonorError(GraftSearchError):
    """A donor cannot be found, built or traced."""


class CheckpointError(DonorError):
    """A checkpoint file cannot be read or does not fit its architecture."""


class TapError(GraftSearchError):
    """A tap list or tap name is not usable."""


class SelectionError(GraftSearchError, ValueError):
    """A selection of taps is not valid for the donor's tap list."""


class DataError(GraftSearchError):
    """A dataset, split or image is missing or not usable."""


class CacheError(GraftSearchError):
    """A feature cache cannot be written or read."""


class FitnessError(GraftSearchError):
    """A fitness function returned something other than a finite performance value."""


class SearchError(GraftSearchError):
    """A search cannot start or continue (bad run directory, mismatched checkpoint, ...)."""


class ExportError(GraftSearchError):
    """A model cannot be exported or loaded back."""


class Described(str):
    """A description of a bad value ("an empty selection") shown without quotes."""

    def __repr__(self) -> str:
        return str(self)


def param_message(name: str, expected: str, got: Any, hint: str | None = None) -> str:
    """Word a parameter error the way scikit-learn does, plus an optional hint."""
    shown = repr(got)
    msg = f"The '{name}' parameter must be {expected}. Got {shown} instead."
    if hint:
        msg += f" {hint}"
    return msg


def close_matches_hint(word: str, choices: Iterable[str], *, n: int = 3) -> str:
    """'Did you mean ...?' for a misspelt name, or '' when nothing is close."""
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    found = difflib.get_close_matches(word.lower(), list(lowered), n=n, cutoff=0.6)
    if not found:
        return ""
    names = ", ".join(f"'{lowered[f]}'" for f in found)
    return f"Did you mean {names}?"
