"""Candidate taps of a donor: which layer outputs can be pooled and grafted, and what each costs.

A tap is the output of one module of the donor's trunk. For a plain chain of layers (VGG) every
convolution, taken after its normalisation and activation, and every pooling layer is a tap;
Keras fuses a convolution with its activation, so this numbering equals the paper's layer indices
(vgg16: 18 taps, 8 = block3_conv2, 9 = block3_conv3, 10 = block3_pool). For networks built of
blocks (ResNet, MobileNet, EfficientNet) each block's output is a tap: cutting inside a residual
block would drop its skip connection.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn

from graftsearch._utils.errors import ParameterError, TapError, close_matches_hint, param_message
from graftsearch.taps._head import HeadSpec
from graftsearch.taps._selection import SelectionLike, as_indices, to_bits
from graftsearch.taps._trace import ScriptedLeaf, build_trunk, count_macs, count_params, meta_clone

BYTES_PER_PARAM = 4
MIB = 2**20


def params_mib(params: int) -> float:
    """MiB of ``params`` float32 parameters."""
    return params * BYTES_PER_PARAM / MIB

_CONV = (nn.Conv2d,)
_NORM = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm,
         nn.LocalResponseNorm)
_ACT = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
        nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Softplus)
_POOL = (nn.MaxPool2d, nn.AvgPool2d, nn.LPPool2d, nn.FractionalMaxPool2d)
# Where the trunk ends: what follows is the donor's classifier.
_TRUNK_END = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten, nn.Linear)


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
        if name not in ("params", "size_mib", "macs"):
            raise ParameterError(param_message("size_metric", "one of 'params', 'size_mib', 'macs'", name))
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


# ---------------------------------------------------------------------------------------------
# discovery


def _is_plain_container(module: nn.Module) -> bool:
    # Subclasses of Sequential (Conv2dNormActivation, torchvision's _Transition) are blocks.
    return type(module) in (nn.Sequential, nn.ModuleList)


def _walk(module: nn.Module, prefix: str, out: List[Tuple[str, nn.Module]]) -> bool:
    """Append trunk units in registration order; return True once the classifier is reached."""
    for name, child in module.named_children():
        full = f"{prefix}{name}"
        if isinstance(child, _TRUNK_END):
            return True
        if _is_plain_container(child):
            if _walk(child, full + ".", out):
                return True
        else:
            out.append((full, child))
    return False


def auto_tap_names(module: nn.Module) -> List[str]:
    """Candidate tap names in registration order, before the forward pass checks them."""
    units: List[Tuple[str, nn.Module]] = []
    _walk(module, "", units)
    names: List[str] = []
    pending: Optional[str] = None
    for name, unit in units:
        is_leaf = next(iter(unit.children()), None) is None or isinstance(unit, ScriptedLeaf)
        if isinstance(unit, ScriptedLeaf):
            kind = getattr(unit.scripted, "original_name", "")
            is_leaf = kind in {c.__name__ for c in _CONV + _NORM + _ACT + _POOL} or not list(unit.scripted.children())
            unit_type = getattr(nn, kind, None)
            probe = unit_type if isinstance(unit_type, type) else None
        else:
            probe = type(unit)
        if is_leaf and probe is not None and issubclass(probe, _CONV):
            if pending:
                names.append(pending)
            pending = name
        elif is_leaf and probe is not None and issubclass(probe, _NORM + _ACT) and pending:
            pending = name  # the tap moves past the conv's normalisation and activation
        elif is_leaf and probe is not None and issubclass(probe, _POOL):
            if pending:
                names.append(pending)
                pending = None
            names.append(name)
        elif is_leaf:
            if pending:
                names.append(pending)
                pending = None
        else:
            if pending:
                names.append(pending)
                pending = None
            names.append(name)
    if pending:
        names.append(pending)
    return names


def _probe(meta: nn.Module, names: Sequence[str], image_size: int):
    """Run a forward on zeros; return (call order, output shapes, error or None)."""
    calls: List[str] = []
    shapes: Dict[str, object] = {}
    handles = []
    modules = dict(meta.named_modules())
    for name in names:
        def hook(_m, _i, out, name=name):
            calls.append(name)
            shapes[name] = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        handles.append(modules[name].register_forward_hook(hook))
    error = None
    try:
        with torch.no_grad():
            meta(torch.zeros(1, 3, image_size, image_size, device=_device_of(meta)))
    except Exception as exc:  # the classifier may not fit this image size; taps may be fine
        error = exc
    finally:
        for h in handles:
            h.remove()
    return calls, shapes, error


def _device_of(module: nn.Module) -> torch.device:
    first = next(iter(module.parameters()), None)
    return first.device if first is not None else torch.device("cpu")


def _complete(names, calls, shapes) -> bool:
    for n in names:
        if n not in shapes:
            return False
        shape = shapes[n]
        if isinstance(shape, tuple) and len(shape) == 4 and (shape[2] < 1 or shape[3] < 1):
            return False
    return True


def _min_image_size(meta: nn.Module, names: Sequence[str], start: int) -> Optional[int]:
    lo, hi = start, start
    while True:
        hi *= 2
        if hi > 4096:
            return None
        calls, shapes, _ = _probe(meta, names, hi)
        if _complete(names, calls, shapes):
            break
        lo = hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        calls, shapes, _ = _probe(meta, names, mid)
        if _complete(names, calls, shapes):
            hi = mid
        else:
            lo = mid
    return hi


def discover_taps(module: nn.Module, image_size: int, *, names: Optional[Sequence[str]] = None,
                  donor_name: str = "donor") -> TapList:
    """Find (or check the given) taps of ``module`` and compute their exact costs at ``image_size``."""
    explicit = names is not None
    hint = f"Use `graftsearch taps --donor {donor_name}` to list the automatic taps."
    modules = dict(module.named_modules())
    if explicit:
        names = list(names)
        if not names:
            raise TapError(param_message("taps", "a non-empty list of module names", names, hint))
        for n in names:
            if n not in modules or n == "":
                near = close_matches_hint(n, [k for k in modules if k])
                raise TapError(param_message("taps", f"names of modules of '{donor_name}'", n,
                                             f"{near} {hint}".strip()))
        if len(set(names)) != len(names):
            raise TapError(param_message("taps", "distinct module names", names))
    else:
        names = auto_tap_names(module)
        if not names:
            raise TapError(f"No candidate taps were found in the donor '{donor_name}'. "
                           "Pass the module names to tap explicitly (`--taps NAME,NAME,...`).")

    # Shapes and MACs come from a forward on the meta device (no memory, no compute), except for
    # TorchScript pieces, which the TorchScript interpreter cannot run on meta tensors.
    scripted = any(isinstance(m, torch.jit.ScriptModule) for m in module.modules())
    meta = module.eval() if scripted else meta_clone(module).eval()
    calls, shapes, error = _probe(meta, names, image_size)

    problems = []
    kept: List[str] = []
    for n in names:
        count = calls.count(n)
        shape = shapes.get(n)
        if count == 0:
            problems.append((n, "is never called before the forward pass ends"))
        elif count > 1:
            problems.append((n, f"is called {count} times in one forward pass (ambiguous)"))
        elif not (isinstance(shape, tuple) and len(shape) == 4):
            problems.append((n, f"returns {shape}, not an (N, C, H, W) feature map"))
        else:
            kept.append(n)
    uncalled = [n for n in names if n not in calls]
    too_small = [n for n in kept if shapes[n][2] < 1 or shapes[n][3] < 1]
    if too_small or (error is not None and uncalled and _looks_like_size_error(error)):
        smallest = _min_image_size(meta, names, image_size)
        need = f"at least {smallest}" if smallest else "larger"
        raise ParameterError(param_message(
            "image_size", f"{need} for the donor '{donor_name}' (its deepest tap has no output at "
            f"{image_size} px)", image_size,
            "Use a larger --image-size, or tap only earlier layers with --taps."))
    if error is not None and uncalled:
        raise TapError(f"The forward pass of '{donor_name}' at {image_size} px failed before "
                       f"reaching the tap '{uncalled[0]}': {type(error).__name__}: "
                       f"{str(error).splitlines()[0] if str(error) else ''}")
    if explicit and problems:
        n, why = problems[0]
        raise TapError(f"The tap '{n}' of '{donor_name}' {why}; a tap must be a module called once "
                       f"whose output is a 4-D feature map. {hint}")
    # forward order, not registration order
    kept.sort(key=calls.index)
    if not kept:
        raise TapError(f"No usable taps were found in the donor '{donor_name}' at {image_size} px. "
                       "Pass the module names to tap explicitly (`--taps NAME,NAME,...`).")

    example = torch.zeros(1, 3, image_size, image_size, device=_device_of(meta))
    taps: List[Tap] = []
    previous: set = set()
    previous_name = None
    for pos, n in enumerate(kept, start=1):
        trunk = build_trunk(meta, [n], donor_name=donor_name)
        param_names = {k for k, _ in trunk.named_parameters()}
        if not previous <= param_names:
            raise TapError(
                f"The tap '{n}' of '{donor_name}' does not depend on the earlier tap "
                f"'{previous_name}': taps must lie on one path through the trunk so that a graft "
                f"keeps a prefix of the donor. Choose taps on the main path (block outputs). {hint}")
        previous, previous_name = param_names, n
        c, h, w = shapes[n][1], shapes[n][2], shapes[n][3]
        taps.append(Tap(index=pos, name=n, channels=int(c), height=int(h), width=int(w),
                        params_upto=count_params(trunk), macs_upto=count_macs(trunk, example)))
    return TapList(taps, donor_name=donor_name, image_size=image_size)


def _looks_like_size_error(error: Exception) -> bool:
    text = str(error).lower()
    return "too small" in text or "output size" in text or "kernel size can't be greater" in text
