"""Donor checkpoints: reading any supported file (a state dict, as torch.save or .safetensors, a
graftsearch donor checkpoint, a TorchScript archive, a trusted pickled model), writing graftsearch donor checkpoints, and
rebuilding TorchScript classifiers so that their trunk can be tapped.

Building the architecture a state dict belongs to is the zoo's part (:func:`load_donor`).
"""

from __future__ import annotations

import pickle
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from graftsearch._utils.errors import CheckpointError, param_message
from graftsearch.donors._donor import Donor
from graftsearch.taps._trace import ScriptedLeaf

CHECKPOINT_FORMAT = "graftsearch-donor"


def is_torchscript(path) -> bool:
    """Whether ``path`` is a TorchScript archive (``torch.jit.save``), not a ``torch.save`` file."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in zf.namelist())


def jit_load(path, **kwargs: Any) -> torch.jit.ScriptModule:
    """``torch.jit.load`` without torch's deprecation notice of TorchScript: graftsearch reads
    TorchScript on purpose (it is what a graft deploys as), so the notice would only tell
    users of ``predict`` and of TorchScript donors about a choice that is not theirs."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.load` is", category=FutureWarning)
        return torch.jit.load(str(path), **kwargs)


@dataclass(frozen=True)
class CheckpointContents:
    """What a checkpoint file holds: a whole model (``module``), or a dictionary (``mapping``,
    a state dict, possibly wrapped) with what a graftsearch donor checkpoint says about it
    (``meta``: name, classes, preprocessing)."""

    module: Optional[nn.Module] = None
    mapping: Optional[Mapping[str, Any]] = None
    meta: Dict[str, Any] = field(default_factory=dict)


def read_checkpoint(path, *, trust: bool = False) -> CheckpointContents:
    """Read ``path``; a pickled whole model only with ``trust`` (unpickling can run code)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(param_message("checkpoint", "an existing file", str(path)))
    obj = _read(path, trust)
    if isinstance(obj, torch.jit.ScriptModule):
        return CheckpointContents(module=rebuild_scripted(obj, str(path)))
    if isinstance(obj, nn.Module):
        return CheckpointContents(module=obj)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"The checkpoint '{path}' holds a {type(obj).__name__}; expected a "
                              "state dict, a graftsearch donor checkpoint, a whole model or "
                              "TorchScript.")
    meta = dict(obj.get("meta", {})) if obj.get("format") == CHECKPOINT_FORMAT else {}
    return CheckpointContents(mapping=obj, meta=meta)


def _read_safetensors(path: Path) -> Dict[str, torch.Tensor]:
    try:
        from safetensors.torch import load_file
    except ImportError as exc:
        raise CheckpointError(f"The checkpoint '{path}' is a .safetensors file, which needs the "
                              "package safetensors. Install it with "
                              '`pip install "graftsearch[timm]"` (or `pip install safetensors`).'
                              ) from exc
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:
        raise CheckpointError(f"The checkpoint '{path}' cannot be read as safetensors: "
                              f"{type(exc).__name__}: {exc}") from exc


def _read(path: Path, trust: bool) -> Any:
    # safetensors holds tensors only (no pickle), so it needs no trust
    if path.suffix.lower() == ".safetensors":
        return _read_safetensors(path)
    if is_torchscript(path):
        try:
            return jit_load(path, map_location="cpu")
        except Exception as exc:
            raise CheckpointError(f"The checkpoint '{path}' looks like TorchScript but cannot be "
                                  f"loaded: {exc}") from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not trust:
            raise CheckpointError(
                f"The checkpoint '{path}' holds a pickled Python object (such as a whole "
                "nn.Module), and unpickling can run arbitrary code. Load it only if you trust "
                "where it came from: pass trust_checkpoint=True (`--trust-checkpoint`). Otherwise "
                "save its state dict (torch.save(model.state_dict(), ...)) and load that with "
                "`--donor ARCH --donor-checkpoint FILE`.") from exc
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc2:
            raise CheckpointError(f"The checkpoint '{path}' cannot be loaded: {exc2}") from exc2
    except Exception as exc:
        raise CheckpointError(f"The checkpoint '{path}' cannot be read by torch.load: "
                              f"{type(exc).__name__}: {exc}") from exc


def unwrap_state(obj: Mapping) -> Dict[str, torch.Tensor]:
    """The state dict in ``obj``: itself, or under 'state_dict', 'model', ...; DataParallel's
    'module.' prefix removed."""
    for key in ("state_dict", "model_state_dict", "model", "net"):
        inner = obj.get(key) if isinstance(obj, Mapping) else None
        if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            obj = inner
            break
    if not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError("The checkpoint is a dictionary but not a state dict (name -> "
                              "tensor), nor one wrapped under 'state_dict' or 'model'.")
    prefix = "module."
    if all(k.startswith(prefix) for k in obj):  # saved from DataParallel
        obj = {k[len(prefix):]: v for k, v in obj.items()}
    return dict(obj)


def load_state_checked(model: nn.Module, state: Mapping[str, torch.Tensor], *, path: str,
                       arch: str) -> None:
    """Load ``state`` into ``model``; on any mismatch say which keys and shapes do not fit."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [(k, tuple(state[k].shape), tuple(own[k].shape)) for k in own
              if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            k, got, want = shapes[0]
            parts.append(f"{len(shapes)} tensor(s) have other shapes, first '{k}': checkpoint "
                         f"{got}, '{arch}' needs {want}")
        if missing:
            parts.append(f"{len(missing)} key(s) missing, first {missing[:3]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s), first {unexpected[:3]}")
        hint = "Check --donor (the architecture) and --classes (its number of outputs)."
        last = [v for k, v in state.items() if v.ndim == 2]
        if last:
            hint += f" The checkpoint's last 2-D tensor has {last[-1].shape[0]} rows."
        raise CheckpointError(f"The checkpoint '{path}' does not fit the architecture '{arch}': "
                              + "; ".join(parts) + ". " + hint)
    model.load_state_dict(state)


