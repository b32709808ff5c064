"""Donors: a pretrained network plus what graftsearch needs to know about it.

A donor is loaded by torchvision name (optionally with a weights name), as the offline
EfficientNet-Lite0, as the paper's VGG16 donor, or from a checkpoint file (a state dict for a
named architecture, a graftsearch donor checkpoint, a TorchScript file or, when trusted, a
pickled model).
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from graftsearch._utils.errors import (CheckpointError, DonorError, ParameterError, close_matches_hint,
                      param_message)
from graftsearch.donors._preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing, check_image_size
from graftsearch.taps._records import TapList, discover_taps
from graftsearch.taps._trace import ScriptedLeaf

logger = logging.getLogger("graftsearch")

PAPER_DONOR = "paper_vgg16"
LITE0 = "efficientnet_lite0"
CHECKPOINT_FORMAT = "graftsearch-donor"
_LITE0_WEIGHTS = ("IMAGENET", "IMAGENET1K", "IMAGENET1K_V1", "DEFAULT")


def torchvision_names() -> List[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def donor_names() -> List[str]:
    """Every donor name :func:`load_donor` accepts."""
    return sorted(set(torchvision_names()) | {LITE0, PAPER_DONOR})


@dataclass(frozen=True, kw_only=True)
class DonorSpec:
    """How to obtain a donor; everything needed to load it again.

    ``name`` is a torchvision classification model (``vgg16``, ``resnet18``, ...),
    ``efficientnet_lite0`` or ``paper_vgg16``; it may be None when ``checkpoint`` holds a whole
    model. ``weights`` is a weights name of that architecture (``IMAGENET1K_V1``, ``DEFAULT``).
    ``checkpoint`` is a file to load instead of (or, for the paper donor's trunk, after) weights.
    A pickled whole model can run arbitrary code when loaded, so it loads only with
    ``trust_checkpoint=True``. ``taps`` lists module names to tap instead of the automatic taps;
    ``image_size``, ``mean`` and ``std`` override the donor's own preprocessing.
    """

    name: Optional[str] = "vgg16"
    weights: Optional[str] = None
    checkpoint: Optional[str] = None
    num_classes: Optional[int] = None
    trust_checkpoint: bool = False
    taps: Optional[Tuple[str, ...]] = None
    image_size: Optional[int] = None
    mean: Optional[Tuple[float, float, float]] = None
    std: Optional[Tuple[float, float, float]] = None

    def __post_init__(self) -> None:
        if self.name is None and self.checkpoint is None:
            raise ParameterError(param_message("donor", "a donor name or a checkpoint file", None,
                                               "Use `--donor vgg16` or `--donor-checkpoint FILE`."))
        if self.name is not None and not isinstance(self.name, str):
            raise ParameterError(param_message("donor", "a donor name (str)", self.name))
        if self.num_classes is not None and (isinstance(self.num_classes, bool)
                                             or not isinstance(self.num_classes, int)
                                             or self.num_classes < 2):
            raise ParameterError(param_message("num_classes", "an integer >= 2", self.num_classes))
        if self.image_size is not None:
            check_image_size(self.image_size)
        if self.checkpoint is not None:
            object.__setattr__(self, "checkpoint", str(self.checkpoint))
        if self.taps is not None:
            taps = (self.taps.split(",") if isinstance(self.taps, str) else list(self.taps))
            object.__setattr__(self, "taps", tuple(str(t).strip() for t in taps if str(t).strip()))
        for key in ("mean", "std"):
            value = getattr(self, key)
            if value is not None:
                object.__setattr__(self, key, tuple(float(v) for v in value))

    def as_dict(self) -> dict:
        d = asdict(self)
        for key in ("taps", "mean", "std"):
            if d[key] is not None:
                d[key] = list(d[key])
        return d


class Donor:
    """A donor network and its preprocessing.

    ``module`` is the full network (trunk and classifier) in eval mode; ``spec`` says how it was
    loaded; ``class_names`` are the names of its classifier's outputs when known (ImageNet
    categories for ImageNet weights).
    """

    def __init__(self, module: nn.Module, *, name: str, spec: DonorSpec, image_size: int,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 class_names: Optional[Sequence[str]] = None):
        self.module = module.eval()
        self.name = name
        self.spec = spec
        self.preprocessing = Preprocessing(image_size=image_size, mean=tuple(mean), std=tuple(std))
        self.class_names = list(class_names) if class_names is not None else None
        self._taps: Dict[int, TapList] = {}
        self._fingerprint: Optional[str] = None

    @classmethod
    def from_module(cls, module: nn.Module, *, name: str = "custom", image_size: int = 224,
                    mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                    taps: Optional[Sequence[str]] = None,
                    class_names: Optional[Sequence[str]] = None) -> "Donor":
        """Wrap any in-memory ``nn.Module`` as a donor (taps found automatically unless given)."""
        if not isinstance(module, nn.Module):
            raise ParameterError(param_message("module", "a torch.nn.Module", type(module).__name__))
        spec = DonorSpec(name=name, taps=tuple(taps) if taps is not None else None,
                         image_size=image_size, mean=tuple(mean), std=tuple(std))
        return cls(module, name=name, spec=spec, image_size=image_size, mean=mean, std=std,
                   class_names=class_names)

    @property
    def image_size(self) -> int:
        return self.preprocessing.image_size

    def taps(self, image_size: Optional[int] = None) -> TapList:
        """The candidate taps with their exact costs at ``image_size`` (default: the donor's)."""
        size = check_image_size(image_size if image_size is not None else self.image_size)
        if size not in self._taps:
            self._taps[size] = discover_taps(self.module, size, names=self.spec.taps,
                                             donor_name=self.name)
        return self._taps[size]

    def fingerprint(self) -> str:
        """SHA-256 over the donor's name and every tensor of its state dict, in order."""
        if self._fingerprint is None:
            h = hashlib.sha256(self.name.encode())
            for key, tensor in self.module.state_dict().items():
                t = tensor.detach().cpu().contiguous()
                h.update(key.encode())
                h.update(str(tuple(t.shape)).encode() + str(t.dtype).encode())
                h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def __repr__(self) -> str:
        return f"Donor({self.name!r}, image_size={self.image_size})"


class PaperDonor(nn.Module):
    """The paper's donor: VGG16 trunk + Flatten + Dense 256 + LeakyReLU + Dropout + Dense 256 +
    LeakyReLU + Dropout + Dense(classes), built for one input size."""

    def __init__(self, num_classes: int = 9, image_size: int = 128, dropout: float = 0.5,
                 features: Optional[nn.Module] = None):
        super().__init__()
        import torchvision

        if image_size < 32:
            raise ParameterError(param_message("image_size", "at least 32 for the paper's VGG16 donor",
                                               image_size))
        self.features = features if features is not None else torchvision.models.vgg16().features
        side = image_size // 32
        self.flatten = nn.Flatten()
        # Keras' LeakyReLU default slope is 0.3; the paper used Keras.
        self.classifier = nn.Sequential(
            nn.Linear(512 * side * side, 256), nn.LeakyReLU(0.3), nn.Dropout(dropout),
            nn.Linear(256, 256), nn.LeakyReLU(0.3), nn.Dropout(dropout),
            nn.Linear(256, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.features(x)))


# ---------------------------------------------------------------------------------------------
# loading


def load_donor(spec: Union[DonorSpec, str, None] = None, /, *, progress: bool = True,
               load_weights: bool = True, **kwargs: Any) -> Donor:
    """Load a donor.

    ``load_donor("vgg16", weights="IMAGENET1K_V1")``, ``load_donor("efficientnet_lite0",
    weights="IMAGENET")``, ``load_donor("paper_vgg16", num_classes=9, image_size=128)``,
    ``load_donor("resnet18", checkpoint="ft.pt", num_classes=9)``,
    ``load_donor(checkpoint="model.torchscript.pt")`` or ``load_donor(DonorSpec(...))``.

    Without weights, layers are initialised from a fixed seed, so the same spec gives the same
    donor every time. ``load_weights=False`` builds the architecture and checks the weights name without reading or
    downloading the weights: enough for taps and costs, which do not depend on weight values.
    """
    if isinstance(spec, DonorSpec):
        if kwargs:
            raise ParameterError(param_message("kwargs", "empty when a DonorSpec is given", kwargs))
    elif spec is None and "checkpoint" in kwargs and "name" not in kwargs:
        spec = DonorSpec(name=None, **kwargs)
    else:
        spec = DonorSpec(name=spec if spec is not None else kwargs.pop("name", "vgg16"), **kwargs)

    # Layers without loaded weights get the same "random" values on every load (seed 0, on a
    # forked generator so the caller's RNG is untouched): a donor without weights is then the
    # same donor in every process, and its feature cache and resumed runs stay valid.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if spec.checkpoint is not None:
            donor = _from_checkpoint(spec)
        elif spec.name == PAPER_DONOR:
            donor = _paper(spec, None, progress, load_weights=load_weights)
        elif spec.name == LITE0:
            donor = _lite0(spec, load_weights=load_weights)
        else:
            donor = _torchvision(spec, progress, load_weights=load_weights)
    return donor


def _check_name(name: str) -> None:
    if name not in donor_names():
        raise DonorError(param_message(
            "donor", "a torchvision classification model, 'efficientnet_lite0' or 'paper_vgg16'",
            name, (close_matches_hint(name, donor_names()) + " Use `graftsearch taps --list` to "
                   "see every name, or load a checkpoint with `--donor-checkpoint FILE`.").strip()))


def _weights_enum(name: str, weights: str):
    import torchvision

    enum = torchvision.models.get_model_weights(name)
    key = weights.split(".", 1)[1] if weights.startswith(enum.__name__ + ".") else weights
    available = [w.name for w in enum] + ["DEFAULT"]
    if key not in available:
        raise DonorError(param_message(
            "weights", f"a weights name of '{name}' ({', '.join(available)})", weights,
            close_matches_hint(key, available)))
    return enum.DEFAULT if key == "DEFAULT" else enum[key]


def _preprocessing_of(weights) -> Tuple[int, Tuple[float, ...], Tuple[float, ...]]:
    t = weights.transforms()
    return int(t.crop_size[0]), tuple(t.mean), tuple(t.std)


def _fetch_state(weights, progress: bool) -> Dict[str, torch.Tensor]:
    """torchvision's own download (into $TORCH_HOME/hub/checkpoints), with a clear offline error."""
    try:
        return weights.get_state_dict(progress=progress, check_hash=True)
    except Exception as exc:
        target = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        raise DonorError(
            f"Could not download the weights '{weights}' from {weights.url} "
            f"({type(exc).__name__}: {exc}). Without network access, copy that file to {target}, "
            "or load your own weights with `--donor-checkpoint FILE`, or use the offline donor "
            "'efficientnet_lite0'.") from exc


def _torchvision(spec: DonorSpec, progress: bool, *, load_weights: bool = True) -> Donor:
    import torchvision

    _check_name(spec.name)
    default = torchvision.models.get_model_weights(spec.name).DEFAULT
    size, mean, std = _preprocessing_of(default)
    class_names = None
    if spec.weights is not None:
        weights = _weights_enum(spec.name, spec.weights)
        n_out = len(weights.meta["categories"])
        if spec.num_classes not in (None, n_out):
            raise DonorError(param_message(
                "num_classes", f"{n_out} (the classes of the weights '{weights}') or unset",
                spec.num_classes, "The donor's own classifier is not used for grafting; for "
                f"{spec.num_classes} classes fine-tune it with `graftsearch donor train` or "
                "load a checkpoint."))
        size, mean, std = _preprocessing_of(weights)
        model = torchvision.models.get_model(spec.name, weights=None, num_classes=n_out)
        if load_weights:
            model.load_state_dict(_fetch_state(weights, progress))
        class_names = list(weights.meta["categories"])
    else:
        kwargs = {"num_classes": spec.num_classes} if spec.num_classes else {}
        model = torchvision.models.get_model(spec.name, weights=None, **kwargs)
    return _finish(model, spec, spec.name, size, mean, std, class_names)


def _lite0(spec: DonorSpec, *, load_weights: bool = True) -> Donor:
    from graftsearch.donors._lite0 import MEAN, STD, EfficientNetLite0, load_imagenet_state

    class_names = None
    if spec.weights is not None:
        if spec.weights.upper() not in _LITE0_WEIGHTS:
            raise DonorError(param_message("weights", f"one of {', '.join(_LITE0_WEIGHTS)} for "
                                           "'efficientnet_lite0'", spec.weights))
        if spec.num_classes not in (None, 1000):
            raise DonorError(param_message("num_classes", "1000 (ImageNet) or unset with ImageNet "
                                           "weights", spec.num_classes))
        model = EfficientNetLite0(num_classes=1000)
        if load_weights:
            load_imagenet_state(model)
        class_names = _imagenet_categories()
    else:
        model = EfficientNetLite0(num_classes=spec.num_classes or 1000)
    return _finish(model, spec, LITE0, 224, MEAN, STD, class_names)


def _imagenet_categories() -> List[str]:
    import torchvision

    return list(torchvision.models.EfficientNet_B0_Weights.IMAGENET1K_V1.meta["categories"])


def _paper(spec: DonorSpec, state: Optional[Mapping[str, torch.Tensor]], progress: bool, *,
           load_weights: bool = True) -> Donor:
    import torchvision

    size = spec.image_size or 128
    features = torchvision.models.vgg16().features
    if spec.weights is not None and state is None:
        weights = _weights_enum("vgg16", spec.weights)
        if load_weights:
            vgg = torchvision.models.vgg16()
            vgg.load_state_dict(_fetch_state(weights, progress))
            features = vgg.features
    model = PaperDonor(num_classes=spec.num_classes or 9, image_size=size, features=features)
    return _finish(model, spec, PAPER_DONOR, size, IMAGENET_MEAN, IMAGENET_STD, None)


def _finish(model: nn.Module, spec: DonorSpec, name: str, size: int, mean, std, class_names) -> Donor:
    return Donor(model, name=name, spec=spec, image_size=spec.image_size or size,
                 mean=spec.mean or mean, std=spec.std or std, class_names=class_names)


# ---------------------------------------------------------------------------------------------
# checkpoints


def is_torchscript(path) -> bool:
    """Whether ``path`` is a TorchScript archive (``torch.jit.save``), not a ``torch.save`` file."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in zf.namelist())


def _read(path: Path, trust: bool) -> Any:
    if is_torchscript(path):
        try:
            return torch.jit.load(str(path), map_location="cpu")
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


def _unwrap_state(obj: Mapping) -> Dict[str, torch.Tensor]:
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


def _from_checkpoint(spec: DonorSpec) -> Donor:
    path = Path(spec.checkpoint)
    if not path.is_file():
        raise CheckpointError(param_message("checkpoint", "an existing file", str(path)))
    obj = _read(path, spec.trust_checkpoint)

    if isinstance(obj, torch.jit.ScriptModule):
        module = rebuild_scripted(obj, str(path))
        return _finish(module, spec, spec.name or path.stem, 224, IMAGENET_MEAN, IMAGENET_STD, None)
    if isinstance(obj, nn.Module):
        return _finish(obj, spec, spec.name or path.stem, 224, IMAGENET_MEAN, IMAGENET_STD, None)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"The checkpoint '{path}' holds a {type(obj).__name__}; expected a "
                              "state dict, a graftsearch donor checkpoint, a whole model or "
                              "TorchScript.")

    meta: Dict[str, Any] = {}
    if obj.get("format") == CHECKPOINT_FORMAT:
        meta = dict(obj.get("meta", {}))
    name = spec.name or meta.get("name")
    if name is None:
        raise CheckpointError(f"The checkpoint '{path}' holds a state dict; say which "
                              "architecture it belongs to with `--donor ARCH` (and `--classes N`).")
    _check_name(name)
    state = _unwrap_state(obj)
    num_classes = spec.num_classes or meta.get("num_classes")
    if num_classes is None:
        linear = [v for k, v in state.items() if v.ndim == 2]
        num_classes = int(linear[-1].shape[0]) if linear else None
    size = spec.image_size or meta.get("image_size")
    base = DonorSpec(name=name, num_classes=num_classes, image_size=size, taps=spec.taps)
    if name == PAPER_DONOR:
        donor = _paper(base, state, progress=False)
    elif name == LITE0:
        donor = _lite0(base, load_weights=False)
    else:
        donor = _torchvision(base, progress=False)
    load_state_checked(donor.module, state, path=str(path), arch=name)
    donor.module.eval()
    mean = spec.mean or meta.get("mean") or donor.preprocessing.mean
    std = spec.std or meta.get("std") or donor.preprocessing.std
    return Donor(donor.module, name=name, spec=spec, image_size=size or donor.image_size,
                 mean=mean, std=std, class_names=meta.get("class_names"))


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
