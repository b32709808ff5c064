"""Candidate taps of a donor: which layer outputs can be pooled and grafted, and what each costs.

A tap is the output of one module of the donor's trunk. For a plain chain of layers (VGG) every
convolution, taken after its normalisation and activation, and every pooling layer is a tap;
Keras fuses a convolution with its activation, so this numbering equals the paper's layer indices
(vgg16: 18 taps, 8 = block3_conv2, 9 = block3_conv3, 10 = block3_pool). For networks built of
blocks (ResNet, MobileNet, EfficientNet) each block's output is a tap: cutting inside a residual
block would drop its skip connection. A network that names its stages in ``feature_info``
(timm's convention) taps every block of every stage, not only the stage ends that list names.
"""

from __future__ import annotations

import contextlib
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from graftsearch._utils.errors import ParameterError, TapError, close_matches_hint, param_message
from graftsearch._utils.threads import torch_threads
from graftsearch.taps._records import Tap, TapList
from graftsearch.taps._trace import ScriptedLeaf, meta_clone, prefix_costs

_CONV = (nn.Conv2d,)
_NORM = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm,
         nn.LocalResponseNorm)
_ACT = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
        nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Softplus)
_POOL = (nn.MaxPool2d, nn.AvgPool2d, nn.LPPool2d, nn.FractionalMaxPool2d)
# Where the trunk ends: what follows is the donor's classifier.
_TRUNK_END = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten, nn.Linear)


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


def _stage_blocks(stage_name: str, stage: nn.Module) -> List[str]:
    # A stage is a plain chain of blocks (ResNet's layer1), or holds one under ``blocks`` after
    # its downsampling (ConvNeXt); anything else is one block on its own (a stem's last layer).
    if _is_plain_container(stage) and len(stage) > 0:
        return [f"{stage_name}.{n}" for n, _ in stage.named_children()]
    inner = getattr(stage, "blocks", None)
    if isinstance(inner, nn.Module) and _is_plain_container(inner) and len(inner) > 0:
        return [f"{stage_name}.blocks.{n}" for n, _ in inner.named_children()]
    return [stage_name]


def staged_tap_names(module: nn.Module) -> Optional[List[str]]:
    """Every block of every stage, when ``module`` names its stages in ``feature_info`` (timm);
    None otherwise.

    ``feature_info`` lists one module per output stride, so stages that keep the stride
    (MobileNetV3's ``blocks.3``) are missing from it: a listed ``parent.child`` stands for every
    child of ``parent``, which is the model's chain of stages.
    """
    info = getattr(module, "feature_info", None)
    if not isinstance(info, (list, tuple)) or not info:
        return None
    listed = [entry.get("module") for entry in info if isinstance(entry, dict)]
    if not listed or not all(isinstance(n, str) and n for n in listed):
        return None
    modules = dict(module.named_modules())
    stages: List[str] = []
    for name in listed:
        parent = name.rsplit(".", 1)[0] if "." in name else None
        container = modules.get(parent) if parent is not None else None
        if container is not None and _is_plain_container(container):
            candidates = [f"{parent}.{n}" for n, _ in container.named_children()]
        else:
            candidates = [name]
        stages.extend(c for c in candidates if c not in stages and c in modules)
    names: List[str] = []
    for stage in stages:
        names.extend(_stage_blocks(stage, modules[stage]))
    return names or None


def auto_tap_names(module: nn.Module) -> List[str]:
    """Candidate tap names in registration order, before the forward pass checks them."""
    staged = staged_tap_names(module)
    if staged is not None:
        return staged
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


def _probe(module: nn.Module, names: Sequence[str], image_size: int):
    """Run a forward on zeros in eval mode; return (call order, output shapes, error or None)."""
    calls: List[str] = []
    shapes: Dict[str, object] = {}
    handles = []
    modules = dict(module.named_modules())
    for name in names:
        def hook(_m, _i, out, name=name):
            calls.append(name)
            shapes[name] = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        handles.append(modules[name].register_forward_hook(hook))
    error = None
    try:
        with torch.no_grad(), _evaluating(module):
            module(torch.zeros(1, 3, image_size, image_size, device=_device_of(module)))
    except Exception as exc:  # the classifier may not fit this image size; taps may be fine
        error = exc
    finally:
        for h in handles:
            h.remove()
    return calls, shapes, error