def save_donor_checkpoint(donor: Donor, path, *, class_names: Optional[Sequence[str]] = None,
                          extra: Optional[Mapping[str, Any]] = None) -> None:
    """Save ``donor`` as a state dict with its name, classes and preprocessing (weights-only safe)."""
    from graftsearch._utils.atomic import atomic_path

    meta = {"name": donor.name, "image_size": donor.image_size,
            "mean": list(donor.preprocessing.mean), "std": list(donor.preprocessing.std),
            "class_names": list(class_names or donor.class_names or []) or None,
            "num_classes": donor.spec.num_classes}
    meta.update(extra or {})
    with atomic_path(path) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, "meta": meta,
                    "state_dict": donor.module.state_dict()}, tmp)


# ---------------------------------------------------------------------------------------------
# TorchScript donors


class _ScriptedDonor(nn.Module):
    """A TorchScript model rebuilt as Python containers around its scripted layers, so that
    hooks and torch.fx can see the trunk. The forward runs the trunk, then the rest in order."""

    def __init__(self, trunk: List[Tuple[str, nn.Module]], tail: List[Tuple[str, nn.Module]]):
        super().__init__()
        for name, mod in trunk + tail:
            self.add_module(name, mod)
        self._trunk = [n for n, _ in trunk]
        self._tail = [n for n, _ in tail]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in self._trunk:
            x = getattr(self, name)(x)
        for name in self._tail:
            mod = getattr(self, name)
            if _original(mod) not in ("AdaptiveAvgPool2d", "AdaptiveMaxPool2d"):
                x = torch.flatten(x, 1)  # the glue a classifier's forward puts before its Linear
            x = mod(x)
        return x


def _original(mod: nn.Module) -> str:
    target = mod.scripted if isinstance(mod, ScriptedLeaf) else mod
    return getattr(target, "original_name", type(target).__name__)


def _wrap(scripted: nn.Module) -> nn.Module:
    if getattr(scripted, "original_name", "") == "Sequential":
        return nn.Sequential(*[_wrap(c) for c in scripted.children()])
    return ScriptedLeaf(scripted)


def rebuild_scripted(scripted: torch.jit.ScriptModule, path: str) -> nn.Module:
    """Rebuild a TorchScript classifier as a chain of its children and check it matches."""
    children = list(scripted.named_children())
    if getattr(scripted, "original_name", "") == "Sequential":
        rebuilt: nn.Module = _wrap(scripted)
    else:
        trunk, tail = [], []
        for name, child in children:
            kind = getattr(child, "original_name", "")
            if tail or kind in ("AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "Flatten", "Linear"):
                tail.append((name, _wrap(child)))
            else:
                trunk.append((name, _wrap(child)))
        rebuilt = _ScriptedDonor(trunk, tail)
    rebuilt.eval()
    scripted.eval()
    ok = False
    for size in (224, 128, 64, 32):
        x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
        try:
            with torch.no_grad():
                want = scripted(x)
        except Exception:
            continue  # the original may accept only one input size
        try:
            with torch.no_grad():
                ok = torch.allclose(rebuilt(x), want, atol=1e-4, rtol=1e-4)
        except Exception:
            ok = False
        break
    if not ok:
        raise CheckpointError(
            f"The TorchScript donor '{path}' does not run its children in order, so graftsearch "
            "cannot tap it. Save its state dict and load that with `--donor ARCH "
            "--donor-checkpoint FILE`, or pass a trusted whole model.")
    return rebuilt
