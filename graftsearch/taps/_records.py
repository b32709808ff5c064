"""Taps as records: :class:`Tap`, :class:`TapList` and the exact :class:`Cost` of a selection, in
float32 parameters, MiB, MACs and (once measured, :meth:`TapList.with_int8_sizes`) int8 MiB."""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

from graftsearch._utils.errors import ParameterError, TapError, close_matches_hint, param_message
from graftsearch.taps._head import HeadSpec
from graftsearch.taps._selection import SelectionLike, as_indices, to_bits

BYTES_PER_PARAM = 4
MIB = 2**20
# What "size" can mean: float32 parameters, MiB at 4 bytes per parameter, multiply-accumulates,
# and the MiB of the int8 copy's tensors (graftsearch.taps._int8).
SIZE_METRICS = ("params", "size_mib", "macs", "int8_mib")
INT8_HINT = ("Measure them with `taps.with_int8_sizes(donor.module)` (`graftsearch run` does "
             "when --size-metric int8_mib).")


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
    """Exact size of a grafted model: parameters, MiB at 4 bytes per parameter, MACs, and the
    MiB of its int8 copy's tensors (None when the tap list has no int8 sizes)."""

    params: int
    size_mib: float
    macs: int
    int8_mib: Optional[float] = None

    @classmethod
    def from_params(cls, params: int, macs: int, int8_bytes: Optional[int] = None) -> "Cost":
        return cls(params=params, size_mib=params_mib(params), macs=macs,
                   int8_mib=None if int8_bytes is None else int8_bytes / MIB)

    def metric(self, name: str) -> float:
        if name not in SIZE_METRICS:
            raise ParameterError(param_message(
                "size_metric", "one of " + ", ".join(f"'{m}'" for m in SIZE_METRICS), name))
        value = getattr(self, name)
        if value is None:
            raise ParameterError("size_metric='int8_mib' needs the int8 sizes of the taps, and "
                                 f"this tap list has none. {INT8_HINT}")
        return value


class TapList(Sequence[Tap]):
    """The ordered candidate taps of a donor at one image size.

    Behaves as a read-only sequence (0-based positions, like a list); use :meth:`tap` for the
    1-based tap index of DESIGN.md and the CSV files.
    """

    def __init__(self, taps: Sequence[Tap], *, donor_name: str, image_size: int,
                 int8_bytes_upto: Optional[Sequence[int]] = None, int8_per_channel: bool = True):
        taps = tuple(taps)
        for pos, tap in enumerate(taps, start=1):
            if tap.index != pos:
                raise TapError(f"Tap '{tap.name}' has index {tap.index}; expected {pos}.")
        if not taps:
            raise TapError(f"The donor '{donor_name}' has no candidate taps.")
        if int8_bytes_upto is not None:
            int8_bytes_upto = tuple(int(b) for b in int8_bytes_upto)
            if len(int8_bytes_upto) != len(taps) or any(
                    b < 0 for b in int8_bytes_upto) or list(int8_bytes_upto) != sorted(int8_bytes_upto):
                raise TapError(param_message("int8_bytes_upto", f"{len(taps)} non-decreasing "
                                             "byte counts, one per tap", int8_bytes_upto))
        self._taps = taps
        self.donor_name = donor_name
        self.image_size = image_size
        #: Bytes of the int8 donor prefix up to each tap (None: not measured); see
        #: :meth:`with_int8_sizes`.
        self.int8_bytes_upto: Optional[Tuple[int, ...]] = int8_bytes_upto
        #: Whether the int8 weights carry one scale per output channel (the engine's scheme).
        self.int8_per_channel = bool(int8_per_channel)

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
        """Exact params / MiB / MACs (and int8 MiB, when measured) of the grafted model for
        ``selection``, in O(taps)."""
        chosen = self.select(selection)
        deepest = chosen[-1]
        d = sum(t.channels for t in chosen)
        int8 = (None if self.int8_bytes_upto is None
                else self.int8_bytes_upto[deepest.index - 1]
                + head.int8_bytes(d, per_channel=self.int8_per_channel))
        return Cost.from_params(deepest.params_upto + head.params(d),
                                deepest.macs_upto + head.macs(d), int8)

    def with_int8_sizes(self, module, *, engine: Optional[str] = None) -> "TapList":
        """This tap list with the int8 size of every donor prefix measured on ``module`` (the
        donor these taps belong to), so that :meth:`cost` gives ``int8_mib``: the MiB of the
        tensors of the graft's int8 copy as ``graft.quantize_int8`` builds it with every layer
        in int8 (about a second for EfficientNet-Lite0). ``engine``: the int8 engine whose
        weight scheme to count (default: this machine's first)."""
        from graftsearch.taps._int8 import int8_tap_bytes, quantization_engine, weights_per_channel

        engine = engine or quantization_engine()
        found = int8_tap_bytes(module, self.names, self.image_size, engine=engine,
                               donor_name=self.donor_name)
        return TapList(self._taps, donor_name=self.donor_name, image_size=self.image_size,
                       int8_bytes_upto=found, int8_per_channel=weights_per_channel(engine))

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