@contextlib.contextmanager
def _evaluating(module: nn.Module):
    # A probe in train mode would update batch-norm statistics of the donor; each submodule gets
    # its own mode back (a donor may hold frozen, eval-mode parts).
    modes = [(m, m.training) for m in module.modules()]  # parents before their children
    module.eval()
    try:
        yield module
    finally:
        for m, mode in modes:  # train(), not the flag: a GraphModule swaps its graph there
            m.train(mode)


def _meta_for_probes(module: nn.Module, scripted: bool) -> nn.Module:
    return module if scripted else meta_clone(module)


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

    # One forward on the donor itself (batch 1, eval mode, no gradients) finds the shapes; the
    # costs come from one trace and one flop-counted forward (``prefix_costs``). Probes at other
    # sizes, only needed to word an error, run on a meta copy (no memory, no compute), except for
    # TorchScript pieces, which the TorchScript interpreter cannot run on meta tensors.
    # One torch thread: a batch of one gains nothing from more, and on a busy machine two
    # threads waiting on each other made the first forward of a process 10x slower (measured).
    scripted = any(isinstance(m, torch.jit.ScriptModule) for m in module.modules())
    with torch_threads(1):
        calls, shapes, error = _probe(module, names, image_size)

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
        meta = _meta_for_probes(module, scripted)
        smallest = _min_image_size(meta, names, image_size)
        need = f"at least {smallest}" if smallest else "larger"
        raise ParameterError(param_message(
            "image_size", f"{need} for the donor '{donor_name}' (its deepest tap has no output at "
            f"{image_size} px)", image_size,
            "Use a larger --image-size, or tap only earlier layers with --taps."))
    factor = _collapsed_factor(lambda: _meta_for_probes(module, scripted), kept, shapes, image_size)
    if factor:
        raise ParameterError(param_message(
            "image_size", f"at least {factor} for the donor '{donor_name}' (it downsamples "
            f"{factor}x before its deepest tap, which at {image_size} px sees 1 px of mostly "
            "padding)", image_size, "Use a larger --image-size, or tap only earlier layers with "
            "--taps."))
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
        why = (f" (the candidate '{problems[0][0]}' {problems[0][1]}; graftsearch taps "
               "convolutional feature maps)") if problems else ""
        raise TapError(f"No usable taps were found in the donor '{donor_name}' at {image_size} "
                       f"px{why}. Pass the module names to tap explicitly (`--taps NAME,NAME,...`).")

    example = torch.zeros(1, 3, image_size, image_size, device=_device_of(module))
    with _evaluating(module), torch_threads(1):
        costs = prefix_costs(module, kept, example, donor_name=donor_name)
    taps: List[Tap] = []
    previous: frozenset = frozenset()
    previous_name = None
    for pos, (n, (param_ids, params, macs)) in enumerate(zip(kept, costs), start=1):
        if not previous <= param_ids:
            raise TapError(
                f"The tap '{n}' of '{donor_name}' does not depend on the earlier tap "
                f"'{previous_name}': taps must lie on one path through the trunk so that a graft "
                f"keeps a prefix of the donor. Choose taps on the main path (block outputs). {hint}")
        previous, previous_name = param_ids, n
        c, h, w = shapes[n][1], shapes[n][2], shapes[n][3]
        taps.append(Tap(index=pos, name=n, channels=int(c), height=int(h), width=int(w),
                        params_upto=params, macs_upto=macs))
    return TapList(taps, donor_name=donor_name, image_size=image_size)


def _collapsed_factor(make_meta, kept: Sequence[str], shapes,
                      image_size: int) -> Optional[int]:
    """The downsampling factor of the deepest tap when ``image_size`` is below it, else None.

    Padded convolutions never shrink a map below 1 px, so such a donor runs at any size, but
    under its factor (EfficientNet-Lite0: 32) its deep taps are 1 px made mostly of padding and a
    search on them finds nothing feasible only after minutes. A tap that is still 1 px at a
    large input is pooled to that size on purpose and says nothing about the factor.
    """
    ones = [n for n in kept if min(shapes[n][2], shapes[n][3]) == 1]
    if not ones:
        return None
    reference = max(512, 8 * image_size)
    _, large, _ = _probe(make_meta(), ones, reference)
    sides = [min(large[n][2], large[n][3]) for n in ones
             if isinstance(large.get(n), tuple) and len(large[n]) == 4]
    factors = [round(reference / side) for side in sides if side > 1]
    factor = max(factors, default=0)
    return factor if image_size < factor else None


def _looks_like_size_error(error: Exception) -> bool:
    text = str(error).lower()
    return "too small" in text or "output size" in text or "kernel size can't be greater" in text
