"""Taps as records: :class:`Tap`, :class:`TapList` and the exact :class:`Cost` of a selection, in
float32 parameters and MiB."""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass
from typing import Iterator, List, Sequence, Tuple

from graftsearch._utils.errors import ParameterError, TapError, close_matches_hint, param_message
from graftsearch.taps._head import HeadSpec
from graftsearch.taps._selection import SelectionLike, as_indices, to_bits

BYTES_PER_PARAM = 4
MIB = 2**20
# What "size" can mean: float32 parameters, MiB at 4 bytes per parameter, multiply-accumulates.
SIZE_METRICS = ("params", "size_mib", "macs")


def params_mib(params: int) -> float:
    """MiB of ``params`` float32 parameters."""
    return params * BYTES_PER_PARAM / MIB


@dataclass(frozen=True)
class Tap:
    """One candidate graft point of a donor.

    ``index`` is 1-based in forward order; ``name`` is the module path (``named_modules()``)
    whose output is tapped; ``params_upto`` and ``macs_upto`` are the parameters and
    multiply-accumulates of the donor prefix needed to compute this tap (and every earlier one)
    at the tap list's image size.
    """

    index: int
    name: str
    channels: int
    height: int
    width: int
    params_upto: int
    macs_upto: int

    @property
    def spatial(self) -> Tuple[int, int]:
        return (self.height, self.width)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Cost:
    """Exact size of a grafted model: parameters, MiB at 4 bytes per parameter, and MACs."""

    params: int
    size_mib: float
    macs: int

    @classmethod
    def from_params(cls, params: int, macs: int) -> "Cost":
        return cls(params=params, size_mib=params_mib(params), macs=macs)

    def metric(self, name: str) -> float:
        if name not in SIZE_METRICS:
            raise ParameterError(param_message(
                "size_metric", "one of " + ", ".join(f"'{m}'" for m in SIZE_METRICS), name))
        return getattr(self, name)


class TapList(Sequence[Tap]):
    """The ordered candidate taps of a donor at one image size.

    Behaves as a read-only sequence (0-based positions, like a list); use :meth:`tap` for the
    1-based tap index of DESIGN.md and the CSV files.
    """

    def __init__(self, taps: Sequence[Tap], *, donor_name: str, image_size: int):
        taps = tuple(taps)
        for pos, tap in enumerate(taps, start=1):
            if tap.index != pos:
                raise TapError(f"Tap '{tap.name}' has index {tap.index}; expected {pos}.")
        if not taps:
            raise TapError(f"The donor '{donor_name}' has no candidate taps.")
        self._taps = taps
        self.donor_name = donor_name
        self.image_size = image_size

    # sequence protocol
    def __len__(self) -> int:
        return len(self._taps)

    def __getitem__(self, pos):  # type: ignore[override]
        return self._taps[pos]

    def __iter__(self) -> Iterator[Tap]:
        return iter(self._taps)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, TapList) and self._taps == other._taps
                and self.image_size == other.image_size)

    def __hash__(self) -> int:
        return hash((self._taps, self.image_size))

    def __repr__(self) -> str:
        return f"TapList(donor={self.donor_name!r}, image_size={self.image_size}, taps={len(self)})"

    # accessors
    def tap(self, index: int) -> Tap:
        """The tap with 1-based ``index``."""
        if isinstance(index, bool) or not isinstance(index, int) or not 1 <= index <= len(self):
            raise TapError(param_message("index", f"a tap index in 1..{len(self)}", index,
                                         self._hint()))
        return self._taps[index - 1]

    @property
    def names(self) -> Tuple[str, ...]:
        return tuple(t.name for t in self._taps)

    @property
    def channels(self) -> Tuple[int, ...]:
        return tuple(t.channels for t in self._taps)

    @property
    def indices(self) -> Tuple[int, ...]:
        return tuple(t.index for t in self._taps)

    def index_of(self, name: str) -> int:
        for t in self._taps:
            if t.name == name:
                return t.index
        raise TapError(f"'{name}' is not a tap of '{self.donor_name}'. "
                       f"{close_matches_hint(name, self.names)} {self._hint()}".replace("  ", " "))

    def _hint(self) -> str:
        return f"Use `graftsearch taps --donor {self.donor_name}` to list them."

    def normalize(self, selection: SelectionLike) -> Tuple[int, ...]:
        """Sorted 1-based tap indices of ``selection`` (bits, indices or booleans); validated."""
        return as_indices(selection, len(self), hint=self._hint())

    def select(self, selection: SelectionLike) -> Tuple[Tap, ...]:
        return tuple(self._taps[i - 1] for i in self.normalize(selection))

    def bits(self, selection: SelectionLike) -> str:
        return to_bits(self.normalize(selection), len(self))

    def feature_dim(self, selection: SelectionLike) -> int:
        return sum(t.channels for t in self.select(selection))

    def cost(self, selection: SelectionLike, head: HeadSpec) -> Cost:
        """Exact params / MiB / MACs of the grafted model for ``selection``, in O(taps)."""
        chosen = self.select(selection)
        deepest = chosen[-1]
        d = sum(t.channels for t in chosen)
        return Cost.from_params(deepest.params_upto + head.params(d), deepest.macs_upto + head.macs(d))

    # tables
    def to_records(self) -> List[dict]:
        return [t.as_dict() for t in self._taps]

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(self.to_records(), columns=list(Tap.__dataclass_fields__))

    def to_csv(self, path=None) -> str:
        """The taps as CSV text (written to ``path`` atomically when given)."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(Tap.__dataclass_fields__), lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.to_records())
        text = buf.getvalue()
        if path is not None:
            from graftsearch._utils.atomic import write_text

            write_text(path, text)
        return text

    @classmethod
    def from_records(cls, records: Sequence[dict], *, donor_name: str, image_size: int) -> "TapList":
        fields = Tap.__dataclass_fields__
        taps = [Tap(**{k: (str(r[k]) if k == "name" else int(r[k])) for k in fields}) for r in records]
        return cls(taps, donor_name=donor_name, image_size=image_size)
