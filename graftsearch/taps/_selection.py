"""Selections of taps: the chromosome ``s`` of the paper as bits, or as sorted 1-based indices."""

from __future__ import annotations

from typing import Iterable, Sequence, Tuple, Union

from graftsearch._utils.errors import Described, SelectionError, param_message

SelectionLike = Union[str, Sequence[int], Sequence[bool], Iterable[int]]


def as_indices(selection: SelectionLike, n_taps: int, *, hint: str | None = None) -> Tuple[int, ...]:
    """Sorted 1-based tap indices of ``selection``.

    Accepts a bit string (``"0000000111..."``, one character per tap), a sequence of booleans
    (one per tap), a string of indices (``"8;9;10"`` or ``"8,9,10"``) or an iterable of ints
    (1-based tap indices). Duplicates, out-of-range indices and empty selections are errors.
    """
    hint = hint or ""
    if isinstance(selection, str):
        text = selection.strip()
        if text and set(text) <= {"0", "1"} and len(text) == n_taps and not ("," in text or ";" in text):
            return from_bits(text, n_taps, hint=hint)
        parts = [p for p in text.replace(",", ";").split(";") if p.strip()]
        try:
            indices = [int(p) for p in parts]
        except ValueError:
            raise SelectionError(param_message(
                "selection", f"a bit string of length {n_taps} or tap indices like '8;9;10'",
                selection, hint)) from None
    else:
        items = list(selection)
        if items and all(isinstance(v, bool) for v in items):
            if len(items) != n_taps:
                raise SelectionError(param_message(
                    "selection", f"one boolean per tap ({n_taps})", Described(f"{len(items)} booleans"), hint))
            return tuple(i + 1 for i, v in enumerate(items) if v)
        indices = []
        for v in items:
            if isinstance(v, bool) or not isinstance(v, int) and not hasattr(v, "__index__"):
                raise SelectionError(param_message("selection", "1-based tap indices (integers)",
                                                   selection, hint))
            indices.append(int(v))
    if not indices:
        raise SelectionError(param_message("selection", "at least one tap", Described("an empty selection"), hint))
    bad = [i for i in indices if not 1 <= i <= n_taps]
    if bad:
        raise SelectionError(param_message("selection", f"tap indices in 1..{n_taps}",
                                           bad[0] if len(bad) == 1 else bad, hint))
    if len(set(indices)) != len(indices):
        dups = sorted({i for i in indices if indices.count(i) > 1})
        raise SelectionError(param_message("selection", "distinct tap indices",
                                           Described(f"duplicates {dups}"), hint))
    return tuple(sorted(indices))


def from_bits(bits: str, n_taps: int, *, hint: str | None = None) -> Tuple[int, ...]:
    if len(bits) != n_taps or not set(bits) <= {"0", "1"}:
        raise SelectionError(param_message("selection", f"a 0/1 string of length {n_taps}", bits, hint))
    indices = tuple(i + 1 for i, c in enumerate(bits) if c == "1")
    if not indices:
        raise SelectionError(param_message("selection", "at least one tap", Described("an empty selection"), hint))
    return indices


def to_bits(indices: Iterable[int], n_taps: int) -> str:
    chosen = set(indices)
    return "".join("1" if i in chosen else "0" for i in range(1, n_taps + 1))


def taps_string(indices: Iterable[int]) -> str:
    """The ``taps`` CSV column: ';'-joined indices."""
    return ";".join(str(i) for i in indices)
